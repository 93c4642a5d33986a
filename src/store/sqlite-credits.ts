import type Database from 'better-sqlite3';
import type {
  BudgetToken,
  CheckoutSession,
  Credit,
  CreditStore,
  Debit,
  DebitResult,
  KeyRecord,
  KeyStatus,
  LedgerEntry,
  Move,
  MoveResult,
  NewKey,
  Scope,
  StripeEventOutcome,
} from './credits.js';
import { groupCommit } from './group-commit.js';
import { newId } from './ids.js';

type KeyRow = {
  id: string;
  hash: string;
  name: string;
  balance: bigint;
  scope: string | null;
  expires_at: bigint | null;
  lifetime_limit: bigint | null;
  daily_limit: bigint | null;
  spent_total: bigint;
  spent_day: bigint;
  day: bigint;
  status: KeyRecord['status'];
  operator_id: string | null;
  created_at: bigint;
  updated_at: bigint;
};
type EntryRow = {
  id: string;
  key_id: string;
  kind: LedgerEntry['kind'];
  amount: bigint;
  balance_after: bigint;
  reason: string;
  idempotency_key: string;
  token_id: string | null;
  ref: string | null;
  created_at: bigint;
};
type TokenRow = {
  id: string;
  key_id: string;
  cap: bigint;
  spent: bigint;
  scope: string | null;
  expires_at: bigint;
  revoked_at: bigint | null;
  created_at: bigint;
};

const DAY_MS = 86_400_000;
const utcDay = (ms: number) => BigInt(Math.floor(ms / DAY_MS));

function toKey(r: KeyRow, now = Date.now()): KeyRecord {
  return {
    id: r.id,
    name: r.name,
    balance: r.balance,
    ...(r.scope ? { scope: JSON.parse(r.scope) as Scope } : {}),
    ...(r.expires_at !== null ? { expiresAt: Number(r.expires_at) } : {}),
    ...(r.lifetime_limit !== null ? { lifetimeLimit: r.lifetime_limit } : {}),
    ...(r.daily_limit !== null ? { dailyLimit: r.daily_limit } : {}),
    spentTotal: r.spent_total,
    spentToday: r.day === utcDay(now) ? r.spent_day : 0n,
    status: r.status,
    ...(r.operator_id ? { operatorId: r.operator_id } : {}),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

function toEntry(r: EntryRow): LedgerEntry {
  return {
    id: r.id,
    keyId: r.key_id,
    kind: r.kind,
    amount: r.amount,
    balanceAfter: r.balance_after,
    reason: r.reason,
    idempotencyKey: r.idempotency_key,
    ...(r.token_id ? { tokenId: r.token_id } : {}),
    ...(r.ref ? { ref: JSON.parse(r.ref) as Record<string, unknown> } : {}),
    createdAt: Number(r.created_at),
  };
}

function toToken(r: TokenRow): BudgetToken {
  return {
    id: r.id,
    keyId: r.key_id,
    cap: r.cap,
    spent: r.spent,
    ...(r.scope ? { scope: JSON.parse(r.scope) as Scope } : {}),
    expiresAt: Number(r.expires_at),
    ...(r.revoked_at !== null ? { revokedAt: Number(r.revoked_at) } : {}),
    createdAt: Number(r.created_at),
  };
}

const json = (value: unknown) => (value === undefined ? null : JSON.stringify(value));

/** The ledger's write operations on a connection; each must run inside a transaction. */
function creditWrites(db: Database.Database) {
  const q = <Row>(sql: string) => db.prepare<Record<string, unknown>, Row>(sql).safeIntegers(true);

  const keyById = q<KeyRow>('SELECT * FROM api_keys WHERE id = @id');
  const insertKey = db.prepare(`
    INSERT INTO api_keys (id, hash, name, scope, expires_at, lifetime_limit, daily_limit, operator_id, created_at, updated_at)
    VALUES (@id, @hash, @name, @scope, @expiresAt, @lifetimeLimit, @dailyLimit, @operatorId, @now, @now)`);
  const setStatus = db.prepare(`UPDATE api_keys SET status = @status, updated_at = @now WHERE id = @id AND status <> 'revoked'`);
  const addBalance = db.prepare('UPDATE api_keys SET balance = balance + @amount, updated_at = @now WHERE id = @id');
  const spend = db.prepare(`
    UPDATE api_keys SET balance = balance - @amount, spent_total = spent_total + @amount,
                        spent_day = CASE WHEN day = @day THEN spent_day + @amount ELSE @amount END,
                        day = @day, updated_at = @now
    WHERE id = @id AND balance >= @amount`);
  const unspend = db.prepare(`
    UPDATE api_keys SET balance = balance + @amount, spent_total = MAX(spent_total - @amount, 0),
                        spent_day = CASE WHEN day = @day THEN MAX(spent_day - @amount, 0) ELSE spent_day END,
                        updated_at = @now
    WHERE id = @id`);
  const balanceOf = q<{ balance: bigint }>('SELECT balance FROM api_keys WHERE id = @id');

  const entryById = q<EntryRow>('SELECT * FROM ledger WHERE id = @id');
  const entryByIdempotency = q<EntryRow>('SELECT * FROM ledger WHERE idempotency_key = @idempotencyKey');
  const insertEntry = db.prepare(`
    INSERT INTO ledger (id, key_id, kind, amount, balance_after, reason, idempotency_key, token_id, ref, created_at)
    VALUES (@id, @keyId, @kind, @amount, @balanceAfter, @reason, @idempotencyKey, @tokenId, @ref, @now)`);

  const openDebit = db.prepare('INSERT INTO open_debits (debit_id, created_at) VALUES (@debitId, @now)');
  const closeDebit = db.prepare('DELETE FROM open_debits WHERE debit_id = @debitId');
  const insertRequest = db.prepare(`
    INSERT INTO idempotent_requests (key_id, idempotency_key, body_hash, debit_id, created_at)
    VALUES (@keyId, @idempotencyKey, @bodyHash, @debitId, @now) ON CONFLICT DO NOTHING`);
  const completeRequest = db.prepare(
    'UPDATE idempotent_requests SET response = @response WHERE key_id = @keyId AND idempotency_key = @idempotencyKey',
  );
  const dropRequestOf = db.prepare('DELETE FROM idempotent_requests WHERE debit_id = @debitId');

  const tokenById = q<TokenRow>('SELECT * FROM budget_tokens WHERE id = @id');
  const insertToken = db.prepare(`
    INSERT INTO budget_tokens (id, key_id, cap, scope, expires_at, created_at)
    VALUES (@id, @keyId, @cap, @scope, @expiresAt, @now)`);
  const spendToken = db.prepare('UPDATE budget_tokens SET spent = spent + @amount WHERE id = @id AND spent + @amount <= cap');
  const unspendToken = db.prepare('UPDATE budget_tokens SET spent = MAX(spent - @amount, 0) WHERE id = @id');
  const revokeToken = db.prepare('UPDATE budget_tokens SET revoked_at = @now WHERE id = @id AND key_id = @keyId AND revoked_at IS NULL');

  const insertCheckout = db.prepare(`
    INSERT INTO checkout_sessions (session_id, key_id, package, credits, amount_total, currency, state, created_at, updated_at)
    VALUES (@sessionId, @keyId, @package, @credits, @amountTotal, @currency, 'open', @now, @now)`);
  const checkoutById = q<{ key_id: string; package: string; credits: bigint; amount_total: bigint; state: CheckoutSession['state'] }>(
    'SELECT key_id, package, credits, amount_total, state FROM checkout_sessions WHERE session_id = @sessionId',
  );
  const setCheckoutState = db.prepare('UPDATE checkout_sessions SET state = @state, updated_at = @now WHERE session_id = @sessionId');
  const insertEvent = db.prepare(`
    INSERT INTO stripe_events (event_id, type, session_id, outcome, received_at)
    VALUES (@eventId, @type, @sessionId, @outcome, @now) ON CONFLICT (event_id) DO NOTHING`);
  const setEventOutcome = db.prepare('UPDATE stripe_events SET outcome = @outcome WHERE event_id = @eventId');

  /** Appends an entry for a balance change already applied in this transaction. */
  function append(entry: Omit<LedgerEntry, 'id' | 'balanceAfter' | 'createdAt'>, now: number): LedgerEntry {
    const balanceAfter = balanceOf.get({ id: entry.keyId })!.balance;
    const row = {
      id: newId('le'),
      ...entry,
      balanceAfter,
      tokenId: entry.tokenId ?? null,
      ref: json(entry.ref),
      now,
    };
    insertEntry.run(row);
    return { ...entry, id: row.id, balanceAfter, createdAt: now };
  }

  /** Inside a transaction: applies a credit once per idempotency key. */
  function applyCredit(credit: Credit, now: number) {
    const earlier = entryByIdempotency.get({ idempotencyKey: credit.idempotencyKey });
    if (earlier) return { applied: false, entry: toEntry(earlier), balance: balanceOf.get({ id: credit.keyId })?.balance ?? 0n };
    addBalance.run({ id: credit.keyId, amount: credit.amount, now });
    const entry = append({ keyId: credit.keyId, kind: credit.kind, amount: credit.amount, reason: credit.reason, idempotencyKey: credit.idempotencyKey, ref: credit.ref }, now);
    return { applied: true, entry, balance: entry.balanceAfter };
  }

  /** Takes `amount` from `from` and/or gives it to `to`: a transfer with both, an adjustment with one. */
  function moveNow(move: Move): MoveResult {
    const now = Date.now();
    const sides = [
      ...(move.from ? [{ keyId: move.from, amount: -move.amount, suffix: move.to ? ':out' : '' }] : []),
      ...(move.to ? [{ keyId: move.to, amount: move.amount, suffix: move.from ? ':in' : '' }] : []),
    ];
    const earlier = sides.map((s) => entryByIdempotency.get({ idempotencyKey: `${move.idempotencyKey}${s.suffix}` }));
    if (earlier.every(Boolean)) return { ok: true, applied: false, entries: earlier.map((e) => toEntry(e!)) };
    for (const side of sides) {
      const balance = balanceOf.get({ id: side.keyId })?.balance;
      if (balance === undefined) return { ok: false, reason: 'key_unknown', keyId: side.keyId };
      if (balance + side.amount < 0n) return { ok: false, reason: 'insufficient_balance', keyId: side.keyId, balance };
    }
    const kind = move.from && move.to ? 'transfer' : 'adjustment';
    const entries = sides.map((side) => {
      addBalance.run({ id: side.keyId, amount: side.amount, now });
      const ref = move.from && move.to ? { from: move.from, to: move.to } : undefined;
      return append({ keyId: side.keyId, kind, amount: side.amount, reason: move.reason, idempotencyKey: `${move.idempotencyKey}${side.suffix}`, ref }, now);
    });
    return { ok: true, applied: true, entries };
  }

  function debitNow(debit: Debit): DebitResult {
    const now = Date.now();
    const day = utcDay(now);
    const row = keyById.get({ id: debit.keyId });
    if (!row) return { ok: false, reason: 'key_unknown' };
    const balance = row.balance;
    if (row.status === 'revoked') return { ok: false, reason: 'key_revoked' };
    if (row.status === 'suspended') return { ok: false, reason: 'key_suspended' };
    if (row.expires_at !== null && Number(row.expires_at) <= now) return { ok: false, reason: 'key_expired' };
    if (row.lifetime_limit !== null && row.spent_total + debit.amount > row.lifetime_limit) {
      return { ok: false, reason: 'lifetime_limit', balance, limitRemaining: row.lifetime_limit - row.spent_total };
    }
    const spentToday = row.day === day ? row.spent_day : 0n;
    if (row.daily_limit !== null && spentToday + debit.amount > row.daily_limit) {
      return { ok: false, reason: 'daily_limit', balance, limitRemaining: row.daily_limit - spentToday };
    }
    let tokenRemaining: bigint | undefined;
    if (debit.tokenId) {
      const token = tokenById.get({ id: debit.tokenId });
      if (!token || token.key_id !== debit.keyId) return { ok: false, reason: 'token_unknown' };
      if (token.revoked_at !== null) return { ok: false, reason: 'token_revoked' };
      if (Number(token.expires_at) <= now) return { ok: false, reason: 'token_expired' };
      const left = token.cap - token.spent;
      if (debit.amount > left) return { ok: false, reason: 'budget_exhausted', balance, tokenRemaining: left };
      tokenRemaining = left - debit.amount;
    }
    if (balance < debit.amount) return { ok: false, reason: 'insufficient_balance', balance, ...(tokenRemaining !== undefined ? { tokenRemaining: tokenRemaining + debit.amount } : {}) };

    spend.run({ id: debit.keyId, amount: debit.amount, day, now });
    if (debit.tokenId) spendToken.run({ id: debit.tokenId, amount: debit.amount });
    const entry = append(
      { keyId: debit.keyId, kind: 'debit', amount: -debit.amount, reason: debit.reason, idempotencyKey: debit.idempotencyKey, tokenId: debit.tokenId, ref: debit.ref },
      now,
    );
    if (debit.open) openDebit.run({ debitId: entry.id, now });
    if (debit.request) {
      const inserted = insertRequest.run({ keyId: debit.keyId, ...debit.request, debitId: entry.id, now });
      // Another request with this Idempotency-Key got in first: this debit must not happen.
      if (inserted.changes === 0) throw new RequestTaken();
    }
    return { ok: true, entry, balance: entry.balanceAfter, ...(tokenRemaining !== undefined ? { tokenRemaining } : {}) };
  }

  /** Every change to the ledger, as a synchronous operation its runner puts in a transaction. */
  const writes = {
    createKey(key: NewKey, initial?: Omit<Credit, 'keyId' | 'kind'>) {
      const now = Date.now();
      if (initial) {
        const earlier = entryByIdempotency.get({ idempotencyKey: initial.idempotencyKey });
        if (earlier) return { created: false as const, entry: toEntry(earlier) };
      }
      insertKey.run({
        id: key.id,
        hash: key.hash,
        name: key.name,
        scope: json(key.scope),
        expiresAt: key.expiresAt ?? null,
        lifetimeLimit: key.lifetimeLimit ?? null,
        dailyLimit: key.dailyLimit ?? null,
        operatorId: key.operatorId ?? null,
        now,
      });
      if (initial && initial.amount > 0n) applyCredit({ ...initial, keyId: key.id, kind: 'topup' }, now);
      return { created: true as const, key: toKey(keyById.get({ id: key.id })!, now) };
    },
    setStatus(id: string, status: KeyStatus) {
      setStatus.run({ id, status, now: Date.now() });
      const row = keyById.get({ id });
      return row ? toKey(row) : undefined;
    },
    credit: (credit: Credit) => applyCredit(credit, Date.now()),
    move: (move: Move) => moveNow(move),
    debit: (debit: Debit): DebitResult => {
      try {
        return db.transaction(() => debitNow(debit))();
      } catch (error) {
        if (error instanceof RequestTaken) return { ok: false, reason: 'request_in_progress' };
        throw error;
      }
    },
    refund(debitId: string, reason: string) {
      const now = Date.now();
      const debit = entryById.get({ id: debitId });
      if (!debit || debit.kind !== 'debit') throw new Error(`ledger entry ${debitId} is not a debit`);
      dropRequestOf.run({ debitId });
      closeDebit.run({ debitId });
      const idempotencyKey = `refund:${debitId}`;
      if (entryByIdempotency.get({ idempotencyKey })) return { balance: balanceOf.get({ id: debit.key_id })!.balance };
      const amount = -debit.amount;
      unspend.run({ id: debit.key_id, amount, day: utcDay(Number(debit.created_at)), now });
      if (debit.token_id) unspendToken.run({ id: debit.token_id, amount });
      const entry = append({ keyId: debit.key_id, kind: 'refund', amount, reason, idempotencyKey, tokenId: debit.token_id ?? undefined, ref: { debit: debitId } }, now);
      return { balance: entry.balanceAfter };
    },
    closeDebits(debitIds: string[]) {
      for (const debitId of debitIds) closeDebit.run({ debitId });
    },
    completeRequest(keyId: string, idempotencyKey: string, response: string) {
      completeRequest.run({ keyId, idempotencyKey, response });
    },
    createToken(token: Omit<BudgetToken, 'spent' | 'revokedAt'>) {
      insertToken.run({ id: token.id, keyId: token.keyId, cap: token.cap, scope: json(token.scope), expiresAt: token.expiresAt, now: token.createdAt });
      return toToken(tokenById.get({ id: token.id })!);
    },
    revokeToken(keyId: string, id: string) {
      revokeToken.run({ id, keyId, now: Date.now() });
      const row = tokenById.get({ id });
      return row && row.key_id === keyId ? toToken(row) : undefined;
    },
    recordCheckout(session: Omit<CheckoutSession, 'state'>) {
      insertCheckout.run({ ...session, now: Date.now() });
    },
    completeCheckout({ eventId, type, sessionId, amountTotal }: { eventId: string; type: string; sessionId: string; amountTotal: bigint }): StripeEventOutcome {
      const now = Date.now();
      if (insertEvent.run({ eventId, type, sessionId, outcome: 'received', now }).changes === 0) return 'duplicate_event';
      const outcome = ((): StripeEventOutcome => {
        const session = checkoutById.get({ sessionId });
        if (!session) return 'unknown_session';
        if (session.state !== 'open') return 'duplicate_session';
        if (session.amount_total !== amountTotal) {
          setCheckoutState.run({ sessionId, state: 'rejected', now });
          return 'amount_mismatch';
        }
        const credited = applyCredit(
          {
            keyId: session.key_id,
            kind: 'topup',
            amount: session.credits,
            reason: `Stripe Checkout, package ${session.package}`,
            idempotencyKey: `stripe:${sessionId}`,
            ref: { stripeSession: sessionId, stripeEvent: eventId },
          },
          now,
        );
        setCheckoutState.run({ sessionId, state: 'credited', now });
        return credited.applied ? 'credited' : 'duplicate_session';
      })();
      setEventOutcome.run({ eventId, outcome });
      return outcome;
    },
    ignoreEvent({ eventId, type }: { eventId: string; type: string }) {
      insertEvent.run({ eventId, type, sessionId: null, outcome: 'ignored', now: Date.now() });
    },
  };
  return writes;
}

type CreditWrites = ReturnType<typeof creditWrites>;

/** Runs one write operation in a group-committed transaction; resolves after the commit. */
function groupCommitted(db: Database.Database) {
  const writes = creditWrites(db);
  const write = groupCommit(db);
  return <K extends keyof CreditWrites>(op: K, ...args: Parameters<CreditWrites[K]>): Promise<ReturnType<CreditWrites[K]>> =>
    write(() => (writes[op] as (...a: unknown[]) => ReturnType<CreditWrites[K]>)(...args));
}

/**
 * The credits ledger on SQLite. Every change is one savepoint inside a group-committed `BEGIN
 * IMMEDIATE` transaction: the check (status, limits, balance, budget) and the write cannot
 * interleave with another writer, in this process or another.
 */
export function sqliteCredits(db: Database.Database): CreditStore {
  const run = groupCommitted(db);
  const q = <Row>(sql: string) => db.prepare<Record<string, unknown>, Row>(sql).safeIntegers(true);
  const keyById = q<KeyRow>('SELECT * FROM api_keys WHERE id = @id');
  const keyByHash = q<KeyRow>('SELECT * FROM api_keys WHERE hash = @hash');
  const allKeys = q<KeyRow>('SELECT * FROM api_keys WHERE @operatorId IS NULL OR operator_id = @operatorId ORDER BY created_at, id');
  const page = q<EntryRow>(`
    SELECT * FROM ledger WHERE key_id = @keyId AND (@before IS NULL OR id < @before)
    ORDER BY id DESC LIMIT @limit`);
  const requestByKey = q<{ body_hash: string; debit_id: string; response: string | null }>(
    'SELECT body_hash, debit_id, response FROM idempotent_requests WHERE key_id = @keyId AND idempotency_key = @idempotencyKey',
  );
  const tokenById = q<TokenRow>('SELECT * FROM budget_tokens WHERE id = @id');
  const tokensOf = q<TokenRow>('SELECT * FROM budget_tokens WHERE key_id = @keyId ORDER BY created_at DESC');
  const openBefore = db.prepare<{ before: number }, { debit_id: string }>('SELECT debit_id FROM open_debits WHERE created_at < @before ORDER BY created_at');
  const debitState = db.prepare<{ id: string }, { refunded: number; open: number; found: number }>(`
    SELECT EXISTS (SELECT 1 FROM ledger WHERE id = @id AND kind = 'debit') AS found,
           EXISTS (SELECT 1 FROM ledger WHERE idempotency_key = 'refund:' || @id) AS refunded,
           EXISTS (SELECT 1 FROM open_debits WHERE debit_id = @id) AS open`);

  return {
    createKey: (key, initial) => run('createKey', key, initial),
    async keyByHash(hash) {
      const row = keyByHash.get({ hash });
      return row ? { ...toKey(row), hash: row.hash } : undefined;
    },
    async key(id) {
      const row = keyById.get({ id });
      return row ? toKey(row) : undefined;
    },
    async keys(filter = {}) {
      const now = Date.now();
      return allKeys.all({ operatorId: filter.operatorId ?? null }).map((r) => toKey(r, now));
    },
    setStatus: (id, status) => run('setStatus', id, status),
    credit: (credit) => run('credit', credit),
    move: (move) => run('move', move),
    debit: (debit) => run('debit', debit),
    refund: (debitId, reason) => run('refund', debitId, reason),
    closeDebits: (debitIds) => run('closeDebits', debitIds),
    async openDebits(before) {
      return openBefore.all({ before }).map((r) => r.debit_id);
    },
    async debitStates(debitIds) {
      const states = new Map<string, 'open' | 'closed' | 'refunded'>();
      for (const id of debitIds) {
        const r = debitState.get({ id })!;
        if (r.found) states.set(id, r.refunded ? 'refunded' : r.open ? 'open' : 'closed');
      }
      return states;
    },
    async history(keyId, { limit, before }) {
      return page.all({ keyId, limit, before: before ?? null }).map(toEntry);
    },
    async request(keyId, idempotencyKey) {
      const row = requestByKey.get({ keyId, idempotencyKey });
      return row ? { bodyHash: row.body_hash, debitId: row.debit_id, ...(row.response !== null ? { response: row.response } : {}) } : undefined;
    },
    completeRequest: (keyId, idempotencyKey, response) => run('completeRequest', keyId, idempotencyKey, response),
    createToken: (token) => run('createToken', token),
    async token(id) {
      const row = tokenById.get({ id });
      return row ? toToken(row) : undefined;
    },
    async tokens(keyId) {
      return tokensOf.all({ keyId }).map(toToken);
    },
    revokeToken: (keyId, id) => run('revokeToken', keyId, id),
    recordCheckout: (session) => run('recordCheckout', session),
    completeCheckout: (event) => run('completeCheckout', event),
    ignoreEvent: (event) => run('ignoreEvent', event),
  };
}

/** Rolls back a debit whose Idempotency-Key another request took first. */
class RequestTaken extends Error {}
