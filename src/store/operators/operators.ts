import type { SettlementMode } from '../../facilitator/port.js';
import type { Address, Hex } from 'viem';
import type { Plan } from '../../pricing/plans.js';
import type { OAuthSettings } from '../../oauth/settings.js';
import type { Analytics } from '../../operators/analytics.js';
import type { Balance, Refusal } from '../../operators/balance.js';
import type { NewEvent } from '../events/events.js';

export type OperatorRecord = {
  id: string;
  email: string;
  name: string;
  payoutAddress?: Address;
  /** The operator's Stripe Connect (Express) account, for fiat payouts. */
  stripeAccount?: string;
  status: 'active' | 'suspended';
  createdAt: number;
  updatedAt: number;
};

export type UpstreamAuth = { mode: 'none' } | { mode: 'header' | 'query'; name: string; sealedSecret: string };

/** A registered MCP server. The upstream secret is only ever held sealed (see `secret-box`). */
export type ServerRecord = {
  id: string;
  operatorId: string;
  slug: string;
  name: string;
  upstreamUrl: string;
  auth: UpstreamAuth;
  public: boolean;
  /** A `suspended` server is neither served (404) nor listed, until its operator resumes it. */
  status: 'active' | 'suspended';
  /** `direct`: x402 pays `payTo`, the operator's own address; `platform`: the treasury, and the operator's share accrues. */
  custody: 'direct' | 'platform';
  payTo?: Address;
  /** Kept in its input form (USD strings, `planInput`) and read back through `planSchema`, once, when the row is read. */
  plan: Plan;
  challenge: 'tool-result' | 'http-402';
  /** When a paid x402 result leaves (see `settlementModes`). */
  settlement: SettlementMode;
  timeoutMs: number;
  /** Set when the server takes OAuth callers. */
  oauth?: OAuthSettings;
  createdAt: number;
  updatedAt: number;
};

export type ChargeRail = 'x402' | 'credits' | 'free' | 'subscription' | 'invoice';

/**
 * One paid (or free-quota) tool call: the fact revenue and analytics are made of. It is written
 * `pending` while its money is in flight and becomes `earned` or `void` by what the payment's
 * own record says (the settlement journal, the credits ledger), never by the gateway's word.
 */
export type Charge = {
  id: string;
  /** The server's id (a configured endpoint's slug): what the charge is bound to, whatever later holds the slug. */
  serverId: string;
  operatorId?: string;
  rail: ChargeRail;
  /** `key:<id>` for credits, post-paid usage and subscriptions, the payer's address for x402. */
  caller: string;
  tool: string;
  amount: bigint;
  operatorShare: bigint;
  platformShare: bigint;
  custody: 'direct' | 'platform';
  /** The payment it stands for: `x402:<chainId>:<asset>:<payer>:<nonce>`, `credits:<debit id>`, `invoice:<usage entry id>`, `stripe:<invoice id>`, or `free:<id>`. */
  ref: string;
  state: 'pending' | 'earned' | 'void';
  settleMs?: number;
  createdAt: number;
};

export type WithdrawalState = 'requested' | 'submitted' | 'confirmed' | 'failed';
export type Withdrawal = {
  id: string;
  operatorId: string;
  amount: bigint;
  to: Address;
  idempotencyKey: string;
  state: WithdrawalState;
  txHash?: Hex;
  rawTx?: Hex;
  error?: string;
  /**
   * `submitted`, but the node does not know the transaction and the treasury cannot pay its gas:
   * nothing moves until the treasury gets ETH (the same transaction is then sent again).
   */
  waitingForGas: boolean;
  createdAt: number;
  updatedAt: number;
};

export type Payout = {
  id: string;
  operatorId: string;
  amount: bigint;
  destination: string;
  idempotencyKey: string;
  state: 'requested' | 'paid' | 'failed';
  transferId?: string;
  error?: string;
  createdAt: number;
  updatedAt: number;
};

/** A caller's subscription to a server (by the server's id), as Stripe's events last described it. */
export type Subscription = { id: string; keyId: string; serverId: string; status: string; currentPeriodEnd: number; eventAt: number };

export type AnalyticsQuery = { operatorId?: string; serverId?: string; from: number; to: number };

export type AuditEntry = {
  id: string;
  at: number;
  /** `admin` or `operator:<id>`. */
  actor: string;
  operatorId?: string;
  action: string;
  target?: string;
  ip?: string;
  detail?: Record<string, unknown>;
};

export type WithdrawalRequest = { id: string; operatorId: string; amount: bigint; to: Address; idempotencyKey: string; minimum: bigint };
/**
 * A request for money (a withdrawal, a payout) checked against what is available and recorded
 * in one transaction, or refused with nothing written. A repeated idempotency key returns the
 * first record with `created: false`.
 */
export type Reservation<T> = { ok: true; created: boolean; record: T } | Refusal;

export interface OperatorStore {
  /** Refused (created: false) when the email is registered already. */
  createOperator(
    operator: Omit<OperatorRecord, 'status' | 'updatedAt'> & { keyHash: string },
  ): Promise<{ created: boolean; operator?: OperatorRecord }>;
  operatorByKeyHash(hash: string): Promise<(OperatorRecord & { keyHash: string }) | undefined>;
  operator(id: string): Promise<OperatorRecord | undefined>;
  operators(): Promise<OperatorRecord[]>;
  updateOperator(
    id: string,
    patch: { name?: string; payoutAddress?: Address | null; status?: OperatorRecord['status']; stripeAccount?: string },
  ): Promise<OperatorRecord | undefined>;

  /**
   * Refused (created: false) when the slug is taken: by a server, or (`retired`) by a deleted
   * server that something live still refers to: a subscription Stripe may charge, unsettled
   * revenue, or a key or token scoped to the slug without server ids. What is bound to the old
   * server's id (history, counts, newer scopes) never reaches the new one and does not hold the slug.
   */
  createServer(server: ServerRecord): Promise<{ created: true } | { created: false; retired: boolean }>;
  /** The server at a slug now (never a deleted one). */
  server(slug: string): Promise<ServerRecord | undefined>;
  /** A server by its id, deleted or not (`deletedAt` set): what a subscription or charge names. */
  serverById(id: string): Promise<(ServerRecord & { deletedAt?: number }) | undefined>;
  /** The server at a slug if it is served now (its operator is active): one read per call on the gateway's path. */
  servedServer(slug: string): Promise<ServerRecord | undefined>;
  servers(filter?: { operatorId?: string; publicOnly?: boolean }): Promise<ServerRecord[]>;
  /** Replaces the mutable fields; `updatedAt` tells gateways to rebuild. */
  updateServer(server: ServerRecord): Promise<void>;
  /** Stops serving and listing a server; its row stays (`serverById`) for what refers to it, without its upstream secret. */
  deleteServer(id: string): Promise<void>;

  /**
   * Counts one more priced call of `caller` on the server (by id) in `month` and returns its
   * number (`calls`, 1 for the first), atomically: of concurrent calls, each gets its own number;
   * with how many of the month's calls were delivered (`deliverCall`), read in the same statement.
   * `calls - delivered` are the calls still running, this one included.
   */
  countCall(serverId: string, caller: string, month: number): Promise<{ calls: bigint; delivered: bigint }>;
  /** Gives back a counted call that did not happen (the tool failed, the payment was refused). */
  uncountCall(serverId: string, caller: string, month: number): Promise<void>;
  /**
   * Counts a counted call as delivered (its charge delivered: settled, debited, invoiced, or free),
   * atomically; never above the month's count of calls. Once per call: the caller makes sure.
   */
  deliverCall(serverId: string, caller: string, month: number): Promise<void>;

  recordCharges(charges: Charge[]): Promise<void>;
  /** Pending charges, oldest first (of one rail, if given). */
  pendingCharges(limit: number, rail?: ChargeRail): Promise<Charge[]>;
  /**
   * Decides every pending credits charge whose debit is no longer open, in one statement: earned
   * if the debit was closed as delivered, void if it was refunded. Returns how many it decided.
   */
  resolveCreditCharges(): Promise<number>;
  /** Likewise for post-paid charges by their usage entries: earned once billable (delivered), void if voided. */
  resolveInvoiceCharges(): Promise<number>;
  /** `lost`: a void charge whose result was delivered on a deferred settlement that then failed (a loss). */
  resolveCharges(outcomes: { id: string; state: 'earned' | 'void'; settleMs?: number; lost?: boolean }[]): Promise<void>;
  /**
   * Records a batch of calls in one transaction: their charges, their refusals (counted per
   * server, day and reason) and their events (the outbox, see `EventStore`).
   */
  recordCalls(batch: {
    charges: Charge[];
    denials: { serverId: string; day: number; reason: string; count: number }[];
    events: NewEvent[];
  }): Promise<void>;

  balance(operatorId: string): Promise<Balance>;
  /**
   * Reserves the amount and records the request in one transaction: two requests can never take
   * the same money. Once per (operator, idempotency key): a repeat returns the first.
   */
  requestWithdrawal(request: WithdrawalRequest): Promise<Reservation<Withdrawal>>;
  /**
   * Written before the broadcast, so a crash leaves a transaction to look up or re-send, never a
   * second one. Only a `requested` withdrawal takes one: false when another sender journalled (or
   * finished) it first, and then this transaction must never be broadcast.
   */
  recordWithdrawalTx(id: string, tx: { txHash: Hex; rawTx: Hex }): Promise<boolean>;
  finishWithdrawal(id: string, outcome: { state: 'confirmed' } | { state: 'failed'; error: string }): Promise<void>;
  /** Sets whether a submitted withdrawal waits for gas; true when this call changed it (so it is reported once). */
  setWaitingForGas(id: string, waiting: boolean): Promise<boolean>;
  withdrawal(id: string): Promise<Withdrawal | undefined>;
  withdrawals(operatorId: string): Promise<Withdrawal[]>;
  unfinishedWithdrawals(): Promise<Withdrawal[]>;

  /** Like `requestWithdrawal`, against the fiat balance: reserved with the request, once per idempotency key. */
  requestPayout(request: {
    id: string;
    operatorId: string;
    amount: bigint;
    destination: string;
    idempotencyKey: string;
    minimum: bigint;
  }): Promise<Reservation<Payout>>;
  finishPayout(id: string, outcome: { state: 'paid'; transferId: string } | { state: 'failed'; error: string }): Promise<Payout>;
  payouts(operatorId: string): Promise<Payout[]>;

  /** Applies what a Stripe event says of a subscription, unless a newer event said otherwise already. */
  saveSubscription(subscription: Subscription): Promise<void>;
  /** Marks a subscription's payment failed (no entitlement), unless a newer event said otherwise. */
  subscriptionStatus(id: string, status: string, eventAt: number): Promise<Subscription | undefined>;
  subscription(id: string): Promise<Subscription | undefined>;
  /** The key's subscription to a server (by id) that entitles it now, if any. */
  activeSubscription(keyId: string, serverId: string, now: number): Promise<Subscription | undefined>;
  /** A server's subscriptions that Stripe may still charge for (not canceled): to cancel when it is deleted. */
  liveSubscriptions(serverId: string): Promise<Subscription[]>;

  analytics(query: AnalyticsQuery): Promise<Analytics>;
  audit(entry: AuditEntry): Promise<void>;
  auditLog(filter: { operatorId?: string; limit: number; before?: string }): Promise<AuditEntry[]>;
}
