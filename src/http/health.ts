import { Hono } from 'hono';
import type { PublicClient } from 'viem';
import type { ToolsSource } from '../upstream/upstream-tools.js';
import type { Store } from '../store/store.js';

/** A configured MCP server whose reachability `/health` reports, by its slug. */
export type HealthUpstream = { slug: string; tools: ToolsSource };

/** With live post-paid accounts, a Stripe webhook at least this often (Stripe invoices each of them monthly at least). */
export const WEBHOOK_MAX_AGE_MS = 32 * 86_400_000;

/**
 * The billing section of `/health`, with why it is degraded (`problems`, empty when ok): usage
 * waiting more than two report intervals (Stripe unreachable or the reporter stopped), usage
 * Stripe refused for good, or, with live post-paid accounts, no Stripe webhook for 32 days (its
 * endpoint or secret is wrong). Ages are whole seconds, null for never.
 *
 * @example await billingHealth(store, 60_000) // { ok: true, lastWebhookAgeSeconds: 12, …, problems: [] }
 */
export async function billingHealth(store: Store, reportIntervalMs: number, now = Date.now()) {
  const b = await store.postpaid.billing(now - 2 * reportIntervalMs);
  const age = (at?: number) => (at === undefined ? null : Math.round((now - at) / 1000));
  const problems = [
    ...(b.staleUnreported > 0 ? [`${b.staleUnreported} usage entries wait more than two report intervals for Stripe`] : []),
    ...(b.refused > 0 ? [`${b.refused} usage entries were refused by Stripe (see the log)`] : []),
    ...(b.accounts > 0 && b.lastWebhookAt !== undefined && now - b.lastWebhookAt > WEBHOOK_MAX_AGE_MS
      ? ['no Stripe webhook for more than 32 days']
      : []),
  ];
  return {
    ok: problems.length === 0,
    lastWebhookAgeSeconds: age(b.lastWebhookAt),
    lastStripeSuccessAgeSeconds: age(b.lastStripeOkAt),
    unreportedUsage: b.unreported,
    staleUnreportedUsage: b.staleUnreported,
    refusedUsage: b.refused,
    problems,
  };
}

/**
 * `GET /health`: `ok` (200) when the chain's RPC answers, the store takes a write and every
 * configured upstream answered its latest tool lookup; `degraded` (200) when only upstreams fail
 * or an event delivery has waited past its bound (`events`: undelivered count, oldest age),
 * since turnpike itself still serves (their paid calls are not charged, the others run); `down`
 * (503) when the chain or the store fails. With the settlement backlog (journal entries between
 * claim and outcome) either way. Upstreams are judged by the background tool lookups (see
 * `toolsLookups`: at most a minute old, `lastAnsweredAt` when the upstream last listed its tools), so a health check
 * never sends a request upstream of its own. With Stripe configured, `billing` (see `billingHealth`)
 * makes it `degraded` too when not ok.
 */
export function healthRoutes(options: {
  client: PublicClient;
  store: Store;
  upstreams?: () => HealthUpstream[];
  billing?: () => Promise<{ ok: boolean }>;
  /** The events outbox (see `Events.health`): degraded once a delivery has waited past its bound. */
  events?: () => Promise<{ degraded: boolean }>;
}): Hono {
  const app = new Hono();
  app.get('/health', async (c) => {
    const [chain, store, backlog, upstreams, billing, events] = await Promise.all([
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
      options.billing?.().catch((error: Error) => ({ ok: false, error: error.message })),
      options.events?.().catch((error: Error) => ({ degraded: true, error: error.message })),
    ]);
    const up = chain.ok && store.ok;
    const healthy = upstreams.every(([, u]) => u.ok) && billing?.ok !== false && !events?.degraded;
    const status = !up ? 'down' : healthy ? 'ok' : 'degraded';
    const reported = {
      ...(options.upstreams ? { upstreams: Object.fromEntries(upstreams) } : {}),
      ...(billing ? { billing } : {}),
      ...(events ? { events } : {}),
    };
    return c.json({ status, chain, store, settlementBacklog: backlog, ...reported }, up ? 200 : 503);
  });
  return app;
}
