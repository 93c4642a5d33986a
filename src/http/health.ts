import { Hono } from 'hono';
import type { PublicClient } from 'viem';
import type { ToolsSource } from '../upstream/upstream-tools.js';
import type { Store } from '../store/store.js';

/** A configured MCP server whose reachability `/health` reports, by its slug. */
export type HealthUpstream = { slug: string; tools: ToolsSource };

/**
 * `GET /health`: `ok` (200) when the chain's RPC answers, the store takes a write and every
 * configured upstream answered its latest tool lookup; `degraded` (200) when only upstreams fail
 * or an event delivery has waited past its bound (`events`: undelivered count, oldest age),
 * since turnpike itself still serves (their paid calls are not charged, the others run); `down`
 * (503) when the chain or the store fails. With the settlement backlog (journal entries between
 * claim and outcome) either way. Upstreams are judged by the background tool lookups (see
 * `toolsLookups`: at most a minute old, `lastAnsweredAt` when the upstream last listed its tools), so a health check
 * never sends a request upstream of its own.
 */
export function healthRoutes(options: {
  client: PublicClient;
  store: Store;
  upstreams?: () => HealthUpstream[];
  /** The events outbox (see `Events.health`): degraded once a delivery has waited past its bound. */
  events?: () => Promise<{ degraded: boolean }>;
}): Hono {
  const app = new Hono();
  app.get('/health', async (c) => {
    const [chain, store, backlog, upstreams, events] = await Promise.all([
      options.client.getBlockNumber({ cacheTime: 0 }).then(
        (block) => ({ ok: true, blockNumber: block.toString() }),
        (error: Error) => ({ ok: false, error: error.message.split('\n')[0] }),
      ),
      options.store.health().then(
        (h) => ({ ok: h.writable, schemaVersion: h.schemaVersion }),
        (error: Error) => ({ ok: false, error: error.message }),
      ),
      options.store.journal.unfinished().then(
        (rows) => rows.length,
        () => null,
      ),
      Promise.all(
        (options.upstreams?.() ?? []).map(async ({ slug, tools }) => {
          const { asOf, error } = await tools();
          const checkedAt = asOf === undefined ? {} : { lastAnsweredAt: new Date(asOf).toISOString() };
          return [slug, error === undefined ? { ok: true, ...checkedAt } : { ok: false, error, ...checkedAt }] as const;
        }),
      ),
      options.events?.().catch((error: Error) => ({ degraded: true, error: error.message })),
    ]);
    const up = chain.ok && store.ok;
    const status = !up ? 'down' : upstreams.every(([, u]) => u.ok) && !events?.degraded ? 'ok' : 'degraded';
    const reported = { ...(options.upstreams ? { upstreams: Object.fromEntries(upstreams) } : {}), ...(events ? { events } : {}) };
    return c.json({ status, chain, store, settlementBacklog: backlog, ...reported }, up ? 200 : 503);
  });
  return app;
}
