import type { PaymentJournal } from './journal.js';

/**
 * Where turnpike keeps what must survive a crash. Each capability adds a repository here (a
 * migration, an interface, one implementation per backend); methods are async because the
 * PostgreSQL backend will be. SQL stays portable: integers for money, constraints for invariants.
 */
export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  readonly journal: PaymentJournal;
  /** Proves the store can take a write (for /health), and reports the schema version. */
  health(): Promise<{ writable: boolean; schemaVersion: number }>;
  close(): Promise<void>;
}

/** The store cannot be opened or used as configured; the message says what to do. */
export class StoreError extends Error {
  override name = 'StoreError';
}
