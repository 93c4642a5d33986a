import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { experimental_createMCPClient as createAiMcpClient } from 'ai';
import { createPublicClient, custom } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { PaymentRequirementsSchema } from 'x402/types';
import { withPayment } from 'x402-mcp';
import { networks } from '../../src/chain/networks.js';
import { type Facilitator, createFacilitator } from '../../src/facilitator/facilitator.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import type { GatewayOptions } from '../../src/gateway/gateway.js';
import type { Listening } from '../../src/http/listen.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { listenGateway } from '../helpers/gateway.js';
import { revenueBook } from '../../src/operators/revenue.js';
import { createLogger } from '../../src/log/logger.js';

const chain = useSandbox({ isolate: false });
const servers: Listening[] = [];
let facilitator: Facilitator;
let counter: Awaited<ReturnType<typeof startCounterUpstream>>;
const PRICE = 20_000n;

/** Starts the upstream and the facilitator once, inside the suite (after the sandbox's own `before`). */
function useGatewayParts() {
  before(async () => {
    counter ??= await startCounterUpstream();
    facilitator ??= (await chain.facilitator([3])).facilitator;
  });
}
after(async () => {
  await Promise.all([...servers.map((s) => s.close()), counter?.close()]);
});

async function gateway(options: Partial<GatewayOptions>) {
  const server = await listenGateway({
    upstream: { url: `${counter.url}/mcp`, headers: {}, timeoutMs: 20_000 },
    plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
    payTo: chain.sandbox.accounts.payees[1]!.address,
    rails: [x402Rail({ facilitator })],
    server: 'bindings',
    ...options,
  });
  servers.push(server);
  return new URL(`${server.url}/mcp`);
}

async function sdkClient(url: URL) {
  const client = new Client({ name: 'binding-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(url));
  return client;
}

describe('the JSON-RPC error binding (--challenge jsonrpc-error)', () => {
  useGatewayParts();
  test('an unpaid call is a JSON-RPC error 402 whose data is the PaymentRequired; paying it runs the tool once and settles', async () => {
    const client = await sdkClient(await gateway({ challenge: 'jsonrpc-error' }));
    const runs = counter.runs();
    const refused = await client.callTool({ name: 'count', arguments: {} }).then(
      () => assert.fail('an unpaid call must be refused'),
      (error: unknown) => error,
    );
    assert.ok(refused instanceof McpError);
    assert.equal(refused.code, 402);
    const required = refused.data as PaymentRequired;
    assert.equal(required.x402Version, 2);
    assert.equal(required.accepts[0]!.amount, PRICE.toString());
    assert.equal(counter.runs(), runs, 'the upstream was not contacted');

    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const payer = new x402Client().register('eip155:8453', new ExactEvmScheme(chain.sandbox.accounts.payers[3]!));
    const payment = await payer.createPaymentPayload(required);
    const result = await client.callTool({ name: 'count', arguments: {}, _meta: { 'x402/payment': payment } });
    assert.equal(result.isError, undefined);
    assert.equal((result._meta?.['x402/payment-response'] as { success: boolean }).success, true);
    assert.equal(counter.runs(), runs + 1);
    assert.equal(await chain.balanceOf(payee), before + PRICE);
    await client.close();
  });

  test('a settlement that fails withholds the output as a 402 error too, never a result, and is published as settlement.failed', async () => {
    // The chain answers the verification before the call, then is down when the settlement starts.
    let reads = 0;
    let down = false;
    const flaky = createPublicClient({
      chain: networks.local.viemChain,
      transport: custom({
        request: async (args: { method: string; params?: unknown }) => {
          if (args.method === 'eth_call' && ++reads > 1 && down) throw new Error('connect ECONNREFUSED');
          return chain.client.request(args as never);
        },
      }),
      pollingInterval: 5,
    });
    const { store } = await chain.facilitator([3]);
    const relayerKeys = [chain.sandbox.accounts.relayers[3]!.privateKey];
    const outage = createFacilitator({ network: networks.local, client: flaky, journal: store.journal, relayerKeys });
    // Someone gets this instance's events: the failure is recorded in the outbox with the call's batch.
    await store.events.setInstanceEndpoints([{ id: 'we_test', kind: 'webhook', url: 'https://hooks.example.com/', createdAt: Date.now() }]);
    const book = revenueBook(store, {
      takeRateBps: 0,
      logger: createLogger({ level: 'silent', format: 'json' }),
      events: { wanted: () => true, unpaid: { perWindow: 60, windowMs: 60_000 } },
    });
    const revenue = { book, usage: store.operators, custody: 'direct' as const };
    const client = await sdkClient(await gateway({ challenge: 'jsonrpc-error', rails: [x402Rail({ facilitator: outage })], revenue }));
    const challenge = (await client.callTool({ name: 'count', arguments: {} }).catch((e: unknown) => e)) as McpError;
    const payer = new x402Client().register('eip155:8453', new ExactEvmScheme(chain.sandbox.accounts.payers[6]!));
    const payment = await payer.createPaymentPayload(challenge.data as PaymentRequired);
    const runs = counter.runs();
    down = true;
    const withheld = await client.callTool({ name: 'count', arguments: {}, _meta: { 'x402/payment': payment } }).then(
      (result) => assert.fail(`the output was delivered: ${JSON.stringify(result)}`),
      (error: unknown) => error as McpError,
    );
    assert.equal(withheld.code, 402);
    assert.match(withheld.message, /settlement failed/);
    assert.equal((withheld.data as PaymentRequired).accepts[0]!.amount, PRICE.toString());
    assert.equal(counter.runs(), runs + 1, 'the tool ran; its output was withheld');
    await book.flush();
    const events = (await store.events.claim(store.instanceId, Date.now(), 60_000, 100)).map((d) => JSON.parse(d.payload));
    const [failed] = events.filter((e) => e.type === 'settlement.failed');
    assert.deepEqual([failed?.tool, failed?.amount, failed?.rail], ['count', PRICE.toString(), 'x402']);
    assert.equal(failed?.caller.payer, chain.sandbox.accounts.payers[6]!.address.toLowerCase());
    assert.match(failed?.reason, /retry with the same payment/);
    await client.close();
  });

  test('a refused payment is a 402 error again, with the reason in error.data.error', async () => {
    const client = await sdkClient(await gateway({ challenge: 'jsonrpc-error' }));
    const bad = { x402Version: 2, accepted: {}, payload: {} };
    const call = client.callTool({ name: 'count', arguments: {}, _meta: { 'x402/payment': bad } });
    const refused = (await call.catch((e: unknown) => e)) as McpError;
    assert.equal(refused.code, 402);
    assert.match(String((refused.data as { error: string }).error), /invalid/);
    await client.close();
  });
});

describe('the dotted _meta["x402.payment"] of npm x402-mcp, x402 v1 (--x402-version 1)', () => {
  useGatewayParts();
  test('a v1 challenge: network "base" and maxAmountRequired, valid under the v1 reference schema', async () => {
    const client = await sdkClient(await gateway({ x402Version: 1 }));
    const result = await client.callTool({ name: 'count', arguments: {} });
    assert.equal(result.isError, true);
    const required = result.structuredContent as { x402Version: number; accepts: unknown[] };
    assert.equal(required.x402Version, 1);
    const accepted = PaymentRequirementsSchema.parse(required.accepts[0]);
    assert.deepEqual([accepted.network, accepted.maxAmountRequired], ['base', PRICE.toString()]);
    await client.close();
  });

  test('x402-mcp’s own client, driven as a model drives its tools, pays end to end (x402.payment in, receipt out)', async () => {
    const url = await gateway({ x402Version: 1 });
    const payer = chain.sandbox.accounts.payers[4]!;
    const mcp = await createAiMcpClient({ transport: new StreamableHTTPClientTransport(url) });
    const client = await withPayment(mcp, { account: privateKeyToAccount(payer.privateKey), network: 'base' });
    const tools = await client.tools();
    const options = { toolCallId: 't', messages: [] };
    const runs = counter.runs();

    const challenge = (await tools.count!.execute!({}, options)) as { isError?: boolean; content: { text: string }[] };
    assert.equal(challenge.isError, true);
    const { accepts } = JSON.parse(challenge.content[0]!.text) as { accepts: unknown[] };
    const generate = tools.generatePaymentAuthorization!;
    const input = (generate.inputSchema as { parse(v: unknown): unknown }).parse({ paymentRequirements: accepts[0] });
    const { paymentAuthorization } = (await generate.execute!(input, options)) as unknown as { paymentAuthorization: string };

    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const paid = (await tools.count!.execute!({ paymentAuthorization }, options)) as { isError?: boolean; _meta?: Record<string, unknown> };
    assert.notEqual(paid.isError, true, JSON.stringify(paid));
    const receipt = paid._meta?.['x402.payment-response'] as { success: boolean; network: string };
    assert.deepEqual([receipt.success, receipt.network], [true, 'base']);
    assert.equal(counter.runs(), runs + 1);
    assert.equal(await chain.balanceOf(payee), before + PRICE);

    const again = (await tools.count!.execute!({ paymentAuthorization }, { ...options, toolCallId: 'u' })) as {
      _meta?: Record<string, unknown>;
    };
    assert.equal(await chain.balanceOf(payee), before + PRICE, 'the same payment again is not charged twice');
    assert.ok(again._meta?.['x402.payment-response'], 'the same call with the same payment gets its result back');
    assert.equal(counter.runs(), runs + 1, 'and the tool does not run again');
    await mcp.close();
  });
});
