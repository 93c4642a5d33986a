/**
 * 1 vs 2 turnpike instances on one PostgreSQL, each in its own process with its own relayer key:
 * credits-paid calls through the gateway (the debit a row-locked transaction on the shared
 * database) and x402 `/verify` on the facilitator (journal read and batched chain read). The load
 * is the same in both runs; with two instances it is split between them, as a load balancer would.
 */
import pg from 'pg';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { v2Request } from '../../test/helpers/payments.js';
import { startChild } from './child.js';
import { checkBalance, fundedKey } from './credits.js';
import { callBody, closeLoad, drive } from './mcp-load.js';
import { type Row, summarize } from './stats.js';

const POSTGRES_URL =
  process.env.TURNPIKE_BENCH_POSTGRES_URL ?? process.env.TURNPIKE_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const FUNDS = 1_000_000_000_000n;
const PRICE = 1000n;
const CALLERS = 16;

type Lane = { url: string; headers?: Record<string, string> };

/** Drives `bodies` through several lanes at once, one worker each (a lane: a URL, and the caller's key); one set of figures. */
async function across(lanes: Lane[], bodies: string[]) {
  const started = performance.now();
  const share = Math.ceil(bodies.length / lanes.length);
  const parts = await Promise.all(lanes.map((lane, i) => drive(lane.url, bodies.slice(i * share, (i + 1) * share), 1, lane.headers)));
  const latencies = parts.flatMap((p) => p.latencies);
  return { ...summarize(latencies), perSecond: bodies.length / ((performance.now() - started) / 1000) };
}

async function reachable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function benchInstances(sandbox: Sandbox, progress: (s: string) => void): Promise<Row[]> {
  const unreachable = await reachable();
  if (unreachable) {
    return [
      {
        path: 'instances on one PostgreSQL',
        subject: 'skipped',
        p50Ms: NaN,
        p99Ms: NaN,
        note: `PostgreSQL at ${POSTGRES_URL} not reachable: ${unreachable}`,
      },
    ];
  }
  const schema = `tp_bench_${process.pid}`;
  const storeUrl = `${POSTGRES_URL}${POSTGRES_URL.includes('?') ? '&' : '?'}schema=${schema}`;
  const rows: Row[] = [];
  const relayer = (i: number) => sandbox.accounts.relayers[i]!.privateKey;
  const row = (path: string, instances: number, r: { p50: number; p99: number; perSecond: number }, base?: number) =>
    rows.push({
      path,
      subject: `${instances} instance${instances > 1 ? 's' : ''}`,
      p50Ms: r.p50,
      p99Ms: r.p99,
      perSecond: r.perSecond,
      ...(base ? { note: `${(r.perSecond / base).toFixed(2)}× one instance` } : {}),
    });
  try {
    progress('instances: credits-paid calls, 1 then 2 gateways on one PostgreSQL');
    // Sixteen callers, each with a key of its own, as many agents would be: no one key's row lock is the bottleneck.
    const keys: Record<string, string>[] = [];
    for (let i = 0; i < CALLERS; i++) keys.push({ authorization: `Bearer ${await fundedKey(storeUrl, FUNDS)}` });
    const lanes = (urls: string[]) => keys.map((headers, i) => ({ url: urls[i % urls.length]!, headers }));
    const upstream = await startChild('./trivial-upstream.ts', []);
    const first = await startChild('./credits-gateway.ts', [upstream.url, sandbox.rpcUrl, storeUrl, relayer(0)], { turnpike: true });
    const second = await startChild('./credits-gateway.ts', [upstream.url, sandbox.rpcUrl, storeUrl, relayer(1)], { turnpike: true });
    let calls = 0n;
    try {
      const bodies = (n: number) => Array.from({ length: n }, () => callBody('echo', {}));
      await across(lanes([first.url, second.url]), bodies(1600));
      const one = await across(lanes([first.url]), bodies(4800));
      const two = await across(lanes([first.url, second.url]), bodies(4800));
      calls = 11_200n;
      row('credits-paid tools/call, PostgreSQL, concurrency 16', 1, one);
      row('credits-paid tools/call, PostgreSQL, concurrency 16', 2, two, one.perSecond);
    } finally {
      await Promise.all([first.close(), second.close(), upstream.close()]);
    }
    await checkBalance(storeUrl, FUNDS * BigInt(CALLERS) - PRICE * calls, calls);

    progress('instances: x402 /verify, 1 then 2 facilitators on one PostgreSQL');
    const payTo = sandbox.accounts.payees[0]!.address;
    const payments = async (n: number) =>
      Promise.all(
        Array.from({ length: n }, (_, i) =>
          v2Request({ payer: sandbox.accounts.payers[i % sandbox.accounts.payers.length]!, payTo, amount: 10_000n }).then((b) =>
            JSON.stringify(b),
          ),
        ),
      );
    const a = await startChild('./facilitator-server.ts', ['turnpike', sandbox.rpcUrl, relayer(2), `--store=${storeUrl}`]);
    const b = await startChild('./facilitator-server.ts', ['turnpike', sandbox.rpcUrl, relayer(3), `--store=${storeUrl}`]);
    try {
      const verifyLanes = (urls: string[]) => Array.from({ length: CALLERS }, (_, i) => ({ url: urls[i % urls.length]! }));
      // Signed up front: a pause between runs would let the servers close idle keep-alive sockets under the load generator.
      const [warm, runOne, runTwo] = [await payments(600), await payments(3000), await payments(3000)];
      await across(verifyLanes([`${a.url}/verify`, `${b.url}/verify`]), warm);
      const one = await across(verifyLanes([`${a.url}/verify`]), runOne);
      const two = await across(verifyLanes([`${a.url}/verify`, `${b.url}/verify`]), runTwo);
      row('x402 verify, PostgreSQL, concurrency 16', 1, one);
      row('x402 verify, PostgreSQL, concurrency 16', 2, two, one.perSecond);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  } finally {
    closeLoad();
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }
  return rows;
}
