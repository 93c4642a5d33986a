import { analyticsReport } from '../../operators/analytics.js';
import { type Balance, balanceOf, refusal } from '../../operators/balance.js';
import { type Op, type Params, type Query, type Command, type Runner, all, get, lock, run } from '../engine/statement.js';
import { insertEvents } from '../events/ops.js';
import type { Charge, OperatorStore, Reservation } from './operators.js';
import {
  DAY_MS,
  type OperatorRow,
  type UsageSumRow,
  operatorsSql as sql,
  serverParams,
  toAnyServer,
  toAudit,
  toCharge,
  toOperator,
  toPayout,
  toServer,
  toSubscription,
  toWithdrawal,
} from './statements.js';

function* insertCharges(charges: readonly Charge[]): Op<void> {
  for (const c of charges) yield* run(sql.insertCharge, { ...c, operatorId: c.operatorId ?? null, settleMs: c.settleMs ?? null });
}

function* balance(operatorId: string): Op<Balance> {
  const shares = (yield* get(sql.shares, { operatorId }))!;
  const withdrawn = (yield* get(sql.withdrawn, { operatorId }))!;
  const paidOut = (yield* get(sql.paidOut, { operatorId }))!;
  return balanceOf({
    usdcEarned: shares.usdc_earned ?? 0n,
    usdcPending: shares.usdc_pending ?? 0n,
    usdcWithdrawn: withdrawn.done ?? 0n,
    usdcReserved: withdrawn.reserved ?? 0n,
    fiatEarned: shares.fiat ?? 0n,
    fiatPaidOut: paidOut.done ?? 0n,
    fiatReserved: paidOut.reserved ?? 0n,
    direct: shares.direct ?? 0n,
    invoiced: shares.invoiced ?? 0n,
  });
}

/**
 * A request for money, checked and recorded in one transaction. The operator's row is locked
 * first: on PostgreSQL every request of one operator, from any instance, waits for the one
 * before it to commit, and then sees its reservation (and its idempotency key).
 */
function* reserve<Row, T>(
  request: { id: string; operatorId: string; idempotencyKey: string; amount: bigint; minimum: bigint },
  pick: (b: Balance) => bigint,
  rows: { byKey: Query<{ operatorId: string; idempotencyKey: string }, Row>; byId: Query<{ id: string }, Row>; as: (row: Row) => T },
  insert: (now: number) => Op<number>,
): Op<Reservation<T>> {
  yield* lock(sql.operatorLock, { operatorId: request.operatorId });
  const earlier = yield* get(rows.byKey, request);
  if (earlier) return { ok: true, created: false, record: rows.as(earlier) };
  const refused = refusal(request, pick(yield* balance(request.operatorId)));
  if (refused) return refused;
  yield* insert(Date.now());
  return { ok: true, created: true, record: rows.as((yield* get(rows.byId, { id: request.id }))!) };
}

const withdrawals = { byKey: sql.withdrawalByKey, byId: sql.withdrawalById, as: toWithdrawal };
const payouts = { byKey: sql.payoutByKey, byId: sql.payoutById, as: toPayout };

/** The row as it is now (after this operation's write), or undefined. */
function* reread<Row, T>(statement: Query<{ id: string }, Row>, id: string, as: (row: Row) => T): Op<T | undefined> {
  const row = yield* get(statement, { id });
  return row ? as(row) : undefined;
}

/** The operator store over a backend's runner. */
/** Charges lost to deferred settlements that failed, in an analytics range. */
function* lossesIn(range: { operatorId: string | null; serverId: string | null; from: number; to: number }) {
  const lost = yield* get(sql.losses, range);
  return { count: Number(lost?.count ?? 0n), amount: lost?.amount ?? 0n };
}

export function operatorStore({ read, write }: Runner): OperatorStore {
  const find = <P extends Params, Row, T>(statement: Query<P, Row>, params: NoInfer<P>, as: (row: Row) => T) =>
    read(function* () {
      const row = yield* get(statement, params);
      return row ? as(row) : undefined;
    });
  const list = <P extends Params, Row, T>(statement: Query<P, Row>, params: NoInfer<P>, as: (row: Row) => T) =>
    read(function* () {
      return (yield* all(statement, params)).map(as);
    });
  const change = <P extends Params>(statement: Command<P>, params: NoInfer<P>) =>
    write(function* () {
      yield* run(statement, params);
    });

  return {
    createOperator: (operator) =>
      write(function* () {
        const inserted = yield* run(sql.insertOperator, { ...operator, payoutAddress: operator.payoutAddress ?? null });
        if (inserted !== 1) return { created: false };
        return { created: true, operator: (yield* reread(sql.operatorById, operator.id, toOperator))! };
      }),
    operatorByKeyHash: (hash) => find(sql.operatorByHash, { hash }, (row: OperatorRow) => ({ ...toOperator(row), keyHash: row.key_hash })),
    operator: (id) => find(sql.operatorById, { id }, toOperator),
    operators: () => list(sql.allOperators, {}, toOperator),
    updateOperator: (id, patch) =>
      write(function* () {
        yield* run(sql.updateOperator, {
          id,
          name: patch.name ?? null,
          setPayout: patch.payoutAddress === undefined ? 0 : 1,
          payoutAddress: patch.payoutAddress ?? null,
          status: patch.status ?? null,
          stripeAccount: patch.stripeAccount ?? null,
          now: Date.now(),
        });
        return yield* reread(sql.operatorById, id, toOperator);
      }),

    createServer: (server) =>
      write(function* () {
        // A slug is plain text in a scope's JSON: `"<slug>"` (slugs need no escaping, and hold no LIKE wildcard).
        const named = `%"${server.slug}"%`;
        if (yield* get(sql.slugRetired, { slug: server.slug, named, now: Date.now() })) return { created: false, retired: true };
        if ((yield* run(sql.insertServer, serverParams(server))) === 1) return { created: true };
        return { created: false, retired: false };
      }),
    server: (slug) => find(sql.serverBySlug, { slug }, toServer),
    serverById: (id) => find(sql.serverById, { id }, toAnyServer),
    servedServer: (slug) => find(sql.servedBySlug, { slug }, toServer),
    servers: ({ operatorId, publicOnly } = {}) =>
      list(sql.listServers, { operatorId: operatorId ?? null, publicOnly: publicOnly ? 1 : 0 }, toServer),
    updateServer: (server) => change(sql.updateServer, serverParams(server)),
    deleteServer: (id) => change(sql.deleteServer, { id, now: Date.now() }),

    countCall: (serverId, caller, month) =>
      write(function* () {
        const { calls, delivered } = (yield* get(sql.countCall, { serverId, caller, month }))!;
        return { calls, delivered };
      }),
    uncountCall: (serverId, caller, month) => change(sql.uncountCall, { serverId, caller, month }),
    deliverCall: (serverId, caller, month) => change(sql.deliverCall, { serverId, caller, month }),

    recordCharges: (charges) => write(() => insertCharges(charges)),
    pendingCharges: (limit, rail) => list(sql.pendingCharges, { limit, rail: rail ?? null }, toCharge),
    resolveCreditCharges: () => write(() => run(sql.resolveCreditCharges, {})),
    resolveInvoiceCharges: () => write(() => run(sql.resolveInvoiceCharges, {})),
    resolveCharges: (outcomes) =>
      write(function* () {
        for (const o of outcomes) yield* run(sql.resolveCharge, { ...o, settleMs: o.settleMs ?? null, lost: o.lost ? 1 : 0 });
      }),
    recordCalls: ({ charges, denials, events }) =>
      write(function* () {
        yield* insertCharges(charges);
        for (const d of denials) yield* run(sql.countDenial, d);
        yield* insertEvents(events);
      }),

    balance: (operatorId) => read(() => balance(operatorId)),
    requestWithdrawal: (request) =>
      write(() =>
        reserve(
          request,
          (b) => b.usdcAvailable,
          withdrawals,
          (now) => run(sql.insertWithdrawal, { ...request, now }),
        ),
      ),
    recordWithdrawalTx: async (id, tx) => (await write(() => run(sql.recordWithdrawalTx, { id, ...tx, now: Date.now() }))) === 1,
    finishWithdrawal: (id, outcome) =>
      change(sql.finishWithdrawal, { id, state: outcome.state, error: outcome.state === 'failed' ? outcome.error : null, now: Date.now() }),
    setWaitingForGas: async (id, waiting) => {
      const params = { id, waiting: waiting ? (1 as const) : (0 as const), now: Date.now() };
      return (await write(() => run(sql.setWaitingForGas, params))) === 1;
    },
    withdrawal: (id) => find(sql.withdrawalById, { id }, toWithdrawal),
    withdrawals: (operatorId) => list(sql.withdrawalsOf, { operatorId }, toWithdrawal),
    unfinishedWithdrawals: () => list(sql.unfinishedWithdrawals, {}, toWithdrawal),

    requestPayout: (request) =>
      write(() =>
        reserve(
          request,
          (b) => b.fiatAvailable,
          payouts,
          (now) => run(sql.insertPayout, { ...request, now }),
        ),
      ),
    finishPayout: (id, outcome) =>
      write(function* () {
        const transferId = outcome.state === 'paid' ? outcome.transferId : null;
        const error = outcome.state === 'failed' ? outcome.error : null;
        yield* run(sql.finishPayout, { id, state: outcome.state, transferId, error, now: Date.now() });
        return (yield* reread(sql.payoutById, id, toPayout))!;
      }),
    payouts: (operatorId) => list(sql.payoutsOf, { operatorId }, toPayout),

    saveSubscription: (sub) => change(sql.upsertSubscription, { ...sub, now: Date.now() }),
    subscriptionStatus: (id, status, eventAt) =>
      write(function* () {
        yield* run(sql.setSubscriptionStatus, { id, status, eventAt, now: Date.now() });
        return yield* reread(sql.subscriptionById, id, toSubscription);
      }),
    subscription: (id) => find(sql.subscriptionById, { id }, toSubscription),
    activeSubscription: (keyId, serverId, now) => find(sql.activeSubscription, { keyId, serverId, now }, toSubscription),
    liveSubscriptions: (serverId) => list(sql.liveSubscriptions, { serverId }, toSubscription),

    analytics: ({ operatorId, serverId, from, to }) =>
      read(function* () {
        const params = { operatorId: operatorId ?? null, serverId: serverId ?? null, from, to };
        const days = { ...params, fromDay: Math.floor(from / DAY_MS), toDay: Math.floor((to - 1) / DAY_MS) };
        const usage = function* (statement: Query<typeof params, UsageSumRow>) {
          return (yield* all(statement, params)).map((r) => ({
            key: String(r.key),
            calls: Number(r.calls),
            paidCalls: Number(r.paid),
            revenue: r.revenue ?? 0n,
            operatorShare: r.operator_share ?? 0n,
          }));
        };
        return analyticsReport({
          byDay: yield* usage(sql.byDay),
          byTool: yield* usage(sql.byTool),
          byRail: yield* usage(sql.byRail),
          byCaller: yield* usage(sql.byCaller),
          denials: (yield* all(sql.denials, days)).map((r) => ({ reason: r.reason, count: Number(r.count) })),
          settleMs: (yield* all(sql.settleTimes, params)).map((r) => Number(r.settle_ms)),
          losses: yield* lossesIn(params),
        });
      }),
    audit: (entry) =>
      change(sql.insertAudit, {
        ...entry,
        operatorId: entry.operatorId ?? null,
        target: entry.target ?? null,
        ip: entry.ip ?? null,
        detail: entry.detail ? JSON.stringify(entry.detail) : null,
      }),
    auditLog: ({ operatorId, limit, before }) =>
      list(sql.auditPage, { operatorId: operatorId ?? null, limit, before: before ?? null }, toAudit),
  };
}
