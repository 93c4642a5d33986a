import { type Op, type Runner, all, get, lock, run } from '../engine/statement.js';
import { StoreError } from '../store.js';
import type { Address, Hex } from 'viem';
import type {
  Deferral,
  NewPayment,
  PaymentJournal,
  PaymentKey,
  PaymentRecord,
  PaymentState,
  PayerKey,
  SettlementOutcome,
} from './journal.js';
import { journalSql as sql, keyParams, toRecord } from './statements.js';

function* record(key: PaymentKey): Op<PaymentRecord | undefined> {
  const row = yield* get(sql.select, keyParams(key));
  return row ? toRecord(row) : undefined;
}

const notExpected = (what: string, key: PaymentKey) =>
  new StoreError(`journal: cannot ${what} ${key.payer}/${key.nonce}: not in the expected state`);

/** A transition that must move its row: anything else is a bug of the caller's, thrown (and rolled back). */
function* mustChange(changed: Op<number>, what: string, key: PaymentKey): Op<void> {
  if ((yield* changed) !== 1) throw notExpected(what, key);
}

const UNFINISHED_STATES: readonly PaymentState[] = ['verified', 'submitting', 'submitted'];

/**
 * A transition of a claim only its holder makes: true once it moved the row; false, changing
 * nothing, when the row is unfinished and another instance holds it (took it over: see `adopt`).
 * Anything else (no row, or not in the expected state) is a bug of the caller's, thrown.
 *
 * @example yield* holderMoves(run(sql.finish, params), owner, 'mark settled', key) // false: adopted by another instance
 */
function* holderMoves(changed: Op<number>, owner: string, what: string, key: PaymentKey): Op<boolean> {
  if ((yield* changed) === 1) return true;
  const row = yield* record(key);
  if (row && row.owner !== owner && UNFINISHED_STATES.includes(row.state)) return false;
  throw notExpected(what, key);
}

const payerParams = (p: PayerKey) => ({ chainId: p.chainId, asset: p.asset, payer: p.payer });

/** The `deferring_payers` row of a whole token (`0x`: no address spells it): locked while the instance-wide bound is judged. */
const EVERY_PAYER: Address = '0x';

/** Whether `payment` may be delivered before its receipt (see `Deferral`), the payer locked meanwhile. */
function* mayDefer(payment: NewPayment, { balance, cap, total }: Deferral): Op<boolean> {
  yield* run(sql.addPayer, payerParams(payment));
  yield* lock(sql.lockPayer, payerParams(payment));
  const lost = yield* get(sql.losses, payerParams(payment));
  if (lost && lost.count > 0n) return false;
  const exposure = yield* get(sql.exposure, keyParams(payment));
  const held = exposure?.held ?? 0n;
  const deferred = exposure?.deferred ?? 0n;
  if (balance < held + payment.amount || deferred + payment.amount > cap) return false;
  // Every payer's at once, under the token's own row (always taken after the payer's: no deadlock),
  // so that concurrent claims of different payers, on any instance, never pass the bound together.
  const token = { chainId: payment.chainId, asset: payment.asset, payer: EVERY_PAYER };
  yield* run(sql.addPayer, token);
  yield* lock(sql.lockPayer, token);
  const atRisk = (yield* get(sql.atRisk, keyParams(payment)))?.amount ?? 0n;
  return atRisk + payment.amount <= total;
}

/** Takes `payment` for settlement (see `PaymentJournal.claim`). */
function* claimOp(payment: NewPayment, owner: string, defer?: Deferral) {
  const now = Date.now();
  const claimed =
    (yield* run(sql.insert, { ...payment, ...keyParams(payment), owner, now })) === 1 ||
    (yield* run(sql.takeVerified, { ...keyParams(payment), purpose: payment.purpose, owner, now })) === 1;
  if (!claimed) return { claimed: false as const, record: (yield* record(payment))! };
  const deferred = defer !== undefined && (yield* mayDefer(payment, defer));
  if (deferred) yield* run(sql.markDeferred, keyParams(payment));
  return { claimed: true as const, deferred };
}

const finishParams = (key: PaymentKey, outcome: SettlementOutcome) => ({
  ...keyParams(key),
  state: outcome.state,
  txHash: outcome.txHash ?? null,
  errorReason: outcome.state === 'failed' ? outcome.errorReason : null,
  errorMessage: outcome.state === 'failed' ? (outcome.errorMessage ?? null) : null,
  excused: outcome.state === 'failed' && outcome.excused ? 1 : 0,
  now: Date.now(),
});

/**
 * The payments journal over a backend's runner: every transition is one guarded UPDATE or INSERT.
 * On PostgreSQL (READ COMMITTED) a concurrent INSERT of the same key waits for the first to commit
 * and then does nothing, and a guarded UPDATE re-checks its WHERE on the row it locked: exactly one
 * caller reserves or claims a payment, across every instance on the database. On SQLite settlement
 * steps share group commits with each other and the ledger; a hold or a kept result is not synced
 * on its own (see `PaymentJournal`): the claim's sync covers it.
 */
export function journalStore({ read, write, unsynced }: Runner, owner: string): PaymentJournal {
  return {
    get: (key) => read(() => record(key)),
    reserve: (payment) =>
      unsynced(function* () {
        const inserted = yield* run(sql.insertVerified, { ...payment, ...keyParams(payment), owner, now: Date.now() });
        if (inserted === 1) return { reserved: true as const };
        return { reserved: false as const, record: (yield* record(payment))! };
      }),
    claim: (payment: NewPayment, defer?: Deferral) => write(() => claimOp(payment, owner, defer)),
    claimCovered: (payment: NewPayment, balance: bigint, defer?: Deferral, spent: readonly Hex[] = []) =>
      write(function* () {
        yield* run(sql.addPayer, payerParams(payment));
        yield* lock(sql.lockPayer, payerParams(payment));
        const counted = (yield* all(sql.inFlight, keyParams(payment))).filter((r) => !spent.includes(r.nonce as Hex));
        const inFlight = counted.reduce((sum, r) => sum + r.amount, 0n);
        if (balance < inFlight + payment.amount) {
          // Taken by someone else already: that answer, not the balance's.
          const known = yield* record(payment);
          if (!known || (known.state === 'verified' && known.purpose === payment.purpose)) {
            return { claimed: false as const, short: inFlight, counted: counted.map((r) => r.nonce as Hex) };
          }
          return { claimed: false as const, record: known };
        }
        return yield* claimOp(payment, owner, defer);
      }),
    recordTransaction: (key, tx) =>
      write(() => {
        const params = { txHash: tx.txHash, rawTx: tx.rawTx, relayer: tx.relayer, relayerNonce: tx.relayerNonce };
        return mustChange(run(sql.recordTx, { ...params, ...keyParams(key), owner, now: Date.now() }), 'record the transaction of', key);
      }),
    finish: (key, outcome) =>
      write(() => holderMoves(run(sql.finish, { ...finishParams(key, outcome), owner }), owner, `mark ${outcome.state}`, key)),
    adopt: (key, from) =>
      write(function* () {
        return (yield* run(sql.adopt, { ...keyParams(key), owner, from })) === 1 ? yield* record(key) : undefined;
      }),
    failHold: (key, why) =>
      write(function* () {
        return (yield* run(sql.failHold, { ...keyParams(key), ...why, now: Date.now() })) === 1;
      }),
    answeredPending: (key) =>
      write(function* () {
        yield* run(sql.answeredPending, keyParams(key));
      }),
    takePendingAnswer: (key) =>
      write(function* () {
        return (yield* run(sql.takePendingAnswer, keyParams(key))) === 1;
      }),
    release: (key) =>
      write(function* () {
        return (yield* run(sql.release, { ...keyParams(key), owner })) === 1;
      }),
    releaseHold: (key) =>
      write(function* () {
        yield* run(sql.releaseHold, keyParams(key));
      }),
    unfinished: (filter) =>
      read(function* () {
        return (yield* filter ? all(sql.unfinishedOf, filter) : all(sql.unfinished, {})).map(toRecord);
      }),
    unfinishedOwners: () =>
      read(function* () {
        return (yield* all(sql.unfinishedOwners, {})).map((r) => r.owner);
      }),
    keepResult: (key, kept) =>
      unsynced(function* () {
        yield* run(sql.keepResult, { ...keyParams(key), call: kept.call, result: kept.result, caller: kept.caller ?? null });
      }),
    keptResult: (key) =>
      read(function* () {
        const row = yield* get(sql.keptResult, keyParams(key));
        return row && { call: row.call, result: row.result, ...(row.caller !== null ? { caller: row.caller } : {}) };
      }),
    losses: (payer) =>
      read(function* () {
        const row = yield* get(sql.losses, payerParams(payer));
        return { count: Number(row?.count ?? 0n), amount: row?.amount ?? 0n };
      }),
    allLosses: () =>
      read(function* () {
        return (yield* all(sql.allLosses, {})).map(toRecord);
      }),
    clearLosses: (payer) => write(() => run(sql.clearLosses, { payer: payer.toLowerCase(), now: Date.now() })),
    forgetResults: (now) =>
      write(function* () {
        yield* run(sql.forgetResults, { now });
      }),
  };
}
