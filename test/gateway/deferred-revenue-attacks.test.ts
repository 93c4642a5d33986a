import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Hex, createWalletClient, http } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import { BASE_USDC, networks } from '../../src/chain/networks.js';
import { type Facilitator, createFacilitator } from '../../src/facilitator/facilitator.js';
import type { Listening } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import { revenueBook } from '../../src/operators/revenue.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { type SqliteStore, openSqliteStore } from '../../src/store/sqlite.js';
import { useSandbox } from '../helpers/chain.js';
import { callCount, countPayment, startCounterUpstream } from '../helpers/counter-upstream.js';
import { listenGateway } from '../helpers/gateway.js';
import { keyOf, signAuthorization } from '../helpers/payments.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const PRICE = 20_000n;

const keyOfPayment = (payment: { payload: unknown }) => keyOf({ paymentPayload: payment as never });

describe('revenue of a payment whose first settlement never reached the chain and which was presented again', () => {
  let store: SqliteStore;
  let facilitator: Facilitator;
  let book: ReturnType<typeof revenueBook>;
  let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
  const servers: Listening[] = [];
  // A relayer with no ETH yet: its first settlement is refused by the node (nothing sent, the claim given back).
  const relayerKey = generatePrivateKey();
  const fundRelayer = () => chain.rpc('anvil_setBalance', [privateKeyToAccount(relayerKey).address, '0x8ac7230489e80000']);
  const emptyRelayer = () => chain.rpc('anvil_setBalance', [privateKeyToAccount(relayerKey).address, '0x0']);

  before(async () => {
    upstream = await startCounterUpstream();
    store = await openSqliteStore({ path: chain.dbPath() });
    facilitator = createFacilitator({ network: networks.local, client: chain.client, journal: store.journal, relayerKeys: [relayerKey] });
    book = revenueBook(store, { takeRateBps: 0, logger });
  });
  after(async () => {
    await chain.rpc('evm_setAutomine', [true]);
    await facilitator.drain();
    await Promise.all(servers.map((s) => s.close()));
    await book.stop();
    await store.close();
    await upstream.close();
  });

  async function gateway(server: string) {
    const served = await listenGateway({
      upstream: { url: `${upstream.url}/mcp`, headers: {}, timeoutMs: 10_000 },
      plan: flatPlan(priceTableSchema.parse({ default: '0.02' })),
      // One payee for every server (as under platform custody, where all are paid to the treasury).
      payTo: chain.sandbox.accounts.payees[1]!.address,
      rails: [x402Rail({ facilitator })],
      server,
      settlement: 'deferred',
      revenue: { book, usage: store.operators, custody: 'direct' },
    });
    servers.push(served);
    return `${served.url}/mcp`;
  }
  const report = async (serverId: string) => {
    await book.flush();
    await book.resolve();
    const a = await store.operators.analytics({ serverId, from: 0, to: Date.now() + 1000 });
    return { revenue: a.byRail.find((r) => r.key === 'x402')?.revenue ?? 0n, losses: a.losses };
  };

  test('the same call retried with the same payment once the relayer can pay for gas: its server earns the price once, not twice', async () => {
    const url = await gateway('retry-same');
    const payment = await countPayment(url, chain.sandbox.accounts.payers[2]!);
    await emptyRelayer();
    const failed = await callCount(url, payment);
    assert.equal(failed.result?.isError, true, 'withheld: the settlement was refused before the chain');
    await fundRelayer();
    const paid = await callCount(url, payment);
    assert.equal(paid.result?.isError, undefined);
    await facilitator.drain();
    assert.equal((await store.journal.get(keyOfPayment(payment)))?.state, 'settled');
    assert.deepEqual(await report('retry-same'), { revenue: PRICE, losses: { count: 0, amount: 0n } });
  });

  test('a payment refused before the chain at one server, then paid at another of the same payee: the second server earns it, the first nothing', async () => {
    const [first, second] = [await gateway('first-paid'), await gateway('second-paid')];
    const payment = await countPayment(first, chain.sandbox.accounts.payers[4]!);
    await emptyRelayer();
    assert.equal((await callCount(first, payment)).result?.isError, true);
    await fundRelayer();
    assert.equal((await callCount(second, payment)).result?.isError, undefined);
    await facilitator.drain();
    assert.equal((await store.journal.get(keyOfPayment(payment)))?.state, 'settled');
    const [one, two] = [await report('first-paid'), await report('second-paid')];
    assert.deepEqual([one.revenue, two.revenue], [0n, PRICE]);
  });

  test('a payment refused before the chain at one server, then delivered deferred at another of the same payee and lost: the loss is the second server’s only', async () => {
    const [first, second] = [await gateway('first'), await gateway('second')];
    const payer = chain.sandbox.accounts.payers[3]!;
    const payment = await countPayment(first, payer);
    await emptyRelayer();
    assert.equal((await callCount(first, payment)).result?.isError, true);
    await fundRelayer();
    await chain.rpc('evm_setAutomine', [false]);
    const delivered = await callCount(second, payment);
    assert.equal(delivered.result?.isError, undefined, 'delivered deferred');
    const { txHash, rawTx } = (await store.journal.get(keyOfPayment(payment)))!;
    await chain.rpc('anvil_dropTransaction', [txHash]);
    const drain = await signAuthorization({
      payer,
      payTo: chain.sandbox.accounts.payees[0]!.address,
      amount: await chain.balanceOf(payer.address),
    });
    const sender = createWalletClient({
      account: chain.sandbox.accounts.relayers[3]!,
      chain: networks.local.viemChain,
      transport: http(chain.sandbox.rpcUrl),
    });
    const a = drain.authorization;
    await sender.writeContract({
      address: BASE_USDC,
      abi: usdcAbi,
      functionName: 'transferWithAuthorization',
      args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce as Hex, drain.signature],
      gas: 300_000n,
    });
    await chain.rpc('evm_mine');
    await chain.rpc('eth_sendRawTransaction', [rawTx]);
    await chain.rpc('evm_mine');
    await chain.rpc('evm_setAutomine', [true]);
    await facilitator.drain();
    assert.equal((await store.journal.get(keyOfPayment(payment)))?.state, 'failed');
    const [one, two] = [await report('first'), await report('second')];
    assert.deepEqual(one, { revenue: 0n, losses: { count: 0, amount: 0n } }, 'the first server delivered nothing');
    assert.deepEqual(two.losses, { count: 1, amount: PRICE });
    await store.journal.clearLosses(payer.address);
  });
});
