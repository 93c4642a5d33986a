import type { Address, Hex } from 'viem';
import { command, query } from '../engine/statement.js';
import type { PaymentKey, PaymentRecord, PaymentState, SettlementOutcome } from './journal.js';

/** A payments row as both backends return it (BIGINT as bigint). */
export type Row = {
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
  owner: string | null;
  purpose: string;
  pending_answered: bigint | number;
  deferred: bigint | number;
  created_at: bigint;
  updated_at: bigint;
};

const KEY = 'chain_id = @chainId AND asset = @asset AND payer = @payer AND nonce = @nonce';

export const keyParams = (k: PaymentKey) => ({ chainId: k.chainId, asset: k.asset, payer: k.payer, nonce: k.nonce });

export function toRecord(r: Row): PaymentRecord {
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
    purpose: r.purpose,
    pendingAnswered: Number(r.pending_answered) === 1,
    deferred: Number(r.deferred) === 1,
    ...(r.owner ? { owner: r.owner } : {}),
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

type Key = ReturnType<typeof keyParams>;
type Payer = Omit<Key, 'nonce'>;
const PAYER = 'chain_id = @chainId AND asset = @asset AND payer = @payer';
const UNFINISHED = "state IN ('verified', 'submitting', 'submitted')";
const LOSS = "deferred = 1 AND state = 'failed' AND loss_cleared_at IS NULL";
/** A deferred payment not settled and not cleared: unfinished, or a loss (the `payments_deferred_at_risk` index). */
const AT_RISK = "deferred = 1 AND state <> 'settled' AND loss_cleared_at IS NULL";
type Now = { now: number };
/** The instance a transition is asked by: only the row's holder (`payments.owner`) moves it. */
type Owner = { owner: string };
type Insert = Key &
  Now & {
    payTo: string;
    amount: bigint;
    validAfter: bigint;
    validBefore: bigint;
    signature: string;
    network: string;
    purpose: string;
    owner: string;
  };
const insert = (state: 'verified' | 'submitting') =>
  command<Insert>(`
    INSERT INTO payments (chain_id, asset, payer, nonce, pay_to, amount, valid_after, valid_before, signature,
                          network, purpose, state, owner, created_at, updated_at)
    VALUES (@chainId, @asset, @payer, @nonce, @payTo, @amount, @validAfter, @validBefore, @signature,
            @network, @purpose, '${state}', @owner, @now, @now)
    ON CONFLICT (chain_id, asset, payer, nonce) DO NOTHING`);

/** The journal's statements, for both backends. */
export const journalSql = {
  select: query<Key, Row>(`SELECT * FROM payments WHERE ${KEY}`),
  insert: insert('submitting'),
  insertVerified: insert('verified'),
  takeVerified: command<Key & Now & { purpose: string; owner: string }>(`
    UPDATE payments SET state = 'submitting', owner = @owner, updated_at = @now
    WHERE ${KEY} AND state = 'verified' AND purpose = @purpose`),
  recordTx: command<Key & Now & Owner & { txHash: string; rawTx: string; relayer: string; relayerNonce: number }>(`
    UPDATE payments SET state = 'submitted', tx_hash = @txHash, raw_tx = @rawTx, relayer = @relayer,
                        relayer_nonce = @relayerNonce, updated_at = @now
    WHERE ${KEY} AND state IN ('submitting', 'submitted') AND owner = @owner`),
  finish: command<
    Key &
      Now &
      Owner & {
        state: SettlementOutcome['state'];
        txHash: string | null;
        errorReason: string | null;
        errorMessage: string | null;
        excused: number;
      }
  >(`
    UPDATE payments SET state = @state, tx_hash = COALESCE(@txHash, tx_hash), error_reason = @errorReason,
                        error_message = @errorMessage, updated_at = @now,
                        loss_cleared_at = CASE WHEN @excused = 1 THEN @now ELSE loss_cleared_at END
    WHERE ${KEY} AND state IN ('submitting', 'submitted') AND owner = @owner`),
  // Leaves updated_at alone: it dates the row's last state change (a remote ask's age is judged by it).
  adopt: command<Key & Owner & { from: string | null }>(`
    UPDATE payments SET owner = @owner WHERE ${KEY} AND ${UNFINISHED} AND owner IS NOT DISTINCT FROM @from`),
  failHold: command<Key & Now & { errorReason: string; errorMessage: string }>(`
    UPDATE payments SET state = 'failed', error_reason = @errorReason, error_message = @errorMessage, updated_at = @now
    WHERE ${KEY} AND state = 'verified'`),
  // The flag leaves updated_at alone: it dates the row's last state change (revenue reads settlement time from it).
  // A payment whose call result is kept (a gateway's: it delivers on `settlement_pending`) becomes
  // deferred here: its result leaves before the receipt, so a failure then is a loss, never a release.
  answeredPending: command<Key>(`
    UPDATE payments SET pending_answered = 1,
      deferred = CASE WHEN EXISTS (
        SELECT 1 FROM paid_results r WHERE r.chain_id = payments.chain_id AND r.asset = payments.asset
          AND r.payer = payments.payer AND r.nonce = payments.nonce AND r.call = payments.purpose) THEN 1 ELSE deferred END
    WHERE ${KEY}`),
  takePendingAnswer: command<Key>(
    `UPDATE payments SET pending_answered = 0 WHERE ${KEY} AND pending_answered = 1 AND state IN ('settled', 'failed')`,
  ),
  release: command<Key & Owner>(`DELETE FROM payments WHERE ${KEY} AND ${UNFINISHED} AND owner = @owner`),
  releaseHold: command<Key>(`DELETE FROM payments WHERE ${KEY} AND state = 'verified'`),
  unfinished: query<{}, Row>(`SELECT * FROM payments WHERE state IN ('verified', 'submitting', 'submitted') ORDER BY created_at`),
  unfinishedOf: query<{ owner: string | null }, Row>(
    `SELECT * FROM payments WHERE state IN ('verified', 'submitting', 'submitted') AND owner IS NOT DISTINCT FROM @owner ORDER BY created_at`,
  ),
  unfinishedOwners: query<{}, { owner: string | null }>(
    `SELECT DISTINCT owner FROM payments WHERE state IN ('verified', 'submitting', 'submitted')`,
  ),
  // A payer's row in deferring_payers, locked while one of their payments is judged for deferral (see `claim`).
  addPayer: command<Payer>(`INSERT INTO deferring_payers (chain_id, asset, payer) VALUES (@chainId, @asset, @payer)
    ON CONFLICT (chain_id, asset, payer) DO NOTHING`),
  lockPayer: query<Payer, { payer: string }>(`SELECT payer FROM deferring_payers WHERE ${PAYER}`, { lockable: true }),
  /** What a payer's other unfinished payments hold: all of them, and those delivered before their receipt. */
  exposure: query<Key, { held: bigint | null; deferred: bigint | null }>(`
    SELECT SUM(amount) AS held, SUM(CASE WHEN deferred = 1 THEN amount ELSE 0 END) AS deferred
    FROM payments WHERE ${PAYER} AND ${UNFINISHED} AND nonce <> @nonce`),
  /**
   * What every payer's deferred payments on a token put at risk (unfinished, or lost and not
   * cleared), but the payment judged: by its whole key, since a nonce is each payer's own to pick
   * and any number of fresh addresses may sign the same one.
   */
  atRisk: query<Key, { amount: bigint | null }>(`
    SELECT SUM(amount) AS amount FROM payments
    WHERE chain_id = @chainId AND asset = @asset AND ${AT_RISK} AND NOT (payer = @payer AND nonce = @nonce)`),
  /** A payer's other claimed payments (sent, or about to be), oldest first: what they will take from their balance. */
  inFlight: query<Key, { nonce: string; amount: bigint }>(`
    SELECT nonce, amount FROM payments
    WHERE ${PAYER} AND state IN ('submitting', 'submitted') AND nonce <> @nonce ORDER BY created_at`),
  markDeferred: command<Key>(`UPDATE payments SET deferred = 1 WHERE ${KEY} AND state = 'submitting'`),
  losses: query<Payer, { count: bigint; amount: bigint | null }>(
    `SELECT COUNT(*) AS count, SUM(amount) AS amount FROM payments WHERE ${PAYER} AND ${LOSS}`,
  ),
  allLosses: query<{}, Row>(`SELECT * FROM payments WHERE ${LOSS} ORDER BY updated_at`),
  clearLosses: command<{ payer: string } & Now>(`UPDATE payments SET loss_cleared_at = @now WHERE payer = @payer AND ${LOSS}`),
  keepResult: command<Key & { call: string; result: string; caller: string | null }>(`
    INSERT INTO paid_results (chain_id, asset, payer, nonce, call, result, caller)
    VALUES (@chainId, @asset, @payer, @nonce, @call, @result, @caller)
    ON CONFLICT (chain_id, asset, payer, nonce) DO UPDATE SET call = excluded.call, result = excluded.result, caller = excluded.caller`),
  keptResult: query<Key, { call: string; result: string; caller: string | null }>(
    `SELECT call, result, caller FROM paid_results WHERE ${KEY}`,
  ),
  // A result is given back only with a payment that can still be presented: one whose row is gone
  // (released) or whose authorization expired has nobody left to ask for it.
  forgetResults: command<Now>(`
    DELETE FROM paid_results WHERE NOT EXISTS (
      SELECT 1 FROM payments p
      WHERE p.chain_id = paid_results.chain_id AND p.asset = paid_results.asset AND p.payer = paid_results.payer
        AND p.nonce = paid_results.nonce AND p.valid_before >= @now)`),
};
