import type Database from 'better-sqlite3';
import type { Address, Hex } from 'viem';
import type { NewPayment, PaymentJournal, PaymentKey, PaymentRecord, PaymentState } from './journal.js';
import { StoreError } from './store.js';

type Row = {
  chain_id: bigint;
  asset: string;
  payer: string;
  nonce: string;
  pay_to: string;
  amount: bigint;
  valid_after: bigint;
  valid_before: bigint;
  signature: string;
  network: string;
  state: PaymentState;
  tx_hash: string | null;
  raw_tx: string | null;
  relayer: string | null;
  relayer_nonce: bigint | null;
  error_reason: string | null;
  error_message: string | null;
  created_at: bigint;
  updated_at: bigint;
};

const KEY = 'chain_id = @chainId AND asset = @asset AND payer = @payer AND nonce = @nonce';

const keyParams = (k: PaymentKey) => ({ chainId: k.chainId, asset: k.asset, payer: k.payer, nonce: k.nonce });

function toRecord(r: Row): PaymentRecord {
  return {
    chainId: Number(r.chain_id),
    asset: r.asset as Address,
    payer: r.payer as Address,
    nonce: r.nonce as Hex,
    payTo: r.pay_to as Address,
    amount: r.amount,
    validAfter: r.valid_after,
    validBefore: r.valid_before,
    signature: r.signature as Hex,
    network: r.network,
    state: r.state,
    ...(r.tx_hash ? { txHash: r.tx_hash as Hex } : {}),
    ...(r.raw_tx ? { rawTx: r.raw_tx as Hex } : {}),
    ...(r.relayer ? { relayer: r.relayer as Address } : {}),
    ...(r.relayer_nonce !== null ? { relayerNonce: Number(r.relayer_nonce) } : {}),
    ...(r.error_reason ? { errorReason: r.error_reason } : {}),
    ...(r.error_message ? { errorMessage: r.error_message } : {}),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

/** The payments journal on SQLite: every transition is one guarded UPDATE or INSERT. */
export function sqliteJournal(db: Database.Database): PaymentJournal {
  const select = db.prepare<Record<string, unknown>, Row>(`SELECT * FROM payments WHERE ${KEY}`).safeIntegers(true);
  const insertAs = (state: 'verified' | 'submitting') =>
    db.prepare(`
      INSERT INTO payments (chain_id, asset, payer, nonce, pay_to, amount, valid_after, valid_before, signature,
                            network, state, created_at, updated_at)
      VALUES (@chainId, @asset, @payer, @nonce, @payTo, @amount, @validAfter, @validBefore, @signature,
              @network, '${state}', @now, @now)
      ON CONFLICT (chain_id, asset, payer, nonce) DO NOTHING`);
  const insert = insertAs('submitting');
  const insertVerified = insertAs('verified');
  const takeVerified = db.prepare(
    `UPDATE payments SET state = 'submitting', updated_at = @now WHERE ${KEY} AND state = 'verified'`,
  );
  const recordTx = db.prepare(`
    UPDATE payments SET state = 'submitted', tx_hash = @txHash, raw_tx = @rawTx, relayer = @relayer,
                        relayer_nonce = @relayerNonce, updated_at = @now
    WHERE ${KEY} AND state IN ('submitting', 'submitted')`);
  const finish = db.prepare(`
    UPDATE payments SET state = @state, tx_hash = COALESCE(@txHash, tx_hash), error_reason = @errorReason,
                        error_message = @errorMessage, updated_at = @now
    WHERE ${KEY} AND (state IN ('submitting', 'submitted') OR (state = 'verified' AND @state = 'failed'))`);
  const release = db.prepare(`DELETE FROM payments WHERE ${KEY} AND state IN ('verified', 'submitting', 'submitted')`);
  const unfinished = db
    .prepare<[], Row>(`SELECT * FROM payments WHERE state IN ('verified', 'submitting', 'submitted') ORDER BY created_at`)
    .safeIntegers(true);

  const get = (key: PaymentKey) => {
    const row = select.get(keyParams(key));
    return row ? toRecord(row) : undefined;
  };
  const mustChange = (result: Database.RunResult, what: string, key: PaymentKey) => {
    if (result.changes !== 1) throw new StoreError(`journal: cannot ${what} ${key.payer}/${key.nonce}: not in the expected state`);
  };

  const claim = db.transaction((payment: NewPayment) => {
    const now = Date.now();
    if (insert.run({ ...payment, ...keyParams(payment), now }).changes === 1) return { claimed: true as const };
    if (takeVerified.run({ ...keyParams(payment), now }).changes === 1) return { claimed: true as const };
    return { claimed: false as const, record: get(payment)! };
  });

  return {
    async get(key) {
      return get(key);
    },
    async reserve(payment) {
      if (insertVerified.run({ ...payment, ...keyParams(payment), now: Date.now() }).changes === 1) return { reserved: true };
      return { reserved: false, record: get(payment)! };
    },
    async claim(payment) {
      return claim.immediate(payment);
    },
    async recordTransaction(key, tx) {
      const params = { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.relayerNonce };
      mustChange(recordTx.run({ ...params, ...keyParams(key), now: Date.now() }), 'record the transaction of', key);
    },
    async finish(key, outcome) {
      const params = {
        ...keyParams(key),
        state: outcome.state,
        txHash: outcome.txHash ?? null,
        errorReason: outcome.state === 'failed' ? outcome.errorReason : null,
        errorMessage: outcome.state === 'failed' ? (outcome.errorMessage ?? null) : null,
        now: Date.now(),
      };
      mustChange(finish.run(params), `mark ${outcome.state}`, key);
    },
    async release(key) {
      release.run(keyParams(key));
    },
    async unfinished() {
      return unfinished.all().map(toRecord);
    },
  };
}
