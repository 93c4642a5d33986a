import { BaseError } from '../errors.js';

/** The configured chain cannot be used (unreachable, or another chain than configured); the message says which. */
export class ChainUnavailableError extends BaseError<'chain_unavailable'> {
  override name = 'ChainUnavailableError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'chain_unavailable', cause: options.cause });
  }
}
