import type { Address, Hex } from 'viem';
import { type Plan, planInput, planSchema } from '../../pricing/plans.js';
import type { OAuthSettings } from '../../oauth/settings.js';
import { command, query } from '../engine/statement.js';
import type { AuditEntry, Charge, ChargeRail, OperatorRecord, Payout, ServerRecord, Subscription, Withdrawal } from './operators.js';

/** The operators tables' rows as both backends return them (BIGINT as bigint). */
export type OperatorRow = {
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
export type PayoutRow = {
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
export type SubscriptionRow = {
  id: string;
  key_id: string;
  server_id: string;
  status: string;
  current_period_end: bigint;
  event_at: bigint;
};
export type ServerRow = {
  id: string;
  operator_id: string;
  slug: string;
  name: string;
  upstream_url: string;
  auth_mode: 'none' | 'header' | 'query';
  auth_name: string | null;
  auth_secret: string | null;
  /** INTEGER: a bigint from SQLite, a number from PostgreSQL. */
  public: bigint | number;
  status: ServerRecord['status'];
  custody: ServerRecord['custody'];
  pay_to: string | null;
  plan: string;
  challenge: ServerRecord['challenge'];
  settlement: ServerRecord['settlement'];
  timeout_ms: bigint;
  oauth: string | null;
  created_at: bigint;
  updated_at: bigint;
  deleted_at: bigint | null;
};
export type ChargeRow = {
  id: string;
  server_id: string;
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
export type WithdrawalRow = {
  id: string;
  operator_id: string;
  amount: bigint;
  to_address: string;
  idempotency_key: string;
  state: Withdrawal['state'];
  tx_hash: string | null;
  raw_tx: string | null;
  error: string | null;
  /** INTEGER: a bigint from SQLite, a number from PostgreSQL. */
  waiting_for_gas: bigint | number;
  created_at: bigint;
  updated_at: bigint;
};
export type AuditRow = {
  id: string;
  at: bigint;
  actor: string;
  operator_id: string | null;
  action: string;
  target: string | null;
  ip: string | null;
  detail: string | null;
};
export type SharesRow = {
  usdc_earned: bigint | null;
  usdc_pending: bigint | null;
  fiat: bigint | null;
  direct: bigint | null;
  invoiced: bigint | null;
};
export type SumsRow = { done: bigint | null; reserved: bigint | null };
export type UsageSumRow = { key: string | bigint; calls: bigint; paid: bigint; revenue: bigint | null; operator_share: bigint | null };
export type DenialRow = { reason: string; count: bigint };

export const toOperator = (r: OperatorRow): OperatorRecord => ({
  id: r.id,
  email: r.email,
  name: r.name,
  ...(r.payout_address ? { payoutAddress: r.payout_address as Address } : {}),
  ...(r.stripe_account ? { stripeAccount: r.stripe_account } : {}),
  status: r.status,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

/**
 * A stored plan, parsed once per distinct text: every request to a registered server reads its row,
 * and a plan changes only when its server is edited. The parsed plans are shared, so never mutated.
 * Bounded: past `PLANS_KEPT` texts the memo starts again.
 */
const PLANS_KEPT = 1024;
const plans = new Map<string, Plan>();
function planOf(text: string): Plan {
  let plan = plans.get(text);
  if (plan) return plan;
  if (plans.size >= PLANS_KEPT) plans.clear();
  plan = planSchema.parse(JSON.parse(text));
  plans.set(text, plan);
  return plan;
}

export const toServer = (r: ServerRow): ServerRecord => ({
  id: r.id,
  operatorId: r.operator_id,
  slug: r.slug,
  name: r.name,
  upstreamUrl: r.upstream_url,
  auth: r.auth_mode === 'none' ? { mode: 'none' } : { mode: r.auth_mode, name: r.auth_name!, sealedSecret: r.auth_secret! },
  public: Number(r.public) === 1,
  status: r.status,
  custody: r.custody,
  ...(r.pay_to ? { payTo: r.pay_to as Address } : {}),
  plan: planOf(r.plan),
  challenge: r.challenge,
  settlement: r.settlement,
  timeoutMs: Number(r.timeout_ms),
  ...(r.oauth ? { oauth: JSON.parse(r.oauth) as OAuthSettings } : {}),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

/** A server row that may be deleted: `deletedAt` says when. */
export const toAnyServer = (r: ServerRow): ServerRecord & { deletedAt?: number } => ({
  ...toServer(r),
  ...(r.deleted_at !== null ? { deletedAt: Number(r.deleted_at) } : {}),
});

export const serverParams = (s: ServerRecord) => ({
  id: s.id,
  operatorId: s.operatorId,
  slug: s.slug,
  name: s.name,
  upstreamUrl: s.upstreamUrl,
  authMode: s.auth.mode,
  authName: s.auth.mode === 'none' ? null : s.auth.name,
  authSecret: s.auth.mode === 'none' ? null : s.auth.sealedSecret,
  public: s.public ? 1 : 0,
  status: s.status,
  custody: s.custody,
  payTo: s.payTo ?? null,
  plan: JSON.stringify(planInput(s.plan)),
  challenge: s.challenge,
  settlement: s.settlement,
  timeoutMs: s.timeoutMs,
  oauth: s.oauth ? JSON.stringify(s.oauth) : null,
  createdAt: s.createdAt,
  updatedAt: s.updatedAt,
});

export const toCharge = (r: ChargeRow): Charge => ({
  id: r.id,
  serverId: r.server_id,
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

export const toWithdrawal = (r: WithdrawalRow): Withdrawal => ({
  id: r.id,
  operatorId: r.operator_id,
  amount: r.amount,
  to: r.to_address as Address,
  idempotencyKey: r.idempotency_key,
  state: r.state,
  ...(r.tx_hash ? { txHash: r.tx_hash as Hex } : {}),
  ...(r.raw_tx ? { rawTx: r.raw_tx as Hex } : {}),
  ...(r.error ? { error: r.error } : {}),
  waitingForGas: Number(r.waiting_for_gas) === 1,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export const toPayout = (r: PayoutRow): Payout => ({
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

export const toSubscription = (r: SubscriptionRow): Subscription => ({
  id: r.id,
  keyId: r.key_id,
  serverId: r.server_id,
  status: r.status,
  currentPeriodEnd: Number(r.current_period_end),
  eventAt: Number(r.event_at),
});

export const toAudit = (r: AuditRow): AuditEntry => ({
  id: r.id,
  at: Number(r.at),
  actor: r.actor,
  ...(r.operator_id ? { operatorId: r.operator_id } : {}),
  action: r.action,
  ...(r.target ? { target: r.target } : {}),
  ...(r.ip ? { ip: r.ip } : {}),
  ...(r.detail ? { detail: JSON.parse(r.detail) as Record<string, unknown> } : {}),
});

export const DAY_MS = 86_400_000;

/** The WHERE clause every analytics query shares: the range and the operator's (or one server's) charges. */
const scope = `created_at >= @from AND created_at < @to AND (operator_id = @operatorId OR @operatorId IS NULL) AND (server_id = @serverId OR @serverId IS NULL)`;
const grouped = (key: string, order = 'key', limit = 10_000) => `
  SELECT ${key} AS key, COUNT(*) AS calls, SUM(CASE WHEN rail <> 'free' THEN 1 ELSE 0 END) AS paid,
         SUM(CASE WHEN state = 'earned' THEN amount END) AS revenue,
         SUM(CASE WHEN state = 'earned' THEN operator_share END) AS operator_share
  FROM charges WHERE state <> 'void' AND ${scope} GROUP BY ${key} ORDER BY ${order} LIMIT ${limit}`;

type Id = { id: string };
type Now = { now: number };
type OfOperator = { operatorId: string };
/** The analytics range: the operator's (null: everyone's) or one server's charges from `from` to `to` (ms). */
type Range = { operatorId: string | null; serverId: string | null; from: number; to: number };
type ServerParams = ReturnType<typeof serverParams>;
type ChargeParams = Omit<Charge, 'operatorId' | 'settleMs'> & { operatorId: string | null; settleMs: number | null };
type Calls = { serverId: string; caller: string; month: number };

/**
 * The operators' statements, `@name` parameters, for both backends. Spelt for both: a parameter
 * is compared before it is tested for NULL (PostgreSQL types it where it first meets it), a
 * subquery in FROM has a name, an upsert names its table's column, and NULLs sort last.
 */
/**
 * The statuses a Stripe subscription never leaves: no later event, nor one of the same second
 * delivered after it (Stripe orders neither deliveries nor retries), makes it entitle again.
 *
 * @example saveSubscription({ …, status: 'active', eventAt }) // after 'canceled' at the same eventAt: ignored
 */
const ENDED = "('canceled', 'incomplete_expired')";

export const operatorsSql = {
  insertOperator: command<Id & { email: string; name: string; keyHash: string; payoutAddress: string | null; createdAt: number }>(`
    INSERT INTO operators (id, email, name, key_hash, payout_address, created_at, updated_at)
    VALUES (@id, @email, @name, @keyHash, @payoutAddress, @createdAt, @createdAt) ON CONFLICT (email) DO NOTHING`),
  operatorById: query<Id, OperatorRow>('SELECT * FROM operators WHERE id = @id'),
  operatorByHash: query<{ hash: string }, OperatorRow>('SELECT * FROM operators WHERE key_hash = @hash'),
  allOperators: query<{}, OperatorRow>('SELECT * FROM operators ORDER BY created_at, id'),
  updateOperator: command<
    Id & Now & { name: string | null; setPayout: 0 | 1; payoutAddress: string | null; status: string | null; stripeAccount: string | null }
  >(`
    UPDATE operators SET name = COALESCE(@name, name),
      payout_address = CASE WHEN @setPayout = 1 THEN @payoutAddress ELSE payout_address END,
      stripe_account = COALESCE(@stripeAccount, stripe_account),
      status = COALESCE(@status, status), updated_at = @now WHERE id = @id`),
  /** The row a request for money is about: PostgreSQL locks it, so requests of one operator queue. */
  operatorLock: query<OfOperator, { id: string }>('SELECT id FROM operators WHERE id = @operatorId', { lockable: true }),

  insertServer: command<ServerParams>(`
    INSERT INTO servers (id, operator_id, slug, name, upstream_url, auth_mode, auth_name, auth_secret, public, status, custody, pay_to,
      plan, challenge, settlement, timeout_ms, oauth, created_at, updated_at)
    VALUES (@id, @operatorId, @slug, @name, @upstreamUrl, @authMode, @authName, @authSecret, @public, @status, @custody, @payTo, @plan,
      @challenge, @settlement, @timeoutMs, @oauth, @createdAt, @updatedAt)
    ON CONFLICT (slug) WHERE deleted_at IS NULL DO NOTHING`),
  updateServer: command<ServerParams>(`
    UPDATE servers SET name = @name, upstream_url = @upstreamUrl, auth_mode = @authMode, auth_name = @authName, auth_secret = @authSecret,
      public = @public, status = @status, custody = @custody, pay_to = @payTo, plan = @plan, challenge = @challenge,
      settlement = @settlement, timeout_ms = @timeoutMs, oauth = @oauth, updated_at = @updatedAt
    WHERE id = @id AND deleted_at IS NULL`),
  // The row stays (what refers to the server finds whose it was); its upstream secret does not.
  deleteServer: command<Id & Now>(`
    UPDATE servers SET deleted_at = @now, updated_at = @now, auth_mode = 'none', auth_name = NULL, auth_secret = NULL
    WHERE id = @id AND deleted_at IS NULL`),
  /**
   * A deleted server at the slug that something live still refers to: a subscription Stripe may
   * charge, unsettled revenue, or an unrevoked key or token whose scope names the slug and no
   * server ids (made before ids were kept: it would pay whoever holds the slug).
   */
  slugRetired: query<Now & { slug: string; named: string }, { id: string }>(`
    SELECT s.id FROM servers s WHERE s.slug = @slug AND s.deleted_at IS NOT NULL AND (
      EXISTS (SELECT 1 FROM subscriptions WHERE server_id = s.id AND status NOT IN ('canceled', 'incomplete_expired'))
      OR EXISTS (SELECT 1 FROM charges WHERE server_id = s.id AND state = 'pending')
      OR EXISTS (SELECT 1 FROM api_keys WHERE status <> 'revoked' AND scope LIKE @named AND scope NOT LIKE '%"serverIds"%')
      OR EXISTS (SELECT 1 FROM budget_tokens
                 WHERE revoked_at IS NULL AND expires_at > @now AND scope LIKE @named AND scope NOT LIKE '%"serverIds"%'))
    LIMIT 1`),
  serverBySlug: query<{ slug: string }, ServerRow>('SELECT * FROM servers WHERE slug = @slug AND deleted_at IS NULL'),
  serverById: query<Id, ServerRow>('SELECT * FROM servers WHERE id = @id'),
  servedBySlug: query<{ slug: string }, ServerRow>(`SELECT servers.* FROM servers JOIN operators ON operators.id = servers.operator_id
    WHERE servers.slug = @slug AND servers.deleted_at IS NULL AND servers.status = 'active' AND operators.status = 'active'`),
  listServers: query<{ operatorId: string | null; publicOnly: 0 | 1 }, ServerRow>(`
    SELECT * FROM servers WHERE (operator_id = @operatorId OR @operatorId IS NULL)
      AND (@publicOnly = 0 OR (public = 1 AND status = 'active'))
      AND deleted_at IS NULL ORDER BY created_at, id`),

  countCall: query<Calls, { calls: bigint; delivered: bigint }>(`
    INSERT INTO usage_counts (server_id, caller, month, calls, delivered) VALUES (@serverId, @caller, @month, 1, 0)
    ON CONFLICT (server_id, caller, month) DO UPDATE SET calls = usage_counts.calls + 1 RETURNING calls, delivered`),
  uncountCall: command<Calls>(`
    UPDATE usage_counts SET calls = calls - 1 WHERE server_id = @serverId AND caller = @caller AND month = @month AND calls > 0`),
  deliverCall: command<Calls>(`
    UPDATE usage_counts SET delivered = delivered + 1
    WHERE server_id = @serverId AND caller = @caller AND month = @month AND delivered < calls`),

  insertCharge: command<ChargeParams>(`
    INSERT INTO charges (id, server_id, operator_id, rail, caller, tool, amount, operator_share, platform_share, custody, ref, state, settle_ms, created_at)
    VALUES (@id, @serverId, @operatorId, @rail, @caller, @tool, @amount, @operatorShare, @platformShare, @custody, @ref, @state, @settleMs, @createdAt)
    ON CONFLICT (ref) DO NOTHING`),
  pendingCharges: query<{ limit: number; rail: ChargeRail | null }, ChargeRow>(
    `SELECT * FROM charges WHERE state = 'pending' AND (rail = @rail OR @rail IS NULL) ORDER BY created_at LIMIT @limit`,
  ),
  // A credits charge is decided by its debit (ref 'credits:<debit id>'): closed → earned, refunded → void, open → not yet.
  resolveCreditCharges: command<{}>(`
    UPDATE charges SET state = CASE
        WHEN EXISTS (SELECT 1 FROM ledger WHERE idempotency_key = 'refund:' || substr(charges.ref, 9)) THEN 'void' ELSE 'earned' END
    WHERE state = 'pending' AND rail = 'credits'
      AND NOT EXISTS (SELECT 1 FROM open_debits WHERE debit_id = substr(charges.ref, 9))`),
  // A post-paid charge is decided by its usage entry (ref 'invoice:<entry id>'): billable → earned, void (or none) → void, open → not yet.
  resolveInvoiceCharges: command<{}>(`
    UPDATE charges SET state = CASE
        WHEN EXISTS (SELECT 1 FROM usage_entries WHERE id = substr(charges.ref, 9) AND state = 'billable') THEN 'earned' ELSE 'void' END
    WHERE state = 'pending' AND rail = 'invoice'
      AND NOT EXISTS (SELECT 1 FROM usage_entries WHERE id = substr(charges.ref, 9) AND state = 'open')`),
  resolveCharge: command<Id & { state: 'earned' | 'void'; settleMs: number | null; lost: number }>(
    `UPDATE charges SET state = @state, settle_ms = @settleMs, lost = @lost WHERE id = @id AND state = 'pending'`,
  ),
  countDenial: command<{ serverId: string; day: number; reason: string; count: number }>(`
    INSERT INTO denial_counts (server_id, day, reason, count) VALUES (@serverId, @day, @reason, @count)
    ON CONFLICT (server_id, day, reason) DO UPDATE SET count = denial_counts.count + excluded.count`),

  shares: query<OfOperator, SharesRow>(`
    SELECT
      SUM(CASE WHEN rail = 'x402' AND custody = 'platform' AND state = 'earned' THEN operator_share END) AS usdc_earned,
      SUM(CASE WHEN rail = 'x402' AND custody = 'platform' AND state = 'pending' THEN operator_share END) AS usdc_pending,
      SUM(CASE WHEN rail IN ('credits', 'subscription') AND state = 'earned' THEN operator_share END) AS fiat,
      SUM(CASE WHEN rail = 'x402' AND custody = 'direct' AND state = 'earned' THEN operator_share END) AS direct,
      SUM(CASE WHEN rail = 'invoice' AND state = 'earned' THEN operator_share END) AS invoiced
    FROM charges WHERE operator_id = @operatorId`),
  withdrawn: query<OfOperator, SumsRow>(`
    SELECT SUM(CASE WHEN state = 'confirmed' THEN amount END) AS done,
           SUM(CASE WHEN state IN ('requested', 'submitted') THEN amount END) AS reserved
    FROM withdrawals WHERE operator_id = @operatorId`),
  paidOut: query<OfOperator, SumsRow>(`
    SELECT SUM(CASE WHEN state = 'paid' THEN amount END) AS done, SUM(CASE WHEN state = 'requested' THEN amount END) AS reserved
    FROM payouts WHERE operator_id = @operatorId`),

  insertWithdrawal: command<Id & OfOperator & Now & { amount: bigint; to: string; idempotencyKey: string }>(`
    INSERT INTO withdrawals (id, operator_id, amount, to_address, idempotency_key, state, created_at, updated_at)
    VALUES (@id, @operatorId, @amount, @to, @idempotencyKey, 'requested', @now, @now)`),
  withdrawalById: query<Id, WithdrawalRow>('SELECT * FROM withdrawals WHERE id = @id'),
  withdrawalByKey: query<OfOperator & { idempotencyKey: string }, WithdrawalRow>(
    'SELECT * FROM withdrawals WHERE operator_id = @operatorId AND idempotency_key = @idempotencyKey',
  ),
  withdrawalsOf: query<OfOperator, WithdrawalRow>(
    'SELECT * FROM withdrawals WHERE operator_id = @operatorId ORDER BY created_at DESC, id DESC',
  ),
  unfinishedWithdrawals: query<{}, WithdrawalRow>(
    `SELECT * FROM withdrawals WHERE state IN ('requested', 'submitted') ORDER BY created_at, id`,
  ),
  recordWithdrawalTx: command<Id & Now & { txHash: string; rawTx: string }>(
    `UPDATE withdrawals SET state = 'submitted', tx_hash = @txHash, raw_tx = @rawTx, updated_at = @now WHERE id = @id AND state = 'requested'`,
  ),
  finishWithdrawal: command<Id & Now & { state: 'confirmed' | 'failed'; error: string | null }>(`
    UPDATE withdrawals SET state = @state, error = @error, waiting_for_gas = 0, updated_at = @now WHERE id = @id AND state IN ('requested', 'submitted')`),
  setWaitingForGas: command<Id & Now & { waiting: 0 | 1 }>(`
    UPDATE withdrawals SET waiting_for_gas = @waiting, updated_at = @now WHERE id = @id AND state = 'submitted' AND waiting_for_gas <> @waiting`),

  insertPayout: command<Id & OfOperator & Now & { amount: bigint; destination: string; idempotencyKey: string }>(`
    INSERT INTO payouts (id, operator_id, amount, destination, idempotency_key, state, created_at, updated_at)
    VALUES (@id, @operatorId, @amount, @destination, @idempotencyKey, 'requested', @now, @now)`),
  payoutById: query<Id, PayoutRow>('SELECT * FROM payouts WHERE id = @id'),
  payoutByKey: query<OfOperator & { idempotencyKey: string }, PayoutRow>(
    'SELECT * FROM payouts WHERE operator_id = @operatorId AND idempotency_key = @idempotencyKey',
  ),
  payoutsOf: query<OfOperator, PayoutRow>('SELECT * FROM payouts WHERE operator_id = @operatorId ORDER BY created_at DESC, id DESC'),
  finishPayout: command<Id & Now & { state: 'paid' | 'failed'; transferId: string | null; error: string | null }>(
    `UPDATE payouts SET state = @state, transfer_id = @transferId, error = @error, updated_at = @now WHERE id = @id AND state = 'requested'`,
  ),

  upsertSubscription: command<Subscription & Now>(`
    INSERT INTO subscriptions (id, key_id, server_id, status, current_period_end, event_at, updated_at)
    VALUES (@id, @keyId, @serverId, @status, @currentPeriodEnd, @eventAt, @now)
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, current_period_end = excluded.current_period_end,
      event_at = excluded.event_at, updated_at = excluded.updated_at
    WHERE excluded.event_at >= subscriptions.event_at AND subscriptions.status NOT IN ${ENDED}`),
  setSubscriptionStatus: command<Id & Now & { status: string; eventAt: number }>(
    `UPDATE subscriptions SET status = @status, event_at = @eventAt, updated_at = @now WHERE id = @id AND event_at <= @eventAt AND status NOT IN ${ENDED}`,
  ),
  subscriptionById: query<Id, SubscriptionRow>('SELECT * FROM subscriptions WHERE id = @id'),
  activeSubscription: query<Now & { keyId: string; serverId: string }, SubscriptionRow>(`
    SELECT * FROM subscriptions WHERE key_id = @keyId AND server_id = @serverId AND status IN ('active', 'trialing') AND current_period_end > @now
    ORDER BY current_period_end DESC LIMIT 1`),
  liveSubscriptions: query<{ serverId: string }, SubscriptionRow>(
    `SELECT * FROM subscriptions WHERE server_id = @serverId AND status NOT IN ('canceled', 'incomplete_expired') ORDER BY id`,
  ),

  insertAudit: command<
    Omit<AuditEntry, 'operatorId' | 'target' | 'ip' | 'detail'> & {
      operatorId: string | null;
      target: string | null;
      ip: string | null;
      detail: string | null;
    }
  >(
    `INSERT INTO audit_log (id, at, actor, operator_id, action, target, ip, detail) VALUES (@id, @at, @actor, @operatorId, @action, @target, @ip, @detail)`,
  ),
  auditPage: query<{ operatorId: string | null; limit: number; before: string | null }, AuditRow>(`
    SELECT * FROM audit_log WHERE (operator_id = @operatorId OR @operatorId IS NULL) AND (id < @before OR @before IS NULL)
    ORDER BY id DESC LIMIT @limit`),

  byDay: query<Range, UsageSumRow>(grouped(`created_at / ${DAY_MS}`)),
  byTool: query<Range, UsageSumRow>(grouped('tool')),
  byRail: query<Range, UsageSumRow>(grouped('rail')),
  byCaller: query<Range, UsageSumRow>(grouped('caller', 'revenue DESC NULLS LAST, calls DESC, key', 50)),
  denials: query<Range & { fromDay: number; toDay: number }, DenialRow>(`
    SELECT reason, SUM(count) AS count FROM denial_counts
    WHERE day >= @fromDay AND day <= @toDay AND (server_id = @serverId OR @serverId IS NULL)
      AND (server_id IN (SELECT id FROM servers WHERE operator_id = @operatorId) OR @operatorId IS NULL)
    GROUP BY reason ORDER BY count DESC`),
  // Charges whose result was delivered on a deferred settlement that then failed on chain: void, and lost.
  losses: query<Range, { count: bigint; amount: bigint | null }>(
    `SELECT COUNT(*) AS count, SUM(amount) AS amount FROM charges WHERE lost = 1 AND ${scope}`,
  ),
  settleTimes: query<Range, { settle_ms: bigint }>(
    `SELECT settle_ms FROM charges WHERE settle_ms IS NOT NULL AND state <> 'void' AND ${scope} ORDER BY settle_ms LIMIT 100000`,
  ),
};
