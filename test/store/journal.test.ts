import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { after, describe, test } from 'node:test';
import type { Address, Hex } from 'viem';
import type { NewPayment } from '../../src/store/journal/journal.js';
import { migrations } from '../../src/store/migrations.js';
import { openPostgresStore } from '../../src/store/postgres.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { migrateSqlite } from '../../src/store/sqlite-migrate.js';
import { type Store, StoreError } from '../../src/store/store.js';
import { POSTGRES_URL, backends, freshSchema } from '../helpers/stores.js';

const payment = (nonce: string): NewPayment => ({
  chainId: 8453,
  asset: '0x833589fcd6edb6e08f4c7c32d4f71b54bda02913' as Address,
  payer: '0x00000000000000000000000000000000000000aa' as Address,
  nonce: `0x${nonce.padStart(64, '0')}` as Hex,
  payTo: '0x00000000000000000000000000000000000000bb' as Address,
  amount: 10_000n,
  validAfter: 0n,
  validBefore: 2_000_000_000n,
  signature: '0x1234',
  network: 'eip155:8453',
  purpose: 'call:main:1',
});
const tx = {
  txHash: `0x${'ab'.repeat(32)}` as Hex,
  rawTx: '0x02f8' as Hex,
  relayer: '0x00000000000000000000000000000000000000cc' as Address,
  relayerNonce: 7,
};

const legacyDir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-legacy-'));
after(() => rmSync(legacyDir, { recursive: true, force: true }));
const legacy = payment('a');
const legacyRow = `
  INSERT INTO payments (chain_id, asset, payer, nonce, pay_to, amount, valid_after, valid_before, signature, network, state,
                        created_at, updated_at)
  VALUES (8453, '${legacy.asset}', '${legacy.payer}', '${legacy.nonce}', '${legacy.payTo}', 10000, 0, 2000000000, '0x1234',
          'eip155:8453', 'verified', 1, 1)`;

/** A store whose `rows` were written by the schema up to `version`, then opened by this build. */
async function atSchemaWithRows(backend: string, version: number, rows: string): Promise<Store> {
  const upTo = migrations.filter((m) => m.version <= version);
  if (backend === 'sqlite') {
    const file = path.join(legacyDir, `store-${version}.db`);
    // Raw: this build's store prepares statements the old schema cannot run.
    const old = new Database(file);
    migrateSqlite(old, upTo);
    old.exec(rows);
    old.close();
    return openSqliteStore({ path: file });
  }
  const schema = freshSchema();
  const old = await openPostgresStore({ url: POSTGRES_URL, schema, migrations: upTo, max: 1 });
  await old.pool.query(rows);
  await old.close();
  return openPostgresStore({ url: POSTGRES_URL, schema, max: 3 });
}

for (const backend of backends)
  describe(`payments journal (${backend.name})`, { skip: backend.skip }, () => {
    const open: { close(): Promise<void> }[] = [];
    const opened = async (): Promise<Store> => {
      const store = await backend.open();
      open.push(store);
      return store;
    };
    after(() => Promise.all(open.map((s) => s.close())));

    test('exactly one of many claims wins; the rest see the record', async () => {
      const store = await opened();
      const claims = await Promise.all(Array.from({ length: 20 }, () => store.journal.claim(payment('1'))));
      assert.equal(claims.filter((c) => c.claimed).length, 1);
      for (const c of claims) if (!c.claimed) assert.equal(c.record.state, 'submitting');
    });

    test('transitions only from the states the machine allows', async () => {
      const store = await opened();
      const p = payment('2');
      await assert.rejects(store.journal.recordTransaction(p, tx), StoreError, 'no claim, no transaction');
      await store.journal.claim(p);
      await store.journal.recordTransaction(p, tx);
      assert.deepEqual(
        (await store.journal.unfinished()).map((r) => [r.state, r.txHash, r.relayerNonce, r.amount]),
        [['submitted', tx.txHash, 7, 10_000n]],
      );
      await store.journal.finish(p, { state: 'settled', txHash: tx.txHash });
      await assert.rejects(store.journal.finish(p, { state: 'failed', errorReason: 'x' }), StoreError, 'final is final');
      await store.journal.release(p);
      assert.equal((await store.journal.get(p))?.state, 'settled', 'a settled payment cannot be released');
      assert.deepEqual(await store.journal.unfinished(), []);
    });

    test('a kept result is read back for its payment, replaced by a later one, and forgotten once its payment expired or is gone', async () => {
      const store = await opened();
      const [p, q] = [payment('4'), payment('5')];
      assert.equal(await store.journal.keptResult(p), undefined);
      await store.journal.reserve(p);
      await store.journal.keepResult(p, { call: 'c1', result: '{"content":[]}' });
      await store.journal.keepResult(p, { call: 'c2', result: '{"content":[1]}' });
      assert.deepEqual(await store.journal.keptResult(p), { call: 'c2', result: '{"content":[1]}' });
      assert.equal(await store.journal.keptResult(q), undefined, 'kept per payment');
      await store.journal.keepResult(q, { call: 'c3', result: '{}' });
      await store.journal.forgetResults(Number(p.validBefore) - 1);
      assert.deepEqual(await store.journal.keptResult(p), { call: 'c2', result: '{"content":[1]}' }, 'its authorization is still valid');
      assert.equal(await store.journal.keptResult(q), undefined, 'a result without its payment is gone');
      await store.journal.forgetResults(Number(p.validBefore) + 1);
      assert.equal(await store.journal.keptResult(p), undefined, 'expired');
    });

    test('a kept result keeps the caller it is bound to, and a later one replaces it with its own or none', async () => {
      const store = await opened();
      const p = payment('f');
      await store.journal.reserve(p);
      await store.journal.keepResult(p, { call: 'c1', result: '{}', caller: 'digest-a' });
      assert.deepEqual(await store.journal.keptResult(p), { call: 'c1', result: '{}', caller: 'digest-a' });
      await store.journal.keepResult(p, { call: 'c1', result: '{}' });
      assert.deepEqual(await store.journal.keptResult(p), { call: 'c1', result: '{}' }, 'no caller: none kept');
    });

    test('a result kept before callers were recorded reads back bound to none', async () => {
      const kept = `${legacyRow};
        INSERT INTO paid_results (chain_id, asset, payer, nonce, call, result)
        VALUES (8453, '${legacy.asset}', '${legacy.payer}', '${legacy.nonce}', 'c1', '{}')`;
      const store = await atSchemaWithRows(backend.name, 21, kept);
      open.push(store);
      assert.deepEqual(await store.journal.keptResult(legacy), { call: 'c1', result: '{}' });
    });

    test('a hold is taken for settlement only by its own purpose', async () => {
      const store = await opened();
      const p = payment('6');
      assert.deepEqual(await store.journal.reserve(p), { reserved: true });
      const other = await store.journal.claim({ ...p, purpose: 'settle' });
      assert.equal(other.claimed, false);
      assert.deepEqual(!other.claimed && [other.record.state, other.record.purpose], ['verified', 'call:main:1']);
      assert.deepEqual(await store.journal.claim(p), { claimed: true, deferred: false });
      assert.equal((await store.journal.get(p))?.state, 'submitting');
    });

    test('failHold moves only a hold, says whether it did, and never touches a claimed or settled payment', async () => {
      const store = await opened();
      const [held, claimed] = [payment('7'), payment('8')];
      assert.equal(await store.journal.failHold(held, { errorReason: 'call_failed', errorMessage: 'x' }), false, 'no row');
      await store.journal.reserve(held);
      assert.equal(await store.journal.failHold(held, { errorReason: 'call_failed', errorMessage: 'upstream 500' }), true);
      assert.deepEqual(
        (({ state, errorReason, errorMessage }) => ({ state, errorReason, errorMessage }))((await store.journal.get(held))!),
        {
          state: 'failed',
          errorReason: 'call_failed',
          errorMessage: 'upstream 500',
        },
      );
      await store.journal.reserve(claimed);
      await store.journal.claim(claimed);
      await store.journal.recordTransaction(claimed, tx);
      assert.equal(await store.journal.failHold(claimed, { errorReason: 'call_failed', errorMessage: 'late' }), false);
      assert.equal((await store.journal.get(claimed))?.state, 'submitted');
      await store.journal.finish(claimed, { state: 'settled', txHash: tx.txHash });
      assert.equal(await store.journal.failHold(claimed, { errorReason: 'call_failed', errorMessage: 'later' }), false);
      assert.deepEqual(
        [(await store.journal.get(claimed))?.state, (await store.journal.get(claimed))?.errorReason],
        ['settled', undefined],
      );
    });

    test('the answer owed after settlement_pending is taken once, and only once the payment is final', async () => {
      const store = await opened();
      const p = payment('9');
      await store.journal.claim(p);
      await store.journal.recordTransaction(p, tx);
      assert.equal(await store.journal.takePendingAnswer(p), false, 'nothing was answered pending yet');
      await store.journal.answeredPending(p);
      assert.equal((await store.journal.get(p))?.pendingAnswered, true);
      assert.equal(await store.journal.takePendingAnswer(p), false, 'still pending: the flag stays');
      await store.journal.finish(p, { state: 'settled', txHash: tx.txHash });
      const takes = await Promise.all(Array.from({ length: 8 }, () => store.journal.takePendingAnswer(p)));
      assert.equal(takes.filter(Boolean).length, 1);
      assert.equal((await store.journal.get(p))?.pendingAnswered, false);
    });

    test('rows journalled before purposes existed read as legacy: no caller takes or claims them', async () => {
      const store = await atSchemaWithRows(backend.name, 6, legacyRow);
      open.push(store);
      const p = legacy;
      const record = await store.journal.get(p);
      assert.deepEqual([record?.state, record?.purpose, record?.pendingAnswered], ['verified', 'legacy', false]);
      for (const purpose of ['settle', 'call:main:1', 'topup:0x00000000000000000000000000000000000000bb']) {
        assert.equal((await store.journal.claim({ ...p, purpose })).claimed, false, purpose);
      }
    });

    test('a claim another instance holds is neither finished nor released nor given a transaction by this one, and nothing changes; once adopted, only the adopter moves it', async () => {
      const instance = backend.shared();
      const [holder, other] = [await instance(), await instance()];
      const p = payment('c');
      await holder.journal.claim(p);
      await holder.journal.recordTransaction(p, tx);
      const before = await holder.journal.get(p);

      assert.equal(await other.journal.finish(p, { state: 'failed', errorReason: 'x' }), false, 'not its claim: a value, not a throw');
      assert.equal(await other.journal.release(p), false);
      await assert.rejects(other.journal.recordTransaction(p, { ...tx, relayerNonce: 8 }), StoreError);
      assert.deepEqual(await holder.journal.get(p), before, 'nothing changed');

      // The holder stopped (as far as the others can tell): one instance adopts its entry, once.
      const adoptions = await Promise.all([other.journal.adopt(p, holder.instanceId), other.journal.adopt(p, holder.instanceId)]);
      assert.deepEqual(adoptions.map((a) => a?.owner).sort(), [other.instanceId, undefined], 'adopted once, by either');
      assert.equal(await holder.journal.finish(p, { state: 'settled', txHash: tx.txHash }), false, 'no longer its holder’s');
      assert.equal(await holder.journal.release(p), false);
      assert.equal((await holder.journal.get(p))?.state, 'submitted');
      assert.equal(await other.journal.finish(p, { state: 'settled', txHash: tx.txHash }), true);
      assert.equal((await holder.journal.get(p))?.state, 'settled');
      assert.equal(await other.journal.adopt(p, other.instanceId), undefined, 'a final entry is nobody’s to adopt');

      const q = payment('d');
      await holder.journal.claim(q);
      assert.equal(await other.journal.release(q), false);
      assert.equal((await holder.journal.get(q))?.state, 'submitting');
      assert.equal(await holder.journal.release(q), true);
      assert.equal(await holder.journal.get(q), undefined);
      await Promise.all([holder.close(), other.close()]);
    });

    test('a released claim can be claimed again', async () => {
      const store = await opened();
      const p = payment('3');
      await store.journal.claim(p);
      await store.journal.release(p);
      assert.deepEqual(await store.journal.claim(p), { claimed: true, deferred: false });
    });
  });
