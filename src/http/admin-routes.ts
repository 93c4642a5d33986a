import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import { z } from 'zod';
import { type Credits, adjustSchema, newKeySchema, publicEntry, publicKey, statusAfter, topupSchema, transferSchema } from '../rails/credits/credits.js';
import { CreditsError } from '../rails/credits/errors.js';
import type { Store } from '../store/store.js';
import { newId } from '../store/ids.js';
import { jsonBody, query } from './validate.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer auth against `TURNPIKE_ADMIN_KEY`, compared in constant time (both sides hashed first,
 * so not even the length leaks). Without a configured key the admin API is off.
 */
export const adminAuth = (adminKey: string | undefined) =>
  createMiddleware(async (c, next) => {
    if (!adminKey) throw new CreditsError(403, 'admin_disabled', 'the admin API is off: set TURNPIKE_ADMIN_KEY to enable it');
    const match = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '');
    if (!match || !timingSafeEqual(digest(match[1]!), digest(adminKey))) {
      throw new CreditsError(401, 'admin_unauthorized', 'send the admin key as Authorization: Bearer <TURNPIKE_ADMIN_KEY>');
    }
    await next();
  });

export const pageSchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  before: z.string().regex(/^le_[0-9a-z]+$/, 'expected a ledger entry id').optional(),
});

/**
 * The admin API over API keys: create (the secret is in this one answer only), list, read, top
 * up (idempotent), suspend, resume, revoke, and a key's ledger.
 *
 * @example app.route('/admin', adminRoutes({ credits, store, adminKey }));
 */
export function adminRoutes({ credits, store, adminKey }: { credits: Credits; store: Store; adminKey: string | undefined }): Hono {
  const app = new Hono();
  app.use(adminAuth(adminKey));

  app.post('/keys', async (c) => {
    const { usd, ...input } = await jsonBody(c, newKeySchema);
    const { secret, key } = await credits.createKey(input, usd ? { amount: usd, reason: 'initial balance', idempotencyKey: newId('create') } : undefined);
    return c.json({ ...publicKey(key), key: secret, note: 'store the key now: it is not shown again' }, 201);
  });
  app.get('/keys', async (c) => c.json({ keys: (await store.credits.keys()).map(publicKey) }));
  app.get('/keys/:id', async (c) => c.json(publicKey(await credits.keyById(c.req.param('id')))));
  app.get('/keys/:id/ledger', async (c) => {
    const key = await credits.keyById(c.req.param('id'));
    const entries = await store.credits.history(key.id, query(c, pageSchema));
    return c.json({ entries: entries.map(publicEntry) });
  });
  app.post('/keys/:id/topup', async (c) => {
    const credited = await credits.topUp(c.req.param('id'), await jsonBody(c, topupSchema));
    return c.json({ applied: credited.applied, entry: publicEntry(credited.entry), balance: credited.balance.toString() }, credited.applied ? 201 : 200);
  });
  app.post('/keys/:id/adjust', async (c) => {
    const result = await credits.adjust(c.req.param('id'), await jsonBody(c, adjustSchema));
    return c.json({ applied: result.applied, entries: result.entries.map(publicEntry) }, result.applied ? 201 : 200);
  });
  app.post('/transfers', async (c) => {
    const result = await credits.transfer(await jsonBody(c, transferSchema));
    return c.json({ applied: result.applied, entries: result.entries.map(publicEntry) }, result.applied ? 201 : 200);
  });
  for (const action of Object.keys(statusAfter) as (keyof typeof statusAfter)[]) {
    app.post(`/keys/:id/${action}`, async (c) => c.json(publicKey(await credits.changeStatus(c.req.param('id'), action))));
  }
  return app;
}
