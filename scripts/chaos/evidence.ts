import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { type Address, type Hex, createPublicClient, http } from 'viem';
import { z } from 'zod';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import type { Sandbox } from '../../src/chain/sandbox/sandbox.js';
import { type Execution, readExecutions } from './executions.js';

const journalRow = z.object({
  payer: z.string(),
  nonce: z.string(),
  pay_to: z.string(),
  amount: z.bigint(),
  state: z.string(),
  tx_hash: z.string().nullable(),
  error_reason: z.string().nullable(),
  /** 1: delivered before its receipt (settlement: deferred). */
  deferred: z.bigint(),
});
const ledgerRow = z.object({
  id: z.string(),
  key_id: z.string(),
  kind: z.enum(['topup', 'debit', 'refund', 'adjustment', 'transfer']),
  amount: z.bigint(),
  balance_after: z.bigint(),
  reason: z.string(),
  idempotency_key: z.string(),
  ref: z.string().nullable(),
});
const keyRow = z.object({ id: z.string(), balance: z.bigint() });
const requestRow = z.object({ key_id: z.string(), idempotency_key: z.string(), debit_id: z.string() });
const eventRow = z.object({ id: z.string(), type: z.string(), payload: z.string() });
const deliveryRow = z.object({ event_id: z.string(), state: z.string(), lease_until: z.bigint().nullable() });

export type JournalRow = z.infer<typeof journalRow>;
export type LedgerRow = z.infer<typeof ledgerRow>;

/** What turnpike's store says, read from its SQLite file (read-only, as a second process may). */
export function readStore(dbPath: string) {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  db.defaultSafeIntegers(true);
  try {
    const all = <T>(schema: z.ZodType<T>, sql: string) =>
      db
        .prepare(sql)
        .all()
        .map((row) => schema.parse(row));
    return {
      journal: all(journalRow, 'SELECT payer, nonce, pay_to, amount, state, tx_hash, error_reason, deferred FROM payments'),
      // rowid order is the order the entries were written in.
      ledger: all(ledgerRow, 'SELECT id, key_id, kind, amount, balance_after, reason, idempotency_key, ref FROM ledger ORDER BY rowid'),
      keys: all(keyRow, 'SELECT id, balance FROM api_keys'),
      requests: all(requestRow, 'SELECT key_id, idempotency_key, debit_id FROM idempotent_requests'),
      events: all(eventRow, 'SELECT id, type, payload FROM events'),
      deliveries: all(deliveryRow, 'SELECT event_id, state, lease_until FROM event_deliveries'),
      openDebits: Number((db.prepare('SELECT COUNT(*) AS n FROM open_debits').get() as { n: bigint }).n),
    };
  } finally {
    db.close();
  }
}
export type StoreEvidence = ReturnType<typeof readStore>;

/** Journal entries not final and debits still open: what recovery after a crash must bring to zero. */
export function unrecovered(dbPath: string): { journal: number; openDebits: number } {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const count = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    return {
      journal: count("SELECT COUNT(*) AS n FROM payments WHERE state IN ('verified', 'submitting', 'submitted')"),
      openDebits: count('SELECT COUNT(*) AS n FROM open_debits'),
    };
  } finally {
    db.close();
  }
}

/**
 * Event deliveries still to be sent by the running turnpike (started at `startedAt`): pending ones,
 * except those claimed by a process a kill ended, whose lease (taken `leaseMs` before it ends) has
 * not run out yet.
 */
export function undeliveredEvents(dbPath: string, startedAt: number, leaseMs: number): number {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const sql = `SELECT COUNT(*) AS n FROM event_deliveries
      WHERE state = 'pending' AND NOT (lease_until IS NOT NULL AND lease_until - ? < ? AND lease_until > ?)`;
    return (db.prepare(sql).get(leaseMs, startedAt, Date.now()) as { n: number }).n;
  } finally {
    db.close();
  }
}

/**
 * What the chain says: every USDC `Transfer` and `AuthorizationUsed` log, the balances of the
 * payers and the payee, and every transaction the relayers sent with its status.
 */
export async function readChain(sandbox: Sandbox, payees: Address[]) {
  const client = createPublicClient({ transport: http(sandbox.rpcUrl, { batch: { batchSize: 200 } }) });
  const latest = await client.getBlockNumber();
  const logs = { address: sandbox.usdc, abi: usdcAbi, fromBlock: 0n, toBlock: latest } as const;
  const [transfers, used] = await Promise.all([
    client.getContractEvents({ ...logs, eventName: 'Transfer' }),
    client.getContractEvents({ ...logs, eventName: 'AuthorizationUsed' }),
  ]);
  const balanceOf = (address: Address) =>
    client.readContract({ address: sandbox.usdc, abi: usdcAbi, functionName: 'balanceOf', args: [address] });
  const holders = [...sandbox.accounts.payers.map((p) => p.address), ...payees];
  const balances = new Map(await Promise.all(holders.map(async (a) => [a.toLowerCase(), await balanceOf(a)] as const)));

  const relayers = new Set(sandbox.accounts.relayers.map((r) => r.address.toLowerCase()));
  const blocks = await Promise.all(
    Array.from({ length: Number(latest) }, (_, i) => client.getBlock({ blockNumber: BigInt(i + 1), includeTransactions: true })),
  );
  const sent = blocks.flatMap((b) => b.transactions).filter((tx) => relayers.has(tx.from.toLowerCase()));
  const receipts = await Promise.all(sent.map((tx) => client.getTransactionReceipt({ hash: tx.hash })));

  return {
    transfers: transfers.map((l) => ({
      from: l.args.from!.toLowerCase(),
      to: l.args.to!.toLowerCase(),
      value: l.args.value!,
      tx: l.transactionHash.toLowerCase(),
    })),
    authorizationsUsed: used.map((l) => ({
      authorizer: l.args.authorizer!.toLowerCase(),
      nonce: (l.args.nonce as Hex).toLowerCase(),
      tx: l.transactionHash.toLowerCase(),
    })),
    balances,
    initialPayerBalance: sandbox.payerUsdc,
    relayerTransactions: receipts.map((r) => ({ hash: r.transactionHash.toLowerCase(), success: r.status === 'success' })),
  };
}
export type ChainEvidence = Awaited<ReturnType<typeof readChain>>;

/** turnpike's own error and warning lines (pino JSON on stderr), by message. */
export function readLogProblems(file: string): Record<string, number> {
  const problems: Record<string, number> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { level?: number; msg?: string };
    if ((entry.level ?? 0) < 40) continue;
    const what = `${entry.level! >= 50 ? 'error' : 'warn'}: ${entry.msg ?? '?'}`;
    problems[what] = (problems[what] ?? 0) + 1;
  }
  return problems;
}

export type Evidence = { store: StoreEvidence; chain: ChainEvidence; executions: Execution[]; logProblems: Record<string, number> };

export async function gatherEvidence(options: {
  dbPath: string;
  sandbox: Sandbox;
  payees: Address[];
  executionLog: string;
  turnpikeLog: string;
}): Promise<Evidence> {
  return {
    store: readStore(options.dbPath),
    chain: await readChain(options.sandbox, options.payees),
    executions: readExecutions(options.executionLog),
    logProblems: readLogProblems(options.turnpikeLog),
  };
}
