import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { Hono } from 'hono';
import { type Dispatcher, fetch as undiciFetch } from 'undici';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { listen } from '../../src/http/listen.js';

/**
 * An MCP server built with the official SDK (JSON answers) at `/mcp` whose `count` tool counts
 * how often it really ran (`slow` too, 300 ms later: `hangUpWhileSlow` hangs up in between), with `fail` (always `isError`) and `other`; plus `/broken` (HTTP 500)
 * and `/hang` (never answers), for the calls that must not be charged. `lastRequest` is what the
 * server last received at `/mcp`, bytes and headers.
 */
export async function startCounterUpstream() {
  let runs = 0;
  let started = 0;
  let last: { body: string; headers: Headers } | undefined;
  const app = new Hono();
  app.all('/mcp', async (c) => {
    last = { body: await c.req.raw.clone().text(), headers: c.req.raw.headers };
    const server = new McpServer({ name: 'counter', version: '1.0.0' });
    server.registerTool('count', { description: 'counts its executions' }, async () => {
      runs++;
      return { content: [{ type: 'text', text: String(runs) }] };
    });
    server.registerTool('slow', { description: 'counts its executions, after 300 ms' }, async () => {
      started++;
      await new Promise((r) => setTimeout(r, 300));
      runs++;
      return { content: [{ type: 'text', text: String(runs) }] };
    });
    server.registerTool('fail', { description: 'always fails' }, async () => ({ isError: true, content: [{ type: 'text', text: 'no' }] }));
    server.registerTool('other', { description: 'another tool' }, async () => ({ content: [{ type: 'text', text: 'ok' }] }));
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    await server.connect(transport);
    return transport.handleRequest(c.req.raw);
  });
  app.post('/broken', (c) => c.json({ error: 'down' }, 500));
  app.post('/hang', () => new Promise<Response>(() => {}));
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  /** Sends `init` (a `slow` call) to `url` and hangs up once the tool has started, then waits for it to have run. */
  async function hangUpWhileSlow(url: string, init: RequestInit) {
    const before = { started, runs };
    const hangUp = new AbortController();
    const sent = fetch(url, { ...init, signal: hangUp.signal });
    for (const deadline = Date.now() + 15_000; started === before.started; await new Promise((r) => setTimeout(r, 5)))
      if (Date.now() > deadline) throw new Error('the slow tool never started');
    hangUp.abort();
    await sent.then(
      () => {},
      () => {},
    );
    for (const deadline = Date.now() + 15_000; runs === before.runs; await new Promise((r) => setTimeout(r, 10)))
      if (Date.now() > deadline) throw new Error('the slow tool never finished');
  }
  return { url: server.url, runs: () => runs, hangUpWhileSlow, lastRequest: () => last, close: () => server.close() };
}

/** What a gateway answers a `count` call with (plain JSON): the result, a challenge in it, or the receipt in its `_meta`. */
export type CountAnswer = {
  result?: { isError?: boolean; content?: { text: string }[]; structuredContent?: PaymentRequired; _meta?: Record<string, unknown> };
};

/**
 * Calls the counter's `count` tool through the gateway at `url` (its MCP endpoint) with plain
 * `fetch`, paying with `payment` (in `_meta`) if given; `headers` and `dispatcher` (which socket
 * it comes from) as a caller would set them.
 *
 * @example const challenge = (await callCount(`${gateway.url}/mcp`)).result!.structuredContent!;
 */
export async function callCount(
  url: string,
  payment?: unknown,
  options: { headers?: Record<string, string>; dispatcher?: Dispatcher } = {},
): Promise<CountAnswer> {
  const params = { name: 'count', arguments: {}, ...(payment ? { _meta: { 'x402/payment': payment } } : {}) };
  const res = await undiciFetch(url, {
    ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...options.headers,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params }),
  });
  return (await res.json()) as CountAnswer;
}

/** `payer`'s payment for `count` at `url`, made by the official x402 client from the gateway's own challenge. */
export async function countPayment(url: string, payer: DemoAccount) {
  const required = (await callCount(url)).result!.structuredContent!;
  return new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
}
