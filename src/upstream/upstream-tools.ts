import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { fetch as undiciFetch } from 'undici';
import { HOP_HEADER, nextHops } from './hops.js';
import type { Upstream } from './upstream.js';

export type ToolInfo = { name: string; description?: string };

/** What is known of an upstream's tools: the last list it gave and when (ms), and why the latest lookup failed. */
export type KnownTools = { tools: ToolInfo[]; asOf?: number; error?: string };

/**
 * The tools of one upstream. Called, as discovery reads them: never waits longer than `waitMs`.
 * `offers(tool)`, as a priced call asks before a challenge: `true` when the last list has the tool;
 * `false` only when a list the upstream gave within `recheckMs` lacks it (an older list is looked
 * up again first, and waited for); `undefined` when no such list can be had (never listed: a lookup
 * is started, not waited for; or the latest lookup failed), so the call is charged as ever.
 */
export type ToolsSource = (() => Promise<KnownTools>) & {
  offers(tool: string): Promise<boolean | undefined>;
  /** Whether the last list the upstream gave has `tool`, as known now: never waits (a list older than `ttlMs` is looked up behind, as a read does). */
  lists(tool: string): boolean;
};

/**
 * Fixed, whatever the server's own call timeout (up to an hour): a lookup is given up after
 * `timeoutMs`, a list is kept `ttlMs`, at most `concurrency` lookups run at once (the others
 * queue), and only a source's first read waits for its first lookup, at most `waitMs`. A call of
 * a tool missing from a list older than `recheckMs` looks again, at most once per `recheckMs`:
 * calls of made-up names cost the upstream one lookup per `recheckMs` however many arrive.
 */
export const TOOLS_LOOKUP = { timeoutMs: 5_000, ttlMs: 60_000, concurrency: 4, waitMs: 3_000, recheckMs: 5_000 };

const UNASKED = 'the MCP server could not be asked for its tools';
const NOT_YET: KnownTools = { tools: [], error: 'the MCP server has not listed its tools yet; retry shortly' };

/**
 * Upstreams' tools for discovery, looked up in the background with the official MCP client:
 * discovery documents list real tools without a client having listed them, and no upstream can
 * hold a discovery request up. A read starts a lookup when the list is older than `ttlMs` and
 * answers what is known at once; a failed lookup keeps the last list (with its `asOf`) and says
 * why in `error`.
 *
 * @example
 * const lookups = toolsLookups();
 * const tools = lookups.of(upstream);
 * await tools(); // { tools: [{ name: 'search' }], asOf: 1767225600000 } or { tools: [], error: '…' }
 * await tools.offers('search'); // true; false for a name a recent list lacks; undefined when unknown
 * tools.lists('search'); // true once a list had it
 */
export function toolsLookups(options: Partial<typeof TOOLS_LOOKUP> = {}) {
  const { timeoutMs, ttlMs, waitMs, recheckMs, concurrency } = { ...TOOLS_LOOKUP, ...options };
  const limit = semaphore(concurrency);
  return {
    of(upstream: Upstream): ToolsSource {
      let known: KnownTools = { tools: [] };
      let lookedAt = -Infinity;
      let running: Promise<void> | undefined;
      let first: Promise<unknown> | undefined;
      const refresh = () =>
        (running ??= limit(() => listTools(upstream, timeoutMs))
          .then(
            (tools) => void (known = { tools, asOf: Date.now() }),
            (error: unknown) => void (known = { ...known, error: `${UNASKED}: ${(error as Error).message}` }),
          )
          .finally(() => {
            lookedAt = Date.now();
            running = undefined;
          }));
      const read = async () => {
        if (Date.now() - lookedAt >= ttlMs) refresh();
        await (first ??= Promise.race([running, new Promise((resolve) => setTimeout(resolve, waitMs).unref())]));
        return known.asOf === undefined && known.error === undefined ? NOT_YET : known;
      };
      const listed = (tool: string) => known.tools.some((t) => t.name === tool);
      const recent = () => known.error === undefined && known.asOf !== undefined && Date.now() - known.asOf < recheckMs;
      const offers = async (tool: string) => {
        if (known.asOf !== undefined && listed(tool)) return true;
        if (recent()) return false;
        const again = Date.now() - lookedAt >= recheckMs;
        // Never listed: charged now, not held up by a lookup an unresponsive upstream makes last timeoutMs.
        if (known.asOf === undefined) return void (again && refresh());
        await (again ? refresh() : running);
        return recent() ? listed(tool) : undefined;
      };
      const lists = (tool: string) => {
        if (Date.now() - lookedAt >= ttlMs) refresh();
        return listed(tool);
      };
      return Object.assign(read, { offers, lists });
    },
  };
}

/** The upstream's tools: initialize, tools/list (every page), close; given up after `timeoutMs` whatever the upstream does. */
async function listTools(upstream: Upstream, timeoutMs: number): Promise<ToolInfo[]> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
  const client = new Client({ name: 'turnpike-discovery', version: '1.0.0' });
  const { dispatcher } = upstream;
  const transport = new StreamableHTTPClientTransport(new URL(upstream.url), {
    // Named as a hop like any forwarded request: an upstream that is this turnpike refuses it at once.
    requestInit: { headers: { ...upstream.headers, [HOP_HEADER]: nextHops(null) } },
    // Through the upstream's own dispatcher: a registered server's SSRF guard applies here too.
    fetch: ((url: string | URL, init?: RequestInit) =>
      undiciFetch(String(url), {
        ...init,
        signal: init?.signal ? AbortSignal.any([init.signal, deadline.signal]) : deadline.signal,
        ...(dispatcher ? { dispatcher } : {}),
      } as never)) as unknown as typeof fetch,
  });
  const given = new Promise<never>((_, reject) => deadline.signal.addEventListener('abort', () => reject(deadline.signal.reason as Error)));
  try {
    return await Promise.race([given, pages(client, transport)]);
  } finally {
    clearTimeout(timer);
    deadline.abort();
    await client.close().catch(() => {});
  }
}

async function pages(client: Client, transport: StreamableHTTPClientTransport): Promise<ToolInfo[]> {
  await client.connect(transport);
  const tools: ToolInfo[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listTools(cursor ? { cursor } : undefined);
    tools.push(...page.tools.map((t) => ({ name: t.name, ...(t.description ? { description: t.description } : {}) })));
    cursor = page.nextCursor;
  } while (cursor);
  return tools;
}

/** Runs at most `n` tasks at once; the others wait their turn, first come first served. */
function semaphore(n: number) {
  let free = n;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}
