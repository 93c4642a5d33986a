/**
 * One facilitator for the benchmark, in its own process: `turnpike` or `reference`, on the given
 * RPC URL with the given relayer keys (turnpike: on a fresh SQLite file, or `--store=URL`).
 * Prints `{"url": …}` once it serves.
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { x402Facilitator } from '@x402/core/facilitator';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmScheme } from '@x402/evm/exact/facilitator';
import { Hono } from 'hono';
import { type Hex, createPublicClient, createWalletClient, http, nonceManager, publicActions } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { networks } from '../../src/chain/networks.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { rpcTransport } from '../../src/chain/rpc-transport.js';
import { createLogger } from '../../src/log/logger.js';
import { openStore } from '../../src/store/open.js';

// `--network=base`: the node (the sandbox, a bare automining anvil) served as Base, with Base's cadence.
const network = process.argv.includes('--network=base') ? networks.base : networks.local;
const logger = createLogger({ level: 'silent', format: 'json' });

async function startTurnpike(rpcUrl: string, keys: Hex[], storeUrl?: string): Promise<Listening> {
  const store = await openStore(storeUrl ?? `sqlite:${path.join(mkdtempSync(path.join(os.tmpdir(), 'turnpike-bench-')), 'bench.db')}`);
  const client = createPublicClient({
    chain: network.viemChain,
    transport: rpcTransport(rpcUrl),
    pollingInterval: network.receiptPollingMs,
  });
  const facilitator = createFacilitator({
    network,
    client,
    journal: store.journal,
    relayerKeys: keys,
  });
  const app = createApp(logger);
  app.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 1 << 20, logger }));
  return listen(app, { host: '127.0.0.1', port: 0 });
}

async function startReference(rpcUrl: string, key: Hex): Promise<Listening> {
  const account = privateKeyToAccount(key, { nonceManager });
  const client = createWalletClient({
    account,
    chain: network.viemChain,
    transport: http(rpcUrl),
    pollingInterval: network.receiptPollingMs,
  }).extend(publicActions);
  const facilitator = new x402Facilitator().register(
    network.caip2,
    // The reference's own docs pass a viem wallet client extended with public actions like this.
    new ExactEvmScheme(
      toFacilitatorEvmSigner({ ...client, address: account.address } as unknown as Parameters<typeof toFacilitatorEvmSigner>[0], {
        confirmationTimeoutMs: 10_000,
      }),
    ),
  );
  const app = new Hono();
  type Request = { paymentPayload: PaymentPayload; paymentRequirements: PaymentRequirements };
  app.post('/verify', async (c) => {
    const body = await c.req.json<Request>();
    return c.json(await facilitator.verify(body.paymentPayload, body.paymentRequirements));
  });
  app.post('/settle', async (c) => {
    const body = await c.req.json<Request>();
    return c.json(await facilitator.settle(body.paymentPayload, body.paymentRequirements));
  });
  return listen(app, { host: '127.0.0.1', port: 0 });
}

const [kind, rpcUrl, ...rest] = process.argv.slice(2) as ['turnpike' | 'reference', string, ...string[]];
const storeUrl = rest.find((a) => a.startsWith('--store='))?.slice('--store='.length);
const keys = rest.filter((a) => !a.startsWith('--')) as Hex[];
const server = kind === 'reference' ? await startReference(rpcUrl, keys[0]!) : await startTurnpike(rpcUrl, keys, storeUrl);
process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);
process.once('SIGTERM', () => process.exit(0));
