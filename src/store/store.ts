import type { CreditStore } from './credits/credits.js';
import type { EventStore } from './events/events.js';
import type { PaymentJournal } from './journal/journal.js';
import type { OperatorStore } from './operators/operators.js';
import type { PostpaidStore } from './postpaid/postpaid.js';
import { BaseError } from '../errors.js';

/**
 * Where turnpike keeps what must survive a crash: SQLite (one machine) or PostgreSQL (several
 * instances). SQL is written once for both: BIGINT for money, constraints for invariants.
 *
 * The map: a folder per area, `journal/` (x402 payments), `credits/` (the ledger), `operators/`
 * (servers, charges, money out, subscriptions, audit), `postpaid/` (post-paid accounts and usage), each holding its interface (`<area>.ts`,
 * what callers import), its statements (`statements.ts`: row types, typed statements, rows to
 * records) and its operations (`ops.ts`); `engine/` runs operations on either backend;
 * `sqlite.ts` and `postgres.ts` open a store and give every area its backend's runner.
 *
 * An operation is a generator yielding typed steps (`get`, `all`, `run`, `lock`, see
 * `engine/statement.ts`): the one way of writing it serves synchronous better-sqlite3, where it
 * runs inside a group commit holding the write lock, and PostgreSQL, where each step is awaited
 * inside a transaction. Rules an operation applies atomically (what a debit is checked by, what
 * is available to withdraw) come from their domain (`src/rails/credits/rules.ts`,
 * `src/operators/balance.ts`: pure functions); the store only makes them atomic.
 *
 * Adding an area (say `ledger`):
 * 1. a migration appended to `migrations.ts` (never edit a shipped one);
 * 2. `ledger/ledger.ts`: its interface, added here as `readonly ledger: Ledger`;
 * 3. `ledger/statements.ts`: each statement `query<Params, Row>(sql)` or `command<Params>(sql)`,
 *    with `@name` parameters; `{ lockable: true }` on the SELECT of a row a check is about;
 * 4. `ledger/ops.ts`: `ledgerStore(runner)`, each method one operation run by the runner's `read`,
 *    `write` (settles once durable) or `decide` (settles once committed, `durable` to await); wired
 *    in `openSqliteStore` and `openPostgresStore`. A check-then-write (debit if the balance covers
 *    it, claim a nonce if unseen) is one `write` that first `lock`s the row of its check, or one
 *    guarded statement. Everything an operation reads or writes is a step it yields: SQLite runs
 *    it whole while holding the write lock, so nothing else may wait inside it.
 */
/** Held by one instance at a time; gone when that instance dies. */
export type Lease = { release(): Promise<void> };

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * This opening of the store: a random id, held as the lease `instance:<id>` while it is open.
   * Journal entries record it as their owner, so another instance can tell an entry whose
   * owner died (its lease is free) from one still being worked on.
   */
  readonly instanceId: string;
  /**
   * Takes a named lease for as long as this store is open, or answers undefined if another live
   * instance holds it: a relayer or treasury key is sent from by one instance only, and a dead
   * instance's journal is recovered by one instance only. PostgreSQL: a session advisory lock
   * (released by the server when the holder's connection dies). SQLite: a row naming the holder
   * instance, alive while the kernel keeps that instance's lock on `<db>.leases/<instance>.lock`
   * (dropped when its process ends, however it ends; never judged by a PID, which a restart reuses).
   */
  lease(name: string): Promise<Lease | undefined>;
  /**
   * Whether this instance still holds what it leased: false from the moment PostgreSQL's lease
   * session is lost (the server frees its locks; the instance is stopping), after which nothing
   * may be sent with a leased key. SQLite: always true (its leases live as long as the process).
   */
  holdsLeases(): boolean;
  readonly journal: PaymentJournal;
  readonly credits: CreditStore;
  readonly operators: OperatorStore;
  readonly postpaid: PostpaidStore;
  readonly events: EventStore;
  /**
   * A random 32-byte secret (hex) made on first use and kept in the store, so every instance on
   * this store shares it: the default signing key of budget tokens.
   */
  instanceSecret(name: string): Promise<string>;
  /** Ends console session `id` (expiring at `until`, ms) on every instance on this store. */
  revokeSession(id: string, until: number): Promise<void>;
  /** Whether console session `id` was ended by `revokeSession`. */
  sessionRevoked(id: string): Promise<boolean>;
  /** Proves the store can take a write (for /health), and reports the schema version. */
  health(): Promise<{ writable: boolean; schemaVersion: number }>;
  /** Idempotent; the store cannot be used afterwards. */
  close(): Promise<void>;
}

/** The store cannot be opened or used as configured; the message says what to do. */
export class StoreError extends BaseError<'store_unavailable'> {
  override name = 'StoreError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'store_unavailable', cause: options.cause });
  }
}
