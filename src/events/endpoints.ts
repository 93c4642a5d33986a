import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { z } from 'zod';
import { DomainError } from '../errors.js';
import type { SecretBox } from '../operators/secret-box.js';
import type { Delivery, EventEndpoint } from '../store/events/events.js';
import { newId } from '../store/ids.js';
import type { Store } from '../store/store.js';
import { UpstreamUrlError, checkUpstreamUrl } from '../upstream/ssrf.js';
import { type RetryPolicy, eventDelivery } from './delivery.js';

/** An operator's webhook endpoint, as the operator API takes it. */
export const newEndpointSchema = z.strictObject({
  url: z
    .url({ protocol: /^https?$/, error: 'expected an http(s) URL' })
    .max(2048)
    .describe('where events are POSTed, signed'),
});
export const deliveriesQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  before: z.coerce.number().int().positive().optional().describe('page on: the createdAt (ms) of the last delivery seen'),
});

/** Endpoints one operator may have: each event is sent to every one. */
export const MAX_ENDPOINTS = 10;
/** `/health` calls events `degraded` when a delivery has waited longer than this. */
export const STALLED_AFTER_MS = 15 * 60_000;
/** Finished deliveries (and events none is left of) are forgotten after this. */
const KEEP_MS = 30 * 86_400_000;

export type InstanceEndpoints = { webhooks: { url: string; secret: string }[]; otlp?: { url: string } };

export type EventsOptions = {
  store: Store;
  /** Seals operators' signing secrets (TURNPIKE_SECRETS_KEY); without it operators cannot add endpoints. */
  box?: SecretBox;
  /** The instance's own endpoints (config file `events`), sent every event. */
  instance: InstanceEndpoints;
  /** Operators' endpoints may be on private addresses (`operators.allowPrivateUpstreams`). */
  allowPrivate: boolean;
  /** Operators' endpoints are reached through the SSRF-guarded agent; the instance's own through `instance`. */
  dispatchers: { operator: Dispatcher; instance: Dispatcher };
  retry: RetryPolicy;
  logger: Logger;
  /** How often this instance re-reads who has endpoints (another instance may have added one). */
  refreshMs?: number;
  pollMs?: number;
  leaseMs?: number;
};

const instanceId = (kind: string, url: string) => `we_${createHash('sha256').update(`${kind} ${url}`).digest('hex').slice(0, 20)}`;

/** An endpoint as the operator API shows it. */
export const publicEndpoint = (e: EventEndpoint) => ({ id: e.id, url: e.url, createdAt: new Date(e.createdAt).toISOString() });
export const publicDelivery = (d: Delivery) => ({
  eventId: d.eventId,
  type: d.type,
  state: d.state,
  attempts: d.attempts,
  nextAttemptAt: d.state === 'pending' ? new Date(d.nextAt).toISOString() : null,
  lastStatus: d.lastStatus ?? null,
  lastError: d.lastError ?? null,
  createdAt: d.createdAt,
  updatedAt: new Date(d.updatedAt).toISOString(),
});

/**
 * Events out: who gets events (so that the gateway records them only when someone does), the
 * operators' endpoints, the delivery worker, and the backlog `/health` reports.
 *
 * @example const events = createEvents({ store, box, instance: { webhooks: [] }, allowPrivate: false, dispatchers, retry, logger }); await events.start();
 */
export function createEvents(options: EventsOptions) {
  const { store, box, logger } = options;
  const secrets = new Map(options.instance.webhooks.map((w) => [instanceId('webhook', w.url), w.secret]));
  const instanceEndpoints = [
    ...options.instance.webhooks.map((w) => ({ id: instanceId('webhook', w.url), kind: 'webhook' as const, url: w.url })),
    ...(options.instance.otlp
      ? [{ id: instanceId('otlp', options.instance.otlp.url), kind: 'otlp' as const, url: options.instance.otlp.url }]
      : []),
  ];
  let owners = new Set<string | null>(instanceEndpoints.length > 0 ? [null] : []);
  let refresher: NodeJS.Timeout | undefined;
  const refresh = async () => {
    owners = new Set(await store.events.endpointOwners());
  };
  /**
   * Gives back the delivery leases of instances that died (their `instance:<id>` lease is free, as
   * journal recovery judges them), so an endpoint does not wait out a dead instance's lease: the
   * claim skips an endpoint with a delivery in flight, and a SIGKILL mid-attempt would otherwise
   * hold back all of that endpoint's events for the lease (60 s).
   */
  const releaseOrphans = async () => {
    for (const owner of await store.events.leaseOwners(Date.now())) {
      if (owner === store.instanceId) continue;
      const lease = await store.lease(`instance:${owner}`);
      if (!lease) continue;
      try {
        await store.events.releaseLeases(owner);
      } finally {
        await lease.release();
      }
    }
  };
  const worker = eventDelivery({
    store,
    logger,
    retry: options.retry,
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
    ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}),
    secretOf(endpoint) {
      if (!endpoint.operatorId) return secrets.get(endpoint.id);
      try {
        return endpoint.sealedSecret && box ? box.open(endpoint.sealedSecret, endpoint.id) : undefined;
      } catch {
        return undefined;
      }
    },
    dispatcherFor: (endpoint) => (endpoint.operatorId ? options.dispatchers.operator : options.dispatchers.instance),
  });

  /** The operator's endpoint `id`, or 404. */
  async function ownEndpoint(operatorId: string, id: string) {
    const endpoint = await store.events.endpoint(id);
    if (!endpoint || endpoint.operatorId !== operatorId) throw new DomainError('endpoint_not_found', `you have no webhook endpoint ${id}`);
    return endpoint;
  }

  return {
    /**
     * Whether anyone gets the events of this operator's servers (or, without one, the instance's
     * own): the gateway builds and records no event otherwise. A set lookup, kept current by
     * `refresh` (every few seconds, and at once on this instance's own changes).
     */
    wanted: (operatorId?: string) => owners.has(null) || (operatorId !== undefined && owners.has(operatorId)),
    async start() {
      await store.events.setInstanceEndpoints(instanceEndpoints.map((e) => ({ ...e, createdAt: Date.now() })));
      await refresh();
      await releaseOrphans();
      const prune = () => store.events.prune(Date.now() - KEEP_MS);
      let sincePrune = 0;
      refresher = setInterval(() => {
        const work = Promise.all([refresh(), releaseOrphans(), ...(++sincePrune % 720 === 0 ? [prune()] : [])]);
        work.catch((err: unknown) => logger.error({ err }, 'cannot read event endpoints'));
      }, options.refreshMs ?? 5_000).unref();
      worker.start();
    },
    async stop() {
      clearInterval(refresher);
      await worker.stop();
    },
    /** Sends what is due now (tests; the worker does it on its own). */
    deliverDue: worker.runOnce,

    /**
     * Adds a webhook endpoint for an operator, its URL checked as an upstream's is (no private,
     * loopback or metadata address unless allowed); the signing secret is in this answer only.
     */
    async addEndpoint(operatorId: string, url: string): Promise<{ endpoint: EventEndpoint; secret: string }> {
      if (!box)
        throw new DomainError(
          'secrets_key_missing',
          'webhook signing secrets are kept encrypted, and this instance has no TURNPIKE_SECRETS_KEY; ask its owner to set one',
        );
      try {
        await checkUpstreamUrl(url, { allowPrivate: options.allowPrivate });
      } catch (error) {
        if (error instanceof UpstreamUrlError) throw new DomainError('endpoint_refused', `url: ${error.message}`, { field: 'url' });
        throw error;
      }
      const id = newId('we');
      const secret = `tpwh_${randomBytes(32).toString('base64url')}`;
      const endpoint: EventEndpoint = { id, operatorId, kind: 'webhook', url, sealedSecret: box.seal(secret, id), createdAt: Date.now() };
      if (!(await store.events.addEndpoint(endpoint, MAX_ENDPOINTS)))
        throw new DomainError('endpoint_limit', `an operator may have ${MAX_ENDPOINTS} webhook endpoints; delete one first`);
      await refresh();
      return { endpoint, secret };
    },
    endpoints: (operatorId: string) => store.events.endpoints(operatorId),
    async deleteEndpoint(operatorId: string, id: string) {
      if (!(await store.events.deleteEndpoint(id, operatorId)))
        throw new DomainError('endpoint_not_found', `you have no webhook endpoint ${id}`);
      await refresh();
    },
    async deliveries(operatorId: string, id: string, page: { limit: number; before?: number }) {
      await ownEndpoint(operatorId, id);
      return store.events.deliveries(id, page);
    },
    /** The outbox as `/health` reports it: `degraded` once a delivery has waited past `STALLED_AFTER_MS`. */
    async health(now = Date.now()) {
      const { pending, oldestAt, failed } = await store.events.backlog();
      const oldestAgeSeconds = oldestAt === undefined ? null : Math.max(0, Math.round((now - oldestAt) / 1000));
      return {
        undelivered: pending,
        oldestAgeSeconds,
        givenUp: failed,
        degraded: oldestAt !== undefined && now - oldestAt > STALLED_AFTER_MS,
      };
    },
  };
}

export type Events = ReturnType<typeof createEvents>;
