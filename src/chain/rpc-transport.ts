import { Agent, request } from 'undici';
import { type HttpTransport, http } from 'viem';
import { shownUrl } from '../log/shown-url.js';

const agent = new Agent({ keepAliveTimeout: 30_000, connections: 64 });

/**
 * What viem's HTTP transport reads of a fetch response: status, the content type and the text.
 * Building it from undici's request API skips the WHATWG streams a full `Response` costs, which
 * is a third of a verification's round trip to a local node.
 */
async function rpcFetch(node: RpcNode, init?: RequestInit): Promise<Response> {
  const headers: Record<string, string> = {};
  new Headers(init?.headers).forEach((value, name) => (headers[name] = value));
  Object.assign(headers, node.headers);
  const answer = await request(node.url, {
    method: (init?.method ?? 'POST') as 'POST',
    headers,
    body: init?.body as string | undefined,
    signal: init?.signal ?? undefined,
    dispatcher: agent,
  });
  const text = await answer.body.text();
  const contentType = answer.headers['content-type'];
  return {
    ok: answer.statusCode >= 200 && answer.statusCode < 300,
    status: answer.statusCode,
    statusText: '',
    headers: new Headers(typeof contentType === 'string' ? { 'content-type': contentType } : {}),
    body: null,
    text: async () => text,
  } as Response;
}

/** Where requests go: the URL without its userinfo, which goes as Basic authorization instead (as viem does). */
type RpcNode = { url: string; headers: Record<string, string> };

function nodeOf(url: string): RpcNode {
  const u = URL.canParse(url) ? new URL(url) : undefined;
  if (!u || (!u.username && !u.password)) return { url, headers: {} };
  const credentials = Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64');
  u.username = '';
  u.password = '';
  return { url: u.toString(), headers: { authorization: `Basic ${credentials}` } };
}

/**
 * viem's HTTP JSON-RPC transport on a keep-alive undici pool. viem still does the JSON-RPC
 * (ids, batching, retries, errors); only the socket layer is swapped. viem is told the URL as it
 * may be shown (`shownUrl`: no API key, no userinfo) and only the socket layer knows the real one,
 * so no error viem builds (`HttpRequestError`, `TimeoutError`… name their URL, and wrap each other's
 * messages), wherever it is logged or answered, carries the node's credentials.
 *
 * @example createPublicClient({ chain, transport: rpcTransport('https://base-mainnet.g.alchemy.com/v2/KEY') }) // errors say …/v2/[redacted]
 */
export function rpcTransport(url: string, options: Parameters<typeof http>[1] = {}): HttpTransport {
  const node = nodeOf(url);
  return http(shownUrl(url), { ...options, fetchFn: (_shown, init) => rpcFetch(node, init) });
}
