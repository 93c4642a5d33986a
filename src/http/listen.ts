import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';

export type Listening = { url: string; close(): Promise<void> };

const KEEP_ALIVE_MS = 65_000;

/**
 * Serves an app on host:port (0 = a free port) and resolves once it accepts connections, with
 * the URL to print.
 *
 * @example const { url, close } = await listen(app, { host: '127.0.0.1', port: 0 });
 */
export function listen(app: Hono, at: { host: string; port: number }): Promise<Listening> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch: app.fetch, hostname: at.host, port: at.port }, (info: AddressInfo) => {
      const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${host}:${info.port}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            (server as { closeAllConnections?: () => void }).closeAllConnections?.();
          }),
      });
    });
    // Idle keep-alive connections outlive a load balancer's (60 s is common): a backend that closes
    // first races the balancer's next request on that connection, which then fails with a reset.
    const http = server as { keepAliveTimeout: number; headersTimeout: number };
    http.keepAliveTimeout = KEEP_ALIVE_MS;
    http.headersTimeout = KEEP_ALIVE_MS + 1_000;
    server.once('error', reject);
  });
}
