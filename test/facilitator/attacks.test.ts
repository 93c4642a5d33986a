import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Address, type Hex, createPublicClient, custom } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { useSandbox } from '../helpers/chain.js';
import { facilitatorApi, samplePayment } from '../helpers/facilitator-api.js';
import { v2Request } from '../helpers/payments.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';

const chain = useSandbox();

describe('facilitator attacks: gas, relayer nonces', () => {
  test('concurrent /settle of several payments that together exceed the payer’s balance: one settles, the others are refused as insufficient balance before any transaction is sent for them', async () => {
    const { post } = await facilitatorApi(chain);
    const payer = chain.sandbox.accounts.payers[3]!;
    const balance = await chain.balanceOf(payer.address);
    // Each payment alone is covered; only one of them can ever be paid.
    const bodies = await Promise.all(Array.from({ length: 6 }, () => v2Request(samplePayment(chain, { payer, amount: balance }))));
    const answers = await Promise.all(bodies.map((b) => post('/settle', b)));
    assert.ok(answers.every((a) => a.status === 200));
    assert.equal(answers.filter((a) => a.body.success === true).length, 1);
    for (const a of answers.filter((x) => x.body.success !== true)) {
      assert.deepEqual([a.body.errorReason, a.body.transaction], ['invalid_exact_evm_insufficient_balance', ''], JSON.stringify(a.body));
    }
    assert.equal(await chain.balanceOf(payer.address), 0n);
  });

  test('a /verify whose 65-byte signature is not the payer’s costs one state read (the wallet’s verdict asked in it), not two; the wire answer is x402’s', async () => {
    let reads = 0;
    const client = createPublicClient({
      chain: networks.local.viemChain,
      transport: custom({
        request: async (args: { method: string; params?: unknown }) => {
          if (args.method === 'eth_call') reads += 1;
          return chain.client.request(args as never);
        },
      }),
    });
    const { post } = await facilitatorApi(chain, { client });
    const body = await v2Request(samplePayment(chain, { payer: chain.sandbox.accounts.payers[5]! }));
    // Signed by payer 5, naming payer 6: no ECDSA recovers to it, so only a wallet at that address could approve it.
    body.paymentPayload.payload.authorization.from = chain.sandbox.accounts.payers[6]!.address;
    const refused = await post('/verify', body);
    assert.deepEqual(Object.keys(refused.body).sort(), ['invalidMessage', 'invalidReason', 'isValid', 'payer']);
    assert.equal(refused.body.invalidReason, 'invalid_exact_evm_signature');
    assert.equal(reads, 1);
  });

  test('a short-window /settle whose transaction the node drops is sent again as signed: it settles, and its relayer’s later transactions are not stuck behind its nonce', async () => {
    const relayer = chain.sandbox.accounts.relayers[2]!;
    const { post, store } = await facilitatorApi(chain, { relayerKeys: [relayer.privateKey], receiptTimeoutMs: 300 });
    // 20 s to expiry: too little to answer pending, so the request waits for the outcome.
    const body = await v2Request(samplePayment(chain, { payer: chain.sandbox.accounts.payers[4]!, amount: 1_234n, maxTimeoutSeconds: 20 }));
    const { authorization } = body.paymentPayload.payload;
    const key = {
      chainId: 8453,
      asset: networks.base.usdc.address.toLowerCase() as Address,
      payer: authorization.from.toLowerCase() as Address,
      nonce: authorization.nonce.toLowerCase() as Hex,
    };
    await chain.rpc('evm_setAutomine', [false]);
    let settling: ReturnType<typeof post> | undefined;
    try {
      settling = post('/settle', body);
      let txHash: Hex | undefined;
      while (!txHash) {
        txHash = (await store.journal.get(key))?.txHash;
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 100)); // broadcast
      await chain.rpc('anvil_dropTransaction', [txHash]); // a node restart, a mempool eviction
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    const timeout = new Promise<'timed out'>((r) => setTimeout(() => r('timed out'), 15_000).unref());
    const settled = await Promise.race([settling, timeout]);
    assert.notEqual(settled, 'timed out', 'the dropped transaction was never sent again');
    assert.equal((settled as Awaited<typeof settling>)?.body.success, true, JSON.stringify(settled));
    const next = await Promise.race([post('/settle', await v2Request(samplePayment(chain, { amount: 55n }))), timeout]);
    assert.notEqual(next, 'timed out', 'the relayer is stuck behind a nonce that never reached the chain');
    assert.equal((next as Awaited<typeof settling>)?.body.success, true);
  });

  test('an authorization valid only after this very second (the token wants a later block) is refused as not yet valid, nothing sent', async () => {
    const now = BigInt(Math.floor(Date.now() / 1000));
    const { post } = await facilitatorApi(chain, { now: () => Number(now) });
    const txs = await chain.relayerTxCount();
    const body = await v2Request(samplePayment(chain, { amount: 7n, validAfter: now }));
    const settled = await post('/settle', body);
    assert.deepEqual([settled.body.errorReason, settled.body.transaction], ['invalid_exact_evm_payload_authorization_valid_after', '']);
    assert.equal(await chain.relayerTxCount(), txs, 'no gas was spent');
  });

  test('an instance whose lease session is lost sends nothing more with its relayer keys: it says so at once, takes no lease, and a settlement is refused before any transaction', {
    skip: backends.find((b) => b.name === 'postgres')!.skip,
  }, async () => {
    // Losing the session stops the instance (SIGTERM to itself): this process listens, so it goes on to look.
    const stops: number[] = [];
    const onStop = () => stops.push(Date.now());
    process.on('SIGTERM', onStop);
    const store = await openPostgresStore({ url: POSTGRES_URL, schema: freshSchema(), max: 2 });
    try {
      const relayer = chain.sandbox.accounts.relayers[3]!;
      const { post } = await facilitatorApi(chain, { relayerKeys: [relayer.privateKey], holdsRelayers: () => store.holdsLeases() });
      assert.equal(store.holdsLeases(), true);
      // The server ends the session that holds the locks (as an idle reaper or a failover would): they are free for anyone now.
      await store.pool.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'turnpike leases' AND datname = current_database() AND pid <> pg_backend_pid()",
      );
      const deadline = Date.now() + 10_000;
      // The stop is a signal to itself: its handler runs a turn or more after the session is known lost.
      while ((store.holdsLeases() || stops.length === 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(store.holdsLeases(), false);
      assert.ok(stops.length > 0, 'the instance was told to stop');
      assert.equal(await store.lease(`relayer:${relayer.address.toLowerCase()}`), undefined);

      const sent = await chain.client.getTransactionCount({ address: relayer.address });
      const answer = await post(
        '/settle',
        await v2Request(samplePayment(chain, { payer: chain.sandbox.accounts.payers[6]!, amount: 1_000n })),
      );
      // Not this payment's fault: 503, retryable (on an instance that holds its keys), the claim given back.
      assert.equal(answer.status, 503, JSON.stringify(answer.body));
      assert.match(String(answer.body.message), /lost the lease on its relayer keys/);
      assert.equal(await chain.client.getTransactionCount({ address: relayer.address }), sent, 'no transaction signed or sent');
    } finally {
      process.off('SIGTERM', onStop);
      await store.close().catch(() => {});
    }
  });
});
