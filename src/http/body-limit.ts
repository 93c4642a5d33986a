import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit as honoBodyLimit } from 'hono/body-limit';

type BodyLimitOptions = { maxSize: number; onError: (c: Context) => Response | Promise<Response> };

/**
 * hono's body limit, without its cost on the common path: a request that declares its length
 * is judged by the header alone (Node's parser never delivers more than the declared length),
 * so the handler can read the body through @hono/node-server's buffer fast path instead of a
 * WHATWG stream. Only chunked bodies are counted as they stream, by hono's middleware.
 *
 * @example app.post('/', bodyLimit({ maxSize: 1 << 20, onError }), handler)
 */
export function bodyLimit(options: BodyLimitOptions): MiddlewareHandler {
  const counted = honoBodyLimit(options);
  return async (c, next) => {
    const length = c.req.header('content-length');
    if (length === undefined || c.req.header('transfer-encoding') !== undefined) return counted(c, next);
    if (!/^\d+$/.test(length) || Number(length) > options.maxSize) return options.onError(c);
    await next();
  };
}
