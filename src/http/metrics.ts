import { Hono } from 'hono';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Keeps a label's values bounded whoever chooses them (operators name servers and tools): the
 * first `limit` distinct values are kept, every later one is counted as `other`.
 */
function bounded(limit: number) {
  const seen = new Set<string>();
  return (value: string) => {
    if (seen.has(value)) return value;
    if (seen.size >= limit) return 'other';
    seen.add(value);
    return value;
  };
}

/**
 * The gateway's Prometheus metrics. Labels stay bounded: servers and tools capped (see
 * `bounded`), outcomes and reasons from fixed lists.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'turnpike_process_' });
  return {
    registry,
    /** The label value to use for a server slug (at most 100 distinct). */
    server: bounded(100),
    /** The label value to use for a tool name (at most 1,000 distinct). */
    tool: bounded(1_000),
    calls: new Counter({
      name: 'turnpike_tool_calls_total',
      help: 'tools/call requests by server, tool and outcome (free, paid, paid_credits, free_quota, challenged, failed, settlement_failed, replayed)',
      labelNames: ['server', 'tool', 'outcome'] as const,
      registers: [registry],
    }),
    revenue: new Counter({
      name: 'turnpike_revenue_atomic_total',
      help: 'settled payments in the asset’s atomic units (USDC: 1e-6 USD)',
      labelNames: ['server', 'asset', 'network'] as const,
      registers: [registry],
    }),
    denials: new Counter({
      name: 'turnpike_payment_denials_total',
      help: 'payments refused, by server and reason',
      labelNames: ['server', 'reason'] as const,
      registers: [registry],
    }),
    settlementSeconds: new Histogram({
      name: 'turnpike_settlement_seconds',
      help: 'time to settle a paid call on chain',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    upstreamSeconds: new Histogram({
      name: 'turnpike_upstream_seconds',
      help: 'time until the upstream MCP server answered (headers)',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;

/** `GET /metrics` in Prometheus text format. */
export function metricsRoutes(metrics: Metrics): Hono {
  const app = new Hono();
  app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }));
  return app;
}
