import type { Balance, OperatorStore, Reservation } from './operators.js';
import {
  DAY_MS,
  type DenialRow,
  type Lockable,
  type OperatorRow,
  type OperatorsSql,
  type SharesRow,
  type SumsRow,
  type UsageSumRow,
  refusal,
  serverParams,
  toAnalytics,
  toAnyServer,
  toAudit,
  toBalance,
  toCharge,
  toOperator,
  toPayout,
  toServer,
  toSubscription,
  toWithdrawal,
} from './operators-rows.js';

/**
 * The operator store written once for both backends, as the credits ledger is: each operation is
 * a generator that yields the statements it needs and is handed back their results. SQLite runs
 * it synchronously inside its group commit; PostgreSQL awaits each statement in a transaction.
 */
export type OperatorStep =
  /** `get`: the first row; `all`: the rows; `run`: how many rows changed. */
  | { kind: 'get' | 'all' | 'run'; sql: OperatorsSql; params: Record<string, unknown> }
  /** A `get` whose row stays locked until the transaction ends (PostgreSQL). */
  | { kind: 'lock'; sql: Lockable; params: Record<string, unknown> };
export type OperatorOp<T> = Generator<OperatorStep, T, unknown>;
/** How a backend runs operations: `write` in a transaction of its own, `read` as it is. */
export type OperatorRunner = {
  read<T>(op: () => OperatorOp<T>): Promise<T>;
  write<T>(op: () => OperatorOp<T>): Promise<T>;
};

function* ask<T>(step: OperatorStep): OperatorOp<T> {
  return (yield step) as T;
}
const get = <Row>(sql: OperatorsSql, params: Record<string, unknown> = {}) => ask<Row | undefined>({ kind: 'get', sql, params });
const all = <Row>(sql: OperatorsSql, params: Record<string, unknown>) => ask<Row[]>({ kind: 'all', sql, params });
const run = (sql: OperatorsSql, params: Record<string, unknown>) => ask<number>({ kind: 'run', sql, params });

function* balance(operatorId: string): OperatorOp<Balance> {
  const shares = (yield* get<SharesRow>('shares', { operatorId }))!;
  const withdrawn = (yield* get<SumsRow>('withdrawn', { operatorId }))!;
  const paidOut = (yield* get<SumsRow>('paidOut', { operatorId }))!;
  return toBalance(shares, withdrawn, paidOut);
}

/**
 * A request for money, checked and recorded in one transaction. The operator's row is locked
 * first: on PostgreSQL every request of one operator, from any instance, waits for the one
 * before it to commit, and then sees its reservation (and its idempotency key).
 */
function* reserve<Row, T>(
  request: { id: string; operatorId: string; idempotencyKey: string; amount: bigint; minimum: bigint },
  pick: (b: Balance) => bigint,
  rows: { byKey: OperatorsSql; insert: OperatorsSql; byId: OperatorsSql; as: (row: Row) => T },
): OperatorOp<Reservation<T>> {
  yield* ask({ kind: 'lock', sql: 'operatorLock', params: { operatorId: request.operatorId } });
  const earlier = yield* get<Row>(rows.byKey, request);
  if (earlier) return { ok: true, created: false, record: rows.as(earlier) };
  const refused = refusal(request, pick(yield* balance(request.operatorId)));
  if (refused) return refused;
  yield* run(rows.insert, { ...request, now: Date.now() });
  return { ok: true, created: true, record: rows.as((yield* get<Row>(rows.byId, { id: request.id }))!) };
}

/** The row as it is now (after this operation's write), or undefined. */
function* reread<Row, T>(sql: OperatorsSql, id: string, as: (row: Row) => T): OperatorOp<T | undefined> {
  const row = yield* get<Row>(sql, { id });
  return row ? as(row) : undefined;
}

export function operatorOps({ read, write }: OperatorRunner): OperatorStore {
  const find = <Row, T>(sql: OperatorsSql, params: Record<string, unknown>, as: (row: Row) => T) =>
    read(function* () {
      const row = yield* get<Row>(sql, params);
      return row ? as(row) : undefined;
    });
  const list = <Row, T>(sql: OperatorsSql, params: Record<string, unknown>, as: (row: Row) => T) =>
    read(function* () {
      return (yield* all<Row>(sql, params)).map(as);
    });
  const change = (sql: OperatorsSql, params: Record<string, unknown>) =>
    write(function* () {
      yield* run(sql, params);
    });

  return {
    createOperator: (operator) =>
      write(function* () {
        if ((yield* run('insertOperator', { ...operator, payoutAddress: operator.payoutAddress ?? null })) !== 1) return { created: false };
        return { created: true, operator: (yield* reread('operatorById', operator.id, toOperator))! };
      }),
    operatorByKeyHash: (hash) => find('operatorByHash', { hash }, (row: OperatorRow) => ({ ...toOperator(row), keyHash: row.key_hash })),
    operator: (id) => find('operatorById', { id }, toOperator),
    operators: () => list('allOperators', {}, toOperator),
    updateOperator: (id, patch) =>
      write(function* () {
        yield* run('updateOperator', {
          id,
          name: patch.name ?? null,
          setPayout: patch.payoutAddress === undefined ? 0 : 1,
          payoutAddress: patch.payoutAddress ?? null,
          status: patch.status ?? null,
          stripeAccount: patch.stripeAccount ?? null,
          now: Date.now(),
        });
        return yield* reread('operatorById', id, toOperator);
      }),

    createServer: (server) =>
      write(function* () {
        // A slug is plain text in a scope's JSON: `"<slug>"` (slugs need no escaping, and hold no LIKE wildcard).
        const named = `%"${server.slug}"%`;
        if (yield* get('slugRetired', { slug: server.slug, named, now: Date.now() })) return { created: false, retired: true };
        if ((yield* run('insertServer', serverParams(server))) === 1) return { created: true };
        return { created: false, retired: false };
      }),
    server: (slug) => find('serverBySlug', { slug }, toServer),
    serverById: (id) => find('serverById', { id }, toAnyServer),
    servedServer: (slug) => find('servedBySlug', { slug }, toServer),
    servers: (filter = {}) => list('listServers', { operatorId: filter.operatorId ?? null, publicOnly: filter.publicOnly ? 1 : 0 }, toServer),
    updateServer: (server) => change('updateServer', serverParams(server)),
    deleteServer: (id) => change('deleteServer', { id, now: Date.now() }),

    countCall: (serverId, caller, month) =>
      write(function* () {
        return (yield* get<{ calls: bigint }>('countCall', { serverId, caller, month }))!.calls;
      }),
    uncountCall: (serverId, caller, month) => change('uncountCall', { serverId, caller, month }),

    recordCharges: (charges) =>
      write(function* () {
        for (const c of charges) yield* run('insertCharge', { ...c, operatorId: c.operatorId ?? null, settleMs: c.settleMs ?? null });
      }),
    pendingCharges: (limit, rail) => list('pendingCharges', { limit, rail: rail ?? null }, toCharge),
    resolveCreditCharges: () => write(() => run('resolveCreditCharges', {})),
    resolveCharges: (outcomes) =>
      write(function* () {
        for (const o of outcomes) yield* run('resolveCharge', { ...o, settleMs: o.settleMs ?? null });
      }),
    countDenials: (counts) =>
      write(function* () {
        for (const c of counts) yield* run('countDenial', c);
      }),

    balance: (operatorId) => read(() => balance(operatorId)),
    requestWithdrawal: (request) =>
      write(() =>
        reserve(request, (b) => b.usdcAvailable, { byKey: 'withdrawalByKey', insert: 'insertWithdrawal', byId: 'withdrawalById', as: toWithdrawal }),
      ),
    recordWithdrawalTx: (id, tx) => change('recordWithdrawalTx', { id, ...tx, now: Date.now() }),
    finishWithdrawal: (id, outcome) =>
      change('finishWithdrawal', { id, state: outcome.state, error: outcome.state === 'failed' ? outcome.error : null, now: Date.now() }),
    setWaitingForGas: async (id, waiting) => {
      const params = { id, waiting: waiting ? 1 : 0, now: Date.now() };
      return (await write(() => run('setWaitingForGas', params))) === 1;
    },
    withdrawal: (id) => find('withdrawalById', { id }, toWithdrawal),
    withdrawals: (operatorId) => list('withdrawalsOf', { operatorId }, toWithdrawal),
    unfinishedWithdrawals: () => list('unfinishedWithdrawals', {}, toWithdrawal),

    requestPayout: (request) =>
      write(() => reserve(request, (b) => b.fiatAvailable, { byKey: 'payoutByKey', insert: 'insertPayout', byId: 'payoutById', as: toPayout })),
    finishPayout: (id, outcome) =>
      write(function* () {
        const transferId = outcome.state === 'paid' ? outcome.transferId : null;
        yield* run('finishPayout', { id, state: outcome.state, transferId, error: outcome.state === 'failed' ? outcome.error : null, now: Date.now() });
        return (yield* reread('payoutById', id, toPayout))!;
      }),
    payouts: (operatorId) => list('payoutsOf', { operatorId }, toPayout),

    saveSubscription: (sub) => change('upsertSubscription', { ...sub, now: Date.now() }),
    subscriptionStatus: (id, status, eventAt) =>
      write(function* () {
        yield* run('setSubscriptionStatus', { id, status, eventAt, now: Date.now() });
        return yield* reread('subscriptionById', id, toSubscription);
      }),
    subscription: (id) => find('subscriptionById', { id }, toSubscription),
    activeSubscription: (keyId, serverId, now) => find('activeSubscription', { keyId, serverId, now }, toSubscription),
    liveSubscriptions: (serverId) => list('liveSubscriptions', { serverId }, toSubscription),

    analytics: ({ operatorId, serverId, from, to }) =>
      read(function* () {
        const params = { operatorId: operatorId ?? null, serverId: serverId ?? null, from, to };
        const days = { ...params, fromDay: Math.floor(from / DAY_MS), toDay: Math.floor((to - 1) / DAY_MS) };
        return toAnalytics({
          byDay: yield* all<UsageSumRow>('byDay', params),
          byTool: yield* all<UsageSumRow>('byTool', params),
          byRail: yield* all<UsageSumRow>('byRail', params),
          byCaller: yield* all<UsageSumRow>('byCaller', params),
          denials: yield* all<DenialRow>('denials', days),
          settleTimes: yield* all<{ settle_ms: bigint }>('settleTimes', params),
        });
      }),
    audit: (entry) =>
      change('insertAudit', {
        ...entry,
        operatorId: entry.operatorId ?? null,
        target: entry.target ?? null,
        ip: entry.ip ?? null,
        detail: entry.detail ? JSON.stringify(entry.detail) : null,
      }),
    auditLog: ({ operatorId, limit, before }) => list('auditPage', { operatorId: operatorId ?? null, limit, before: before ?? null }, toAudit),
  };
}
