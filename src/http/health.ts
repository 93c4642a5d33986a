import { Hono } from 'hono';
import type { PublicClient } from 'viem';
import type { Store } from '../store/store.js';

/**
 * `GET /health`: 200 when the chain's RPC answers and the store takes a write, 503 otherwise,
 * with the settlement backlog (journal entries between claim and outcome) either way.
 */
export function healthRoutes(options: { client: PublicClient; store: Store }): Hono {
  const app = new Hono();
  app.get('/health', async (c) => {
    const [chain, store, backlog] = await Promise.all([
      options.client.getBlockNumber({ cacheTime: 0 }).then(
        (block) => ({ ok: true, blockNumber: block.toString() }),
        (error: Error) => ({ ok: false, error: error.message.split('\n')[0] }),
      ),
      options.store.health().then(
        (h) => ({ ok: h.writable, schemaVersion: h.schemaVersion }),
        (error: Error) => ({ ok: false, error: error.message }),
      ),
      options.store.journal.unfinished().then((rows) => rows.length, () => null),
    ]);
    const ok = chain.ok && store.ok;
    return c.json({ status: ok ? 'ok' : 'degraded', chain, store, settlementBacklog: backlog }, ok ? 200 : 503);
  });
  return app;
}
