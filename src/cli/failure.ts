import { ChainUnavailableError } from '../chain/errors.js';
import { SandboxError } from '../chain/sandbox/errors.js';
import { ConfigError } from '../config/errors.js';
import { PortError } from '../http/listen.js';
import { StoreError } from '../store/store.js';
import { UsageError } from './command.js';

/**
 * What the operator sees when a command fails: a message that says what to do next and an exit
 * code (2 = fix the invocation or configuration, 1 = something failed while running).
 */
export function describeFailure(error: unknown): { message: string; exitCode: 1 | 2 } {
  if (error instanceof UsageError) return { message: `\n  ${error.problems.join('\n  ')}`, exitCode: 2 };
  if (error instanceof ConfigError) return { message: error.format(), exitCode: 2 };
  if (error instanceof PortError) {
    const fix = 'choose another with --port N (0 = any free port; or http.port, TURNPIKE_HTTP_PORT), or stop what listens there';
    return { message: `${error.message}: ${fix}`, exitCode: 2 };
  }
  if (error instanceof SandboxError || error instanceof ChainUnavailableError || error instanceof StoreError) {
    return { message: error.message, exitCode: 1 };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { message: `unexpected error: ${message}`, exitCode: 1 };
}
