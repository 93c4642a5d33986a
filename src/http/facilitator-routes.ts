import { Hono, type Context } from 'hono';
import { bodyLimit } from './body-limit.js';
import type { Logger } from 'pino';
import { FacilitatorUnavailableError } from '../facilitator/errors.js';
import type { Facilitator } from '../facilitator/facilitator.js';
import { type FacilitatorRequest, facilitatorRequestSchema } from '../x402/schemas.js';

export type FacilitatorRoutesOptions = { bodyLimitBytes: number; logger: Logger };

/**
 * `POST /verify`, `POST /settle`, `GET /supported` over a facilitator. Malformed bodies are 400
 * with the offending field; business failures are 200 answers; only the facilitator's own
 * faults are 5xx, with `retryable: true`.
 *
 * @example app.route('/facilitator', facilitatorRoutes(facilitator, { bodyLimitBytes, logger }));
 */
export function facilitatorRoutes(facilitator: Facilitator, options: FacilitatorRoutesOptions): Hono {
  const app = new Hono();
  const limit = bodyLimit({
    maxSize: options.bodyLimitBytes,
    onError: (c) => c.json({ error: 'body_too_large', message: `request bodies are limited to ${options.bodyLimitBytes} bytes` }, 413),
  });

  const handle = (action: (request: FacilitatorRequest) => Promise<unknown>) => async (c: Context) => {
    let body: unknown;
    try {
      body = JSON.parse(await c.req.text());
    } catch {
      return c.json({ error: 'invalid_json', message: 'the request body is not JSON' }, 400);
    }
    const parsed = facilitatorRequestSchema.safeParse(body);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({ path: i.path.join('.') || '(body)', message: i.message }));
      return c.json({ error: 'invalid_request', message: `${issues[0]!.path}: ${issues[0]!.message}`, issues }, 400);
    }
    try {
      return c.json(await action(parsed.data));
    } catch (error) {
      if (error instanceof FacilitatorUnavailableError) {
        options.logger.warn({ err: error }, 'facilitator unavailable');
        return c.json({ error: 'facilitator_unavailable', message: error.message, retryable: true }, 503);
      }
      throw error;
    }
  };

  app.get('/supported', (c) => c.json(facilitator.supported()));
  app.post('/verify', limit, handle((r) => facilitator.verify(r)));
  app.post('/settle', limit, handle((r) => facilitator.settle(r)));
  return app;
}
