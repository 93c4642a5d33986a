import { z } from 'zod';
import { atomicToUsd, usdPrice } from '../../pricing/pricing.js';
import type {
  BudgetToken,
  Credit,
  DebitRefusal,
  MoveResult,
  DebitResult,
  KeyRecord,
  LedgerEntry,
  Scope,
} from '../../store/credits/credits.js';
import type { Store } from '../../store/store.js';
import { newId } from '../../store/ids.js';
import { type Credential, generateApiKey, hashApiKey, sameHash } from './api-keys.js';
import { readBudgetToken, signBudgetToken } from './budget-tokens.js';
import { DomainError, type ErrorCode } from '../../errors.js';

/** Keys `authenticate` remembers for a `maxAgeMs` at most; past that it starts again. */
const MAX_RECENT_KEYS = 10_000;

/** Longest a delegated budget token may live. */
export const MAX_TOKEN_SECONDS = 86_400;

export const scopeSchema = z.strictObject({
  servers: z.array(z.string().min(1).max(64)).max(100).optional(),
  tools: z.array(z.string().min(1).max(200)).max(1000).optional(),
});

const positiveUsd = usdPrice.refine((v) => v > 0n, 'expected an amount above zero');

export const newKeySchema = z.strictObject({
  name: z.string().trim().min(1).max(100),
  usd: positiveUsd.optional().describe('initial balance, a USD decimal string'),
  scope: scopeSchema.optional(),
  expiresAt: z.iso
    .datetime({ offset: true })
    .transform((s) => Date.parse(s))
    .optional(),
  dailyLimitUsd: usdPrice.optional(),
  lifetimeLimitUsd: usdPrice.optional(),
});
export type NewKeyInput = z.input<typeof newKeySchema>;

export const topupSchema = z.strictObject({
  usd: positiveUsd,
  reason: z.string().trim().min(1).max(200).default('admin top-up'),
  idempotencyKey: z.string().min(1).max(200),
});

const idempotencyKey = z.string().min(1).max(200);
const reason = z.string().trim().min(1).max(200);

/** A signed USD amount: `-1.50` takes from the key, `2` gives to it. */
export const adjustSchema = z.strictObject({
  usd: z
    .string()
    .regex(/^-?[^-]/, 'expected a USD amount like 2.50 or -1.50')
    .transform((s, ctx) => {
      const magnitude = positiveUsd.safeParse(s.replace(/^-/, ''));
      if (!magnitude.success) {
        ctx.addIssue({ code: 'custom', message: magnitude.error.issues[0]!.message });
        return z.NEVER;
      }
      return s.startsWith('-') ? -magnitude.data : magnitude.data;
    }),
  reason,
  idempotencyKey,
});

export const transferSchema = z
  .strictObject({
    from: z.string().regex(/^key_/),
    to: z.string().regex(/^key_/),
    usd: positiveUsd,
    reason: reason.default('transfer'),
    idempotencyKey,
  })
  .refine((t) => t.from !== t.to, { message: 'from and to must be different keys', path: ['to'] });

export const mintTokenSchema = z.strictObject({
  capUsd: positiveUsd,
  scope: scopeSchema.optional(),
  ttlSeconds: z.number().int().positive().max(MAX_TOKEN_SECONDS, `at most ${MAX_TOKEN_SECONDS} seconds (24 h)`).default(3600),
});

export const statusAfter = { suspend: 'suspended', resume: 'active', revoke: 'revoked' } as const;

/** Who is paying: a key, possibly through one of its budget tokens, or for an OAuth subject linked to it. */
export type Payer = { key: KeyRecord; token?: BudgetToken; subject?: { issuer: string; subject: string } };

/** A key as the APIs show it: money as micro-USD strings and USD, never the secret or its hash. */
export function publicKey(key: KeyRecord) {
  return {
    id: key.id,
    name: key.name,
    status: key.status,
    balance: key.balance.toString(),
    balanceUsd: atomicToUsd(key.balance),
    ...(key.scope ? { scope: key.scope } : {}),
    ...(key.operatorId ? { operator: key.operatorId } : {}),
    ...(key.expiresAt !== undefined ? { expiresAt: new Date(key.expiresAt).toISOString() } : {}),
    ...(key.dailyLimit !== undefined ? { dailyLimit: key.dailyLimit.toString() } : {}),
    ...(key.lifetimeLimit !== undefined ? { lifetimeLimit: key.lifetimeLimit.toString() } : {}),
    spentToday: key.spentToday.toString(),
    spentTotal: key.spentTotal.toString(),
    ...(key.lowBalanceAlert !== undefined ? { lowBalanceAlert: key.lowBalanceAlert.toString() } : {}),
    createdAt: new Date(key.createdAt).toISOString(),
  };
}

export function publicEntry(entry: LedgerEntry) {
  return {
    id: entry.id,
    kind: entry.kind,
    amount: entry.amount.toString(),
    balanceAfter: entry.balanceAfter.toString(),
    reason: entry.reason,
    ...(entry.tokenId ? { tokenId: entry.tokenId } : {}),
    ...(entry.ref ? { ref: entry.ref } : {}),
    createdAt: new Date(entry.createdAt).toISOString(),
  };
}

export function publicToken(token: BudgetToken, now = Date.now()) {
  return {
    id: token.id,
    cap: token.cap.toString(),
    spent: token.spent.toString(),
    remaining: (token.cap - token.spent).toString(),
    ...(token.scope ? { scope: token.scope } : {}),
    expiresAt: new Date(token.expiresAt).toISOString(),
    state: token.revokedAt !== undefined ? 'revoked' : token.expiresAt <= now ? 'expired' : 'active',
  };
}

/**
 * Whether a scope lets its holder pay for a tool on a server: by the server ids its slugs named
 * when it was made, or, for a scope made before ids were recorded, by slug (a deleted server's
 * slug that a scope names is never given to another server: see `OperatorStore.deleteServer`).
 *
 * @example inScope({ servers: ['search'], serverIds: ['srv_1'] }, { slug: 'search', id: 'srv_2' }, 'find') // false
 */
const inScope = (scope: Scope | undefined, server: { slug: string; id: string }, tool: string) =>
  (!scope?.servers || (scope.serverIds ? scope.serverIds.includes(server.id) : scope.servers.includes(server.slug))) &&
  (!scope?.tools || scope.tools.includes(tool));

const refusals: Record<DebitRefusal, string> = {
  key_unknown: 'this API key is not known here',
  key_suspended: 'this API key is suspended; ask the operator to resume it',
  key_revoked: 'this API key was revoked',
  key_expired: 'this API key has expired',
  insufficient_balance: 'the balance does not cover this call; top up, or pay per call with x402',
  daily_limit: 'this call would pass the key’s daily spending limit',
  lifetime_limit: 'this call would pass the key’s lifetime spending limit',
  token_unknown: 'this budget token is not known here',
  token_revoked: 'this budget token was revoked by its issuer',
  token_expired: 'this budget token has expired; ask its issuer for a new one',
  budget_exhausted: 'this call would pass the budget token’s spending cap; ask its issuer for more',
  request_in_progress: 'a request with this Idempotency-Key is still running; retry it later',
};

/** The debit refusals for want of money or budget: the gateway answers them with a payment challenge, with where to top up. */
export const shortfalls: ReadonlySet<ErrorCode> = new Set<DebitRefusal>([
  'insufficient_balance',
  'daily_limit',
  'lifetime_limit',
  'budget_exhausted',
]);

/** The caller-facing error for a refused debit, with the numbers an agent needs to act. */
export function refusalError(result: DebitResult & { ok: false }, topupHint: Record<string, string>): DomainError {
  const details: Record<string, unknown> = {};
  if (result.balance !== undefined) details.balance = result.balance.toString();
  if (result.tokenRemaining !== undefined) details.budgetRemaining = result.tokenRemaining.toString();
  if (result.limitRemaining !== undefined) details.limitRemaining = result.limitRemaining.toString();
  if (shortfalls.has(result.reason)) details.topup = topupHint;
  return new DomainError(result.reason, refusals[result.reason], details);
}

export type CreditsOptions = {
  store: Store;
  /** Signs budget tokens (HS256). */
  tokenSecret: string;
};

/**
 * The credits rail's rules, shared by the gateway, the HTTP APIs and the CLI: who a credential
 * belongs to, what it may pay for, and the key and token operations.
 *
 * @example
 * const credits = createCredits({ store, tokenSecret });
 * const payer = await credits.authenticate({ type: 'key', secret: 'tp_…' });
 */
export function createCredits({ store, tokenSecret }: CreditsOptions) {
  const ledger = store.credits;

  /** The scope bound to the servers its slugs name now; a slug no registered server holds stands for itself (a configured endpoint). */
  async function bound(scope: Scope | undefined): Promise<Scope | undefined> {
    if (!scope?.servers) return scope;
    return { ...scope, serverIds: await Promise.all(scope.servers.map(async (slug) => (await store.operators.server(slug))?.id ?? slug)) };
  }

  /** Keys recently found by their secret's hash, for `authenticate`'s `maxAgeMs`: when each was read. */
  const recent = new Map<string, { key: KeyRecord; at: number }>();

  async function keyOf(secret: string, now: number, maxAgeMs: number): Promise<KeyRecord> {
    const hash = hashApiKey(secret);
    const seen = maxAgeMs > 0 ? recent.get(hash) : undefined;
    if (seen && now - seen.at < maxAgeMs) return seen.key;
    const found = await ledger.keyByHash(hash);
    if (!found || !sameHash(found.hash, hash)) throw new DomainError('key_unknown', refusals.key_unknown);
    const { hash: _, ...key } = found;
    if (maxAgeMs > 0) {
      if (recent.size >= MAX_RECENT_KEYS) recent.clear();
      recent.set(hash, { key, at: now });
    }
    return key;
  }

  /** The key, or a 404 that names it. */
  async function keyById(id: string): Promise<KeyRecord> {
    const key = await ledger.key(id);
    if (!key) throw new DomainError('key_not_found', `no API key ${id}`);
    return key;
  }

  function moved(result: MoveResult) {
    if (result.ok) return result;
    if (result.reason === 'key_unknown') throw new DomainError('key_not_found', `no API key ${result.keyId}`);
    throw new DomainError('insufficient_balance', `key ${result.keyId} holds ${result.balance}: a balance cannot go below zero`, {
      balance: result.balance?.toString(),
    });
  }

  function usable(key: KeyRecord, now: number) {
    if (key.status === 'revoked') throw new DomainError('key_revoked', refusals.key_revoked);
    if (key.status === 'suspended') throw new DomainError('key_suspended', refusals.key_suspended);
    if (key.expiresAt !== undefined && key.expiresAt <= now) throw new DomainError('key_expired', refusals.key_expired);
  }

  return {
    /**
     * Resolves a credential to a usable key (and token); a bad one is a specific 401/403.
     * `maxAgeMs`: an API key read that long ago may answer again, its status and balance as they
     * were then; only for a caller whose debit checks them again in its transaction (the rail).
     */
    async authenticate(credential: Credential, now = Date.now(), maxAgeMs = 0): Promise<Payer> {
      if (credential.type === 'key') {
        const key = await keyOf(credential.secret, now, maxAgeMs);
        usable(key, now);
        return { key };
      }
      const claims = await readBudgetToken(credential.jwt, tokenSecret);
      const token = await ledger.token(claims.jti);
      if (!token || token.keyId !== claims.sub) throw new DomainError('token_unknown', refusals.token_unknown);
      if (token.revokedAt !== undefined) throw new DomainError('token_revoked', refusals.token_revoked);
      const key = await ledger.key(token.keyId);
      if (!key) throw new DomainError('token_unknown', refusals.token_unknown);
      usable(key, now);
      return { key, token };
    },

    /**
     * Resolves a verified OAuth caller on a server of `operatorId` (none: a configured server) to
     * the usable key their subject is linked to by that operator, else by the instance; an
     * unlinked subject is `subject_unlinked`, naming who must link it.
     */
    async authenticateSubject(principal: { issuer: string; subject: string }, operatorId?: string, now = Date.now()): Promise<Payer> {
      const keyId = await ledger.subjectKey(principal.issuer, principal.subject, operatorId);
      const key = keyId === undefined ? undefined : await ledger.key(keyId);
      if (!key) {
        throw new DomainError(
          'subject_unlinked',
          `no credits account pays for subject ${principal.subject} of ${principal.issuer}; the operator links it to an API key`,
          {
            issuer: principal.issuer,
            subject: principal.subject,
          },
        );
      }
      usable(key, now);
      return { key, subject: { issuer: principal.issuer, subject: principal.subject } };
    },

    /** 403 unless both the key's and the token's scopes allow this server and tool. */
    authorize(payer: Payer, server: { slug: string; id: string }, tool: string) {
      if (!inScope(payer.key.scope, server, tool) || !inScope(payer.token?.scope, server, tool)) {
        throw new DomainError(
          'out_of_scope',
          `this ${payer.token ? 'budget token' : 'API key'} may not pay for tool "${tool}" on server "${server.slug}"`,
          {
            ...(payer.key.scope ? { keyScope: payer.key.scope } : {}),
            ...(payer.token?.scope ? { tokenScope: payer.token.scope } : {}),
          },
        );
      }
    },

    /**
     * Creates a key, funded by `funding` when given (its idempotency key makes the funding, and so
     * the key, happen once). The secret is returned here and never again.
     */
    async createKey(input: Omit<z.output<typeof newKeySchema>, 'usd'> & { operatorId?: string }, funding?: Omit<Credit, 'keyId' | 'kind'>) {
      const { secret, id, hash } = generateApiKey();
      const scope = await bound(input.scope);
      const created = await ledger.createKey(
        {
          id,
          hash,
          name: input.name,
          ...(input.operatorId ? { operatorId: input.operatorId } : {}),
          ...(scope ? { scope } : {}),
          ...(input.expiresAt !== undefined ? { expiresAt: input.expiresAt } : {}),
          ...(input.dailyLimitUsd !== undefined ? { dailyLimit: input.dailyLimitUsd } : {}),
          ...(input.lifetimeLimitUsd !== undefined ? { lifetimeLimit: input.lifetimeLimitUsd } : {}),
        },
        funding,
      );
      if (!created.created) {
        throw new DomainError('already_funded', `this funding already created key ${created.entry.keyId}, shown once then`, {
          keyId: created.entry.keyId,
        });
      }
      return { secret, key: created.key };
    },

    keyById,

    /** An operator's top-up: once per idempotency key, never onto a revoked key. */
    async topUp(id: string, input: z.output<typeof topupSchema>) {
      const key = await keyById(id);
      if (key.status === 'revoked') throw new DomainError('key_already_revoked', 'a revoked key cannot be topped up');
      return ledger.credit({
        keyId: key.id,
        kind: 'topup',
        amount: input.usd,
        reason: input.reason,
        idempotencyKey: `admin:${key.id}:${input.idempotencyKey}`,
      });
    },

    /** An operator's correction of a key's balance, either sign; never below zero. */
    async adjust(id: string, input: z.output<typeof adjustSchema>) {
      const key = await keyById(id);
      const amount = input.usd < 0n ? -input.usd : input.usd;
      const side = input.usd < 0n ? { from: key.id } : { to: key.id };
      return moved(
        await ledger.move({ ...side, amount, reason: input.reason, idempotencyKey: `adjust:${key.id}:${input.idempotencyKey}` }),
      );
    },

    /** Moves credit between two keys, both entries in one transaction. */
    async transfer(input: z.output<typeof transferSchema>) {
      return moved(
        await ledger.move({
          from: input.from,
          to: input.to,
          amount: input.usd,
          reason: input.reason,
          idempotencyKey: `transfer:${input.idempotencyKey}`,
        }),
      );
    },

    /** Suspends, resumes or revokes a key; revoking is final. */
    async changeStatus(id: string, action: keyof typeof statusAfter): Promise<KeyRecord> {
      const key = await keyById(id);
      if (key.status === 'revoked') throw new DomainError('key_already_revoked', 'the key is revoked, which is final');
      const changed = (await ledger.setStatus(key.id, statusAfter[action]))!;
      // This instance stops using the old status at once; others within their `maxAgeMs`.
      for (const [hash, seen] of recent) if (seen.key.id === id) recent.delete(hash);
      return changed;
    },

    /** Mints a budget token for a sub-agent: at most 24 h, a cap, optionally a narrower scope. */
    async mintToken(payer: Payer, input: z.output<typeof mintTokenSchema>, now = Date.now()) {
      if (payer.token) throw new DomainError('token_cannot_delegate', 'a budget token cannot mint further tokens; use the API key');
      const expiresAt = Math.floor(now / 1000) + input.ttlSeconds;
      const scope = await bound(input.scope);
      const token = await ledger.createToken({
        id: newId('bt'),
        keyId: payer.key.id,
        cap: input.capUsd,
        ...(scope ? { scope } : {}),
        expiresAt: expiresAt * 1000,
        createdAt: now,
      });
      const jwt = await signBudgetToken(
        { jti: token.id, sub: payer.key.id, iat: Math.floor(now / 1000), exp: expiresAt, cap: token.cap.toString() },
        tokenSecret,
      );
      return { jwt, token };
    },
  };
}

export type Credits = ReturnType<typeof createCredits>;
