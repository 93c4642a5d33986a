/**
 * The schema, as an append-only list: a migration that has shipped is never edited (its checksum
 * is checked at start-up), a change is a new migration. SQL is kept to what SQLite and PostgreSQL
 * both run: BIGINT money, TEXT ids, CHECK and UNIQUE constraints for invariants.
 */
export type Migration = { version: number; name: string; sql: string };

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'meta',
    sql: `
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'payments journal',
    sql: `
      CREATE TABLE payments (
        chain_id INTEGER NOT NULL,
        asset TEXT NOT NULL,
        payer TEXT NOT NULL,
        nonce TEXT NOT NULL,
        pay_to TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        valid_after BIGINT NOT NULL,
        valid_before BIGINT NOT NULL,
        signature TEXT NOT NULL,
        network TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('verified', 'submitting', 'submitted', 'settled', 'failed')),
        tx_hash TEXT,
        raw_tx TEXT,
        relayer TEXT,
        relayer_nonce BIGINT,
        error_reason TEXT,
        error_message TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (chain_id, asset, payer, nonce),
        CHECK (state NOT IN ('submitted', 'settled') OR tx_hash IS NOT NULL)
      );
      CREATE INDEX payments_unfinished ON payments (state, created_at);
      CREATE INDEX payments_tx_hash ON payments (tx_hash);
    `,
  },
];
