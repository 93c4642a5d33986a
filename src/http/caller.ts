import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import proxyAddr from 'proxy-addr';

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

/** Each request's caller as the trusted proxies named them, by Node's request (see `forwardedFor`). */
const forwarded = new WeakMap<IncomingMessage, string>();

/**
 * Believes the `X-Forwarded-For` of the proxies in `list` (addresses, CIDRs, or proxy-addr's names
 * `loopback`, `linklocal`, `uniquelocal`): a request's caller is
 * then the nearest address in it that is not one of them, read once, when the request arrives.
 * A header from anyone else is not read: a caller cannot name itself. Put first on the app that
 * listens; apps it hands requests to (a registered server's, with the same `env`) see the same caller.
 *
 * @example app.use(forwardedFor(['loopback'])) // a request from 127.0.0.1 with X-Forwarded-For: 203.0.113.7 is 203.0.113.7's
 */
export function forwardedFor(list: string[]): MiddlewareHandler {
  const trust = proxyAddr.compile(list);
  return async (c, next) => {
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    if (incoming?.socket.remoteAddress !== undefined) forwarded.set(incoming, proxyAddr(incoming, trust));
    await next();
  };
}

/**
 * Who sent a request: the socket's peer address, or the caller a trusted proxy named
 * (`forwardedFor`); forwarded headers are believed from no one else. Undefined when the request
 * did not come through a socket (`app.request`).
 */
export function clientAddress(c: Context): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  const named = incoming && forwarded.get(incoming);
  if (named !== undefined) return named;
  try {
    return getConnInfo(c).remote.address;
  } catch {
    return undefined;
  }
}
