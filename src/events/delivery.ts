import type { Logger } from 'pino';
import { type Dispatcher, request } from 'undici';
import type { ClaimedDelivery, EventEndpoint } from '../store/events/events.js';
import type { Store } from '../store/store.js';
import { SIGNATURE_HEADER, signature } from './events.js';
import { otlpLogs } from './otlp.js';

/** When a failed delivery is tried again: `firstDelayMs`, doubling up to `maxDelayMs`; given up after `maxAttempts`. */
export type RetryPolicy = { firstDelayMs: number; maxDelayMs: number; maxAttempts: number };

export type DeliveryOptions = {
  store: Store;
  /** A webhook endpoint's signing secret, or undefined if this instance cannot open it (the attempt fails and is retried). */
  secretOf(endpoint: EventEndpoint): string | undefined;
  /** The agent an endpoint is reached through: an operator's is SSRF-guarded (see `guardedAgent`). */
  dispatcherFor(endpoint: EventEndpoint): Dispatcher;
  logger: Logger;
  retry: RetryPolicy;
  /** How long a claim holds a delivery; longer than an attempt can take, so two instances never send one event at once. */
  leaseMs?: number;
  /** One attempt's bound: connecting, headers and body. */
  timeoutMs?: number;
  pollMs?: number;
  /** Deliveries claimed at once. */
  batch?: number;
  /** Deliveries of one endpoint in flight at once (see `EventStore.claim`); default `batch`. */
  perEndpoint?: number;
};

/** The delay before attempt `n + 1` after `n` attempts failed. */
export const backoff = (policy: RetryPolicy, attempts: number) => Math.min(policy.maxDelayMs, policy.firstDelayMs * 2 ** (attempts - 1));

/** A body an endpoint answers is read this far (for the delivery log), never further. */
const ANSWER_LOG_BYTES = 200;

/**
 * The delivery worker: claims due deliveries from the outbox with a lease (so instances sharing a
 * PostgreSQL database never send one at once), POSTs each (a webhook signed with its endpoint's
 * secret, or an OTLP/HTTP JSON log export), and records the outcome: delivered on a 2xx, else
 * tried again after an exponential backoff, given up after `maxAttempts`. State is in the store
 * only, so a restart loses nothing; a delivery whose sender died is claimed again once its lease
 * runs out, and carries the same event id. Redirects are not followed. Endpoints take turns and
 * no delivery waits for another's: a slow endpoint holds back only its own.
 *
 * @example const worker = eventDelivery({ store, secretOf, dispatcherFor, logger, retry }); worker.start();
 */
export function eventDelivery(options: DeliveryOptions) {
  const { store, logger, retry } = options;
  const leaseMs = options.leaseMs ?? 60_000;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const batch = options.batch ?? 20;
  let timer: NodeJS.Timeout | undefined;
  const perEndpoint = options.perEndpoint ?? batch;
  let running: Promise<number> | undefined;
  const inFlight = new Set<Promise<void>>();
  let stopped = true;

  async function attempt(d: ClaimedDelivery): Promise<{ ok: true; status: number } | { ok: false; status?: number; error: string }> {
    const { endpoint } = d;
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'turnpike-events' };
    let body = d.payload;
    if (endpoint.kind === 'otlp') body = otlpLogs(d);
    else {
      const secret = options.secretOf(endpoint);
      if (secret === undefined) return { ok: false, error: 'this instance cannot open the endpoint’s signing secret' };
      headers[SIGNATURE_HEADER] = signature(secret, Math.floor(Date.now() / 1000), body);
      headers['turnpike-event-id'] = d.eventId;
      headers['turnpike-event-type'] = d.type;
    }
    try {
      const answer = await request(endpoint.url, {
        method: 'POST',
        headers,
        body,
        dispatcher: options.dispatcherFor(endpoint),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (answer.statusCode >= 200 && answer.statusCode < 300) {
        await answer.body.dump();
        return { ok: true, status: answer.statusCode };
      }
      let said = '';
      for await (const chunk of answer.body) {
        said += Buffer.from(chunk as Uint8Array).toString('utf8');
        if (said.length >= ANSWER_LOG_BYTES) break;
      }
      await answer.body.dump().catch(() => undefined);
      const excerpt = said.slice(0, ANSWER_LOG_BYTES).replace(/\s+/g, ' ').trim();
      return { ok: false, status: answer.statusCode, error: `HTTP ${answer.statusCode}${excerpt ? `: ${excerpt}` : ''}` };
    } catch (error) {
      const { message, cause } = error as Error & { cause?: Error };
      return { ok: false, error: cause?.message ? `${message}: ${cause.message}` : message };
    }
  }

  async function deliver(d: ClaimedDelivery): Promise<void> {
    const result = await attempt(d);
    const attempts = d.attempts + 1;
    const outcome = result.ok
      ? { delivered: true as const, status: result.status }
      : {
          delivered: false as const,
          error: result.error,
          ...(result.status !== undefined ? { status: result.status } : {}),
          ...(attempts < retry.maxAttempts ? { retryAt: Date.now() + backoff(retry, attempts) } : {}),
        };
    if (!result.ok) logger.warn({ event: d.eventId, endpoint: d.endpointId, attempts, error: result.error }, 'event delivery failed');
    if (!(await store.events.finish(d, store.instanceId, outcome)))
      logger.warn({ event: d.eventId, endpoint: d.endpointId }, 'an event delivery outlived its lease');
  }

  /** Claims what is due now, fairly between endpoints (see `EventStore.claim`). */
  async function claimDue(): Promise<ClaimedDelivery[]> {
    if (!(await store.events.due(Date.now()))) return [];
    return store.events.claim(store.instanceId, Date.now(), leaseMs, batch, perEndpoint);
  }

  /** Sends what is due now, a batch at a time; answers how many deliveries were attempted. */
  async function runOnce(): Promise<number> {
    let sent = 0;
    for (;;) {
      const claimed = await claimDue();
      if (claimed.length === 0) return sent;
      await Promise.all(claimed.map(deliver));
      sent += claimed.length;
    }
  }

  // The worker waits for no batch: each delivery finishes on its own and makes room for more, so an endpoint
  // that answers in 10 s holds back only its own deliveries (at most `perEndpoint` in flight), never another's.
  const tick = () => {
    clearTimeout(timer);
    running ??= claimDue()
      .then((claimed) => {
        for (const d of claimed) {
          const sending: Promise<void> = deliver(d)
            .catch((err: unknown) => logger.error({ err }, 'cannot deliver events'))
            .finally(() => {
              inFlight.delete(sending);
              if (!stopped) tick();
            });
          inFlight.add(sending);
        }
        return claimed.length;
      })
      .catch((err: unknown) => {
        logger.error({ err }, 'cannot deliver events');
        return 0;
      })
      .then((claimed) => {
        running = undefined;
        // A full batch: more may be due at once.
        if (!stopped) timer = setTimeout(tick, claimed === batch ? 0 : (options.pollMs ?? 1_000)).unref();
        return claimed;
      });
  };

  return {
    runOnce,
    start() {
      stopped = false;
      tick();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      await Promise.all(inFlight);
    },
  };
}

export type EventDelivery = ReturnType<typeof eventDelivery>;
