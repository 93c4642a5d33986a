import path from 'node:path';
import type { PublicClient } from 'viem';
import type { ChainConnection } from '../../src/chain/connect.js';
import { networks } from '../../src/chain/networks.js';
import { loadConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { Secrets } from '../../src/config/secrets.js';
import { type EndpointOptions, serveGateway } from '../../src/app/gateway-server.js';
import { createLogger } from '../../src/log/logger.js';
import type { useSandbox } from './chain.js';

export type Answer = { status: number; body: Record<string, any>; text: string; headers: Headers };

/**
 * The whole gateway (`serveGateway`: every API on one port, configured `endpoints` if given) on a test
 * file's sandbox (through `client` when given: one that counts its requests), with a fresh data
 * directory, plus a JSON client for its HTTP APIs.
 */
export async function serveOnSandbox(
  chain: ReturnType<typeof useSandbox>,
  options: { overrides?: ConfigInput; secrets: Secrets; relayer?: number; endpoints?: EndpointOptions[]; client?: PublicClient },
) {
  const dataDir = path.join(path.dirname(chain.dbPath()), `served-${Math.random().toString(36).slice(2)}`);
  const config = loadConfig({ env: {}, overrides: { dataDir, http: { port: 0 }, log: { level: 'silent' }, ...options.overrides } });
  const connection: ChainConnection = {
    network: networks.local,
    shownRpcUrl: chain.sandbox.rpcUrl,
    client: options.client ?? chain.client,
    relayerKeys: [chain.sandbox.accounts.relayers[options.relayer ?? 2]!.privateKey],
    multicall3: true,
    sandbox: chain.sandbox,
    close: async () => {},
  };
  const logger = createLogger({ level: process.env.TEST_LOG ? 'debug' : 'silent', format: 'json' });
  const gateway = await serveGateway({ config, secrets: options.secrets, chain: connection, logger, endpoints: options.endpoints ?? [] });

  async function api(
    method: string,
    route: string,
    request: { key?: string; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const res = await fetch(`${gateway.url}${route}`, {
      method,
      headers: {
        'content-type': 'application/json',
        ...(request.key ? { authorization: `Bearer ${request.key}` } : {}),
        ...request.headers,
      },
      ...(request.body !== undefined ? { body: typeof request.body === 'string' ? request.body : JSON.stringify(request.body) } : {}),
    });
    const text = await res.text();
    let body: Record<string, any> = {};
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON (CSV)
    }
    return { status: res.status, body, text, headers: res.headers };
  }

  return { gateway, url: gateway.url, dataDir, api };
}

/**
 * Polls until `ok` holds (charges resolve in the background), failing with the last value after 15 s:
 * on a loaded 2-core CI machine a background step can take seconds, and a wait that is met returns at once.
 */
export async function eventually<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
