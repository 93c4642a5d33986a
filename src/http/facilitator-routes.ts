import { Hono, type Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { bodyLimit } from './body-limit.js';
import type { Logger } from 'pino';
import { FacilitatorUnavailableError } from '../facilitator/errors.js';
import type { Facilitator } from '../facilitator/facilitator.js';
import { purposes } from '../facilitator/purposes.js';
import { reasons } from '../x402/reasons.js';
import { type FacilitatorRequest, type SettleResponse, type VerifyResponse, facilitatorRequestSchema } from '../x402/schemas.js';
import { bearerIn, clientAddress } from './caller.js';
import { failureThrottle } from '../rails/failure-throttle.js';
import { networkOf } from '../upstream/caller-network.js';

export type FacilitatorRoutesOptions = {
  bodyLimitBytes: number;
  logger: Logger;
  /** Keys resource servers send as `Authorization: Bearer <key>` to /verify and /settle; without, those are open. */
  apiKeys?: readonly string[];
  /** Refused, invalid or unauthorized /verify and /settle requests one address may make per minute before 429; 0 = no limit. */
  failuresPerMinute?: number;
};

type Env = { Variables: { refused: boolean } };

/** An answer that is a refusal; a pending settlement is not one (its retry is expected). */
const refusal = (answer: VerifyResponse | SettleResponse) =>
  'isValid' in answer ? !answer.isValid : !answer.success && answer.errorReason !== reasons.settlementPending;

/**
 * `POST /verify`, `POST /settle`, `GET /supported` over a facilitator, as its public API
 * (`purposes.api`: the facilitator's settlement policy applies, one success per authorization).
 * Malformed bodies are 400 with the offending field; business failures are 200 answers; only the
 * facilitator's own faults are 5xx, with `retryable: true`. With `apiKeys`, /verify and /settle
 * want one of them (401 otherwise); an address whose requests keep failing gets 429 with
 * Retry-After until its minute is over. /supported is always open, and `GET /` answers an index of the routes.
 *
 * @example app.route('/facilitator', facilitatorRoutes(facilitator, { bodyLimitBytes, logger, apiKeys, failuresPerMinute: 60 }));
 */
export function facilitatorRoutes(facilitator: Facilitator, options: FacilitatorRoutesOptions): Hono<Env> {
  const app = new Hono<Env>();
  const throttle = failureThrottle({ limit: options.failuresPerMinute ?? 0 });
  const limit = bodyLimit({
    maxSize: options.bodyLimitBytes,
    onError: (c) => c.json({ error: 'body_too_large', message: `request bodies are limited to ${options.bodyLimitBytes} bytes` }, 413),
  });
  // The socket's address (headers are the caller's to forge), by its network: an IPv6 host has a
  // whole /64 to send from. A resource server with its key is not throttled: the payments it
  // forwards are its clients', and their refusals would shut out the good ones.
  const guard = createMiddleware<Env>(async (c, next) => {
    const address = clientAddress(c);
    const caller = (address === undefined ? undefined : networkOf(address)) ?? address ?? 'unknown';
    const keyed = options.apiKeys !== undefined && bearerIn(c.req.header('authorization'), options.apiKeys);
    const wait = keyed ? 0 : throttle.wait(caller);
    if (wait > 0) {
      c.header('retry-after', String(wait));
      return c.json({ error: 'too_many_failures', message: `too many refused requests from ${caller}; retry in ${wait} s` }, 429);
    }
    if (options.apiKeys && !keyed) {
      throttle.failed(caller);
      const message = 'send a facilitator API key as Authorization: Bearer <key> (one of TURNPIKE_FACILITATOR_KEYS)';
      return c.json({ error: 'unauthorized', message }, 401);
    }
    // Counted as a failure until answered: requests sent at once cannot all pass the check above before one fails.
    const end = keyed ? undefined : throttle.begin(caller);
    try {
      await next();
      if (!keyed && ((c.res.status >= 400 && c.res.status < 500) || c.get('refused'))) throttle.failed(caller);
    } finally {
      end?.();
    }
  });

  const handle = (action: (request: FacilitatorRequest) => Promise<VerifyResponse | SettleResponse>) => async (c: Context<Env>) => {
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
      const answer = await action(parsed.data);
      c.set('refused', refusal(answer));
      // `costly` is turnpike's own note for its throttle (see `Refusal`), no field of x402's: not sent.
      if ('costly' in answer) delete answer.costly;
      return c.json(answer);
    } catch (error) {
      if (error instanceof FacilitatorUnavailableError) {
        options.logger.warn({ err: error }, 'facilitator unavailable');
        return c.json({ error: error.code, message: error.message, retryable: true }, 503);
      }
      throw error;
    }
  };

  // The URL a command prints answers a browser or curl too: what is served under it.
  app.get('/', (c) => {
    const base = `${new URL(c.req.url).origin}${c.req.path.replace(/\/$/, '')}`;
    return c.json({
      service: 'x402 facilitator (turnpike)',
      x402Versions: [1, 2],
      routes: [
        { method: 'POST', url: `${base}/verify`, does: 'checks a payment against its requirements; moves nothing' },
        { method: 'POST', url: `${base}/settle`, does: 'settles a verified payment on chain, once' },
        { method: 'GET', url: `${base}/supported`, does: 'the schemes, networks and signers served' },
      ],
      authorization: options.apiKeys ? 'verify and settle want Authorization: Bearer <facilitator API key>' : 'none',
    });
  });
  app.get('/supported', (c) => c.json(facilitator.supported()));
  app.post(
    '/verify',
    guard,
    limit,
    handle((r) => facilitator.verify(r, purposes.api)),
  );
  app.post(
    '/settle',
    guard,
    limit,
    handle((r) => facilitator.settle(r, purposes.api)),
  );
  return app;
}
