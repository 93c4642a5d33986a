import type { CreditStore } from './credits.js';
import type { PaymentJournal } from './journal.js';
import type { OperatorStore } from './operators.js';

/**
 * Where turnpike keeps what must survive a crash. Methods are async because the PostgreSQL
 * backend will be; SQL stays portable: BIGINT for money, constraints for invariants.
 *
 * Adding a repository (say `ledger`):
 * 1. a migration appended to `migrations.ts` (never edit a shipped one);
 * 2. an interface in `ledger.ts`, added here as `readonly ledger: Ledger`;
 * 3. one implementation per backend (`sqlite-ledger.ts`: `sqliteLedger(db)`, wired in
 *    `openSqliteStore`). A check-then-write (debit if the balance covers it, claim a nonce if
 *    unseen) goes in one `db.transaction(fn).immediate()` or one guarded statement; never await
 *    inside it.
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
  readonly journal: PaymentJournal;
  readonly credits: CreditStore;
  readonly operators: OperatorStore;
  /**
   * A random 32-byte secret (hex) made on first use and kept in the store, so every instance on
   * this store shares it: the default signing key of budget tokens.
   */
  instanceSecret(name: string): Promise<string>;
  /** Proves the store can take a write (for /health), and reports the schema version. */
  health(): Promise<{ writable: boolean; schemaVersion: number }>;
  /** Idempotent; the store cannot be used afterwards. */
  close(): Promise<void>;
}

/** The store cannot be opened or used as configured; the message says what to do. */
export class StoreError extends Error {
  override name = 'StoreError';
}
