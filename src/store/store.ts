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
export interface Store {
  readonly kind: 'sqlite' | 'postgres';
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
