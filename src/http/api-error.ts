/**
 * A request that cannot be honoured, as the caller will see it: an HTTP status, a stable
 * machine-readable code, a message saying what to do, and details an agent can act on
 * (remaining balance or budget, where to top up, which field is wrong).
 */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: 400 | 401 | 402 | 403 | 404 | 409 | 429 | 503,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }

  toJSON() {
    return { error: this.code, message: this.message, ...this.details };
  }
}
