import { type AddressInfo, createServer } from 'node:net';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';

export type Listening = { url: string; close(): Promise<void> };

const KEEP_ALIVE_MS = 65_000;

/** Nothing can listen on the address asked for: in use by another process, or not permitted. */
export class PortError extends Error {
  override name = 'PortError';
  constructor(
    readonly at: { host: string; port: number },
    readonly code: 'EADDRINUSE' | 'EACCES',
  ) {
    const why = code === 'EADDRINUSE' ? 'is in use by another process' : 'needs privileges this process lacks';
    super(`port ${at.port} on ${at.host} ${why}`);
  }
}

const portErrorOf = (at: { host: string; port: number }, error: NodeJS.ErrnoException) =>
  error.code === 'EADDRINUSE' || error.code === 'EACCES' ? new PortError(at, error.code) : error;

/**
 * Whether host:port can be listened on now: a trial listen, closed at once, so that a command can
 * refuse before it starts anything else. Port 0 (any free port) always can.
 *
 * @example await portProblem({ host: '127.0.0.1', port: 3402 }) // undefined, or PortError('port 3402 on 127.0.0.1 is in use …')
 */
export function portProblem(at: { host: string; port: number }): Promise<PortError | undefined> {
  if (at.port === 0) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const trial = createServer();
    trial.once('error', (error: NodeJS.ErrnoException) => {
      const problem = portErrorOf(at, error);
      resolve(problem instanceof PortError ? problem : undefined);
    });
    trial.listen({ host: at.host, port: at.port, exclusive: true }, () => trial.close(() => resolve(undefined)));
  });
}

/**
 * Serves an app on host:port (0 = a free port) and resolves once it accepts connections, with
 * the URL to print; an address that cannot be listened on is a `PortError`.
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
    server.once('error', (error: NodeJS.ErrnoException) => reject(portErrorOf(at, error)));
  });
}
