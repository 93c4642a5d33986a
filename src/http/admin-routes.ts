import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import { isAddress } from 'viem';
import { z } from 'zod';
import {
  type Credits,
  adjustSchema,
  newKeySchema,
  publicEntry,
  publicKey,
  statusAfter,
  topupSchema,
  transferSchema,
} from '../rails/credits/credits.js';
import { DomainError } from '../errors.js';
import { auditor } from './audit.js';
import { bearerIn } from './caller.js';
import { sessionOf } from './console-session.js';
import type { CheckoutSession, ResolveResult } from '../store/credits/credits.js';
import type { Store } from '../store/store.js';
import { newId } from '../store/ids.js';
import { type RouteDoc, documented } from './documented.js';
import { linkAccountSchema, publicAccount } from '../rails/invoice/accounts.js';
import type { PostpaidAccount } from '../store/postpaid/postpaid.js';
import { subjectRoutes } from './subject-routes.js';

/**
 * Bearer auth against `TURNPIKE_ADMIN_KEY`, compared in constant time, or an admin console session.
 * Without a configured key the admin API is off.
 */
export const adminAuth = (adminKey: string | undefined) =>
  createMiddleware(async (c, next) => {
    if (!adminKey) throw new DomainError('admin_disabled', 'the admin API is off: set TURNPIKE_ADMIN_KEY to enable it');
    if (sessionOf(c.req.raw)?.kind !== 'admin' && !bearerIn(c.req.header('authorization'), [adminKey])) {
      throw new DomainError('admin_unauthorized', 'send the admin key as Authorization: Bearer <TURNPIKE_ADMIN_KEY>');
    }
    await next();
  });

const checkoutsQuerySchema = z.strictObject({
  state: z
    .enum(['open', 'review', 'credited', 'rejected', 'shortfall'])
    .default('review')
    .describe('`shortfall`: credited sessions refunded or disputed after their key spent the credits (the key is suspended)'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
});
const creditCheckoutSchema = z.strictObject({
  keyId: z
    .string()
    .regex(/^key_/, 'expected an API key id')
    .optional()
    .describe('credit this key (the holder’s replacement) instead of the session’s own'),
});

/** A Checkout Session as the admin API shows it: money as strings, Stripe's minor units for what was paid. */
const publicCheckout = (s: CheckoutSession) => ({
  id: s.sessionId,
  keyId: s.keyId,
  package: s.package,
  state: s.state,
  credits: s.credits.toString(),
  expected: { amount: s.amountTotal.toString(), currency: s.currency },
  ...(s.paid ? { paid: { amount: s.paid.amount.toString(), currency: s.paid.currency } } : {}),
  ...(s.reviewReason ? { reviewReason: s.reviewReason } : {}),
  ...(s.paymentIntent ? { paymentIntent: s.paymentIntent } : {}),
  ...(s.reversed
    ? {
        reversed: {
          refunded: s.reversed.refunded.toString(),
          disputed: s.reversed.disputed.toString(),
          takenBack: s.reversed.takenBack.toString(),
          shortfall: s.reversed.shortfall.toString(),
        },
      }
    : {}),
  createdAt: new Date(s.createdAt).toISOString(),
  updatedAt: new Date(s.updatedAt).toISOString(),
});

/** The answer to an admin's decision on a session in review, or the specific reason it cannot be made. */
function resolved(result: ResolveResult, sessionId: string) {
  if (result.ok) return { ...publicCheckout(result.session), ...(result.entry ? { entry: publicEntry(result.entry) } : {}) };
  if (result.reason === 'not_found') throw new DomainError('checkout_not_found', `no Checkout Session ${sessionId} was opened here`);
  if (result.reason === 'not_in_review') {
    const state = result.session!.state;
    throw new DomainError('checkout_not_in_review', `Checkout Session ${sessionId} is ${state}, not in review: nothing to decide`);
  }
  throw new DomainError('key_unusable', 'that key is unknown or revoked: give keyId, the holder’s replacement key', {
    keyId: result.session!.keyId,
  });
}

export const pageSchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  before: z
    .string()
    .regex(/^le_[0-9a-z]+$/, 'expected a ledger entry id')
    .optional(),
});

/**
 * The admin API over API keys: create (the secret is in this one answer only), list, read, top
 * up (idempotent), suspend, resume, revoke, and a key's ledger; and over Stripe Checkout
 * Sessions: the ones held for review (paid otherwise than recorded, or for a revoked key), each
 * credited or rejected once; and over the OAuth subjects (callers of servers that take OAuth
 * tokens, of one of `issuers`) each key pays for.
 *
 * @example app.route('/admin', adminRoutes({ credits, store, adminKey, catalog, issuers: async () => ['https://id.example.com'] }));
 */
export function adminRoutes(options: {
  credits: Credits;
  store: Store;
  adminKey: string | undefined;
  catalog: RouteDoc[];
  issuers?: () => Promise<string[]>;
  /** Opens a key's post-paid account on any server by slug, configured or registered: set when Stripe is configured. */
  linkPostpaid?: (keyId: string, input: z.output<typeof linkAccountSchema>) => Promise<PostpaidAccount>;
}): Hono {
  const { credits, store, adminKey, catalog } = options;
  // Every change of money or of a key is the admin's, written to the audit log (`GET /admin/audit`).
  const audit = auditor(store);
  const app = new Hono();
  app.use(adminAuth(adminKey));
  const api = documented(app, catalog, { base: '/admin', security: 'admin' });

  api.post(
    '/keys',
    { summary: 'create an API key; the key is in this answer only', body: newKeySchema, status: 201 },
    async (c, { body }) => {
      const { usd, ...input } = body;
      const { secret, key } = await credits.createKey(
        input,
        usd ? { amount: usd, reason: 'initial balance', idempotencyKey: newId('create') } : undefined,
      );
      await audit(c, 'admin', undefined, 'key.create', key.id, { name: key.name, ...(usd ? { amount: usd.toString() } : {}) });
      return c.json({ ...publicKey(key), key: secret, note: 'store the key now: it is not shown again' }, 201);
    },
  );
  api.get('/keys', { summary: 'every API key' }, async (c) => c.json({ keys: (await store.credits.keys()).map(publicKey) }));
  api.get('/keys/:id', { summary: 'one API key' }, async (c) => c.json(publicKey(await credits.keyById(c.req.param('id')!))));
  api.get('/keys/:id/ledger', { summary: 'a key’s ledger, newest first', query: pageSchema }, async (c, { query }) => {
    const key = await credits.keyById(c.req.param('id')!);
    return c.json({ entries: (await store.credits.history(key.id, query)).map(publicEntry) });
  });
  api.post(
    '/keys/:id/topup',
    { summary: 'credit a key, once per idempotency key', body: topupSchema, status: 201 },
    async (c, { body }) => {
      const credited = await credits.topUp(c.req.param('id')!, body);
      if (credited.applied)
        await audit(c, 'admin', undefined, 'credits.topup', credited.entry.keyId, {
          amount: credited.entry.amount.toString(),
          reason: body.reason,
        });
      return c.json(
        { applied: credited.applied, entry: publicEntry(credited.entry), balance: credited.balance.toString() },
        credited.applied ? 201 : 200,
      );
    },
  );
  api.post(
    '/keys/:id/adjust',
    { summary: 'correct a key’s balance, either sign, never below zero', body: adjustSchema, status: 201 },
    async (c, { body }) => {
      const result = await credits.adjust(c.req.param('id')!, body);
      for (const entry of result.applied ? result.entries : [])
        await audit(c, 'admin', undefined, 'credits.adjust', entry.keyId, { amount: entry.amount.toString(), reason: entry.reason });
      return c.json({ applied: result.applied, entries: result.entries.map(publicEntry) }, result.applied ? 201 : 200);
    },
  );
  api.post(
    '/transfers',
    { summary: 'move credit between two keys in one transaction', body: transferSchema, status: 201 },
    async (c, { body }) => {
      const result = await credits.transfer(body);
      if (result.applied)
        await audit(c, 'admin', undefined, 'credits.transfer', `${body.from}→${body.to}`, {
          amount: body.usd.toString(),
          reason: body.reason,
        });
      return c.json({ applied: result.applied, entries: result.entries.map(publicEntry) }, result.applied ? 201 : 200);
    },
  );
  for (const action of Object.keys(statusAfter) as (keyof typeof statusAfter)[]) {
    api.post(`/keys/:id/${action}`, { summary: `${action} a key${action === 'revoke' ? ' (final)' : ''}` }, async (c) => {
      const key = await credits.changeStatus(c.req.param('id')!, action);
      await audit(c, 'admin', undefined, `key.${action}`, key.id);
      return c.json(publicKey(key));
    });
  }
  api.post(
    '/keys/:id/postpaid',
    {
      summary: 'bill a key’s calls on a server to a Stripe subscription to a metered price (post-paid)',
      body: linkAccountSchema,
      status: 201,
    },
    async (c, { body }) => {
      if (!options.linkPostpaid)
        throw new DomainError('stripe_not_configured', 'post-paid billing is off here: this instance has no Stripe keys');
      const key = await credits.keyById(c.req.param('id')!);
      if (key.status === 'revoked') throw new DomainError('key_already_revoked', 'a revoked key cannot be billed');
      return c.json(publicAccount(await options.linkPostpaid(key.id, body)), 201);
    },
  );
  api.get('/keys/:id/postpaid', { summary: 'a key’s post-paid accounts' }, async (c) =>
    c.json({ accounts: (await store.postpaid.accounts((await credits.keyById(c.req.param('id')!)).id)).map(publicAccount) }),
  );
  subjectRoutes(api, {
    store,
    keyOf: (c) => credits.keyById(c.req.param('id')!),
    issuers: async () => (await options.issuers?.()) ?? [],
    whose: 'here',
  });
  const inReview = 'Stripe Checkout Sessions in a state; `review`: paid, held for your decision';
  api.get('/checkouts', { summary: inReview, query: checkoutsQuerySchema }, async (c, { query }) =>
    c.json({ checkouts: (await store.credits.checkouts(query.state, query.limit)).map(publicCheckout) }),
  );
  const credit = { summary: 'credit a session held for review (its package, once)', body: creditCheckoutSchema };
  api.post('/checkouts/:id/credit', credit, async (c, { body }) => {
    const id = c.req.param('id')!;
    const to = body.keyId ? { keyId: body.keyId } : {};
    const answer = resolved(await store.credits.resolveCheckout(id, { action: 'credit', ...to }), id);
    await audit(c, 'admin', undefined, 'checkout.credit', id, to);
    return c.json(answer);
  });
  api.post('/checkouts/:id/reject', { summary: 'reject a session held for review (refund it in Stripe)' }, async (c) => {
    const id = c.req.param('id')!;
    const answer = resolved(await store.credits.resolveCheckout(id, { action: 'reject' }), id);
    await audit(c, 'admin', undefined, 'checkout.reject', id);
    return c.json(answer);
  });
  const losses = 'deferred x402 payments delivered and then failed on chain, not cleared; their payers’ paid calls are refused';
  api.get('/losses', { summary: losses }, async (c) =>
    c.json({
      losses: (await store.journal.allLosses()).map((p) => ({
        payer: p.payer,
        payTo: p.payTo,
        amount: p.amount.toString(),
        asset: p.asset,
        chainId: p.chainId,
        nonce: p.nonce,
        txHash: p.txHash ?? null,
        reason: p.errorReason ?? null,
        failedAt: new Date(p.updatedAt).toISOString(),
      })),
    }),
  );
  const clear = { summary: 'clear a payer’s losses (paid off chain, or written off): their paid calls are taken again' };
  api.post('/losses/:payer/clear', clear, async (c) => {
    const payer = c.req.param('payer')!;
    if (!isAddress(payer, { strict: false })) throw new DomainError('invalid_request', `${payer} is not a 0x address`);
    const cleared = await store.journal.clearLosses(payer);
    if (cleared > 0) await audit(c, 'admin', undefined, 'losses.clear', payer.toLowerCase(), { cleared });
    return c.json({ payer: payer.toLowerCase(), cleared });
  });
  return app;
}
