import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { HTTPFacilitatorClient } from '@x402/core/server';
import { ExactEvmScheme as ExactEvmClient } from '@x402/evm/exact/client';
import { ExactEvmScheme as ExactEvmServer } from '@x402/evm/exact/server';
import { decodePaymentResponseHeader, wrapFetchWithPaymentFromConfig } from '@x402/fetch';
import { paymentMiddleware, x402ResourceServer } from '@x402/hono';
import { Hono } from 'hono';
import { networks } from '../../src/chain/networks.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { useSandbox } from '../helpers/chain.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const servers: Listening[] = [];
let api: string;

async function startServers() {
  const { facilitator } = await chain.facilitator([0, 1, 2, 3]);
  const turnpike = createApp(logger);
  turnpike.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 64 * 1024, logger }));
  const facilitatorServer = await listen(turnpike, { host: '127.0.0.1', port: 0 });
  servers.push(facilitatorServer);

  // A resource server built only from the official packages, with turnpike as its facilitator.
  const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: facilitatorServer.url })).register(
    'eip155:8453',
    new ExactEvmServer(),
  );
  const weather = new Hono();
  weather.use(
    paymentMiddleware(
      {
        'GET /weather': {
          accepts: { scheme: 'exact', price: '$0.01', network: 'eip155:8453', payTo: chain.sandbox.accounts.payees[0]!.address },
          description: 'today’s weather',
        },
      },
      resourceServer,
    ),
  );
  weather.get('/weather', (c) => c.json({ forecast: 'sunny' }));
  const apiServer = await listen(weather, { host: '127.0.0.1', port: 0 });
  servers.push(apiServer);
  api = apiServer.url;
}

describe('interop with the official x402 packages', () => {
  before(startServers);
  after(() => Promise.all(servers.map((s) => s.close())));

  test('@x402/hono middleware challenges an unpaid request with PAYMENT-REQUIRED for Base USDC', async () => {
    const res = await fetch(`${api}/weather`);
    assert.equal(res.status, 402);
    const required = JSON.parse(Buffer.from(res.headers.get('payment-required')!, 'base64').toString());
    assert.equal(required.accepts[0].network, 'eip155:8453');
    assert.equal(required.accepts[0].asset.toLowerCase(), networks.base.usdc.address.toLowerCase());
    assert.equal(required.accepts[0].amount, '10000');
  });

  test('@x402/fetch pays, the middleware verifies and settles through turnpike, USDC moves on chain', async () => {
    const payer = chain.sandbox.accounts.payers[7]!;
    const payee = chain.sandbox.accounts.payees[0]!.address;
    const [payerBefore, payeeBefore] = [await chain.balanceOf(payer.address), await chain.balanceOf(payee)];
    const pay = wrapFetchWithPaymentFromConfig(fetch, {
      schemes: [{ network: 'eip155:8453', client: new ExactEvmClient(payer) }],
    });
    const res = await pay(`${api}/weather`);
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(await res.json(), { forecast: 'sunny' });
    const receipt = decodePaymentResponseHeader(res.headers.get('payment-response')!);
    assert.equal(receipt.success, true);
    assert.equal(receipt.network, 'eip155:8453');
    assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);
    const mined = await chain.client.getTransactionReceipt({ hash: receipt.transaction as `0x${string}` });
    assert.equal(mined.status, 'success');
    assert.equal(await chain.balanceOf(payer.address), payerBefore - 10_000n);
    assert.equal(await chain.balanceOf(payee), payeeBefore + 10_000n);
  });

  test('one PAYMENT-SIGNATURE sent 10 times at once is served once by @x402/hono: turnpike answers one /settle with success, the copies with nonce_already_used', async () => {
    const payer = chain.sandbox.accounts.payers[8]!;
    const payee = chain.sandbox.accounts.payees[0]!.address;
    const payeeBefore = await chain.balanceOf(payee);
    let signature: string | undefined;
    // The official client signs once; its header is then copied, as a replaying client would.
    const capture = wrapFetchWithPaymentFromConfig(
      async (input, init) => {
        const header = new Request(input, init).headers.get('payment-signature');
        if (header) {
          signature = header;
          return new Response(null, { status: 204 });
        }
        return fetch(input, init);
      },
      { schemes: [{ network: 'eip155:8453', client: new ExactEvmClient(payer) }] },
    );
    await capture(`${api}/weather`);
    assert.ok(signature, 'the client signed a payment');
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => fetch(`${api}/weather`, { headers: { 'payment-signature': signature! } })),
    );
    const statuses = answers.map((a) => a.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, `one copy is served: ${statuses.join(', ')}`);
    // The middleware runs the route before it settles: a copy whose /settle fails gets a 402, never the content.
    const bodies = await Promise.all(answers.map((a) => a.text()));
    assert.equal(bodies.filter((b) => b.includes('sunny')).length, 1, 'the paid content left once');
    assert.equal(await chain.balanceOf(payee), payeeBefore + 10_000n, 'one transfer');
  });
});
