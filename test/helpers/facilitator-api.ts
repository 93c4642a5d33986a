import { Hono } from 'hono';
import { createPublicClient, http } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { type Facilitator, type FacilitatorOptions, createFacilitator } from '../../src/facilitator/facilitator.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { listen } from '../../src/http/listen.js';
import { createLogger } from '../../src/log/logger.js';
import type { PaymentJournal } from '../../src/store/journal/journal.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { useSandbox } from './chain.js';
import type { PaymentOptions } from './payments.js';

const logger = createLogger({ level: process.env.TEST_LOG ? 'debug' : 'silent', format: 'json' });

export type FacilitatorApiOptions = Partial<FacilitatorOptions> & {
  /** An RPC URL instead of the sandbox's (an unreachable one, say). */
  rpcUrl?: string;
  /** Keys its /verify and /settle want as `Authorization: Bearer` (TURNPIKE_FACILITATOR_KEYS). */
  apiKeys?: string[];
  /** Refused requests one address may make per minute before 429 (default: no limit). */
  failuresPerMinute?: number;
  /** The journal the facilitator writes to, built over the store's (to interleave another path). */
  journalFor?: (journal: PaymentJournal, facilitator: () => Facilitator) => PaymentJournal;
};

/**
 * A facilitator on a test file's sandbox with a fresh SQLite store, settling with every sandbox
 * relayer, and its HTTP API (`post` sends JSON, or a string as it is).
 */
export async function facilitatorApi(chain: ReturnType<typeof useSandbox>, options: FacilitatorApiOptions = {}) {
  const { journalFor, rpcUrl, apiKeys, failuresPerMinute, ...rest } = options;
  const store = await openSqliteStore({ path: chain.dbPath() });
  const journal = journalFor ? journalFor(store.journal, () => facilitator) : store.journal;
  const facilitator: Facilitator = createFacilitator({
    network: networks.local,
    client: rpcUrl ? createPublicClient({ chain: networks.local.viemChain, transport: http(rpcUrl, { retryCount: 0 }) }) : chain.client,
    journal,
    relayerKeys: chain.sandbox.accounts.relayers.map((r) => r.privateKey),
    ...rest,
  });
  const app = createApp(logger);
  const access = { ...(apiKeys ? { apiKeys } : {}), ...(failuresPerMinute ? { failuresPerMinute } : {}) };
  app.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 64 * 1024, logger, ...access }));
  const post = async (path: '/verify' | '/settle', body: unknown) => {
    const res = await app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  return { store, facilitator, app, post, logger };
}

/** 0.01 USDC from the first sandbox payer to the first payee, unless told otherwise. */
export const samplePayment = (chain: ReturnType<typeof useSandbox>, overrides: Partial<PaymentOptions> = {}): PaymentOptions => ({
  payer: chain.sandbox.accounts.payers[0]!,
  payTo: chain.sandbox.accounts.payees[0]!.address,
  amount: 10_000n,
  ...overrides,
});

/**
 * A turnpike facilitator over HTTP on a free loopback port (what `turnpike facilitator` serves),
 * behind a front that records every request (path and headers), strips a path prefix (as CDP's
 * `/platform/v2/x402`), and can fail the next /settle with a 502 `before` it reaches the
 * facilitator or `after` it settled: an answer lost on the way back.
 *
 * @example const remote = await facilitatorOverHttp(chain, { relayerKeys: [key] }); remote.dropNextSettle('after');
 */
export async function facilitatorOverHttp(chain: ReturnType<typeof useSandbox>, options: FacilitatorApiOptions = {}) {
  const { app, store } = await facilitatorApi(chain, options);
  const seen: { path: string; headers: Headers }[] = [];
  let drop: 'before' | 'after' | undefined;
  const front = new Hono();
  front.post('*', async (c) => {
    const path = new URL(c.req.url).pathname;
    seen.push({ path, headers: c.req.raw.headers });
    const failing = path.endsWith('/settle') ? drop : undefined;
    if (failing) drop = undefined;
    if (failing === 'before') return c.text('bad gateway', 502);
    const init = { method: 'POST', headers: c.req.raw.headers, body: await c.req.text() };
    const answer = await app.request(path.replace(/^\/platform\/v2\/x402/, ''), init);
    return failing === 'after' ? c.text('bad gateway', 502) : answer;
  });
  const server = await listen(front, { host: '127.0.0.1', port: 0 });
  return {
    url: server.url,
    seen,
    /** Requests whose path ends with `path`. */
    count: (path: string) => seen.filter((s) => s.path.endsWith(path)).length,
    dropNextSettle: (when: 'before' | 'after') => void (drop = when),
    async close() {
      await server.close();
      await store.close();
    },
  };
}
