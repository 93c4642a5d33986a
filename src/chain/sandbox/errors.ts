/** The local sandbox could not be started or set up; the message says what to do about it. */
export class SandboxError extends Error {
  override name = 'SandboxError';
}
