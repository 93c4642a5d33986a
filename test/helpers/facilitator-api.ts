import { createPublicClient, http } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { type Facilitator, type FacilitatorOptions, createFacilitator } from '../../src/facilitator/facilitator.js';
import { createApp } from '../../src/http/app.js';
import { facilitatorRoutes } from '../../src/http/facilitator-routes.js';
import { createLogger } from '../../src/log/logger.js';
import type { PaymentJournal } from '../../src/store/journal/journal.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { useSandbox } from './chain.js';
import type { PaymentOptions } from './payments.js';

const logger = createLogger({ level: process.env.TEST_LOG ? 'debug' : 'silent', format: 'json' });

export type FacilitatorApiOptions = Partial<FacilitatorOptions> & {
  /** An RPC URL instead of the sandbox's (an unreachable one, say). */
  rpcUrl?: string;
  /** The journal the facilitator writes to, built over the store's (to interleave another path). */
  journalFor?: (journal: PaymentJournal, facilitator: () => Facilitator) => PaymentJournal;
};

/**
 * A facilitator on a test file's sandbox with a fresh SQLite store, settling with every sandbox
 * relayer, and its HTTP API (`post` sends JSON, or a string as it is).
 */
export async function facilitatorApi(chain: ReturnType<typeof useSandbox>, options: FacilitatorApiOptions = {}) {
  const { journalFor, rpcUrl, ...rest } = options;
  const store = await openSqliteStore({ path: chain.dbPath() });
  const journal = journalFor ? journalFor(store.journal, () => facilitator) : store.journal;
  const facilitator: Facilitator = createFacilitator({
    network: networks.local,
    client: rpcUrl ? createPublicClient({ chain: networks.local.viemChain, transport: http(rpcUrl, { retryCount: 0 }) }) : chain.client,
    journal,
    relayerKeys: chain.sandbox.accounts.relayers.map((r) => r.privateKey),
    ...rest,
  });
  const app = createApp(logger);
  app.route('/', facilitatorRoutes(facilitator, { bodyLimitBytes: 64 * 1024, logger }));
  const post = async (path: '/verify' | '/settle', body: unknown) => {
    const res = await app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  return { store, facilitator, app, post, logger };
}

/** 0.01 USDC from the first sandbox payer to the first payee, unless told otherwise. */
export const samplePayment = (chain: ReturnType<typeof useSandbox>, overrides: Partial<PaymentOptions> = {}): PaymentOptions => ({
  payer: chain.sandbox.accounts.payers[0]!,
  payTo: chain.sandbox.accounts.payees[0]!.address,
  amount: 10_000n,
  ...overrides,
});
