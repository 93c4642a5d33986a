import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after } from 'node:test';
import { verifySignature } from './webhook-signature.js';

export { verifySignature };

export type Received = { at: number; eventId: string; body: string; event: Record<string, any>; signed: boolean };

/**
 * A local webhook endpoint for tests: verifies each request's signature with `secret` (answering
 * 400 to a bad one), fails on purpose while `failNext` is above zero (HTTP 500) and takes `delayMs`
 * to answer; `received` holds every request it accepted (2xx), `attempts` every one it was sent.
 * With no secret it takes OTLP exports (no signature) and parses them.
 */
export async function startWebhookReceiver(options: { secret?: string; failNext?: number; delayMs?: number } = {}) {
  const received: Received[] = [];
  const attempts: { at: number; eventId: string; status: number }[] = [];
  const headers: string[] = [];
  const state = { failNext: options.failNext ?? 0, secret: options.secret };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const eventId = String(req.headers['turnpike-event-id'] ?? '');
      headers.push(String(req.headers['turnpike-signature'] ?? ''));
      const answer = (status: number, text = '') => {
        attempts.push({ at: Date.now(), eventId, status });
        res.writeHead(status, { 'content-type': 'text/plain' }).end(text);
      };
      if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
      const signed =
        state.secret !== undefined && verifySignature(req.headers['turnpike-signature'] as string | undefined, body, state.secret);
      if (state.secret !== undefined && !signed) return answer(400, 'bad signature');
      if (state.failNext > 0) {
        state.failNext--;
        return answer(500, 'failing on purpose');
      }
      received.push({ at: Date.now(), eventId, body, event: JSON.parse(body), signed });
      answer(204);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  const close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  after(close);
  return {
    url,
    received,
    attempts,
    /** The signature header of each request, in order. */
    headers,
    state,
    /** The events it accepted, by type. */
    ofType: (type: string) => received.filter((r) => r.event.type === type).map((r) => r.event),
    close,
  };
}
