import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { bearerOf } from '../../http/caller.js';
import { newId } from '../../store/ids.js';

/** What every credits API key begins with. */
export const API_KEY_PREFIX = 'tp_';
const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]*$/;

/**
 * A new API key: 256 random bits behind `tp_` (operators' keys: `op_`), shown once; only its SHA-256 is stored (a fast
 * hash is right for a secret with this much entropy: there is nothing to brute-force).
 *
 * @example const { secret, id, hash } = generateApiKey(); // secret: tp_3q2…
 */
export function generateApiKey(prefix = API_KEY_PREFIX, idPrefix = 'key') {
  const secret = `${prefix}${randomBytes(32).toString('base64url')}`;
  return { secret, id: newId(idPrefix), hash: hashApiKey(secret) };
}

export const hashApiKey = (secret: string) => createHash('sha256').update(secret).digest('hex');

/** Constant-time comparison of two hex digests. */
export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

export type Credential = { type: 'key'; secret: string } | { type: 'token'; jwt: string };

/**
 * The credits credential a request carries, if any: `Authorization: Bearer tp_…` or `X-API-Key`
 * for a key, `Authorization: Bearer <JWT>` for a delegated budget token.
 *
 * @example credentialOf(c.req.raw.headers) // { type: 'key', secret: 'tp_…' }
 */
export function credentialOf(headers: { get(name: string): string | null }): Credential | undefined {
  const apiKey = headers.get('x-api-key');
  if (apiKey) return { type: 'key', secret: apiKey.trim() };
  const value = bearerOf(headers.get('authorization'));
  if (value === undefined) return undefined;
  if (value.startsWith(API_KEY_PREFIX)) return { type: 'key', secret: value };
  // Any other bearer (an OAuth token meant for someone else) is not ours to judge.
  return JWT_SHAPE.test(value) ? { type: 'token', jwt: value } : undefined;
}
