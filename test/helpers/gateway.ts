import { networks } from '../../src/chain/networks.js';
import { type GatewayOptions, createGateway } from '../../src/gateway/gateway.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';

const logger = createLogger({ level: 'silent', format: 'json' });

/**
 * One paying gateway at `<url>/mcp` on a free loopback port, with the settings tests share (local
 * network, tool-result challenges, 1 MiB bodies, its own address as the only Host); the rest given.
 *
 * @example const gateway = await listenGateway({ upstream, plan, payTo, rails: [x402Rail({ facilitator })], server: 'test' });
 */
export async function listenGateway(
  options: Pick<GatewayOptions, 'upstream' | 'plan' | 'payTo' | 'rails' | 'server'> & Partial<GatewayOptions>,
): Promise<Listening> {
  const app = createApp(logger);
  let url = '';
  app.route(
    '/mcp',
    createGateway({
      network: networks.local,
      challenge: 'tool-result',
      bodyLimitBytes: 1 << 20,
      allowedHosts: () => [new URL(url).host],
      logger,
      metrics: createMetrics(),
      ...options,
    }),
  );
  const served = await listen(app, { host: '127.0.0.1', port: 0 });
  url = served.url;
  return served;
}

/**
 * POSTs one raw `tools/call` of `tool` (no arguments) to an MCP endpoint, as a client without the
 * SDK would: JSON, both accepted answer types, protocol 2025-06-18, and the caller's `headers`.
 *
 * @example const res = await postToolCall(`${base}/mcp`, 'count', { 'x-api-key': key });
 */
export function postToolCall(url: string, tool: string, headers: Record<string, string> = {}, id = 1): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...headers,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: tool, arguments: {} } }),
  });
}

/**
 * Sends a request again under its Idempotency-Key once the first one is done: while the gateway
 * still finishes the first (it answers `request_in_progress`), it asks again, for up to 15 s.
 * Answers the replay's response and its parsed body.
 */
export async function replayOnceDone(url: string, init: RequestInit): Promise<{ response: Response; body: any }> {
  for (const deadline = Date.now() + 15_000; ; await new Promise((r) => setTimeout(r, 50))) {
    const response = await fetch(url, init);
    const body = await response.json();
    if (JSON.stringify(body).includes('request_in_progress') && Date.now() < deadline) continue;
    return { response, body };
  }
}
