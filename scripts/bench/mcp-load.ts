/**
 * The MCP load generator of the proxy and credits benches: JSON-RPC `tools/call` POSTs over
 * node:http with keep-alive (fetch would cost the generator ~4× the CPU the servers need).
 */
import http from 'node:http';
import { summarize } from './stats.js';

const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });

export function post(url: string, body: string, headers: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': '2025-06-18',
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export const callBody = (tool: string, args: object, payment?: unknown) =>
  JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'tools/call',
    params: { name: tool, arguments: args, ...(payment ? { _meta: { 'x402/payment': payment } } : {}) },
  });

/**
 * Sends `bodies` with `concurrency` workers, each idle for `pauseMs` after every call; latencies
 * are indexed by body. Any failed call aborts the bench.
 */
export async function drive(url: string, bodies: string[], concurrency: number, headers: Record<string, string> = {}, pauseMs = 0) {
  const latencies = new Array<number>(bodies.length);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < bodies.length) {
        const index = next++;
        const t = performance.now();
        const answer = await post(url, bodies[index]!, headers);
        latencies[index] = performance.now() - t;
        if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
        if (answer.includes('"isError":true') || answer.includes('"error"')) throw new Error(`bench call failed: ${answer.slice(0, 300)}`);
      }
    }),
  );
  return { ...summarize(latencies), latencies, perSecond: bodies.length / ((performance.now() - started) / 1000) };
}

export const closeLoad = () => agent.destroy();
