/** The configured chain cannot be used (unreachable, or another chain than configured); the message says which. */
export class ChainUnavailableError extends Error {
  override name = 'ChainUnavailableError';
}
