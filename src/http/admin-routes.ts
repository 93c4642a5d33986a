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
import { bearerIn } from './caller.js';
import { sessionOf } from './console-session.js';
import type { CheckoutSession, ResolveResult } from '../store/credits/credits.js';
import type { Store } from '../store/store.js';
import { newId } from '../store/ids.js';
import { type RouteDoc, documented } from './documented.js';
import { oauthIssuerSchema, oauthSubjectSchema } from '../oauth/settings.js';

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
  state: z.enum(['open', 'review', 'credited', 'rejected']).default('review'),
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

/** An OAuth caller: the identity provider exactly as its tokens' `iss` says, and the token's `sub`. */
const subjectSchema = z.strictObject({
  issuer: oauthIssuerSchema,
  subject: oauthSubjectSchema,
});

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
}): Hono {
  const { credits, store, adminKey, catalog } = options;
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
      return c.json({ applied: result.applied, entries: result.entries.map(publicEntry) }, result.applied ? 201 : 200);
    },
  );
  api.post(
    '/transfers',
    { summary: 'move credit between two keys in one transaction', body: transferSchema, status: 201 },
    async (c, { body }) => {
      const result = await credits.transfer(body);
      return c.json({ applied: result.applied, entries: result.entries.map(publicEntry) }, result.applied ? 201 : 200);
    },
  );
  for (const action of Object.keys(statusAfter) as (keyof typeof statusAfter)[]) {
    api.post(`/keys/:id/${action}`, { summary: `${action} a key${action === 'revoke' ? ' (final)' : ''}` }, async (c) =>
      c.json(publicKey(await credits.changeStatus(c.req.param('id')!, action))),
    );
  }
  const linking = {
    summary: 'link an OAuth subject to a key: its calls on OAuth servers are charged to the key',
    body: subjectSchema,
    status: 201,
  };
  api.post('/keys/:id/subjects', linking, async (c, { body }) => {
    const issuers = [...new Set((await options.issuers?.()) ?? [])];
    if (!issuers.includes(body.issuer)) {
      throw new DomainError('issuer_unknown', `no server here takes tokens of ${body.issuer}; name it as a server's oauth.issuer first`, {
        issuers,
      });
    }
    const key = await credits.keyById(c.req.param('id')!);
    if (key.status === 'revoked') throw new DomainError('key_already_revoked', 'a revoked key cannot pay for anyone');
    const result = await store.credits.linkSubject({ ...body, keyId: key.id });
    if (result.keyId !== key.id) {
      throw new DomainError('subject_linked', `this subject is linked to key ${result.keyId}; unlink it there first`, {
        keyId: result.keyId,
      });
    }
    return c.json({ ...body, keyId: key.id, linked: result.linked }, result.linked ? 201 : 200);
  });
  api.get('/keys/:id/subjects', { summary: 'the OAuth subjects a key pays for' }, async (c) => {
    const key = await credits.keyById(c.req.param('id')!);
    const subjects = await store.credits.subjects(key.id);
    return c.json({
      subjects: subjects.map((s) => ({ issuer: s.issuer, subject: s.subject, createdAt: new Date(s.createdAt!).toISOString() })),
    });
  });
  api.delete('/keys/:id/subjects', { summary: 'unlink an OAuth subject from a key', query: subjectSchema }, async (c, { query }) => {
    const key = await credits.keyById(c.req.param('id')!);
    if (!(await store.credits.unlinkSubject({ ...query, keyId: key.id }))) {
      throw new DomainError('subject_not_linked', `subject ${query.subject} of ${query.issuer} is not linked to key ${key.id}`);
    }
    return c.json({ ...query, keyId: key.id, linked: false });
  });
  const inReview = 'Stripe Checkout Sessions in a state; `review`: paid, held for your decision';
  api.get('/checkouts', { summary: inReview, query: checkoutsQuerySchema }, async (c, { query }) =>
    c.json({ checkouts: (await store.credits.checkouts(query.state, query.limit)).map(publicCheckout) }),
  );
  const credit = { summary: 'credit a session held for review (its package, once)', body: creditCheckoutSchema };
  api.post('/checkouts/:id/credit', credit, async (c, { body }) => {
    const id = c.req.param('id')!;
    const to = body.keyId ? { keyId: body.keyId } : {};
    return c.json(resolved(await store.credits.resolveCheckout(id, { action: 'credit', ...to }), id));
  });
  api.post('/checkouts/:id/reject', { summary: 'reject a session held for review (refund it in Stripe)' }, async (c) => {
    const id = c.req.param('id')!;
    return c.json(resolved(await store.credits.resolveCheckout(id, { action: 'reject' }), id));
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
    return c.json({ payer: payer.toLowerCase(), cleared: await store.journal.clearLosses(payer) });
  });
  return app;
}
