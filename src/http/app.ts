import { Hono } from 'hono';
import type { Logger } from 'pino';
import { UpstreamError } from '../upstream/upstream.js';
import { DomainError, errorCodes } from '../errors.js';
import { forwardedFor } from './caller.js';

/**
 * A hono app whose every answer is JSON: unknown paths are 404, a DomainError is its code's status
 * (`errorCodes`: the one place a code becomes HTTP) with `{ error: code, message, ...details }`, and
 * an unexpected fault is a 500 that says to retry, logged here and never shown to the caller as a
 * stack trace. The app that listens names the proxies whose `X-Forwarded-For` it believes
 * (`trustedProxies`, see `forwardedFor`).
 */
export function createApp(logger: Logger, { trustedProxies = [] }: { trustedProxies?: string[] } = {}): Hono {
  const app = new Hono();
  if (trustedProxies.length > 0) app.use(forwardedFor(trustedProxies));
  // No name, id or slug here holds a NUL, and PostgreSQL refuses one in any text: it is the caller's mistake, not a fault.
  app.use(async (c, next) => {
    if (/%00/.test(c.req.url)) throw new DomainError('invalid_request', 'the URL holds a NUL character (%00): nothing here is named so');
    await next();
  });
  app.notFound((c) => c.json({ error: 'not_found', message: `no route for ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) => {
    if (error instanceof DomainError) return c.json(error.toJSON(), errorCodes[error.code]);
    if (error instanceof UpstreamError) {
      logger.warn({ err: error, path: c.req.path }, 'upstream failed');
      return c.json(
        { jsonrpc: '2.0', id: null, error: { code: -32603, message: 'the MCP server behind this gateway did not answer; retry later' } },
        502,
      );
    }
    logger.error({ err: error, path: c.req.path }, 'unhandled error');
    return c.json({ error: 'internal_error', message: 'turnpike failed to handle this request', retryable: true }, 500);
  });
  return app;
}
