import { BaseError } from '../errors.js';
/**
 * The facilitator could not do its own part (the chain's RPC is unreachable, the relayer has no
 * gas money): not the client's fault, worth retrying. Served as HTTP 503 with `retryable: true`.
 */
export class FacilitatorUnavailableError extends BaseError<'facilitator_unavailable'> {
  override name = 'FacilitatorUnavailableError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'facilitator_unavailable', cause: options.cause });
  }
}
