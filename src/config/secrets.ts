import { readFileSync } from 'node:fs';
import type { Hex } from 'viem';
import { z } from 'zod';
import { ConfigError, type ConfigProblem } from './errors.js';

const privateKey = z
  .string()
  .regex(/^0x[0-9a-fA-F]{64}$/, 'expected 0x followed by 64 hex digits')
  .transform((k) => k as Hex);

/**
 * Secrets and where they come from: `NAME` or `NAME_FILE` (a path whose trimmed content is the
 * value, for container secrets). Never from the config file, never echoed in an error.
 */
const secretSources = {
  relayerKeys: {
    env: 'TURNPIKE_RELAYER_KEY',
    // Several comma-separated keys let settlements go out in parallel, one nonce sequence each.
    schema: z
      .string()
      .transform((s) => s.split(',').map((k) => k.trim()))
      .pipe(z.array(privateKey).min(1)),
  },
  treasuryKey: { env: 'TURNPIKE_TREASURY_KEY', schema: privateKey },
  adminKey: { env: 'TURNPIKE_ADMIN_KEY', schema: z.string().min(32, 'expected at least 32 characters') },
  facilitatorKeys: {
    env: 'TURNPIKE_FACILITATOR_KEYS',
    // The keys resource servers send to the facilitator API; comma-separated, one per server.
    schema: z
      .string()
      .transform((s) => s.split(',').map((k) => k.trim()))
      .pipe(z.array(z.string().min(32, 'expected keys of at least 32 characters')).min(1)),
  },
  secretsKey: {
    env: 'TURNPIKE_SECRETS_KEY',
    schema: z.string().regex(/^(0x)?[0-9a-fA-F]{64}$/, 'expected 32 bytes as 64 hex digits'),
  },
  tokenSecret: { env: 'TURNPIKE_TOKEN_SECRET', schema: z.string().min(32, 'expected at least 32 characters') },
  stripeSecretKey: { env: 'STRIPE_SECRET_KEY', schema: z.string().regex(/^(sk|rk)_/, 'expected a Stripe secret key (sk_… or rk_…)') },
  stripeWebhookSecret: { env: 'STRIPE_WEBHOOK_SECRET', schema: z.string().regex(/^whsec_/, 'expected whsec_…') },
  // The key this gateway sends to the remote facilitator (`facilitator.mode: remote`), as Authorization: Bearer.
  remoteFacilitatorKey: { env: 'TURNPIKE_REMOTE_FACILITATOR_KEY', schema: z.string().min(1) },
  cdpApiKeyId: { env: 'CDP_API_KEY_ID', schema: z.string().min(1) },
  cdpApiKeySecret: { env: 'CDP_API_KEY_SECRET', schema: z.string().min(1) },
} as const;

type Sources = typeof secretSources;
export type SecretName = keyof Sources;
export type Secrets = { [K in SecretName]?: z.output<Sources[K]['schema']> };

/**
 * Reads every secret that is set. Problems are reported by variable name only.
 *
 * @example const { relayerKeys } = loadSecrets(); // from TURNPIKE_RELAYER_KEY or TURNPIKE_RELAYER_KEY_FILE
 */
export function loadSecrets(env: NodeJS.ProcessEnv = process.env): Secrets {
  const secrets: Record<string, unknown> = {};
  const problems: ConfigProblem[] = [];
  for (const [name, { env: variable, schema }] of Object.entries(secretSources) as [SecretName, Sources[SecretName]][]) {
    const direct = env[variable];
    const file = env[`${variable}_FILE`];
    const problem = (source: string, message: string) => problems.push({ path: name, source, message });
    if (direct && file) {
      problem(`env ${variable}`, `set either ${variable} or ${variable}_FILE, not both`);
      continue;
    }
    let value = direct;
    if (file) {
      try {
        value = readFileSync(file, 'utf8').trim();
      } catch (error) {
        problem(`env ${variable}_FILE`, `cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
        continue;
      }
    }
    if (!value) continue;
    const parsed = schema.safeParse(value);
    if (parsed.success) secrets[name] = parsed.data;
    else problem(`env ${file ? `${variable}_FILE` : variable}`, parsed.error.issues[0]?.message ?? 'invalid');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return secrets as Secrets;
}

/**
 * Returns a secret a feature cannot run without, or says which variable to set and why.
 *
 * @example const keys = requireSecret(secrets, 'relayerKeys', 'to settle payments outside --network local');
 */
export function requireSecret<K extends SecretName>(secrets: Secrets, name: K, why: string): NonNullable<Secrets[K]> {
  const value = secrets[name];
  if (value !== undefined) return value as NonNullable<Secrets[K]>;
  const variable = secretSources[name].env;
  throw new ConfigError([{ path: name, source: 'environment', message: `set ${variable} (or ${variable}_FILE) ${why}` }]);
}
