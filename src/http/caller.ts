import { createHash, timingSafeEqual } from 'node:crypto';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Whether `Authorization: Bearer <key>` carries one of `keys`, compared in constant time (both
 * sides hashed first, so not even the length leaks; every key is compared).
 *
 * @example if (!bearerIn(c.req.header('authorization'), [adminKey])) throw new DomainError('admin_unauthorized', …);
 */
export function bearerIn(header: string | undefined, keys: readonly string[]): boolean {
  const bearer = bearerOf(header);
  if (bearer === undefined) return false;
  const presented = digest(bearer);
  return keys.reduce((found, key) => timingSafeEqual(presented, digest(key)) || found, false);
}

/**
 * The credential of an `Authorization: Bearer <credential>` header, if it is one.
 *
 * @example bearerOf('Bearer tp_abc') // 'tp_abc'
 */
export const bearerOf = (header: string | null | undefined): string | undefined => /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1];

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
