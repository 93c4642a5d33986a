import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { fetch as undiciFetch } from 'undici';
import { HOP_HEADER, nextHops } from './hops.js';
import type { Upstream } from './upstream.js';

export type ToolInfo = { name: string; description?: string };

/**
 * The upstream's tools, asked with the official MCP client (initialize, tools/list, close) and
 * kept for a minute: discovery documents list real tools without a client having listed them.
 */
export function upstreamTools(upstream: Upstream, ttlMs = 60_000) {
  let cached: { at: number; tools: Promise<ToolInfo[]> } | undefined;
  const load = async (): Promise<ToolInfo[]> => {
    const client = new Client({ name: 'turnpike-discovery', version: '1.0.0' });
    const { dispatcher } = upstream;
    const transport = new StreamableHTTPClientTransport(new URL(upstream.url), {
      // Named as a hop like any forwarded request: an upstream that is this turnpike refuses it at once.
      requestInit: { headers: { ...upstream.headers, [HOP_HEADER]: nextHops(null) } },
      // Through the upstream's own dispatcher: a registered server's SSRF guard applies here too.
      ...(dispatcher ? { fetch: ((url: string | URL, init?: RequestInit) => undiciFetch(String(url), { ...init, dispatcher } as never)) as unknown as typeof fetch } : {}),
    });
    await client.connect(transport, { timeout: upstream.timeoutMs });
    try {
      const tools: ToolInfo[] = [];
      let cursor: string | undefined;
      do {
        const page = await client.listTools(cursor ? { cursor } : undefined);
        tools.push(...page.tools.map((t) => ({ name: t.name, ...(t.description ? { description: t.description } : {}) })));
        cursor = page.nextCursor;
      } while (cursor);
      return tools;
    } finally {
      await client.close();
    }
  };
  return (): Promise<ToolInfo[]> => {
    if (!cached || Date.now() - cached.at > ttlMs) {
      const tools = load();
      cached = { at: Date.now(), tools };
      tools.catch(() => (cached = undefined));
    }
    return cached.tools;
  };
}
