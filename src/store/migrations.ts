import { createHash } from 'node:crypto';
import { StoreError } from './store.js';

/**
 * The schema, as an append-only list: a migration that has shipped is never edited (its checksum
 * is checked at start-up), a change is a new migration. SQL is kept to what SQLite and PostgreSQL
 * both run: BIGINT money, TEXT ids, CHECK and UNIQUE constraints for invariants. `sqlite`: SQLite's
 * own text, only where what the change is for can be said in its dialect alone (a table stored
 * `WITHOUT ROWID`); PostgreSQL then runs `sql`.
 *
 * @example { version: 20, name: 'lean open debits', sql: 'DROP INDEX open_debits_age;', sqlite: '… WITHOUT ROWID; …' }
 */
export type Migration = { version: number; name: string; sql: string; sqlite?: string };

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
  {
    version: 3,
    name: 'credits',
    sql: `
      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        balance BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
        scope TEXT,
        expires_at BIGINT,
        lifetime_limit BIGINT CHECK (lifetime_limit IS NULL OR lifetime_limit >= 0),
        daily_limit BIGINT CHECK (daily_limit IS NULL OR daily_limit >= 0),
        spent_total BIGINT NOT NULL DEFAULT 0 CHECK (spent_total >= 0),
        spent_day BIGINT NOT NULL DEFAULT 0 CHECK (spent_day >= 0),
        day BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE TABLE budget_tokens (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        cap BIGINT NOT NULL CHECK (cap > 0),
        spent BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent <= cap),
        scope TEXT,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX budget_tokens_key ON budget_tokens (key_id, created_at);
      CREATE TABLE ledger (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        kind TEXT NOT NULL CHECK (kind IN ('topup', 'debit', 'refund', 'adjustment', 'transfer')),
        amount BIGINT NOT NULL,
        balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
        reason TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        token_id TEXT REFERENCES budget_tokens (id),
        ref TEXT,
        created_at BIGINT NOT NULL,
        CHECK (amount <> 0),
        CHECK ((kind = 'debit') = (amount < 0) OR kind IN ('adjustment', 'transfer'))
      );
      CREATE INDEX ledger_key ON ledger (key_id, created_at, id);
      CREATE TABLE idempotent_requests (
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        idempotency_key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        debit_id TEXT NOT NULL REFERENCES ledger (id),
        response TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (key_id, idempotency_key)
      );
      CREATE TABLE checkout_sessions (
        session_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        package TEXT NOT NULL,
        credits BIGINT NOT NULL CHECK (credits > 0),
        amount_total BIGINT NOT NULL CHECK (amount_total > 0),
        currency TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'credited', 'rejected')),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE TABLE stripe_events (
        event_id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        session_id TEXT,
        outcome TEXT NOT NULL,
        received_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'open debits',
    sql: `
      CREATE TABLE open_debits (
        debit_id TEXT PRIMARY KEY REFERENCES ledger (id),
        created_at BIGINT NOT NULL
      );
      CREATE INDEX open_debits_age ON open_debits (created_at);
    `,
  },
  {
    version: 5,
    name: 'operators',
    sql: `
      CREATE TABLE operators (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        payout_address TEXT,
        stripe_account TEXT UNIQUE,
        status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE TABLE servers (
        id TEXT PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators (id),
        slug TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        upstream_url TEXT NOT NULL,
        auth_mode TEXT NOT NULL CHECK (auth_mode IN ('none', 'header', 'query')),
        auth_name TEXT,
        auth_secret TEXT,
        public INTEGER NOT NULL CHECK (public IN (0, 1)),
        custody TEXT NOT NULL CHECK (custody IN ('direct', 'platform')),
        pay_to TEXT,
        plan TEXT NOT NULL,
        challenge TEXT NOT NULL CHECK (challenge IN ('tool-result', 'http-402')),
        timeout_ms BIGINT NOT NULL CHECK (timeout_ms > 0),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        CHECK (custody = 'platform' OR pay_to IS NOT NULL)
      );
      CREATE INDEX servers_operator ON servers (operator_id);
      ALTER TABLE api_keys ADD COLUMN operator_id TEXT REFERENCES operators (id);
      CREATE INDEX api_keys_operator ON api_keys (operator_id);
      ALTER TABLE payments ADD COLUMN owner TEXT;
      CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        instance TEXT NOT NULL,
        pid INTEGER NOT NULL,
        taken_at BIGINT NOT NULL
      );
      CREATE TABLE request_counts (
        key_id TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        count BIGINT NOT NULL CHECK (count > 0),
        PRIMARY KEY (key_id, window_start)
      );
      CREATE INDEX payments_owner ON payments (state, owner);
      CREATE TABLE usage_counts (
        server TEXT NOT NULL,
        caller TEXT NOT NULL,
        month INTEGER NOT NULL,
        calls BIGINT NOT NULL CHECK (calls >= 0),
        PRIMARY KEY (server, caller, month)
      );
      CREATE TABLE charges (
        id TEXT PRIMARY KEY,
        server TEXT NOT NULL,
        operator_id TEXT REFERENCES operators (id),
        rail TEXT NOT NULL CHECK (rail IN ('x402', 'credits', 'free', 'subscription')),
        caller TEXT NOT NULL,
        tool TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        operator_share BIGINT NOT NULL CHECK (operator_share >= 0),
        platform_share BIGINT NOT NULL CHECK (platform_share >= 0),
        custody TEXT NOT NULL CHECK (custody IN ('direct', 'platform')),
        ref TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('pending', 'earned', 'void')),
        settle_ms BIGINT,
        created_at BIGINT NOT NULL,
        CHECK (operator_share + platform_share = amount)
      );
      CREATE INDEX charges_server_time ON charges (server, created_at);
      CREATE INDEX charges_operator_time ON charges (operator_id, created_at);
      CREATE INDEX charges_pending ON charges (state, created_at);
      CREATE TABLE denial_counts (
        server TEXT NOT NULL,
        day INTEGER NOT NULL,
        reason TEXT NOT NULL,
        count BIGINT NOT NULL CHECK (count > 0),
        PRIMARY KEY (server, day, reason)
      );
      CREATE TABLE withdrawals (
        id TEXT PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators (id),
        amount BIGINT NOT NULL CHECK (amount > 0),
        to_address TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('requested', 'submitted', 'confirmed', 'failed')),
        tx_hash TEXT,
        raw_tx TEXT,
        error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (operator_id, idempotency_key),
        CHECK (state NOT IN ('submitted', 'confirmed') OR tx_hash IS NOT NULL)
      );
      CREATE INDEX withdrawals_unfinished ON withdrawals (state, created_at);
      CREATE TABLE payouts (
        id TEXT PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators (id),
        amount BIGINT NOT NULL CHECK (amount > 0),
        destination TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('requested', 'paid', 'failed')),
        transfer_id TEXT,
        error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (operator_id, idempotency_key)
      );
      CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        server TEXT NOT NULL,
        status TEXT NOT NULL,
        current_period_end BIGINT NOT NULL,
        event_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE INDEX subscriptions_key ON subscriptions (key_id, server);
      CREATE TABLE audit_log (
        id TEXT PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        operator_id TEXT,
        action TEXT NOT NULL,
        target TEXT,
        ip TEXT,
        detail TEXT
      );
      CREATE INDEX audit_log_operator ON audit_log (operator_id, at);
    `,
  },
  {
    version: 6,
    name: 'kept results of paid calls',
    sql: `
      CREATE TABLE paid_results (
        chain_id INTEGER NOT NULL,
        asset TEXT NOT NULL,
        payer TEXT NOT NULL,
        nonce TEXT NOT NULL,
        call TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (chain_id, asset, payer, nonce)
      );
    `,
  },
  {
    version: 7,
    name: 'payment purposes',
    // Rows from before purposes were recorded get one no caller ever presents: they stay used.
    sql: `
      ALTER TABLE payments ADD COLUMN purpose TEXT NOT NULL DEFAULT 'legacy';
      ALTER TABLE payments ADD COLUMN pending_answered INTEGER NOT NULL DEFAULT 0 CHECK (pending_answered IN (0, 1));
    `,
  },
  {
    version: 8,
    name: 'servers bound by id',
    // Counts, charges, subscriptions and denials name the server's id from here on (a configured
    // endpoint's: its slug). Rows written before name a slug: each goes to the server that held the
    // slug then (a charge: the one created before it); a deleted server's rows keep the old slug,
    // which no registered server's id can equal. A deleted server stays as a row with `deleted_at`
    // (what refers to it still finds whose it was): a slug is unique among servers not deleted.
    sql: `
      CREATE TABLE servers_v8 (
        id TEXT PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators (id),
        slug TEXT NOT NULL,
        name TEXT NOT NULL,
        upstream_url TEXT NOT NULL,
        auth_mode TEXT NOT NULL CHECK (auth_mode IN ('none', 'header', 'query')),
        auth_name TEXT,
        auth_secret TEXT,
        public INTEGER NOT NULL CHECK (public IN (0, 1)),
        custody TEXT NOT NULL CHECK (custody IN ('direct', 'platform')),
        pay_to TEXT,
        plan TEXT NOT NULL,
        challenge TEXT NOT NULL CHECK (challenge IN ('tool-result', 'http-402')),
        timeout_ms BIGINT NOT NULL CHECK (timeout_ms > 0),
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        deleted_at BIGINT,
        CHECK (custody = 'platform' OR pay_to IS NOT NULL)
      );
      INSERT INTO servers_v8 (id, operator_id, slug, name, upstream_url, auth_mode, auth_name, auth_secret, public, custody, pay_to, plan,
                              challenge, timeout_ms, created_at, updated_at)
        SELECT id, operator_id, slug, name, upstream_url, auth_mode, auth_name, auth_secret, public, custody, pay_to, plan,
               challenge, timeout_ms, created_at, updated_at FROM servers;
      DROP TABLE servers;
      ALTER TABLE servers_v8 RENAME TO servers;
      CREATE INDEX servers_operator ON servers (operator_id);
      CREATE UNIQUE INDEX servers_live_slug ON servers (slug) WHERE deleted_at IS NULL;
      CREATE INDEX servers_slug ON servers (slug);
      UPDATE charges SET server = COALESCE(
        (SELECT id FROM servers WHERE servers.slug = charges.server AND servers.created_at <= charges.created_at), server);
      ALTER TABLE charges RENAME COLUMN server TO server_id;
      UPDATE usage_counts SET server = COALESCE((SELECT id FROM servers WHERE servers.slug = usage_counts.server), server);
      ALTER TABLE usage_counts RENAME COLUMN server TO server_id;
      UPDATE subscriptions SET server = COALESCE((SELECT id FROM servers WHERE servers.slug = subscriptions.server), server);
      ALTER TABLE subscriptions RENAME COLUMN server TO server_id;
      UPDATE denial_counts SET server = COALESCE((SELECT id FROM servers WHERE servers.slug = denial_counts.server), server);
      ALTER TABLE denial_counts RENAME COLUMN server TO server_id;
    `,
  },
  {
    version: 9,
    name: 'checkouts held for review',
    // A paid session that does not match its record (amount, currency) or whose key was revoked
    // waits in 'review' for the admin; sessions 'rejected' before this had a wrong amount: review.
    sql: `
      CREATE TABLE checkout_sessions_v9 (
        session_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        package TEXT NOT NULL,
        credits BIGINT NOT NULL CHECK (credits > 0),
        amount_total BIGINT NOT NULL CHECK (amount_total > 0),
        currency TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'review', 'credited', 'rejected')),
        review_reason TEXT CHECK (review_reason IN ('amount_mismatch', 'currency_mismatch', 'key_revoked')),
        paid_amount BIGINT,
        paid_currency TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        CHECK ((state = 'review') = (review_reason IS NOT NULL) OR state IN ('credited', 'rejected'))
      );
      INSERT INTO checkout_sessions_v9 (session_id, key_id, package, credits, amount_total, currency, state, review_reason,
                                        created_at, updated_at)
        SELECT session_id, key_id, package, credits, amount_total, currency,
               CASE WHEN state = 'rejected' THEN 'review' ELSE state END,
               CASE WHEN state = 'rejected' THEN 'amount_mismatch' END, created_at, updated_at
        FROM checkout_sessions;
      DROP TABLE checkout_sessions;
      ALTER TABLE checkout_sessions_v9 RENAME TO checkout_sessions;
      CREATE INDEX checkout_sessions_state ON checkout_sessions (state, updated_at);
    `,
  },
  {
    version: 10,
    name: 'withdrawals waiting for gas',
    // Set while a submitted withdrawal's transaction is unknown to the node and the treasury cannot pay its gas.
    sql: `
      ALTER TABLE withdrawals ADD COLUMN waiting_for_gas INTEGER NOT NULL DEFAULT 0 CHECK (waiting_for_gas IN (0, 1));
    `,
  },
  {
    version: 11,
    name: 'oauth',
    // A registered server's OAuth settings (JSON), and the key each OAuth caller (issuer + subject) pays from: one key
    // may pay for many subjects (an organisation's people).
    sql: `
      ALTER TABLE servers ADD COLUMN oauth TEXT;
      CREATE TABLE oauth_subjects (
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, subject)
      );
      CREATE INDEX oauth_subjects_key ON oauth_subjects (key_id);
    `,
  },
  {
    version: 12,
    name: 'suspended servers',
    // A suspended server is not served nor listed; its row, slug and history stay as they are.
    sql: `
      ALTER TABLE servers ADD COLUMN status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended'));
    `,
  },
  {
    version: 13,
    name: 'post-paid accounts and usage',
    // A key's post-paid account on one server (a Stripe customer's subscription to a metered price), and one usage entry
    // per priced call it made: open while the call runs, billable once delivered, void if it failed; reported to
    // Stripe's meter once (reported_at), or refused by Stripe for good (report_error).
    sql: `
      CREATE TABLE postpaid_accounts (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        server_id TEXT NOT NULL,
        customer TEXT NOT NULL,
        subscription TEXT NOT NULL UNIQUE,
        meter TEXT NOT NULL,
        credit_limit BIGINT NOT NULL CHECK (credit_limit > 0),
        unbilled BIGINT NOT NULL DEFAULT 0 CHECK (unbilled >= 0),
        period_start BIGINT NOT NULL,
        status TEXT NOT NULL,
        status_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (key_id, server_id)
      );
      CREATE TABLE usage_entries (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES postpaid_accounts (id),
        tool TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        state TEXT NOT NULL CHECK (state IN ('open', 'billable', 'void')),
        created_at BIGINT NOT NULL,
        reported_at BIGINT,
        report_error TEXT
      );
      CREATE INDEX usage_entries_account ON usage_entries (account_id, created_at);
      CREATE INDEX usage_entries_open ON usage_entries (created_at) WHERE state = 'open';
      CREATE INDEX usage_entries_unreported ON usage_entries (id) WHERE state = 'billable' AND reported_at IS NULL AND report_error IS NULL;
    `,
  },
  {
    version: 14,
    name: 'oauth subjects per operator',
    // A subject's link belongs to its key's operator ('' for the instance's own keys): each operator links the subjects of
    // an identity provider it shares with others on its own, and a link is looked up only on its operator's servers.
    sql: `
      CREATE TABLE oauth_subjects_v13 (
        operator_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        created_at BIGINT NOT NULL,
        PRIMARY KEY (operator_id, issuer, subject)
      );
      INSERT INTO oauth_subjects_v13 (operator_id, issuer, subject, key_id, created_at)
        SELECT COALESCE(k.operator_id, ''), s.issuer, s.subject, s.key_id, s.created_at
        FROM oauth_subjects s JOIN api_keys k ON k.id = s.key_id;
      DROP TABLE oauth_subjects;
      ALTER TABLE oauth_subjects_v13 RENAME TO oauth_subjects;
      CREATE INDEX oauth_subjects_key ON oauth_subjects (key_id);
    `,
  },
  {
    version: 15,
    name: 'events out',
    // The outbox: one row per event (its id is what every delivery of it carries), one delivery row per endpoint it goes
    // to, claimed with a lease (`lease_owner` until `lease_until`) so that one instance at a time sends it. An endpoint
    // with no operator is the instance's own (config file): it gets every event; an operator's gets that operator's.
    // A key's low-balance alert threshold (micro-USD), set by its holder.
    sql: `
      CREATE TABLE event_endpoints (
        id TEXT PRIMARY KEY,
        operator_id TEXT,
        kind TEXT NOT NULL CHECK (kind IN ('webhook', 'otlp')),
        url TEXT NOT NULL,
        sealed_secret TEXT,
        created_at BIGINT NOT NULL,
        deleted_at BIGINT
      );
      CREATE INDEX event_endpoints_operator ON event_endpoints (operator_id);
      CREATE TABLE events (
        id TEXT PRIMARY KEY,
        operator_id TEXT,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE TABLE event_deliveries (
        event_id TEXT NOT NULL REFERENCES events (id),
        endpoint_id TEXT NOT NULL REFERENCES event_endpoints (id),
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at BIGINT NOT NULL,
        lease_owner TEXT,
        lease_until BIGINT,
        last_status INTEGER,
        last_error TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (event_id, endpoint_id)
      );
      CREATE INDEX event_deliveries_due ON event_deliveries (state, next_at);
      CREATE INDEX event_deliveries_endpoint ON event_deliveries (endpoint_id, created_at);
      ALTER TABLE api_keys ADD COLUMN low_balance_alert BIGINT CHECK (low_balance_alert > 0);
    `,
  },
  {
    version: 16,
    name: 'deferred settlement',
    // A payment whose result was delivered once its transaction was signed and journalled (deferred: 1); if that
    // transaction then fails, the row is a loss until an operator clears it (loss_cleared_at). A server settles
    // strict (result after the receipt) or deferred. One row per payer to lock while deferring its next payment,
    // and charges lost to a failed deferred payment (void, lost: 1).
    sql: `
      ALTER TABLE payments ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0 CHECK (deferred IN (0, 1));
      ALTER TABLE payments ADD COLUMN loss_cleared_at BIGINT;
      CREATE INDEX payments_payer_unfinished ON payments (chain_id, asset, payer) WHERE state IN ('verified', 'submitting', 'submitted');
      CREATE INDEX payments_losses ON payments (chain_id, asset, payer) WHERE deferred = 1 AND state = 'failed' AND loss_cleared_at IS NULL;
      CREATE TABLE deferring_payers (
        chain_id INTEGER NOT NULL,
        asset TEXT NOT NULL,
        payer TEXT NOT NULL,
        PRIMARY KEY (chain_id, asset, payer)
      );
      ALTER TABLE servers ADD COLUMN settlement TEXT NOT NULL DEFAULT 'strict' CHECK (settlement IN ('strict', 'deferred'));
      ALTER TABLE charges ADD COLUMN lost INTEGER NOT NULL DEFAULT 0 CHECK (lost IN (0, 1));
    `,
  },
  {
    version: 17,
    name: 'post-paid replays and revenue',
    // An Idempotency-Key request is kept with the charge it made: a credits debit or a post-paid usage entry (exactly
    // one). Charges gain the 'invoice' rail (post-paid usage, decided by its entry). Both tables are rebuilt: one SQL text
    // runs on SQLite, which cannot alter a CHECK, and PostgreSQL alike. Servers with post-paid accounts are found by index.
    sql: `
      CREATE TABLE idempotent_requests_v17 (
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        idempotency_key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        debit_id TEXT REFERENCES ledger (id),
        usage_id TEXT REFERENCES usage_entries (id),
        response TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (key_id, idempotency_key),
        CHECK ((debit_id IS NULL) <> (usage_id IS NULL))
      );
      INSERT INTO idempotent_requests_v17 (key_id, idempotency_key, body_hash, debit_id, response, created_at)
        SELECT key_id, idempotency_key, body_hash, debit_id, response, created_at FROM idempotent_requests;
      DROP TABLE idempotent_requests;
      ALTER TABLE idempotent_requests_v17 RENAME TO idempotent_requests;
      CREATE INDEX idempotent_requests_debit ON idempotent_requests (debit_id);
      CREATE INDEX idempotent_requests_usage ON idempotent_requests (usage_id);
      CREATE TABLE charges_v17 (
        id TEXT PRIMARY KEY,
        server_id TEXT NOT NULL,
        operator_id TEXT REFERENCES operators (id),
        rail TEXT NOT NULL CHECK (rail IN ('x402', 'credits', 'free', 'subscription', 'invoice')),
        caller TEXT NOT NULL,
        tool TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        operator_share BIGINT NOT NULL CHECK (operator_share >= 0),
        platform_share BIGINT NOT NULL CHECK (platform_share >= 0),
        custody TEXT NOT NULL CHECK (custody IN ('direct', 'platform')),
        ref TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('pending', 'earned', 'void')),
        settle_ms BIGINT,
        created_at BIGINT NOT NULL,
        lost INTEGER NOT NULL DEFAULT 0 CHECK (lost IN (0, 1)),
        CHECK (operator_share + platform_share = amount)
      );
      INSERT INTO charges_v17 (id, server_id, operator_id, rail, caller, tool, amount, operator_share, platform_share, custody, ref, state,
                               settle_ms, created_at, lost)
        SELECT id, server_id, operator_id, rail, caller, tool, amount, operator_share, platform_share, custody, ref, state,
               settle_ms, created_at, lost FROM charges;
      DROP TABLE charges;
      ALTER TABLE charges_v17 RENAME TO charges;
      CREATE INDEX charges_server_time ON charges (server_id, created_at);
      CREATE INDEX charges_operator_time ON charges (operator_id, created_at);
      CREATE INDEX charges_pending ON charges (state, created_at);
      CREATE INDEX postpaid_accounts_server ON postpaid_accounts (server_id);
    `,
  },
  {
    version: 18,
    name: 'deferred payments at risk',
    // Every payer's deferred payments not settled and not cleared, summed on each deferred claim (the instance-wide bound).
    sql: `
      CREATE INDEX payments_deferred_at_risk ON payments (chain_id, asset) WHERE deferred = 1 AND state <> 'settled' AND loss_cleared_at IS NULL;
    `,
  },
  {
    version: 19,
    name: 'post-paid unpaid invoices',
    // The invoices of an account whose payment failed (settled 0) or that were paid or voided (settled 1, so that a
    // failure delivered after its payment changes nothing): the account is past due while one is unsettled
    // (unpaid_invoices counts them, kept with the row). paid_through: the end of the latest paid invoice's period; the
    // credit limit covers the usage recorded since then (not yet paid), not only the current period's.
    sql: `
      CREATE TABLE postpaid_invoices (
        account_id TEXT NOT NULL REFERENCES postpaid_accounts (id),
        invoice_id TEXT NOT NULL,
        settled INTEGER NOT NULL CHECK (settled IN (0, 1)),
        PRIMARY KEY (account_id, invoice_id)
      );
      ALTER TABLE postpaid_accounts ADD COLUMN unpaid_invoices INTEGER NOT NULL DEFAULT 0 CHECK (unpaid_invoices >= 0);
      ALTER TABLE postpaid_accounts ADD COLUMN paid_through BIGINT NOT NULL DEFAULT 0;
      UPDATE postpaid_accounts SET paid_through = period_start;
    `,
  },
  {
    version: 20,
    name: 'signed-out console sessions',
    // A console session signed out before it expired, kept until then (and a margin for clock skew); pruned by expiry.
    sql: `
      CREATE TABLE revoked_sessions (
        id TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
      );
      CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);
    `,
  },
  {
    version: 21,
    name: 'lean open debits',
    // Each credits-paid call's debit writes an open_debits row, and its delivery deletes it: fewer b-trees, fewer pages
    // written per call. The sweep's look for the old ones reads the whole table, which holds only the calls under way. On
    // SQLite the table is one b-tree, keyed by the debit id (WITHOUT ROWID), instead of its rows plus an index of that key.
    sql: `
      DROP INDEX open_debits_age;
    `,
    sqlite: `
      CREATE TABLE open_debits_v21 (
        debit_id TEXT PRIMARY KEY REFERENCES ledger (id),
        created_at BIGINT NOT NULL
      ) WITHOUT ROWID;
      INSERT INTO open_debits_v21 (debit_id, created_at) SELECT debit_id, created_at FROM open_debits;
      DROP TABLE open_debits;
      ALTER TABLE open_debits_v21 RENAME TO open_debits;
    `,
  },
  {
    version: 22,
    name: 'kept results bound to their caller',
    // A digest of the secret the paying caller's requests carry (their MCP session), never the secret itself: a payment
    // copied from its settlement on chain, with the call guessed, does not get the result. NULL: a call that carried none
    // (and every result kept before), given back to whoever presents the payment with the call.
    sql: `
      ALTER TABLE paid_results ADD COLUMN caller TEXT;
    `,
  },
  {
    version: 23,
    name: 'checkout refunds and disputes',
    // A session's Stripe PaymentIntent (named by the checkout event: refunds and disputes find the session by it), what
    // Stripe charged for it (minor units, set when credited: what a refund or dispute is a share of), the latest
    // cumulative refund and open dispute (same units), and the credits taken back for them: from the balance
    // (taken_back) or owed because the key had spent them (shortfall). The two never exceed what the session credited.
    sql: `
      CREATE TABLE checkout_sessions_v23 (
        session_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES api_keys (id),
        package TEXT NOT NULL,
        credits BIGINT NOT NULL CHECK (credits > 0),
        amount_total BIGINT NOT NULL CHECK (amount_total > 0),
        currency TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'review', 'credited', 'rejected')),
        review_reason TEXT CHECK (review_reason IN ('amount_mismatch', 'currency_mismatch', 'key_revoked')),
        paid_amount BIGINT,
        paid_currency TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        payment_intent TEXT,
        charged BIGINT CHECK (charged > 0),
        refunded BIGINT NOT NULL DEFAULT 0 CHECK (refunded >= 0),
        disputed BIGINT NOT NULL DEFAULT 0 CHECK (disputed >= 0),
        taken_back BIGINT NOT NULL DEFAULT 0 CHECK (taken_back >= 0),
        shortfall BIGINT NOT NULL DEFAULT 0 CHECK (shortfall >= 0),
        CHECK ((state = 'review') = (review_reason IS NOT NULL) OR state IN ('credited', 'rejected')),
        CHECK (taken_back + shortfall <= credits)
      );
      INSERT INTO checkout_sessions_v23 (session_id, key_id, package, credits, amount_total, currency, state, review_reason,
                                         paid_amount, paid_currency, created_at, updated_at)
        SELECT session_id, key_id, package, credits, amount_total, currency, state, review_reason,
               paid_amount, paid_currency, created_at, updated_at
        FROM checkout_sessions;
      DROP TABLE checkout_sessions;
      ALTER TABLE checkout_sessions_v23 RENAME TO checkout_sessions;
      CREATE INDEX checkout_sessions_state ON checkout_sessions (state, updated_at);
      CREATE UNIQUE INDEX checkout_sessions_payment_intent ON checkout_sessions (payment_intent);
      CREATE INDEX checkout_sessions_shortfall ON checkout_sessions (updated_at) WHERE shortfall > 0;
    `,
  },
  {
    version: 24,
    name: 'delivered calls per caller and month',
    // Of a caller's counted calls in a month (calls: the delivered ones and the ones running), how many were delivered: a
    // call is priced at the highest price of the positions delivered + 1 … its number, the ones the calls running beside
    // it leave it. Calls counted before are taken as delivered (the ones running then end under the old rule).
    sql: `
      ALTER TABLE usage_counts ADD COLUMN delivered BIGINT NOT NULL DEFAULT 0 CHECK (delivered >= 0);
      UPDATE usage_counts SET delivered = calls;
    `,
  },
  {
    version: 25,
    name: 'refund and dispute facts per payment',
    // What Stripe said of a payment's refunds and disputes, by PaymentIntent, so what is taken back follows from the facts
    // and not from the order they were delivered in: each charge.refunded's cumulative amount_refunded of the charge's
    // amount, stated at the event's time (s); each refund that failed (its amount, made and failed at, s); each dispute,
    // by its id, final once closed (kept: closed with the funds kept). A subscription invoice's payment (invoice_id) and
    // what invoice.paid booked for it (the charge's amount and operator share, before any reversal): its revenue charge
    // is restated from the same facts; the row is also what a reversal and the booking queue on. A session's totals from
    // before are its payment's first facts: its refund as stated at its last change, its dispute as one of id
    // 'legacy:<PaymentIntent>' (the next dispute event of the payment restates it, as before).
    sql: `
      CREATE TABLE stripe_refund_states (
        event_id TEXT PRIMARY KEY,
        payment_intent TEXT NOT NULL,
        refunded BIGINT NOT NULL CHECK (refunded >= 0),
        charge_amount BIGINT NOT NULL CHECK (charge_amount > 0),
        stated_at BIGINT NOT NULL
      );
      CREATE INDEX stripe_refund_states_intent ON stripe_refund_states (payment_intent);
      CREATE TABLE stripe_failed_refunds (
        refund_id TEXT PRIMARY KEY,
        payment_intent TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        made_at BIGINT NOT NULL,
        failed_at BIGINT NOT NULL
      );
      CREATE INDEX stripe_failed_refunds_intent ON stripe_failed_refunds (payment_intent);
      CREATE TABLE stripe_disputes (
        dispute_id TEXT PRIMARY KEY,
        payment_intent TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount >= 0),
        closed INTEGER NOT NULL CHECK (closed IN (0, 1)),
        kept INTEGER NOT NULL CHECK (kept IN (0, 1) AND kept <= closed),
        updated_at BIGINT NOT NULL
      );
      CREATE INDEX stripe_disputes_intent ON stripe_disputes (payment_intent);
      CREATE TABLE stripe_invoice_payments (
        payment_intent TEXT PRIMARY KEY,
        invoice_id TEXT NOT NULL
      );
      CREATE INDEX stripe_invoice_payments_invoice ON stripe_invoice_payments (invoice_id);
      CREATE TABLE stripe_invoices (
        invoice_id TEXT PRIMARY KEY,
        booked BIGINT CHECK (booked >= 0),
        booked_share BIGINT CHECK (booked_share >= 0 AND booked_share <= booked),
        updated_at BIGINT NOT NULL
      );
      INSERT INTO stripe_refund_states (event_id, payment_intent, refunded, charge_amount, stated_at)
        SELECT 'legacy:' || payment_intent, payment_intent, refunded, COALESCE(charged, paid_amount, amount_total), updated_at / 1000
        FROM checkout_sessions WHERE payment_intent IS NOT NULL AND refunded > 0;
      INSERT INTO stripe_disputes (dispute_id, payment_intent, amount, closed, kept, updated_at)
        SELECT 'legacy:' || payment_intent, payment_intent, disputed, 0, 0, updated_at
        FROM checkout_sessions WHERE payment_intent IS NOT NULL AND disputed > 0;
    `,
  },
  {
    version: 26,
    name: 'payment rows and disputes closed before facts',
    // A row per PaymentIntent that its reversals, the checkout event linking it to a session and the invoice booking
    // linking it to an invoice take first, so one not linked yet either sees the link or leaves its facts to the other.
    // A session's dispute closed by a build before facts (a charge.dispute.closed of the session was handled, at
    // updated_at, ms) is closed as its legacy fact ('legacy:<PaymentIntent>'): kept when nothing was left disputed, lost
    // otherwise. A dispute event of the payment stated before that close is of it (final: it changes nothing), one stated
    // after is of a dispute of its own. A payment with a dispute fact of its own already is left as it is.
    sql: `
      CREATE TABLE stripe_payments (
        payment_intent TEXT PRIMARY KEY,
        updated_at BIGINT NOT NULL
      );
      UPDATE stripe_disputes SET closed = 1, updated_at = (
          SELECT MAX(e.received_at) FROM checkout_sessions s JOIN stripe_events e ON e.session_id = s.session_id
          WHERE s.payment_intent = stripe_disputes.payment_intent AND e.type = 'charge.dispute.closed')
        WHERE closed = 0 AND dispute_id = 'legacy:' || payment_intent AND EXISTS (
          SELECT 1 FROM checkout_sessions s JOIN stripe_events e ON e.session_id = s.session_id
          WHERE s.payment_intent = stripe_disputes.payment_intent AND e.type = 'charge.dispute.closed');
      INSERT INTO stripe_disputes (dispute_id, payment_intent, amount, closed, kept, updated_at)
        SELECT 'legacy:' || s.payment_intent, s.payment_intent, 0, 1, 1, MAX(e.received_at)
        FROM checkout_sessions s JOIN stripe_events e ON e.session_id = s.session_id
        WHERE s.payment_intent IS NOT NULL AND s.disputed = 0 AND e.type = 'charge.dispute.closed'
          AND NOT EXISTS (SELECT 1 FROM stripe_disputes d WHERE d.payment_intent = s.payment_intent)
        GROUP BY s.payment_intent;
    `,
  },
];

/**
 * What `schema_migrations.checksum` holds: a hash of the SQL (both texts, where SQLite has its
 * own). Every backend must use this one, so a database cannot pass the check under one backend and
 * fail it under another.
 */
export function migrationChecksum(migration: Migration): string {
  const hash = createHash('sha256').update(migration.sql);
  if (migration.sqlite !== undefined) hash.update(`\0${migration.sqlite}`);
  return hash.digest('hex').slice(0, 16);
}

/** What a backend's runner knows of a migration it applied earlier. */
export type AppliedMigration = { version: number; checksum: string };

/**
 * The rules every runner applies before touching the schema: the list is strictly ascending, and
 * the database has nothing this build does not know (it would be a newer turnpike's schema).
 */
export function checkMigrations(list: readonly Migration[], applied: readonly AppliedMigration[]): void {
  list.forEach((m, i) => {
    const previous = i > 0 ? list[i - 1]!.version : 0;
    if (!Number.isSafeInteger(m.version) || m.version <= previous) {
      throw new StoreError(`migration ${m.version} (${m.name}) is out of order: versions must be integers ascending from 1`);
    }
  });
  const known = new Set(list.map((m) => m.version));
  const unknown = applied.map((a) => a.version).filter((v) => !known.has(v));
  if (unknown.length > 0) {
    throw new StoreError(
      `the database has schema version ${Math.max(...unknown)}, newer than this turnpike knows (up to ${list.at(-1)?.version ?? 0}); upgrade turnpike or use another data directory`,
    );
  }
}

/** Refuses a migration whose SQL changed after the database applied it. */
export function checkUnchanged(migration: Migration, applied: AppliedMigration): void {
  if (applied.checksum !== migrationChecksum(migration)) {
    throw new StoreError(
      `migration ${migration.version} (${migration.name}) was changed after it was applied; shipped migrations must not be edited, add a new one`,
    );
  }
}
