import { createHash, timingSafeEqual } from 'node:crypto';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Whether `Authorization: Bearer <key>` carries one of `keys`, compared in constant time (both
 * sides hashed first, so not even the length leaks; every key is compared).
 *
 * @example if (!bearerIn(c.req.header('authorization'), [adminKey])) throw new ApiError(401, …);
 */
export function bearerIn(header: string | undefined, keys: readonly string[]): boolean {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!match) return false;
  const presented = digest(match[1]!);
  return keys.reduce((found, key) => timingSafeEqual(presented, digest(key)) || found, false);
}

/**
 * The socket's peer address: forwarded headers are not trusted, since no proxy is configured to
 * vouch for them. Undefined when the request did not come through a socket (`app.request`).
 */
export function clientAddress(c: Context): string | undefined {
  try {
    return getConnInfo(c).remote.address;
  } catch {
    return undefined;
  }
}
