import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { Chain } from './chain.js';
import { containers, restartable } from './processes.js';

/** What every tool costs, micro-USD = USDC atomic units (0.01). */
export const PRICE = 10_000n;
/** The most one payer's deferred payments not yet final may add up to (five calls): the bound on a drainer's loss. */
export const DEFERRED_CAP_USD = '0.05';
export const DEFERRED_CAP = 50_000n;
/** Turnpike gives up on a call after this long; a credits debit open for this + 2 s is swept. */
export const UPSTREAM_TIMEOUT_SECONDS = 3;
/** How long a claimed event delivery is held (README, Events out): one a kill cut off is sent again once its lease runs out. */
export const EVENT_LEASE_MS = 60_000;

const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const upstreamScript = fileURLToPath(new URL('./upstream-server.ts', import.meta.url));
const createdKey = z.object({ id: z.string(), key: z.string().startsWith('tp_') });

/**
 * The system under test, each part in its own process so it can be killed: the upstream MCP
 * server, and the built `turnpike wrap` in front of it on the chain's RPC with a relayer key
 * from the sandbox and its data in `dir` (as PID 1 of a PID namespace, as in a container, where
 * this machine allows it), sending its events to `events` (a webhook signed with its secret),
 * retried within a second so that all are delivered while the run waits for recovery.
 */
export async function startStack(chain: Chain, dir: string, settlement: 'strict' | 'deferred', events: { url: string; secret: string }) {
  const { sandbox } = chain;
  const executionLog = path.join(dir, 'executions.jsonl');
  const dataDir = path.join(dir, 'turnpike');
  const adminKey = randomBytes(24).toString('hex');
  const payTo = sandbox.accounts.payees[0]!.address;
  const turnpikeLog = path.join(dir, 'turnpike.log');
  const configFile = path.join(dir, 'turnpike.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      events: {
        endpoints: [{ url: events.url, secretFromEnv: 'TURNPIKE_CHAOS_EVENTS_SECRET' }],
        retry: { firstDelayMs: 100, maxDelayMs: 1_000 },
      },
    }),
  );

  const upstream = restartable({
    name: 'upstream',
    args: (port) => ['--import', 'tsx', upstreamScript, '--log', executionLog, '--port', String(port)],
    ready: /"url":"([^"]+)"/,
    logFile: path.join(dir, 'upstream.log'),
  });
  const upstreamUrl = await upstream.start();
  const turnpike = restartable({
    name: 'turnpike',
    args: (port) => [
      cli,
      'wrap',
      '--config',
      configFile,
      '--upstream',
      upstreamUrl,
      '--network',
      'base',
      '--rpc-url',
      sandbox.rpcUrl,
      '--pay-to',
      payTo,
      '--price',
      '0.01',
      '--settlement',
      settlement,
      '--upstream-timeout',
      String(UPSTREAM_TIMEOUT_SECONDS),
      '--data-dir',
      dataDir,
      '--port',
      String(port),
      '--log-level',
      process.env.CHAOS_LOG_LEVEL ?? 'warn',
    ],
    env: {
      PATH: process.env.PATH,
      TURNPIKE_RELAYER_KEY: sandbox.accounts.relayers.map((r) => r.privateKey).join(','),
      TURNPIKE_ADMIN_KEY: adminKey,
      TURNPIKE_FACILITATOR_MAX_DEFERRED_PER_PAYER_USD: DEFERRED_CAP_USD,
      // Every actor here, thief and payers alike, calls from 127.0.0.1: one caller network, which
      // the thief's junk would throttle for all (a NAT an attacker shares, as documented). The
      // throttle is still on, far above what one soak refuses; its own tests are refused-payments.test.ts.
      TURNPIKE_FACILITATOR_REFUSED_PAYMENTS_PER_MINUTE: '5000',
      TURNPIKE_CHAOS_EVENTS_SECRET: events.secret,
    },
    ready: /paying MCP endpoint at (\S+)\/mcp /,
    logFile: turnpikeLog,
  });
  const base = await turnpike.start({ pid1: containers });

  return {
    mcpUrl: `${base}/mcp`,
    base,
    payTo,
    executionLog,
    turnpikeLog,
    dbPath: path.join(dataDir, 'turnpike.db'),
    turnpike,
    upstream,
    /**
     * Makes the upstream a loop back to turnpike for `ms`: it forwards every MCP request to
     * turnpike's own MCP URL, headers and body as they came, and answers what turnpike answers.
     */
    async loopUpstream(ms: number) {
      const res = await fetch(new URL('/chaos/loop', upstream.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ to: `${base}/mcp`, ms }),
      });
      if (res.status !== 200) throw new Error(`the upstream did not start looping: HTTP ${res.status} ${await res.text()}`);
    },
    /** A credits API key with `usd` on it, made through the admin API. */
    async createKey(name: string, usd: string) {
      const res = await fetch(`${base}/admin/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, usd }),
      });
      if (res.status !== 201) throw new Error(`cannot create an API key: HTTP ${res.status} ${await res.text()}`);
      return createdKey.parse(await res.json());
    },
    async stop() {
      await turnpike.stop();
      await upstream.kill();
    },
  };
}

export type Stack = Awaited<ReturnType<typeof startStack>>;
