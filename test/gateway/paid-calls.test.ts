import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { MULTICALL3, networks } from '../../src/chain/networks.js';
import { multicall3Abi } from '../../contracts-abi/multicall3.js';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import type { Facilitator } from '../../src/facilitator/facilitator.js';
import { type Address, type Hex, createPublicClient, custom, decodeFunctionData, isAddressEqual } from 'viem';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { networkOf } from '../../src/upstream/caller-network.js';
import { Agent, type Dispatcher, fetch } from 'undici';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { createMetrics } from '../../src/http/metrics.js';
import type { PaymentJournal } from '../../src/store/journal/journal.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const metrics = createMetrics();
const servers: Listening[] = [];
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let facilitator: Facilitator;
let journal: PaymentJournal;

async function gatewayFor(path: string, timeoutMs = 10_000, through = facilitator) {
  const app = createApp(logger);
  let url = '';
  app.route(
    '/mcp',
    createGateway({
      upstream: { url: `${upstream.url}${path}`, headers: {}, timeoutMs },
      plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
      payTo: chain.sandbox.accounts.payees[1]!.address,
      network: networks.local,
      rails: [x402Rail({ facilitator: through })],
      challenge: 'tool-result',
      bodyLimitBytes: 4096,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics,
      server: 'test',
    }),
  );
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  servers.push(server);
  url = server.url;
  return `${server.url}/mcp`;
}

type RpcAnswer = {
  result?: { isError?: boolean; structuredContent?: PaymentRequired; _meta?: Record<string, unknown> };
  error?: { code: number };
};

/**
 * A raw JSON-RPC tools/call, as any MCP client would POST it: without a session (the counter is a
 * stateless server, which ignores one), or in `session` (its `Mcp-Session-Id`, as a Streamable HTTP client sends it).
 */
async function call(
  url: string,
  tool: string,
  payment?: unknown,
  args: object = {},
  session?: string,
  headers: Record<string, string> = {},
  from?: Dispatcher,
): Promise<{ status: number; body: RpcAnswer }> {
  const params = { name: tool, arguments: args, ...(payment ? { _meta: { 'x402/payment': payment } } : {}) };
  const res = await fetch(url, {
    ...(from ? { dispatcher: from } : {}),
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(session ? { 'mcp-session-id': session } : {}),
      ...headers,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
  });
  return { status: res.status, body: (await res.json()) as RpcAnswer };
}

/** Connections from another machine's address than the payer's (127.0.0.2: Linux answers all of 127/8 on loopback). */
const elsewhere = new Agent({ localAddress: '127.0.0.2' });

async function paymentFor(url: string, tool: string, payer = chain.sandbox.accounts.payers[2]!) {
  const { body } = await call(url, tool);
  const required = body.result!.structuredContent!;
  return new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
}

const keyOf = (payment: Awaited<ReturnType<typeof paymentFor>>) => {
  const auth = (payment.payload as { authorization: { from: string; nonce: string } }).authorization;
  return {
    chainId: 8453,
    asset: networks.base.usdc.address.toLowerCase() as `0x${string}`,
    payer: auth.from.toLowerCase() as `0x${string}`,
    nonce: auth.nonce.toLowerCase() as `0x${string}`,
  };
};

const stateOf = async (payment: Awaited<ReturnType<typeof paymentFor>>) => {
  const record = await journal.get(keyOf(payment));
  return record && { state: record.state, reason: record.errorReason, message: record.errorMessage };
};

describe('paid calls: exactly once, and never charged for a failure', () => {
  before(async () => {
    upstream = await startCounterUpstream();
    const opened = await chain.facilitator([1]);
    journal = opened.store.journal;
    facilitator = opened.facilitator;
  });
  after(() => Promise.all([...servers.map((s) => s.close()), upstream.close()]));

  test('20 concurrent copies of one payment: the tool runs once, one settlement; each copy gets that result or is refused while it runs', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'count');
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const runsBefore = upstream.runs();
    const answers = await Promise.all(Array.from({ length: 20 }, () => call(url, 'count', payment)));
    const paid = answers.filter((a) => !a.body.result?.isError);
    assert.ok(paid.length >= 1);
    // Copies that came after the result was kept get it again, with the one receipt.
    for (const a of paid) assert.deepEqual(a.body.result, paid[0]!.body.result);
    assert.equal((paid[0]!.body.result!._meta!['x402/payment-response'] as { success: boolean }).success, true);
    assert.equal(upstream.runs() - runsBefore, 1);
    assert.equal(await chain.balanceOf(payee), before + 20_000n);
    for (const a of answers.filter((x) => x.body.result?.isError)) {
      assert.match(JSON.stringify(a.body), /nonce_already_used/);
    }
  });

  test('the same call with the same payment again (its answer was lost) gets the same result and receipt back: no second run, no second settlement; another call with that payment is refused', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'count');
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const runsBefore = upstream.runs();
    const first = await call(url, 'count', payment, { n: 1 });
    const receipt = first.body.result!._meta!['x402/payment-response'] as { success: boolean; transaction: string };
    assert.equal(receipt.success, true);

    const again = await call(url, 'count', payment, { n: 1 });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body.result, first.body.result, 'the result as first delivered, with the same receipt');
    const other = await call(url, 'count', payment, { n: 2 });
    assert.equal(other.body.result?.isError, true, 'the payment does not pay for a different call');
    assert.match(JSON.stringify(other.body), /nonce_already_used/);
    assert.equal(upstream.runs() - runsBefore, 1);
    assert.equal(await chain.balanceOf(payee), before + 20_000n);
    assert.equal((await stateOf(payment))?.state, 'settled');
  });

  // Settlement makes a payment public (the transaction's calldata carries the authorization and its signature,
  // and a deferred one is in the mempool before it is mined): a watcher of the payee's transfers who guesses the
  // call (a tool without arguments) presents the very payment, from its own machine. A result sent with an
  // Idempotency-Key is bound to it; one sent without (most x402 clients), to the network it was sent from.
  const copiedFromChain = async (payerIndex: number, sent: Record<string, string>) => {
    const url = await gatewayFor('/mcp');
    const payer = chain.sandbox.accounts.payers[payerIndex]!;
    const paid = await call(url, 'count', await paymentFor(url, 'count', payer), {}, randomUUID(), sent);
    const receipt = paid.body.result!._meta!['x402/payment-response'] as { success: boolean; transaction: Hex };
    assert.equal(receipt.success, true);

    // The watcher: the settlement's calldata (one transfer, or a Multicall3 batch of them), and the challenge anyone gets.
    const tx = await chain.client.getTransaction({ hash: receipt.transaction });
    const batch = isAddressEqual(tx.to!, MULTICALL3) ? decodeFunctionData({ abi: multicall3Abi, data: tx.input }) : undefined;
    const calls = batch?.functionName === 'aggregate3' ? batch.args[0].map((c) => c.callData) : [tx.input];
    const transfers = calls.map(
      (data) => decodeFunctionData({ abi: usdcAbi, data }).args as unknown as [Address, Address, bigint, bigint, bigint, Hex, Hex],
    );
    const [from, to, value, validAfter, validBefore, nonce, signature] = transfers.find(([from]) => isAddressEqual(from, payer.address))!;
    const required = (await call(url, 'count')).body.result!.structuredContent!;
    const copied = {
      x402Version: 2,
      resource: required.resource,
      accepted: required.accepts[0],
      payload: {
        signature,
        authorization: { from, to, value: `${value}`, validAfter: `${validAfter}`, validBefore: `${validBefore}`, nonce },
      },
    };
    const runs = upstream.runs();
    for (const key of [{}, { 'idempotency-key': randomUUID() }] as Record<string, string>[]) {
      const watched = await call(url, 'count', copied, {}, undefined, key, elsewhere);
      assert.equal(watched.body.result?.isError, true, 'challenged: the watcher paid nothing');
      assert.match(JSON.stringify(watched.body), /nonce_already_used/);
      assert.notDeepEqual(watched.body.result?._meta, paid.body.result?._meta);
    }
    assert.equal(upstream.runs(), runs);
  };
  test('a payment copied from its settlement transaction on chain does not get the paid result of a call it guessed, sent with an Idempotency-Key', () =>
    copiedFromChain(7, { 'idempotency-key': randomUUID() }));
  test('a payment copied from its settlement transaction on chain does not get the paid result of a call it guessed, sent without one', () =>
    copiedFromChain(7, {}));

  test('a lost paid answer sent without an Idempotency-Key is given again only to a retry from the network it was sent from', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'count', chain.sandbox.accounts.payers[3]);
    const runsBefore = upstream.runs();
    const first = await call(url, 'count', payment);
    assert.equal((first.body.result!._meta!['x402/payment-response'] as { success: boolean }).success, true);
    for (const key of [{}, { 'idempotency-key': randomUUID() }] as Record<string, string>[]) {
      const copy = await call(url, 'count', payment, {}, undefined, key, elsewhere);
      assert.equal(copy.body.result?.isError, true, 'from another address: the payment is used');
      assert.match(JSON.stringify(copy.body), /nonce_already_used/);
    }
    const again = await call(url, 'count', payment);
    assert.deepEqual(again.body.result, first.body.result, "from the payer's address: the result as first delivered");
    assert.equal(upstream.runs() - runsBefore, 1);
    const kept = await journal.keptResult(keyOf(payment));
    assert.ok(
      kept?.caller?.startsWith('network:') && !kept.caller.includes('127.0.0.1'),
      'the address is kept as a digest, never as itself',
    );
  });

  test('a lost paid answer sent with an Idempotency-Key is given again to a retry with that key from any address', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'count', chain.sandbox.accounts.payers[4]);
    const idempotencyKey = { 'idempotency-key': randomUUID() };
    const first = await call(url, 'count', payment, {}, undefined, idempotencyKey);
    assert.equal((first.body.result!._meta!['x402/payment-response'] as { success: boolean }).success, true);
    const moved = await call(url, 'count', payment, {}, undefined, idempotencyKey, elsewhere);
    assert.deepEqual(moved.body.result, first.body.result);
  });

  test('the network a result is bound to: an IPv4 address itself, mapped or not; an IPv6 address by its /64', () => {
    assert.equal(networkOf('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(networkOf('203.0.113.7'), '203.0.113.7');
    assert.equal(networkOf('2001:db8:1:2:aaaa::1'), networkOf('2001:db8:1:2:bbbb:cccc:dddd:1'));
    assert.notEqual(networkOf('2001:db8:1:2::1'), networkOf('2001:db8:1:3::1'));
    assert.equal(networkOf('not an address'), undefined);
  });

  test('a lost paid answer retried outside its session (a session dies with its upstream) still gets its result, the tool run once', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'count', chain.sandbox.accounts.payers[8]);
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const runsBefore = upstream.runs();
    const first = await call(url, 'count', payment, {}, randomUUID());
    assert.equal((first.body.result!._meta!['x402/payment-response'] as { success: boolean }).success, true);
    for (const session of [undefined, randomUUID()]) {
      const again = await call(url, 'count', payment, {}, session);
      assert.deepEqual(again.body.result, first.body.result, `session ${session}: the result as first delivered, with the same receipt`);
    }
    assert.equal(upstream.runs() - runsBefore, 1);
    assert.equal(await chain.balanceOf(payee), before + 20_000n);
    assert.equal((await stateOf(payment))?.state, 'settled');
  });

  test('a lost paid answer sent with an Idempotency-Key is bound to it: a retry with that key gets it, the payment and call alone get none', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'count', chain.sandbox.accounts.payers[9]);
    const runsBefore = upstream.runs();
    const idempotencyKey = { 'idempotency-key': randomUUID() };
    const first = await call(url, 'count', payment, {}, undefined, idempotencyKey);
    assert.equal((first.body.result!._meta!['x402/payment-response'] as { success: boolean }).success, true);
    for (const other of [{}, { 'idempotency-key': randomUUID() }] as Record<string, string>[]) {
      const copy = await call(url, 'count', payment, {}, undefined, other);
      assert.equal(copy.body.result?.isError, true);
      assert.match(JSON.stringify(copy.body), /nonce_already_used/);
    }
    const session = await call(url, 'count', payment, {}, idempotencyKey['idempotency-key']);
    assert.equal(session.body.result?.isError, true, 'the key sent as a session is not the key');
    const again = await call(url, 'count', payment, {}, undefined, idempotencyKey);
    assert.deepEqual(again.body.result, first.body.result);
    assert.equal(upstream.runs() - runsBefore, 1);
    const kept = await journal.keptResult(keyOf(payment));
    assert.ok(kept?.caller && !kept.caller.includes(idempotencyKey['idempotency-key']), 'the key is kept as a digest, never as itself');
  });

  test('a tool result with isError: not charged, and the record says why', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'fail');
    const before = await chain.balanceOf(chain.sandbox.accounts.payees[1]!.address);
    const answer = await call(url, 'fail', payment);
    assert.equal(answer.body.result?.isError, true);
    assert.equal(answer.body.result?._meta?.['x402/payment-response'], undefined);
    assert.equal(await chain.balanceOf(chain.sandbox.accounts.payees[1]!.address), before);
    assert.deepEqual(await stateOf(payment), { state: 'failed', reason: 'call_failed', message: 'the tool reported isError' });
  });

  test('an unknown tool (a JSON-RPC error upstream): not charged', async () => {
    const url = await gatewayFor('/mcp');
    const payment = await paymentFor(url, 'no-such-tool');
    const answer = await call(url, 'no-such-tool', payment);
    assert.ok(answer.body.error || answer.body.result?.isError);
    assert.equal((await stateOf(payment))?.state, 'failed');
  });

  test('an upstream answering 500: the 500 passes through, not charged', async () => {
    const url = await gatewayFor('/broken');
    const payment = await paymentFor(url, 'count');
    const answer = await call(url, 'count', payment);
    assert.equal(answer.status, 500);
    assert.deepEqual(await stateOf(payment), { state: 'failed', reason: 'call_failed', message: 'upstream answered HTTP 500' });
  });

  test('an upstream that hangs past the timeout: a JSON-RPC error, not charged', async () => {
    const url = await gatewayFor('/hang', 500);
    const payment = await paymentFor(url, 'count');
    const answer = await call(url, 'count', payment);
    assert.equal(answer.status, 502);
    assert.equal(answer.body.error?.code, -32603);
    const state = await stateOf(payment);
    assert.equal(state?.state, 'failed');
    assert.match(String(state?.message), /took longer than 500 ms/, 'the hold is given back saying why');
  });

  test('the chain unreachable when settling: the output is withheld, the hold given back, the same payment works once it is back', async () => {
    // The chain answers the verification before the call, then is down when the settlement starts.
    let calls = 0;
    let down = false;
    const flaky = createPublicClient({
      chain: networks.local.viemChain,
      transport: custom({
        request: async (args: { method: string; params?: unknown }) => {
          if (args.method === 'eth_call' && ++calls > 1 && down) throw new Error('connect ECONNREFUSED');
          return chain.client.request(args as never);
        },
      }),
      pollingInterval: 5,
    });
    const opened = await chain.facilitator([3]);
    const outage = createFacilitator({
      network: networks.local,
      client: flaky,
      journal: opened.store.journal,
      relayerKeys: [chain.sandbox.accounts.relayers[3]!.privateKey],
    });
    const url = await gatewayFor('/mcp', 10_000, outage);
    const payment = await paymentFor(url, 'count', chain.sandbox.accounts.payers[6]);
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    down = true;
    const failed = await call(url, 'count', payment);
    assert.equal(failed.body.result?.isError, true);
    assert.match(JSON.stringify(failed.body.result), /settlement failed: .*retry with the same payment/);
    assert.equal(await chain.balanceOf(payee), before);
    assert.equal(await opened.store.journal.get(keyOf(payment)), undefined, 'the hold was given back');
    down = false;
    const paid = await call(url, 'count', payment);
    assert.equal(
      (paid.body.result?._meta?.['x402/payment-response'] as { success: boolean } | undefined)?.success,
      true,
      JSON.stringify(paid.body),
    );
    assert.equal(await chain.balanceOf(payee), before + 20_000n);
  });

  test('an oversized body is refused before anything else', async () => {
    const url = await gatewayFor('/mcp');
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ pad: 'x'.repeat(10_000) }),
    });
    assert.equal(res.status, 413);
  });
});
