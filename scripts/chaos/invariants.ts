import { type Answer, type Call, answers, delivered } from './calls.js';
import type { Evidence, LedgerRow } from './evidence.js';
import { failingTools, resultTools } from './executions.js';
import { type Theft, smuggles, theftKinds } from './thief.js';
import type { Drain } from './drainers.js';
import type { Delivered } from './receiver.js';

export type Check = { name: string; ok: boolean; summary: string; violations: string[] };

/** How close (ms) to a SIGKILL a delivered credits call may be refunded: the debit closes in batches every 100 ms. */
const CLOSE_WINDOW_MS = 1000;

const sum = (values: bigint[]) => values.reduce((a, b) => a + b, 0n);
const key = (payer: string, nonce: string) => `${payer.toLowerCase()}:${nonce.toLowerCase()}`;
const tally = <T>(items: T[], by: (item: T) => string) => {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(by(item), (counts.get(by(item)) ?? 0) + 1);
  return counts;
};
const check = (name: string, violations: string[], summary: string): Check => ({ name, ok: violations.length === 0, summary, violations });

/**
 * Judges a finished run: the chain, the store and the upstream's execution log against each
 * other and against what the clients sent and saw. The statements are in scripts/chaos.ts.
 */
export function checkInvariants(
  evidence: Evidence,
  calls: Call[],
  thefts: Theft[],
  options: {
    payTo: string;
    payers: string[];
    /** When turnpike was killed with SIGKILL, the final kill included. */
    kills: number[];
    /** When the upstream looped back to turnpike, and for how long (ms). */
    loops: { at: number; ms: number }[];
    /** `--settlement deferred`: the payers who emptied their wallets (to `sink`), and the per-payer cap on deferred payments. */
    drains?: { sink: string; cap: bigint; drainers: Drain[] };
    /** What the webhook receiver took, and when turnpike was last started (after the final kill). */
    events: { delivered: Delivered[]; restartedAt: number; leaseMs: number };
  },
): Check[] {
  const { store, chain, executions } = evidence;
  const payTo = options.payTo.toLowerCase();
  const payers = new Set(options.payers.map((p) => p.toLowerCase()));
  const ran = tally(executions, (e) => e.callId);
  const succeeded = tally(
    executions.filter((e) => resultTools.includes(e.tool)),
    (e) => e.callId,
  );

  const drainers = new Set(options.drains?.drainers.map((d) => d.payer) ?? []);
  const sink = options.drains?.sink.toLowerCase();
  /** USDC a drainer moved away itself: not a payment. */
  const isDrain = (t: { from: string; to: string }) => drainers.has(t.from) && t.to === sink;
  /** A drainer's payment that failed on chain once the wallet was empty (a loss, if it was delivered deferred). */
  const drainedFailure = (r: { payer: string; state: string }) => r.state === 'failed' && drainers.has(r.payer.toLowerCase());
  const losses = store.journal.filter((r) => r.state === 'failed' && r.deferred === 1n);
  const lossByKey = new Map(losses.map((r) => [key(r.payer, r.nonce), r]));
  const settled = store.journal.filter((r) => r.state === 'settled');
  const settledByKey = new Map(settled.map((r) => [key(r.payer, r.nonce), r]));
  const paymentCalls = calls.filter((c) => c.rail === 'x402' && c.nonce && !c.mistake);
  const callOfNonce = new Map(paymentCalls.map((c) => [key(c.payer!, c.nonce!), c]));
  /** Authorizations the thief paid the x402 API in front of turnpike's facilitator with: judged by check 11. */
  const apiPurchases = new Set(thefts.flatMap((t) => (t.authorization ? [key(t.authorization.payer, t.authorization.nonce)] : [])));

  const debits = store.ledger.filter((e) => e.kind === 'debit');
  const refundOf = new Map(store.ledger.filter((e) => e.kind === 'refund').map((e) => [e.idempotency_key.slice('refund:'.length), e]));
  const standing = debits.filter((d) => !refundOf.has(d.id));
  const standingIds = new Set(standing.map((d) => d.id));
  const toolOf = (d: LedgerRow) => (JSON.parse(d.ref ?? '{}') as { tool?: string }).tool;

  const checks: Check[] = [];

  // 1. Conservation: what left the payers arrived at the payee, and is what the journal settled.
  {
    const v: string[] = [];
    const out = chain.transfers.filter((t) => payers.has(t.from) && !isDrain(t));
    for (const t of out.filter((t) => t.to !== payTo)) v.push(`${t.value} left payer ${t.from} for ${t.to}, not the payee (tx ${t.tx})`);
    for (const t of chain.transfers.filter((t) => t.to === payTo && !payers.has(t.from)))
      v.push(`${t.value} reached the payee from ${t.from}, not a payer`);
    const moved = sum(out.map((t) => t.value));
    const drained = sum(chain.transfers.filter(isDrain).map((t) => t.value));
    const payerLoss = sum(options.payers.map((p) => chain.initialPayerBalance - chain.balances.get(p.toLowerCase())!)) - drained;
    const payeeGain = chain.balances.get(payTo)!;
    const journalled = sum(settled.map((r) => r.amount));
    if (new Set([moved, payerLoss, payeeGain, journalled]).size !== 1) {
      v.push(
        `transfers out of payers ${moved}, payers' balances down ${payerLoss}, payee's balance up ${payeeGain}, settled in the journal ${journalled}`,
      );
    }
    checks.push(
      check(
        'USDC that left a payer arrived at the payee, and equals the settled journal',
        v,
        `${out.length} transfers, ${moved} atomic units (${settled.length} settled entries, ${journalled})`,
      ),
    );
  }

  // 2. One-to-one: each authorization used on chain is exactly one settled entry, in that entry's transaction.
  {
    const v: string[] = [];
    const used = tally(chain.authorizationsUsed, (u) => key(u.authorizer, u.nonce));
    for (const [k, n] of used) if (n > 1) v.push(`authorization ${k} used ${n} times on chain`);
    for (const u of chain.authorizationsUsed) {
      const row = settledByKey.get(key(u.authorizer, u.nonce));
      if (!row) v.push(`authorization ${key(u.authorizer, u.nonce)} used on chain (tx ${u.tx}) but not settled in the journal`);
      else if (row.tx_hash?.toLowerCase() !== u.tx)
        v.push(`authorization ${key(u.authorizer, u.nonce)} used in tx ${u.tx}, journal says ${row.tx_hash}`);
    }
    const transfersIn = tally(chain.transfers, (t) => `${t.tx}:${t.from}:${t.to}:${t.value}`);
    for (const row of settled) {
      if (!used.has(key(row.payer, row.nonce))) v.push(`journal settled ${key(row.payer, row.nonce)} but the chain never used it`);
      const slot = `${row.tx_hash?.toLowerCase()}:${row.payer.toLowerCase()}:${row.pay_to.toLowerCase()}:${row.amount}`;
      const left = transfersIn.get(slot) ?? 0;
      if (left === 0) v.push(`no Transfer(${row.payer} → ${row.pay_to}, ${row.amount}) in tx ${row.tx_hash} for ${row.nonce}`);
      transfersIn.set(slot, left - 1);
    }
    const journalTxs = new Set(store.journal.flatMap((r) => (r.tx_hash ? [r.tx_hash.toLowerCase()] : [])));
    const drainedTxs = new Set(store.journal.filter(drainedFailure).flatMap((r) => (r.tx_hash ? [r.tx_hash.toLowerCase()] : [])));
    for (const tx of chain.relayerTransactions) {
      if (!tx.success && !drainedTxs.has(tx.hash)) v.push(`settlement transaction ${tx.hash} reverted`);
      if (!journalTxs.has(tx.hash)) v.push(`relayer transaction ${tx.hash} is in no journal entry`);
    }
    for (const row of store.journal.filter((r) => r.state === 'failed' && r.tx_hash && !drainedFailure(r)))
      v.push(`${key(row.payer, row.nonce)} failed in tx ${row.tx_hash} (${row.error_reason})`);
    checks.push(
      check(
        'each authorization settled at most once, each on-chain use matching one settled journal entry',
        v,
        `${chain.authorizationsUsed.length} authorizations used, ${chain.relayerTransactions.length} relayer transactions, all successful`,
      ),
    );
  }

  // 3. Recovery left nothing half-done.
  {
    const stuck = store.journal.filter((r) => r.state !== 'settled' && r.state !== 'failed');
    const failedWhy = [
      ...tally(
        store.journal.filter((r) => r.state === 'failed'),
        (r) => r.error_reason ?? '?',
      ),
    ]
      .map(([r, n]) => `${r} ${n}`)
      .join(', ');
    checks.push(
      check(
        'no journal entry stuck after recovery',
        stuck.map((r) => `${key(r.payer, r.nonce)} still ${r.state}`),
        `${store.journal.length} entries: ${settled.length} settled, failed: ${failedWhy || 'none'}`,
      ),
    );
  }

  // 4. Charged means run: every payment settled and every debit standing paid for a call whose tool produced its result.
  {
    const v: string[] = [];
    for (const row of settled.filter((r) => !apiPurchases.has(key(r.payer, r.nonce)))) {
      const call = callOfNonce.get(key(row.payer, row.nonce));
      if (!call) v.push(`settled payment ${key(row.payer, row.nonce)} belongs to no call a client made`);
      else if (!succeeded.has(call.callId))
        v.push(`payment of ${call.callId} (${call.tool}) settled, but the tool never produced a result`);
    }
    const requestOf = new Map(store.requests.map((r) => [r.debit_id, r.idempotency_key]));
    const plainStanding = new Map<string, number>();
    for (const d of standing) {
      const idem = requestOf.get(d.id);
      if (idem !== undefined && !succeeded.has(idem))
        v.push(`debit ${d.id} (Idempotency-Key ${idem}) stands, but that call never produced a result`);
      if (idem === undefined) plainStanding.set(d.key_id, (plainStanding.get(d.key_id) ?? 0) + 1);
    }
    for (const c of calls.filter((c) => c.rail === 'credits' && !c.mistake)) {
      for (const a of delivered(c))
        if (a.entry && standingIds.has(a.entry) && !succeeded.has(c.callId))
          v.push(`debit ${a.entry} of ${c.callId} stands without a result`);
    }
    // Without an Idempotency-Key the store does not name the call: count per key instead.
    for (const [keyId, n] of plainStanding) {
      const results = calls
        .filter((c) => c.rail === 'credits' && c.keyId === keyId && !c.idempotencyKey && !c.mistake)
        .reduce((s, c) => s + (succeeded.get(c.callId) ?? 0), 0);
      if (n > results)
        v.push(`key ${keyId}: ${n} standing debits without an Idempotency-Key, but only ${results} results produced for such calls`);
    }
    const results = executions.filter((e) => resultTools.includes(e.tool)).length;
    const summary = `${settled.length} payments settled, ${standing.length} debits standing, ${results} results produced`;
    checks.push(check('every charge paid for exactly one call whose tool produced its result', v, summary));
  }

  // 5. No failed call charged.
  {
    const v: string[] = [];
    const failing = paymentCalls.filter((c) => failingTools.includes(c.tool));
    for (const c of failing) if (settledByKey.has(key(c.payer!, c.nonce!))) v.push(`${c.callId} (${c.tool}) was settled`);
    for (const d of standing)
      if ((failingTools as string[]).includes(toolOf(d) ?? '')) v.push(`debit ${d.id} for ${toolOf(d)} was not refunded`);
    const failedDebits = debits.filter((d) => (failingTools as string[]).includes(toolOf(d) ?? '')).length;
    const summary = `${failing.length} x402 and ${failedDebits} credits calls of failing tools`;
    checks.push(check('no failed call was charged (or it was refunded)', v, summary));
  }

  // 6. Delivered means charged (once).
  {
    const v: string[] = [];
    for (const c of paymentCalls.filter((c) => delivered(c).length > 0)) {
      const k = key(c.payer!, c.nonce!);
      // A drainer's deferred payment that failed after delivery is a loss (check 13), not a free result.
      if (!settledByKey.has(k) && !(lossByKey.has(k) && drainers.has(c.payer!)))
        v.push(`${c.callId} got its result but its payment is not settled`);
    }
    for (const c of calls.filter((c) => c.rail === 'credits' && !c.mistake)) {
      for (const a of delivered(c)) if (!a.entry) v.push(`${c.callId} got a result without its debit`);
      // Judged by the first answer showing the entry; later ones are replays of that answer.
      const firstShown = new Map<string, Answer>();
      for (const a of delivered(c).sort((x, y) => x.at - y.at)) if (a.entry && !firstShown.has(a.entry)) firstShown.set(a.entry, a);
      for (const [entry, a] of firstShown) {
        if (standingIds.has(entry)) continue;
        const refund = refundOf.get(entry);
        const closeToKill = options.kills.some((k) => Math.abs(k - a.at) <= CLOSE_WINDOW_MS);
        // An answer stored before a kill whose debit the kill left open, replayed after the restart.
        const storedBeforeKill = a.replayed === true && options.kills.some((k) => k < a.at);
        if (!refund?.reason.includes('cut off') || !(closeToKill || storedBeforeKill)) {
          const nearest = options.kills.map((k) => k - a.at).sort((x, y) => Math.abs(x) - Math.abs(y))[0];
          v.push(
            `${c.callId} got a result${a.replayed ? ' (replayed)' : ''}, but its debit ${entry} was ${refund ? `refunded (${refund.reason})` : 'not found'}; nearest SIGKILL ${nearest} ms after that answer`,
          );
        }
      }
      const entries = new Set(delivered(c).flatMap((a) => (a.entry && standingIds.has(a.entry) ? [a.entry] : [])));
      if (c.idempotencyKey && entries.size > 1)
        v.push(`Idempotency-Key ${c.idempotencyKey} charged ${entries.size} times: ${[...entries].join(', ')}`);
    }
    const x402Delivered = paymentCalls.filter((c) => delivered(c).length > 0).length;
    // A settled payment's result was kept before it settled: its client gets it, on a retry if a kill cut the answer off.
    const paidUndelivered = paymentCalls.filter((c) => delivered(c).length === 0 && settledByKey.has(key(c.payer!, c.nonce!)));
    for (const c of paidUndelivered) {
      const last = c.rounds.at(-1)?.answers ?? [];
      if (!last.every((a) => a.status === 'connection'))
        v.push(`${c.callId} paid (settled) but never got its result: last answers ${last.map((a) => a.reason ?? a.kind).join('; ')}`);
    }
    const redelivered = paymentCalls.filter((c) => delivered(c).length > 0 && answers(c).some((a) => a.status === 'connection')).length;
    checks.push(
      check(
        'every result delivered was charged, once; every settled payment’s result delivered',
        v,
        `${x402Delivered} x402 results delivered (${redelivered} after an answer a kill cut off; ${paidUndelivered.length} still cut off when the client gave up)`,
      ),
    );
  }

  // 7. Concurrent copies run once; only a retry after an answer without the result runs again.
  {
    const v: string[] = [];
    for (const c of calls.filter((c) => !c.mistake)) {
      const bound = c.rail === 'credits' && !c.idempotencyKey ? c.rounds.reduce((s, r) => s + r.copies, 0) : c.rounds.length;
      const n = ran.get(c.callId) ?? 0;
      if (n > bound)
        v.push(`${c.callId} ran ${n} times in ${c.rounds.length} rounds of ${c.rounds.map((r) => r.copies).join('+')} requests`);
    }
    const copies = calls.filter((c) => c.rounds.some((r) => r.copies > 1)).length;
    checks.push(
      check(
        'concurrent copies of one payment or Idempotency-Key ran the tool once per round',
        v,
        `${copies} calls sent as concurrent copies, ${calls.filter((c) => c.rounds.length > 1).length} retried`,
      ),
    );
  }

  // 8. Client mistakes: refused without running the tool, never with a 5xx.
  {
    // A reused Idempotency-Key is free again once its first debit was refunded (a kill cut it off, the
    // upstream failed): the request is then a new one, no mistake, and may run (or meet a failing upstream).
    const keyFreed = (c: (typeof calls)[number]) => {
      if (c.mistake !== 'reused_idempotency_key') return false;
      const reused = c.reuses ? calls.find((o) => o.callId === c.reuses) : undefined;
      return !delivered(reused!).some((a) => a.entry && standingIds.has(a.entry));
    };
    const mistakes = calls.filter((c) => c.mistake);
    const fivexx = mistakes
      .filter((c) => !keyFreed(c))
      .flatMap((c) =>
        answers(c)
          .filter((a) => typeof a.status === 'number' && a.status >= 500)
          .map((a) => `${c.callId} (${c.mistake}) answered HTTP ${a.status}: ${a.reason ?? a.kind}`),
      );
    checks.push(
      check(
        'turnpike never answered a client’s mistake with a 5xx',
        fivexx,
        `${mistakes.length} mistakes: ${[...tally(mistakes, (c) => c.mistake!)].map(([k, n]) => `${k} ${n}`).join(', ')}`,
      ),
    );
    const v: string[] = [];
    for (const c of mistakes) {
      if (ran.has(c.callId) && !keyFreed(c)) v.push(`${c.callId} (${c.mistake}) ran the tool`);
      if (delivered(c).length > 0 && !keyFreed(c)) v.push(`${c.callId} (${c.mistake}) got a result`);
    }
    checks.push(
      check(
        'no client mistake (garbage, replayed payment, reused Idempotency-Key) ran the tool',
        v,
        `${mistakes.filter((c) => c.mistake === 'replayed_payment').length} replayed payments refused`,
      ),
    );
  }

  // 9. The ledger adds up.
  {
    const v: string[] = [];
    const running = new Map<string, bigint>();
    for (const e of store.ledger) {
      const after = (running.get(e.key_id) ?? 0n) + e.amount;
      running.set(e.key_id, after);
      if (after !== e.balance_after) v.push(`entry ${e.id}: balance after ${e.balance_after}, entries sum to ${after}`);
      if (after < 0n) v.push(`key ${e.key_id} went negative (${after}) at entry ${e.id}`);
    }
    for (const k of store.keys) {
      if (k.balance !== (running.get(k.id) ?? 0n)) v.push(`key ${k.id}: balance ${k.balance}, ledger sums to ${running.get(k.id) ?? 0n}`);
      if (k.balance < 0n) v.push(`key ${k.id}: negative balance ${k.balance}`);
    }
    checks.push(
      check(
        'credit balances equal the sum of their ledger entries and are never negative',
        v,
        `${store.keys.length} keys, ${store.ledger.length} entries, balances ${store.keys.map((k) => k.balance).join(', ')}`,
      ),
    );
  }

  // 10. Every debit closed: refunded at most once, in full, or standing.
  {
    const v: string[] = [];
    if (store.openDebits > 0) v.push(`${store.openDebits} debits still open after recovery`);
    const debitById = new Map(debits.map((d) => [d.id, d]));
    for (const [debitId, refund] of refundOf) {
      const debit = debitById.get(debitId);
      if (!debit) v.push(`refund ${refund.id} of ${debitId}, which is no debit`);
      else if (refund.amount !== -debit.amount || refund.key_id !== debit.key_id)
        v.push(`refund ${refund.id} (${refund.amount}) does not undo debit ${debitId} (${debit.amount})`);
    }
    for (const [debit, n] of tally(
      store.ledger.filter((e) => e.kind === 'refund'),
      (e) => e.idempotency_key,
    ))
      if (n > 1) v.push(`${debit} refunded ${n} times`);
    const cutOff = [...refundOf.values()].filter((r) => r.reason.includes('cut off')).length;
    checks.push(
      check(
        'no debit left open after recovery; each refunded at most once, in full',
        v,
        `${debits.length} debits: ${standing.length} charged, ${refundOf.size} refunded (${cutOff} cut off by a kill)`,
      ),
    );
  }
  // 11. The thief got nothing it did not pay for (what clients did pay for is checks 2 and 6).
  {
    const v: string[] = [];
    for (const t of thefts) {
      for (const s of t.stolen) v.push(`${t.kind} ${t.callId} got ${s}`);
      if (smuggles.includes(t.kind)) {
        const not4xx = t.statuses.filter((s) => s !== 'connection' && (s < 400 || s >= 500));
        for (const s of not4xx) v.push(`${t.kind} ${t.callId} answered HTTP ${s}, not a 4xx`);
        if (ran.has(t.callId)) v.push(`${t.kind} ${t.callId} ran the tool`);
      }
      if (t.authorization) {
        const what = `authorization ${key(t.authorization.payer, t.authorization.nonce)}`;
        const paid = settledByKey.has(key(t.authorization.payer, t.authorization.nonce)) ? 1 : 0;
        // Settled yet not served: the settlement's answer was cut off (the payer paid for nothing, as check 6 reports for MCP).
        const cutOff = paid === 1 && t.served === 0 && t.statuses.some((s) => s === 'connection' || s >= 402);
        const served = `was served ${t.served} times by the x402 API, settled ${paid} times (copies answered ${t.statuses.join(', ')})`;
        if (t.served! > 1 || (t.served !== paid && !cutOff)) v.push(`${what} ${served}`);
      }
    }
    const byKind = theftKinds.map((k) => `${k} ${thefts.filter((t) => t.kind === k).length}`).join(', ');
    const name = 'the thief got no priced result (resumed or standalone stream, forged signature, smuggled body, copies of a payment)';
    checks.push(check(name, v, `${thefts.length} attempts: ${byKind}`));
  }

  // 12. A looping upstream: turnpike refused the loop at once (508) and stayed healthy.
  {
    const v: string[] = [];
    const during = calls.flatMap((c) =>
      answers(c)
        .filter((a) => a.sent !== undefined && options.loops.some((l) => a.sent! >= l.at && a.at <= l.at + l.ms))
        .map((a) => ({ c, a })),
    );
    for (const { c, a } of during) {
      if (typeof a.status === 'number' && a.status >= 500 && ![502, 503, 508].includes(a.status))
        v.push(`${c.callId} (${c.tool}) answered HTTP ${a.status} during a loop: ${a.reason ?? a.kind}`);
    }
    const refused = during.filter(({ a }) => a.status === 508).length;
    const name = 'turnpike answered every request during an upstream loop without a 5xx other than 502, 503 or 508';
    checks.push(
      check(name, v, `${options.loops.length} loops, ${during.length} requests sent and answered during one, ${refused} refused with 508`),
    );
  }
  // 13. Deferred settlement: losses only by drainers, each within the cap, and a drainer with losses refused.
  if (options.drains) {
    const { cap } = options.drains;
    const v: string[] = [];
    for (const r of store.journal.filter((r) => r.state === 'failed' && r.tx_hash && !drainers.has(r.payer.toLowerCase())))
      v.push(`${key(r.payer, r.nonce)} of an honest payer failed on chain (${r.error_reason})`);
    const lost = new Map<string, bigint>();
    for (const r of losses) lost.set(r.payer.toLowerCase(), (lost.get(r.payer.toLowerCase()) ?? 0n) + r.amount);
    for (const [payer, amount] of lost) if (amount > cap) v.push(`payer ${payer} lost ${amount}, over the cap of ${cap}`);
    for (const d of options.drains.drainers) {
      if (!lost.has(d.payer) || !d.probe) continue;
      const refused = answers(d.probe).some((a) => a.kind === 'challenge' && a.reason?.includes('payer_has_unsettled_losses'));
      if (!refused)
        v.push(`drainer ${d.payer} has losses but its next call was answered ${answers(d.probe).map((a) => a.reason ?? a.kind)}`);
      if (ran.has(d.probe.callId)) v.push(`drainer ${d.payer}'s call after its losses ran the tool`);
    }
    const drained = options.drains.drainers.filter((d) => d.drainedAt !== undefined).length;
    const summary = `${drained} wallets emptied after delivery; losses ${[...lost].map(([p, a]) => `${p.slice(0, 8)}… ${a}`).join(', ') || 'none'} (cap ${cap} each)`;
    checks.push(
      check(
        'deferred settlement: losses only by payers who emptied their wallets, each within the cap, and those payers refused',
        v,
        summary,
      ),
    );
  }
  // 14. Events out: every recorded event delivered, signed, as recorded; every charge has its call.paid event.
  {
    const v: string[] = [];
    const { delivered: got, restartedAt, leaseMs } = options.events;
    const recorded = new Map(store.events.map((e) => [e.id, e]));
    const bodies = new Map<string, Set<string>>();
    for (const d of got) {
      const event = recorded.get(d.eventId);
      if (!d.signed) v.push(`event ${d.eventId} was delivered with a signature that does not verify`);
      if (!event) v.push(`event ${d.eventId} was delivered but is not in the store`);
      else if (d.body !== event.payload) v.push(`event ${d.eventId} was delivered with a body other than the one stored`);
      bodies.set(d.eventId, (bodies.get(d.eventId) ?? new Set()).add(d.body));
    }
    for (const [id, b] of bodies) if (b.size > 1) v.push(`event ${id} was delivered with ${b.size} different bodies`);
    const signedIds = new Set(got.filter((d) => d.signed).map((d) => d.eventId));
    // A delivery a kill cut off mid-attempt stays claimed by the dead process until its lease runs out (then it is sent again).
    const heldByDead = new Set(
      store.deliveries
        .filter((d) => d.state === 'pending' && d.lease_until !== null && Number(d.lease_until) - leaseMs < restartedAt)
        .map((d) => d.event_id),
    );
    let held = 0;
    for (const e of store.events) {
      if (signedIds.has(e.id)) continue;
      if (heldByDead.has(e.id)) held++;
      else v.push(`event ${e.id} (${e.type}) is in the store but was never delivered with a valid signature`);
    }

    // call.paid names no payment or debit: count per rail, caller, tool and amount.
    type Paid = { rail?: string; tool?: string; amount?: string; caller?: { payer?: string; keyId?: string } };
    const paid = store.events.filter((e) => e.type === 'call.paid').map((e) => JSON.parse(e.payload) as Paid);
    const slot = (rail: string, who: string, tool: string | undefined, amount: bigint) => `${rail} ${who.toLowerCase()} ${tool} ${amount}`;
    const events = tally(paid, (e) => slot(e.rail ?? '?', e.caller?.payer ?? e.caller?.keyId ?? '?', e.tool, BigInt(e.amount ?? '0')));
    const bounds = new Map<string, { least: number; most: number }>();
    const bound = (k: string, least: number, most: number) => {
      const b = bounds.get(k) ?? { least: 0, most: 0 };
      bounds.set(k, { least: b.least + least, most: b.most + most });
    };
    // Credits: a debit closes only after its charge and event are written, so each standing debit has its event; a
    // debit the crash sweep refunded may have one too.
    for (const d of debits) bound(slot('credits', d.key_id, toolOf(d), -d.amount), standingIds.has(d.id) ? 1 : 0, 1);
    // x402: the charge and event ride the 100 ms batch after the payment is journalled, so a kill may lose the event of
    // a settled payment whose call a kill cut (a SIGKILL while it was asked, or within 1 s of its last answer).
    let cut = 0;
    for (const r of [...settled, ...losses]) {
      const call = callOfNonce.get(key(r.payer, r.nonce));
      if (!call || apiPurchases.has(key(r.payer, r.nonce))) continue;
      const from = Math.min(...answers(call).map((a) => a.sent ?? a.at));
      const until = Math.max(...answers(call).map((a) => a.at)) + CLOSE_WINDOW_MS;
      const killed = options.kills.some((k) => k >= from && k <= until);
      const certain = r.state === 'settled' && !killed;
      if (r.state === 'settled' && killed) cut++;
      bound(slot('x402', r.payer, call.tool, r.amount), certain ? 1 : 0, 1);
    }
    for (const [k, n] of events) {
      if (!k.startsWith('credits ') && !k.startsWith('x402 ')) continue;
      const b = bounds.get(k) ?? { least: 0, most: 0 };
      if (n > b.most) v.push(`${n} call.paid events for ${k}, but only ${b.most} charges`);
    }
    for (const [k, b] of bounds) {
      const n = events.get(k) ?? 0;
      if (n < b.least) v.push(`${b.least} charges for ${k} that must have their call.paid event, but ${n} events`);
    }
    const railCount = (rail: string) => paid.filter((e) => e.rail === rail).length;
    checks.push(
      check(
        'every recorded event was delivered, signed and as recorded; every standing debit and settled payment has its call.paid event',
        v,
        `${store.events.length} events recorded, ${got.length} deliveries taken (${signedIds.size} events), ${held} held by a killed process's lease; ` +
          `call.paid: ${railCount('credits')} credits for ${standing.length} standing debits, ${railCount('x402')} x402 for ${settled.length} settled payments ` +
          `(${cut} cut by a kill may lack theirs); matched per rail, caller, tool and amount, as an event names no payment`,
      ),
    );
  }
  return checks;
}
