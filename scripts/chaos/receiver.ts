import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { verifySignature } from '../../test/helpers/webhook-signature.js';
import { seededRandom } from './rng.js';

/** A delivery the receiver took (answered 2xx): the event id it named, the raw body, and whether its signature verified. */
export type Delivered = { eventId: string; body: string; signed: boolean };

/** Of the deliveries, these fractions are failed on purpose: a 503, or the connection closed without an answer. */
const FAIL_503 = 0.1;
const HANG_UP = 0.05;

/**
 * The operator's webhook endpoint for the chaos run, in this process: it verifies each POST's
 * `Turnpike-Signature` with `secret` and records it, answering 204, except that a seeded fraction
 * is failed on purpose (503, or hung up on) so that deliveries are retried.
 */
export async function startReceiver(seed: number) {
  const secret = randomBytes(32).toString('hex');
  const rng = seededRandom(seed ^ 0x5eed);
  const delivered: Delivered[] = [];
  let failed = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const roll = rng.next();
      if (roll < HANG_UP) {
        failed++;
        return req.socket.destroy();
      }
      if (roll < HANG_UP + FAIL_503) {
        failed++;
        return res.writeHead(503).end('failing on purpose');
      }
      const body = Buffer.concat(chunks).toString('utf8');
      const signed = verifySignature(req.headers['turnpike-signature'] as string | undefined, body, secret);
      delivered.push({ eventId: String(req.headers['turnpike-event-id'] ?? ''), body, signed });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`,
    secret,
    delivered,
    failed: () => failed,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
export type Receiver = Awaited<ReturnType<typeof startReceiver>>;
