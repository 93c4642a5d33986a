import type Database from 'better-sqlite3';
import type { Address, Hex } from 'viem';
import { groupCommit } from './group-commit.js';
import type { AuditEntry, Charge, OperatorRecord, OperatorStore, Payout, Reservation, ServerRecord, Subscription, UsageRow, Withdrawal } from './operators.js';

type OperatorRow = {
  id: string;
  email: string;
  name: string;
  key_hash: string;
  payout_address: string | null;
  stripe_account: string | null;
  status: OperatorRecord['status'];
  created_at: bigint;
  updated_at: bigint;
};
type PayoutRow = {
  id: string;
  operator_id: string;
  amount: bigint;
  destination: string;
  idempotency_key: string;
  state: Payout['state'];
  transfer_id: string | null;
  error: string | null;
  created_at: bigint;
  updated_at: bigint;
};
type SubscriptionRow = { id: string; key_id: string; server: string; status: string; current_period_end: bigint; event_at: bigint };
type ServerRow = {
  id: string;
  operator_id: string;
  slug: string;
  name: string;
  upstream_url: string;
  auth_mode: 'none' | 'header' | 'query';
  auth_name: string | null;
  auth_secret: string | null;
  public: bigint;
  custody: ServerRecord['custody'];
  pay_to: string | null;
  plan: string;
  challenge: ServerRecord['challenge'];
  timeout_ms: bigint;
  created_at: bigint;
  updated_at: bigint;
};
type ChargeRow = {
  id: string;
  server: string;
  operator_id: string | null;
  rail: Charge['rail'];
  caller: string;
  tool: string;
  amount: bigint;
  operator_share: bigint;
  platform_share: bigint;
  custody: Charge['custody'];
  ref: string;
  state: Charge['state'];
  settle_ms: bigint | null;
  created_at: bigint;
};
type WithdrawalRow = {
  id: string;
  operator_id: string;
  amount: bigint;
  to_address: string;
  idempotency_key: string;
  state: Withdrawal['state'];
  tx_hash: string | null;
  raw_tx: string | null;
  error: string | null;
  created_at: bigint;
  updated_at: bigint;
};
type AuditRow = { id: string; at: bigint; actor: string; operator_id: string | null; action: string; target: string | null; ip: string | null; detail: string | null };

const toOperator = (r: OperatorRow): OperatorRecord => ({
  id: r.id,
  email: r.email,
  name: r.name,
  ...(r.payout_address ? { payoutAddress: r.payout_address as Address } : {}),
  ...(r.stripe_account ? { stripeAccount: r.stripe_account } : {}),
  status: r.status,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

const toServer = (r: ServerRow): ServerRecord => ({
  id: r.id,
  operatorId: r.operator_id,
  slug: r.slug,
  name: r.name,
  upstreamUrl: r.upstream_url,
  auth: r.auth_mode === 'none' ? { mode: 'none' } : { mode: r.auth_mode, name: r.auth_name!, sealedSecret: r.auth_secret! },
  public: r.public === 1n,
  custody: r.custody,
  ...(r.pay_to ? { payTo: r.pay_to as Address } : {}),
  plan: JSON.parse(r.plan) as unknown,
  challenge: r.challenge,
  timeoutMs: Number(r.timeout_ms),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

const serverParams = (s: ServerRecord) => ({
  id: s.id,
  operatorId: s.operatorId,
  slug: s.slug,
  name: s.name,
  upstreamUrl: s.upstreamUrl,
  authMode: s.auth.mode,
  authName: s.auth.mode === 'none' ? null : s.auth.name,
  authSecret: s.auth.mode === 'none' ? null : s.auth.sealedSecret,
  public: s.public ? 1 : 0,
  custody: s.custody,
  payTo: s.payTo ?? null,
  plan: JSON.stringify(s.plan, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
  challenge: s.challenge,
  timeoutMs: s.timeoutMs,
  createdAt: s.createdAt,
  updatedAt: s.updatedAt,
});

const toCharge = (r: ChargeRow): Charge => ({
  id: r.id,
  server: r.server,
  ...(r.operator_id ? { operatorId: r.operator_id } : {}),
  rail: r.rail,
  caller: r.caller,
  tool: r.tool,
  amount: r.amount,
  operatorShare: r.operator_share,
  platformShare: r.platform_share,
  custody: r.custody,
  ref: r.ref,
  state: r.state,
  ...(r.settle_ms !== null ? { settleMs: Number(r.settle_ms) } : {}),
  createdAt: Number(r.created_at),
});

const toWithdrawal = (r: WithdrawalRow): Withdrawal => ({
  id: r.id,
  operatorId: r.operator_id,
  amount: r.amount,
  to: r.to_address as Address,
  idempotencyKey: r.idempotency_key,
  state: r.state,
  ...(r.tx_hash ? { txHash: r.tx_hash as Hex } : {}),
  ...(r.raw_tx ? { rawTx: r.raw_tx as Hex } : {}),
  ...(r.error ? { error: r.error } : {}),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

const toPayout = (r: PayoutRow): Payout => ({
  id: r.id,
  operatorId: r.operator_id,
  amount: r.amount,
  destination: r.destination,
  idempotencyKey: r.idempotency_key,
  state: r.state,
  ...(r.transfer_id ? { transferId: r.transfer_id } : {}),
  ...(r.error ? { error: r.error } : {}),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

const toSubscription = (r: SubscriptionRow): Subscription => ({
  id: r.id,
  keyId: r.key_id,
  server: r.server,
  status: r.status,
  currentPeriodEnd: Number(r.current_period_end),
  eventAt: Number(r.event_at),
});

const toAudit = (r: AuditRow): AuditEntry => ({
  id: r.id,
  at: Number(r.at),
  actor: r.actor,
  ...(r.operator_id ? { operatorId: r.operator_id } : {}),
  action: r.action,
  ...(r.target ? { target: r.target } : {}),
  ...(r.ip ? { ip: r.ip } : {}),
  ...(r.detail ? { detail: JSON.parse(r.detail) as Record<string, unknown> } : {}),
});

const DAY_MS = 86_400_000;

/** The check-then-write of a request for money; runs inside the caller's transaction. */
function reserve<Row, T>(
  request: { amount: bigint; minimum: bigint },
  available: () => bigint,
  rows: { earlier: () => Row | undefined; insert: () => void; read: () => Row; as: (row: Row) => T },
): Reservation<T> {
  const earlier = rows.earlier();
  if (earlier) return { ok: true, created: false, record: rows.as(earlier) };
  const left = available();
  if (request.amount < request.minimum) return { ok: false, reason: 'below_minimum', available: left };
  if (request.amount > left) return { ok: false, reason: 'insufficient_balance', available: left };
  rows.insert();
  return { ok: true, created: true, record: rows.as(rows.read()) };
}

/** Nearest-rank percentile of sorted values. */
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

/**
 * Operators, their servers, call counts, charges, withdrawals and the audit log on SQLite. Writes
 * share the connection's group commit with the ledger; a check-then-write (a withdrawal against
 * the available balance) runs inside one of its `BEGIN IMMEDIATE` transactions.
 */
export function sqliteOperators(db: Database.Database): OperatorStore {
  const write = groupCommit(db);
  const q = <Row>(sql: string) => db.prepare<Record<string, unknown>, Row>(sql).safeIntegers(true);
  const x = (sql: string) => db.prepare<Record<string, unknown>>(sql);

  const insertOperator = x(`
    INSERT INTO operators (id, email, name, key_hash, payout_address, created_at, updated_at)
    VALUES (@id, @email, @name, @keyHash, @payoutAddress, @createdAt, @createdAt) ON CONFLICT (email) DO NOTHING`);
  const operatorById = q<OperatorRow>('SELECT * FROM operators WHERE id = @id');
  const operatorByHash = q<OperatorRow>('SELECT * FROM operators WHERE key_hash = @hash');
  const allOperators = q<OperatorRow>('SELECT * FROM operators ORDER BY created_at, id');
  const updateOperator = x(`
    UPDATE operators SET name = COALESCE(@name, name),
      payout_address = CASE WHEN @setPayout = 1 THEN @payoutAddress ELSE payout_address END,
      stripe_account = COALESCE(@stripeAccount, stripe_account),
      status = COALESCE(@status, status), updated_at = @now WHERE id = @id`);

  const insertServer = x(`
    INSERT INTO servers (id, operator_id, slug, name, upstream_url, auth_mode, auth_name, auth_secret, public, custody, pay_to, plan, challenge, timeout_ms, created_at, updated_at)
    VALUES (@id, @operatorId, @slug, @name, @upstreamUrl, @authMode, @authName, @authSecret, @public, @custody, @payTo, @plan, @challenge, @timeoutMs, @createdAt, @updatedAt)
    ON CONFLICT (slug) DO NOTHING`);
  const updateServer = x(`
    UPDATE servers SET name = @name, upstream_url = @upstreamUrl, auth_mode = @authMode, auth_name = @authName, auth_secret = @authSecret,
      public = @public, custody = @custody, pay_to = @payTo, plan = @plan, challenge = @challenge, timeout_ms = @timeoutMs, updated_at = @updatedAt
    WHERE id = @id`);
  const deleteServer = x('DELETE FROM servers WHERE id = @id');
  const serverBySlug = q<ServerRow>('SELECT * FROM servers WHERE slug = @slug');
  const listServers = q<ServerRow>(`
    SELECT * FROM servers WHERE (@operatorId IS NULL OR operator_id = @operatorId) AND (@publicOnly = 0 OR public = 1) ORDER BY created_at, id`);
  const setMeta = x(`INSERT INTO meta (key, value, updated_at) VALUES ('servers-version', @v, @v)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`);
  const serversVersion = q<{ v: bigint | null }>(`SELECT MAX(v) AS v FROM (
    SELECT MAX(updated_at) AS v FROM servers UNION ALL SELECT updated_at AS v FROM meta WHERE key = 'servers-version')`);

  const countCall = q<{ calls: bigint }>(`
    INSERT INTO usage_counts (server, caller, month, calls) VALUES (@server, @caller, @month, 1)
    ON CONFLICT (server, caller, month) DO UPDATE SET calls = calls + 1 RETURNING calls`);
  const uncountCall = x('UPDATE usage_counts SET calls = calls - 1 WHERE server = @server AND caller = @caller AND month = @month AND calls > 0');

  const insertCharge = x(`
    INSERT INTO charges (id, server, operator_id, rail, caller, tool, amount, operator_share, platform_share, custody, ref, state, settle_ms, created_at)
    VALUES (@id, @server, @operatorId, @rail, @caller, @tool, @amount, @operatorShare, @platformShare, @custody, @ref, @state, @settleMs, @createdAt)
    ON CONFLICT (ref) DO NOTHING`);
  const pending = q<ChargeRow>(`SELECT * FROM charges WHERE state = 'pending' ORDER BY created_at LIMIT @limit`);
  const resolveCharge = x(`UPDATE charges SET state = @state, settle_ms = @settleMs WHERE id = @id AND state = 'pending'`);
  const countDenial = x(`
    INSERT INTO denial_counts (server, day, reason, count) VALUES (@server, @day, @reason, @count)
    ON CONFLICT (server, day, reason) DO UPDATE SET count = count + excluded.count`);

  const shares = q<{ usdc_earned: bigint | null; usdc_pending: bigint | null; fiat: bigint | null; direct: bigint | null }>(`
    SELECT
      SUM(CASE WHEN rail = 'x402' AND custody = 'platform' AND state = 'earned' THEN operator_share END) AS usdc_earned,
      SUM(CASE WHEN rail = 'x402' AND custody = 'platform' AND state = 'pending' THEN operator_share END) AS usdc_pending,
      SUM(CASE WHEN rail IN ('credits', 'subscription') AND state = 'earned' THEN operator_share END) AS fiat,
      SUM(CASE WHEN rail = 'x402' AND custody = 'direct' AND state = 'earned' THEN operator_share END) AS direct
    FROM charges WHERE operator_id = @operatorId`);
  const withdrawn = q<{ done: bigint | null; reserved: bigint | null }>(`
    SELECT SUM(CASE WHEN state = 'confirmed' THEN amount END) AS done,
           SUM(CASE WHEN state IN ('requested', 'submitted') THEN amount END) AS reserved
    FROM withdrawals WHERE operator_id = @operatorId`);
  const paidOut = q<{ done: bigint | null; reserved: bigint | null }>(`
    SELECT SUM(CASE WHEN state = 'paid' THEN amount END) AS done, SUM(CASE WHEN state = 'requested' THEN amount END) AS reserved
    FROM payouts WHERE operator_id = @operatorId`);
  const insertPayout = x(`
    INSERT INTO payouts (id, operator_id, amount, destination, idempotency_key, state, created_at, updated_at)
    VALUES (@id, @operatorId, @amount, @destination, @idempotencyKey, 'requested', @now, @now)`);
  const payoutById = q<PayoutRow>('SELECT * FROM payouts WHERE id = @id');
  const payoutByKey = q<PayoutRow>('SELECT * FROM payouts WHERE operator_id = @operatorId AND idempotency_key = @idempotencyKey');
  const payoutsOf = q<PayoutRow>('SELECT * FROM payouts WHERE operator_id = @operatorId ORDER BY created_at DESC, id DESC');
  const finishPayout = x(`UPDATE payouts SET state = @state, transfer_id = @transferId, error = @error, updated_at = @now WHERE id = @id AND state = 'requested'`);
  const upsertSubscription = x(`
    INSERT INTO subscriptions (id, key_id, server, status, current_period_end, event_at, updated_at)
    VALUES (@id, @keyId, @server, @status, @currentPeriodEnd, @eventAt, @now)
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, current_period_end = excluded.current_period_end,
      event_at = excluded.event_at, updated_at = excluded.updated_at
    WHERE excluded.event_at >= subscriptions.event_at`);
  const setSubscriptionStatus = x(`UPDATE subscriptions SET status = @status, event_at = @eventAt, updated_at = @now WHERE id = @id AND event_at <= @eventAt`);
  const subscriptionById = q<SubscriptionRow>('SELECT * FROM subscriptions WHERE id = @id');
  const activeSubscription = q<SubscriptionRow>(`
    SELECT * FROM subscriptions WHERE key_id = @keyId AND server = @server AND status IN ('active', 'trialing') AND current_period_end > @now
    ORDER BY current_period_end DESC LIMIT 1`);
  const insertWithdrawal = x(`
    INSERT INTO withdrawals (id, operator_id, amount, to_address, idempotency_key, state, created_at, updated_at)
    VALUES (@id, @operatorId, @amount, @to, @idempotencyKey, 'requested', @now, @now)`);
  const withdrawalById = q<WithdrawalRow>('SELECT * FROM withdrawals WHERE id = @id');
  const withdrawalByKey = q<WithdrawalRow>('SELECT * FROM withdrawals WHERE operator_id = @operatorId AND idempotency_key = @idempotencyKey');
  const withdrawalsOf = q<WithdrawalRow>('SELECT * FROM withdrawals WHERE operator_id = @operatorId ORDER BY created_at DESC, id DESC');
  const unfinished = q<WithdrawalRow>(`SELECT * FROM withdrawals WHERE state IN ('requested', 'submitted') ORDER BY created_at, id`);
  const recordTx = x(`UPDATE withdrawals SET state = 'submitted', tx_hash = @txHash, raw_tx = @rawTx, updated_at = @now WHERE id = @id AND state IN ('requested', 'submitted')`);
  const finish = x(`UPDATE withdrawals SET state = @state, error = @error, updated_at = @now WHERE id = @id AND state IN ('requested', 'submitted')`);

  const insertAudit = x(`INSERT INTO audit_log (id, at, actor, operator_id, action, target, ip, detail) VALUES (@id, @at, @actor, @operatorId, @action, @target, @ip, @detail)`);
  const auditPage = q<AuditRow>(`
    SELECT * FROM audit_log WHERE (@operatorId IS NULL OR operator_id = @operatorId) AND (@before IS NULL OR id < @before)
    ORDER BY id DESC LIMIT @limit`);

  /** The WHERE clause every analytics query shares: the range and the operator's (or one server's) charges. */
  const scope = `created_at >= @from AND created_at < @to AND (@operatorId IS NULL OR operator_id = @operatorId) AND (@server IS NULL OR server = @server)`;
  const grouped = (key: string, order = 'key', limit = 10_000) =>
    q<{ key: string | bigint; calls: bigint; paid: bigint; revenue: bigint | null; operator_share: bigint | null }>(`
      SELECT ${key} AS key, COUNT(*) AS calls, SUM(CASE WHEN rail <> 'free' THEN 1 ELSE 0 END) AS paid,
             SUM(CASE WHEN state = 'earned' THEN amount END) AS revenue,
             SUM(CASE WHEN state = 'earned' THEN operator_share END) AS operator_share
      FROM charges WHERE state <> 'void' AND ${scope} GROUP BY ${key} ORDER BY ${order} LIMIT ${limit}`);
  const byDay = grouped(`created_at / ${DAY_MS}`);
  const byTool = grouped('tool');
  const byRail = grouped('rail');
  const byCaller = grouped('caller', 'revenue DESC, calls DESC', 50);
  const denials = q<{ reason: string; count: bigint }>(`
    SELECT reason, SUM(count) AS count FROM denial_counts
    WHERE day >= @fromDay AND day <= @toDay AND (@server IS NULL OR server = @server)
      AND (@operatorId IS NULL OR server IN (SELECT slug FROM servers WHERE operator_id = @operatorId))
    GROUP BY reason ORDER BY count DESC`);
  const settleTimes = q<{ settle_ms: bigint }>(`SELECT settle_ms FROM charges WHERE settle_ms IS NOT NULL AND state <> 'void' AND ${scope} ORDER BY settle_ms LIMIT 100000`);

  const usageRow = (r: { key: string | bigint; calls: bigint; paid: bigint; revenue: bigint | null; operator_share: bigint | null }, key: (k: string | bigint) => string): UsageRow => ({
    key: key(r.key),
    calls: Number(r.calls),
    paidCalls: Number(r.paid),
    revenue: r.revenue ?? 0n,
    operatorShare: r.operator_share ?? 0n,
  });

  const balanceOf = (operatorId: string) => {
    const s = shares.get({ operatorId })!;
    const w = withdrawn.get({ operatorId })!;
    const usdcEarned = s.usdc_earned ?? 0n;
    const usdcWithdrawn = w.done ?? 0n;
    const usdcReserved = w.reserved ?? 0n;
    const p = paidOut.get({ operatorId })!;
    const fiatEarned = s.fiat ?? 0n;
    const fiatPaidOut = p.done ?? 0n;
    const fiatReserved = p.reserved ?? 0n;
    return {
      usdcEarned,
      usdcPending: s.usdc_pending ?? 0n,
      usdcWithdrawn,
      usdcReserved,
      usdcAvailable: usdcEarned - usdcWithdrawn - usdcReserved,
      fiatEarned,
      fiatPaidOut,
      fiatReserved,
      fiatAvailable: fiatEarned - fiatPaidOut - fiatReserved,
      direct: s.direct ?? 0n,
    };
  };

  return {
    createOperator: (operator) =>
      write(() => {
        const { changes } = insertOperator.run({ ...operator, payoutAddress: operator.payoutAddress ?? null });
        return changes === 1 ? { created: true, operator: toOperator(operatorById.get({ id: operator.id })!) } : { created: false };
      }),
    async operatorByKeyHash(hash) {
      const row = operatorByHash.get({ hash });
      return row ? { ...toOperator(row), keyHash: row.key_hash } : undefined;
    },
    async operator(id) {
      const row = operatorById.get({ id });
      return row ? toOperator(row) : undefined;
    },
    async operators() {
      return allOperators.all({}).map(toOperator);
    },
    updateOperator: (id, patch) =>
      write(() => {
        updateOperator.run({
          id,
          name: patch.name ?? null,
          setPayout: patch.payoutAddress === undefined ? 0 : 1,
          payoutAddress: patch.payoutAddress ?? null,
          status: patch.status ?? null,
          stripeAccount: patch.stripeAccount ?? null,
          now: Date.now(),
        });
        const row = operatorById.get({ id });
        return row ? toOperator(row) : undefined;
      }),

    createServer: (server) => write(() => ({ created: insertServer.run(serverParams(server)).changes === 1 })),
    async server(slug) {
      const row = serverBySlug.get({ slug });
      return row ? toServer(row) : undefined;
    },
    async servers(filter = {}) {
      return listServers.all({ operatorId: filter.operatorId ?? null, publicOnly: filter.publicOnly ? 1 : 0 }).map(toServer);
    },
    updateServer: (server) => write(() => void updateServer.run(serverParams(server))),
    deleteServer: (id) =>
      write(() => {
        deleteServer.run({ id });
        setMeta.run({ v: Date.now() });
      }),
    async serversVersion() {
      return Number(serversVersion.get({})?.v ?? 0n);
    },

    countCall: (server, caller, month) => write(() => countCall.get({ server, caller, month })!.calls),
    uncountCall: (server, caller, month) => write(() => void uncountCall.run({ server, caller, month })),

    recordCharges: (charges) =>
      write(() => {
        for (const c of charges) insertCharge.run({ ...c, operatorId: c.operatorId ?? null, settleMs: c.settleMs ?? null });
      }),
    async pendingCharges(limit) {
      return pending.all({ limit }).map(toCharge);
    },
    resolveCharges: (outcomes) =>
      write(() => {
        for (const o of outcomes) resolveCharge.run({ ...o, settleMs: o.settleMs ?? null });
      }),
    countDenials: (counts) =>
      write(() => {
        for (const c of counts) countDenial.run(c);
      }),

    async balance(operatorId) {
      return balanceOf(operatorId);
    },
    requestWithdrawal: (request) =>
      write(() =>
        reserve(request, () => balanceOf(request.operatorId).usdcAvailable, {
          earlier: () => withdrawalByKey.get(request),
          insert: () => insertWithdrawal.run({ ...request, now: Date.now() }),
          read: () => withdrawalById.get({ id: request.id })!,
          as: toWithdrawal,
        }),
      ),
    recordWithdrawalTx: (id, tx) => write(() => void recordTx.run({ id, ...tx, now: Date.now() })),
    finishWithdrawal: (id, outcome) =>
      write(() => void finish.run({ id, state: outcome.state, error: outcome.state === 'failed' ? outcome.error : null, now: Date.now() })),
    async withdrawal(id) {
      const row = withdrawalById.get({ id });
      return row ? toWithdrawal(row) : undefined;
    },
    async withdrawals(operatorId) {
      return withdrawalsOf.all({ operatorId }).map(toWithdrawal);
    },
    async unfinishedWithdrawals() {
      return unfinished.all({}).map(toWithdrawal);
    },

    requestPayout: (request) =>
      write(() =>
        reserve(request, () => balanceOf(request.operatorId).fiatAvailable, {
          earlier: () => payoutByKey.get(request),
          insert: () => insertPayout.run({ ...request, now: Date.now() }),
          read: () => payoutById.get({ id: request.id })!,
          as: toPayout,
        }),
      ),
    finishPayout: (id, outcome) =>
      write(() => {
        finishPayout.run({ id, state: outcome.state, transferId: outcome.state === 'paid' ? outcome.transferId : null, error: outcome.state === 'failed' ? outcome.error : null, now: Date.now() });
        return toPayout(payoutById.get({ id })!);
      }),
    async payouts(operatorId) {
      return payoutsOf.all({ operatorId }).map(toPayout);
    },
    saveSubscription: (sub) => write(() => void upsertSubscription.run({ ...sub, now: Date.now() })),
    subscriptionStatus: (id, status, eventAt) =>
      write(() => {
        setSubscriptionStatus.run({ id, status, eventAt, now: Date.now() });
        const row = subscriptionById.get({ id });
        return row ? toSubscription(row) : undefined;
      }),
    async subscription(id) {
      const row = subscriptionById.get({ id });
      return row ? toSubscription(row) : undefined;
    },
    async activeSubscription(keyId, server, now) {
      const row = activeSubscription.get({ keyId, server, now });
      return row ? toSubscription(row) : undefined;
    },

    async analytics({ operatorId, server, from, to }) {
      const params = { operatorId: operatorId ?? null, server: server ?? null, from, to };
      const text = (k: string | bigint) => String(k);
      const day = (k: string | bigint) => new Date(Number(k) * DAY_MS).toISOString().slice(0, 10);
      const times = settleTimes.all(params).map((r) => Number(r.settle_ms));
      return {
        byDay: byDay.all(params).map((r) => usageRow(r, day)),
        byTool: byTool.all(params).map((r) => usageRow(r, text)),
        byRail: byRail.all(params).map((r) => usageRow(r, text)),
        byCaller: byCaller.all(params).map((r) => usageRow(r, text)),
        denials: denials
          .all({ operatorId: operatorId ?? null, server: server ?? null, fromDay: Math.floor(from / DAY_MS), toDay: Math.floor((to - 1) / DAY_MS) })
          .map((r) => ({ reason: r.reason, count: Number(r.count) })),
        settlement: {
          count: times.length,
          ...(times.length > 0 ? { p50Ms: percentile(times, 50)!, p99Ms: percentile(times, 99)! } : {}),
        },
      };
    },
    audit: (entry) =>
      write(() =>
        void insertAudit.run({
          ...entry,
          operatorId: entry.operatorId ?? null,
          target: entry.target ?? null,
          ip: entry.ip ?? null,
          detail: entry.detail ? JSON.stringify(entry.detail) : null,
        }),
      ),
    async auditLog({ operatorId, limit, before }) {
      return auditPage.all({ operatorId: operatorId ?? null, limit, before: before ?? null }).map(toAudit);
    },
  };
}
