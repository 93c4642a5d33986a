/**
 * turnpike's one error vocabulary. Every failure that crosses a boundary is a `BaseError`: a stable
 * machine-readable `code`, a `shortMessage` saying what to do, `details` an agent can act on, and the
 * `cause` it wraps. What a caller may be told is a `DomainError`, whose code is one of `errorCodes`;
 * only the edges turn it into a wire answer (HTTP status from the table in http/app.ts, JSON-RPC in
 * the gateway's rails), so domain code never speaks HTTP.
 */

/**
 * Every code a caller can see, with the one HTTP status it answers with at the HTTP edge.
 * A code means one thing: `key_revoked` is a credential refused (401), `key_already_revoked` a
 * change asked of a key whose revocation is final (409).
 */
export const errorCodes = {
  // 400: the request itself is wrong.
  invalid_request: 400,
  invalid_json: 400,
  amount_out_of_bounds: 400,
  custody_unavailable: 400,
  endpoint_refused: 400,
  event_malformed: 400,
  idempotency_key_invalid: 400,
  issuer_refused: 400,
  issuer_unknown: 400,
  oauth_unavailable: 400,
  package_unknown: 400,
  secrets_key_missing: 400,
  signature_invalid: 400,
  signature_missing: 400,
  subscription_invalid: 400,
  upstream_is_turnpike: 400,
  upstream_refused: 400,
  // 401: no credential, or one that is not (or no longer) good.
  admin_unauthorized: 401,
  console_signed_out: 401,
  console_unauthorized: 401,
  credential_missing: 401,
  key_unknown: 401,
  key_expired: 401,
  key_revoked: 401,
  operator_unauthorized: 401,
  token_unknown: 401,
  token_expired: 401,
  token_invalid: 401,
  token_malformed: 401,
  token_revoked: 401,
  // 402: the payer's money or budget does not cover the call.
  daily_limit: 402,
  lifetime_limit: 402,
  budget_exhausted: 402,
  // 403: a good credential that may not do this.
  account_canceled: 403,
  account_past_due: 403,
  admin_disabled: 403,
  credit_limit_reached: 403,
  cross_origin: 403,
  key_required: 403,
  key_suspended: 403,
  operator_suspended: 403,
  out_of_scope: 403,
  registration_closed: 403,
  subject_unlinked: 403,
  token_cannot_delegate: 403,
  // 404: nothing by that name.
  checkout_not_found: 404,
  endpoint_not_found: 404,
  key_not_found: 404,
  operator_not_found: 404,
  postpaid_account_not_found: 404,
  server_not_found: 404,
  subject_not_linked: 404,
  subscription_unavailable: 404,
  token_not_found: 404,
  withdrawal_not_found: 404,
  // 409: the state of things refuses the change.
  already_funded: 409,
  below_minimum: 409,
  checkout_not_in_review: 409,
  email_taken: 409,
  endpoint_limit: 409,
  idempotency_key_reused: 409,
  insufficient_balance: 409,
  key_already_revoked: 409,
  key_unusable: 409,
  no_servers: 409,
  payout_address_missing: 409,
  postpaid_account_exists: 409,
  request_in_progress: 409,
  slug_retired: 409,
  slug_taken: 409,
  stripe_account_missing: 409,
  subject_linked: 409,
  // 429: too many calls.
  rate_limited: 429,
  // 503: a part of turnpike this deployment has not configured, or one that is down.
  credits_disabled: 503,
  stripe_not_configured: 503,
  stripe_unavailable: 503,
  withdrawals_unavailable: 503,
} as const satisfies Record<string, 400 | 401 | 402 | 403 | 404 | 409 | 429 | 503>;

/** A code a caller can see. */
export type ErrorCode = keyof typeof errorCodes;

export type BaseErrorOptions<C extends string = string> = {
  code: C;
  details?: Record<string, unknown>;
  cause?: unknown;
};

/**
 * The base of every turnpike error that crosses a boundary (in the spirit of viem's BaseError):
 * `message` is the short message, `cause` the error it wraps, `walk` finds one in the chain.
 *
 * @example new BaseError('the store is unreachable', { code: 'store_unavailable', cause: error })
 */
export class BaseError<C extends string = string> extends Error {
  override name = 'BaseError';
  readonly code: C;
  readonly details: Record<string, unknown>;

  constructor(shortMessage: string, options: BaseErrorOptions<C>) {
    super(shortMessage, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
    this.details = options.details ?? {};
  }

  /** The message without the causes (equal to `message`: turnpike's messages are shown to callers). */
  get shortMessage(): string {
    return this.message;
  }

  /**
   * The first error down the `cause` chain (this one first) that `matches`, or without `matches`
   * the deepest one.
   *
   * @example error.walk((e) => e instanceof StoreError)
   */
  walk(matches?: (error: unknown) => boolean): unknown {
    let error: unknown = this;
    for (;;) {
      if (matches?.(error)) return error;
      const next = error instanceof Error ? error.cause : undefined;
      if (next === undefined) return matches ? undefined : error;
      error = next;
    }
  }
}

/**
 * A request that cannot be honoured, as the caller will see it: a code from `errorCodes`, a
 * message saying what to do, and details an agent can act on (remaining balance or budget, where
 * to top up, which field is wrong). Thrown by domain code; its wire form is the edge's business.
 *
 * @example throw new DomainError('key_not_found', `no API key ${id}`)
 */
export class DomainError extends BaseError<ErrorCode> {
  override name = 'DomainError';

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options: { cause?: unknown } = {}) {
    super(message, { code, details, cause: options.cause });
  }

  /** The body a caller sees: `{ error: code, message, ...details }`. */
  toJSON() {
    return { error: this.code, message: this.message, ...this.details };
  }
}
