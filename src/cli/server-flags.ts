import { z } from 'zod';
import type { Config, ConfigInput } from '../config/schema.js';
import type { StdioLimits } from '../upstream/stdio-bridge.js';
import { portProblem } from '../http/listen.js';
import type { Flag } from './command.js';

/** Flags every serving command shares; they override the config file and the environment. */
export const serverFlags = {
  config: { type: 'string', short: 'c', value: 'FILE', description: 'configuration file (YAML or JSON)' },
  network: { type: 'string', value: 'NAME', description: 'base | base-sepolia | local (default local: the embedded sandbox)' },
  'rpc-url': { type: 'string', value: 'URL', description: 'JSON-RPC endpoint (any node with the network’s chain id)' },
  host: { type: 'string', value: 'HOST', description: 'interface to listen on (default 127.0.0.1)' },
  port: { type: 'string', value: 'N', description: 'port to listen on (default 3402; 0 = any free port)' },
  'data-dir': { type: 'string', value: 'DIR', description: 'state directory (default .turnpike)' },
  'log-level': { type: 'string', value: 'LEVEL', description: 'fatal | error | warn | info | debug | trace | silent' },
} satisfies Record<string, Flag>;

/** Flag values stay raw here: the config schema judges them, and reports them as `flag`. */
export const serverFlagsSchema = z.strictObject(
  Object.fromEntries(Object.keys(serverFlags).map((name) => [name, z.string().optional()])) as {
    [K in keyof typeof serverFlags]: z.ZodOptional<z.ZodString>;
  },
);

const numberish = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : v);

export function configOverrides(flags: z.infer<typeof serverFlagsSchema>): ConfigInput {
  return {
    network: flags.network as ConfigInput['network'],
    rpcUrl: flags['rpc-url'],
    dataDir: flags['data-dir'],
    http: { host: flags.host, port: numberish(flags.port) as number | undefined },
    log: { level: flags['log-level'] as NonNullable<ConfigInput['log']>['level'] },
  };
}

/**
 * The stdio bridge's bounds as plain values, from `stdio.*`.
 *
 * @example startStdioBridge(command, stdioLimits(config)) // { maxSessions: 32, maxSessionsPerClient: 4, idleMs: 300_000 }
 */
export function stdioLimits(config: Config): StdioLimits {
  const { maxSessions, maxSessionsPerClient, idleSeconds } = config.stdio;
  return { maxSessions, maxSessionsPerClient, idleMs: idleSeconds * 1000 };
}

/**
 * Throws the `PortError` of the port a serving command is to listen on, if it cannot: checked
 * before the chain or the store is opened, so the operator is told which flag to change at once.
 */
export async function checkPort(config: Config): Promise<void> {
  const problem = await portProblem(config.http);
  if (problem) throw problem;
}
