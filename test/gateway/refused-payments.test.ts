import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { type PublicClient, createPublicClient, custom, serializeErc6492Signature, toHex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { networks } from '../../src/chain/networks.js';
import { loadConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { Secrets } from '../../src/config/secrets.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { encodeHeader } from '../../src/x402/codec.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { facilitatorOverHttp } from '../helpers/facilitator-api.js';
import { serveOnSandbox } from '../helpers/served.js';

const chain = useSandbox({ isolate: false });
const LIMIT = 3;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
/** Every JSON-RPC request the gateway sends to the chain. */
let rpcCalls = 0;
/** How long each chain request is held before it is sent: a slow node, so concurrent payments overlap. */
let rpcDelayMs = 0;

type RpcAnswer = {
  result?: { isError?: boolean; structuredContent?: PaymentRequired; _meta?: Record<string, unknown> };
  error?: { code: number; message: string; data?: { error?: string; retryAfterSeconds?: number } };
};

/** A `tools/call` of the paid tool through the trusted proxy, from the caller `forwardedFor` names. */
async function call(forwardedFor: string, payment?: unknown) {
  const params = { name: 'count', arguments: {}, ...(payment ? { _meta: { 'x402/payment': payment } } : {}) };
  const res = await fetch(`${served.url}/mcp/paid`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      'x-forwarded-for': forwardedFor,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as RpcAnswer };
}

let required: PaymentRequired;
/** A payment signed by `signer` as an x402 client signs it. */
const paymentBy = (signer: ReturnType<typeof privateKeyToAccount>) =>
  new x402Client().register('eip155:8453', new ExactEvmScheme(signer)).createPaymentPayload(required);
/** A well-signed payment from a fresh key that holds no USDC: refused only once the chain says so. */
const emptyWallet = () => paymentBy(privateKeyToAccount(generatePrivateKey()));
/** A payment naming `payer` as its `from`, signed by someone else: refused only once the wallet (on chain) says it did not sign it. */
async function forgedFor(payer: `0x${string}`) {
  const payment = await emptyWallet();
  const payload = payment.payload as { authorization: { from: string; nonce: string } };
  payload.authorization = { ...payload.authorization, from: payer, nonce: toHex(crypto.getRandomValues(new Uint8Array(32))) };
  return payment;
}

const refusedFor = (answer: RpcAnswer, reason: RegExp) =>
  answer.result?.isError === true && reason.test(JSON.stringify(answer.result.structuredContent ?? answer.result));
const paid = (answer: RpcAnswer) => (answer.result?._meta?.['x402/payment-response'] as { success?: boolean } | undefined)?.success;

/** Asserts the answer is the throttle's: 429, rate_limited in the MCP error binding, Retry-After within the minute. */
function assertThrottled(answer: Awaited<ReturnType<typeof call>>) {
  assert.equal(answer.status, 429, JSON.stringify(answer.body));
  assert.equal(answer.body.error?.data?.error, 'rate_limited');
  const wait = Number(answer.retryAfter);
  assert.ok(wait >= 1 && wait <= 60, `retry-after ${answer.retryAfter}`);
  assert.equal(answer.body.error?.data?.retryAfterSeconds, wait);
}

/**
 * The whole gateway behind a trusted proxy at 127.0.0.1 (so X-Forwarded-For names each caller),
 * throttling at `LIMIT`, reaching the chain through a client that counts every request, with
 * `facilitator` settings; `required` is its challenge.
 */
async function serveCounted(facilitator: ConfigInput['facilitator'], secrets: Secrets = {}) {
  const counting: PublicClient = createPublicClient({
    chain: networks.local.viemChain,
    transport: custom({
      request: async (args: { method: string; params?: unknown }) => {
        rpcCalls += 1;
        if (rpcDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, rpcDelayMs));
        return chain.client.request(args as never);
      },
    }),
    pollingInterval: 5,
  });
  served = await serveOnSandbox(chain, {
    client: counting,
    overrides: { http: { port: 0, trustedProxies: '127.0.0.1' }, facilitator: { refusedPaymentsPerMinute: LIMIT, ...facilitator } },
    secrets,
    endpoints: [
      {
        slug: 'paid',
        path: '/mcp/paid',
        upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
        plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
        payTo: chain.sandbox.accounts.payees[1]!.address,
        challenge: 'tool-result',
      },
    ],
  });
  required = (await call('192.0.2.1')).body.result!.structuredContent!;
}

before(async () => {
  upstream = await startCounterUpstream();
});
after(async () => {
  await upstream?.close();
});

describe('refused x402 payments: a caller cannot make the gateway spend chain reads for nothing', () => {
  before(() => serveCounted({}));
  after(() => served?.gateway.close());

  test('an attacker spraying junk payments from one network stops costing RPC calls after the limit: 429 rate_limited with Retry-After', async () => {
    for (let i = 0; i < LIMIT; i++) {
      const before = rpcCalls;
      const refused = await call('203.0.113.10', await emptyWallet());
      assert.ok(refusedFor(refused.body, /insufficient_balance/), JSON.stringify(refused.body));
      assert.ok(rpcCalls > before, 'judging a junk payment took a chain read');
    }
    const before = rpcCalls;
    for (let i = 0; i < 5; i++) assertThrottled(await call('203.0.113.10', await emptyWallet()));
    assert.equal(rpcCalls, before, 'a throttled network costs no RPC call');
  });

  test('an IPv6 attacker is one network for its whole /64: rotating its addresses does not reset the count', async () => {
    for (let i = 0; i < LIMIT; i++) {
      assert.ok(refusedFor((await call(`2001:db8:7:7::${i + 1}`, await emptyWallet())).body, /insufficient_balance/));
    }
    const before = rpcCalls;
    assertThrottled(await call('2001:db8:7:7:abcd::99', await emptyWallet()));
    assert.equal(rpcCalls, before);
  });

  test('a payer whose paid call’s answer was lost gets its kept result again while junk from its own network has it throttled', async () => {
    const payment = await paymentBy(chain.sandbox.accounts.payers[7]!);
    const first = await call('203.0.113.25', payment);
    assert.equal(paid(first.body), true, JSON.stringify(first.body));
    const runs = upstream.runs();
    // Someone else behind the same address (one NAT) sprays junk until the network is throttled.
    for (let i = 0; i < LIMIT; i++) await call('203.0.113.25', await emptyWallet());
    assertThrottled(await call('203.0.113.25', await emptyWallet()));
    // The payer's retry of the call it paid for is answered from what was kept: no chain read, no second run.
    const before = rpcCalls;
    const again = await call('203.0.113.25', payment);
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.deepEqual(again.body.result, first.body.result);
    assert.equal(upstream.runs(), runs);
    assert.equal(rpcCalls, before, 'a kept result costs no chain read');
  });

  test('a genuine payer from another network pays while the attacker’s network is throttled', async () => {
    for (let i = 0; i < LIMIT; i++) await call('203.0.113.20', await emptyWallet());
    assertThrottled(await call('203.0.113.20', await emptyWallet()));
    const genuine = await call('198.51.100.20', await paymentBy(chain.sandbox.accounts.payers[5]!));
    assert.equal(paid(genuine.body), true, JSON.stringify(genuine.body));
  });

  test('junk payments naming a victim as payer, from many networks, are throttled per network and never lock the victim out', async () => {
    const victim = chain.sandbox.accounts.payers[6]!;
    const networks = ['203.0.113.31', '203.0.113.32', '203.0.113.33'];
    for (const network of networks) {
      for (let i = 0; i < LIMIT; i++) {
        const before = rpcCalls;
        assert.ok(refusedFor((await call(network, await forgedFor(victim.address))).body, /invalid_exact_evm_signature/));
        assert.ok(rpcCalls > before, 'a signature that is not the payer’s ECDSA is the wallet’s to judge, on chain');
      }
      const before = rpcCalls;
      assertThrottled(await call(network, await forgedFor(victim.address)));
      assert.equal(rpcCalls, before);
    }
    const genuine = await call('198.51.100.31', await paymentBy(victim));
    assert.equal(paid(genuine.body), true, `${LIMIT * networks.length} forgeries in the victim’s name: ${JSON.stringify(genuine.body)}`);
  });

  test('a proven payer whose payments keep being refused on chain is throttled whatever network it sends from', async () => {
    const empty = privateKeyToAccount(generatePrivateKey());
    for (let i = 0; i < LIMIT; i++)
      assert.ok(refusedFor((await call(`203.0.113.${40 + i}`, await paymentBy(empty))).body, /insufficient_balance/));
    const before = rpcCalls;
    const throttled = await call('203.0.113.49', await paymentBy(empty));
    assertThrottled(throttled);
    assert.match(throttled.body.error!.message, new RegExp(empty.address.toLowerCase()));
    assert.equal(rpcCalls, before);
  });

  test('concurrent junk payments from one network are judged no more than the limit: a slow node does not let them all through', async () => {
    const payments = await Promise.all(Array.from({ length: 4 * LIMIT }, () => emptyWallet()));
    rpcDelayMs = 300;
    try {
      const answers = await Promise.all(payments.map((payment) => call('203.0.113.80', payment)));
      const judged = answers.filter((answer) => refusedFor(answer.body, /insufficient_balance/));
      assert.ok(judged.length <= LIMIT, `${judged.length} of ${answers.length} concurrent junk payments cost a chain read`);
      for (const answer of answers) if (!judged.includes(answer)) assertThrottled(answer);
    } finally {
      rpcDelayMs = 0;
    }
  });

  test('a genuine payer’s concurrent paid calls from one network are all served', async () => {
    const payer = chain.sandbox.accounts.payers[8]!;
    const payments = await Promise.all(Array.from({ length: LIMIT }, () => paymentBy(payer)));
    rpcDelayMs = 100;
    try {
      const answers = await Promise.all(payments.map((payment) => call('198.51.100.80', payment)));
      for (const answer of answers) assert.equal(paid(answer.body), true, JSON.stringify(answer.body));
    } finally {
      rpcDelayMs = 0;
    }
  });

  test('replays of a victim’s payments settled elsewhere, under way at once from many networks, never hold the victim’s own payments back', async () => {
    const victim = chain.sandbox.accounts.payers[9]!;
    const elsewhere = await chain.facilitator([0]);
    const published = [];
    for (let i = 0; i < LIMIT; i++) {
      const payment = await paymentBy(victim);
      const request = { x402Version: 2, paymentPayload: payment, paymentRequirements: required.accepts[0]! };
      assert.equal((await elsewhere.facilitator.settle(request as never, purposes.api)).success, true);
      published.push(payment);
    }
    await elsewhere.store.close();
    rpcDelayMs = 300;
    try {
      const replays = published.map((payment, i) => call(`203.0.113.${100 + i}`, payment));
      await new Promise((resolve) => setTimeout(resolve, 150));
      const genuine = await call('198.51.100.90', await paymentBy(victim));
      assert.equal(paid(genuine.body), true, JSON.stringify(genuine.body));
      for (const replay of await Promise.all(replays))
        assert.ok(refusedFor(replay.body, /nonce_already_used/), JSON.stringify(replay.body));
    } finally {
      rpcDelayMs = 0;
    }
  });

  const topup = (forwardedFor: string, payment?: unknown) =>
    fetch(`${served.url}/credits/topup?usd=1`, {
      method: 'POST',
      headers: { 'x-forwarded-for': forwardedFor, ...(payment ? { 'payment-signature': encodeHeader(payment) } : {}) },
    });
  /** A top-up payment from a fresh key that holds no USDC, for the offer `forwardedFor` is challenged with. */
  async function junkTopups(forwardedFor: string, count: number) {
    const challenge = await topup(forwardedFor);
    assert.equal(challenge.status, 402);
    const offer = JSON.parse(Buffer.from(challenge.headers.get('payment-required')!, 'base64').toString()) as PaymentRequired;
    const junk = () =>
      new x402Client().register('eip155:8453', new ExactEvmScheme(privateKeyToAccount(generatePrivateKey()))).createPaymentPayload(offer);
    return Promise.all(Array.from({ length: count }, junk));
  }

  test('concurrent junk USDC top-ups from one network are judged no more than the limit', async () => {
    const payments = await junkTopups('203.0.113.81', 4 * LIMIT);
    rpcDelayMs = 300;
    try {
      const statuses = await Promise.all(payments.map(async (payment) => (await topup('203.0.113.81', payment)).status));
      const judged = statuses.filter((status) => status === 402).length;
      assert.ok(judged <= LIMIT, `${judged} of ${statuses.length} concurrent junk top-ups were settled or refused: ${statuses}`);
      assert.ok(
        statuses.every((status) => status === 402 || status === 429),
        `${statuses}`,
      );
    } finally {
      rpcDelayMs = 0;
    }
  });

  test('USDC top-ups refused from one network stop costing RPC calls after the limit', async () => {
    const payments = await junkTopups('203.0.113.60', LIMIT + 1);
    const junk = async () => payments.shift()!;
    for (let i = 0; i < LIMIT; i++) {
      const before = rpcCalls;
      assert.equal((await topup('203.0.113.60', await junk())).status, 402);
      assert.ok(rpcCalls > before);
    }
    const before = rpcCalls;
    const throttled = await topup('203.0.113.60', await junk());
    assert.equal(throttled.status, 429);
    assert.equal(((await throttled.json()) as { error: string }).error, 'rate_limited');
    assert.ok(Number(throttled.headers.get('retry-after')) >= 1);
    assert.equal(rpcCalls, before);
  });

  test('facilitator.refusedPaymentsPerMinute is read from TURNPIKE_FACILITATOR_REFUSED_PAYMENTS_PER_MINUTE, 30 by default', () => {
    assert.equal(loadConfig({ env: {} }).facilitator.refusedPaymentsPerMinute, 30);
    assert.equal(loadConfig({ env: { TURNPIKE_FACILITATOR_REFUSED_PAYMENTS_PER_MINUTE: '0' } }).facilitator.refusedPaymentsPerMinute, 0);
  });
});

describe('refused x402 payments with facilitator.mode remote: a smart-wallet signature checked on chain is throttled too', () => {
  const KEY = 'gateway-to-facilitator-key-0123456789abcdef';
  let remote: Awaited<ReturnType<typeof facilitatorOverHttp>>;
  before(async () => {
    remote = await facilitatorOverHttp(chain, { relayerKeys: [chain.sandbox.accounts.relayers[0]!.privateKey], apiKeys: [KEY] });
    await serveCounted({ mode: 'remote', url: remote.url }, { remoteFacilitatorKey: KEY });
  });
  after(async () => {
    await served?.gateway.close();
    await remote?.close();
  });

  test('junk ERC-6492 signatures (each one deployless eth_call) stop costing RPC calls after the limit; the remote is never asked', async () => {
    /** A well-formed ERC-6492 wrapper around junk: a "factory" that deploys nothing, a signature nobody made. */
    const junk6492 = async () => {
      const payment = await emptyWallet();
      const payload = payment.payload as { signature: `0x${string}` };
      const factory = privateKeyToAccount(generatePrivateKey()).address;
      payload.signature = serializeErc6492Signature({ address: factory, data: '0xdeadbeef', signature: payload.signature });
      return payment;
    };
    const verifies = remote.count('/verify');
    for (let i = 0; i < LIMIT; i++) {
      const before = rpcCalls;
      assert.ok(refusedFor((await call('203.0.113.70', await junk6492())).body, /invalid_exact_evm_signature/));
      assert.ok(rpcCalls > before, 'the wallet’s verdict took an eth_call');
    }
    const before = rpcCalls;
    for (let i = 0; i < 3; i++) assertThrottled(await call('203.0.113.70', await junk6492()));
    assert.equal(rpcCalls, before);
    assert.equal(remote.count('/verify'), verifies);
    const genuine = await call('198.51.100.70', await paymentBy(chain.sandbox.accounts.payers[7]!));
    assert.equal(paid(genuine.body), true, JSON.stringify(genuine.body));
  });
});
