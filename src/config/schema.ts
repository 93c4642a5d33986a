import { z } from 'zod';
import { networkNames } from '../chain/networks.js';

const url = (protocols: RegExp) =>
  z.url({ protocol: protocols, error: 'expected a URL (http, https, ws or wss)' });

/**
 * The configuration file and its environment overrides, in one schema. Every leaf can be set by
 * `TURNPIKE_<PATH>` (see `envVarName`). Secrets are not here: they come from the environment
 * (see `secrets.ts`), so a config file can be committed and shared.
 */
export const configSchema = z.strictObject({
  network: z
    .enum(networkNames)
    .default('local')
    .describe('chain to settle on; `local` starts the embedded sandbox (chain id 8453) unless rpcUrl is set'),
  rpcUrl: url(/^(https?|wss?)$/)
    .optional()
    .describe('JSON-RPC endpoint; any node whose chain id matches the network is accepted'),
  dataDir: z.string().min(1).default('.turnpike').describe('directory for the SQLite database and other state'),
  http: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1').describe('interface to listen on'),
      port: z.number().int().min(0).max(65535).default(3402).describe('port to listen on (0 = any free port)'),
      bodyLimitBytes: z.number().int().positive().default(1_048_576).describe('largest request body accepted'),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z
        .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info')
        .describe('least severe level written'),
      format: z
        .enum(['auto', 'json', 'pretty'])
        .default('auto')
        .describe('`auto` is pretty on a terminal and JSON otherwise'),
    })
    .prefault({}),
  store: z
    .strictObject({
      url: z
        .string()
        .regex(/^sqlite:/, 'expected sqlite:<path>')
        .optional()
        .describe('database URL, `sqlite:<path>`; default sqlite:<dataDir>/turnpike.db'),
    })
    .prefault({}),
  facilitator: z
    .strictObject({
      mode: z
        .enum(['self', 'cdp'])
        .default('self')
        .describe("`self` settles with turnpike's relayer keys; `cdp` uses Coinbase's hosted facilitator"),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
/** What a config file or the flags may say: everything optional. */
export type ConfigInput = z.input<typeof configSchema>;
