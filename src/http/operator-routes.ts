import { type Context, Hono } from 'hono';
import { z } from 'zod';
import { usdPrice } from '../pricing/pricing.js';
import { analyticsCsv, analyticsJson, analyticsQuerySchema } from '../operators/analytics.js';
import {
  type Operators,
  activeOnly,
  newServerSchema,
  operatorPatchSchema,
  publicOperator,
  publicServer,
  registerSchema,
  serverPatchSchema,
} from '../operators/operators.js';
import type { Withdrawals } from '../operators/withdrawals.js';
import { type Events, deliveriesQuerySchema, newEndpointSchema, publicDelivery, publicEndpoint } from '../events/endpoints.js';
import { type Credits, newKeySchema, publicEntry, publicKey, statusAfter } from '../rails/credits/credits.js';
import type { StripePayouts } from '../rails/stripe/payouts.js';
import { linkAccountSchema, publicAccount } from '../rails/invoice/accounts.js';
import type { PostpaidAccount } from '../store/postpaid/postpaid.js';
import type { Balance } from '../operators/balance.js';
import type { OperatorRecord, Payout, Withdrawal } from '../store/operators/operators.js';
import type { Store } from '../store/store.js';
import { adminAuth, pageSchema } from './admin-routes.js';
import { DomainError } from '../errors.js';
import { auditor } from './audit.js';
import { sessionOf } from './console-session.js';
import { type RouteDoc, documented } from './documented.js';
import { subjectRoutes } from './subject-routes.js';

export type OperatorRoutesOptions = {
  operators: Operators;
  store: Store;
  /** Operators' webhook endpoints and their delivery logs. */
  events: Events;
  withdrawals?: Withdrawals;
  payouts?: StripePayouts;
  /** The credits rail, for keys operators make for their customers. */
  credits?: Credits;
  /** Opens a key's post-paid account on a server (by id): set when Stripe is configured. */
  linkPostpaid?: (keyId: string, serverId: string, input: Omit<z.output<typeof linkAccountSchema>, 'server'>) => Promise<PostpaidAccount>;
  adminKey: string | undefined;
  registration: 'admin' | 'open';
  catalog: RouteDoc[];
};

const withdrawalSchema = z.strictObject({
  usd: usdPrice.optional().describe('USD amount; default everything available'),
  idempotencyKey: z.string().min(1).max(255),
});
const payoutSchema = z.strictObject({
  usd: usdPrice.optional().describe('USD amount in whole cents; default everything available'),
  idempotencyKey: z.string().min(1).max(255),
});
/** An operator's key starts empty: its balance comes only from the customer's own top-ups. */
const operatorKeySchema = newKeySchema.omit({ usd: true });
const auditQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  before: z
    .string()
    .regex(/^au_[0-9a-z]+$/, 'expected an audit entry id')
    .optional(),
});

const publicPayout = (p: Payout) => ({
  id: p.id,
  amount: p.amount.toString(),
  destination: p.destination,
  state: p.state,
  transferId: p.transferId ?? null,
  error: p.error ?? null,
  idempotencyKey: p.idempotencyKey,
  createdAt: new Date(p.createdAt).toISOString(),
});
const publicBalance = (b: Balance) => Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v.toString()]));
const publicWithdrawal = (w: Withdrawal) => ({
  id: w.id,
  amount: w.amount.toString(),
  to: w.to,
  state: w.state,
  txHash: w.txHash ?? null,
  waitingForGas: w.waitingForGas,
  error: w.error ?? null,
  idempotencyKey: w.idempotencyKey,
  createdAt: new Date(w.createdAt).toISOString(),
  updatedAt: new Date(w.updatedAt).toISOString(),
});

/**
 * The operator API (`/operator/…`, bearer `op_…`): the operator's profile, servers, balance,
 * withdrawals, analytics and audit trail, each scoped to that operator; registration
 * (`POST /operators` when open); and the admin's view of operators (`/admin/operators…`,
 * `/admin/analytics`, `/admin/audit`). Every change is written to the audit log.
 */
export function operatorRoutes(options: OperatorRoutesOptions) {
  const { operators, store, events, withdrawals, payouts, credits, catalog } = options;
  const stripeOff = () => new DomainError('stripe_not_configured', 'fiat payouts are off here: this instance has no STRIPE_SECRET_KEY');
  const app = new Hono<{ Variables: { operator: OperatorRecord } }>();
  const audit = auditor(store);

  const open = new Hono();
  documented(open, catalog, { base: '/operators', security: 'none' }).post(
    '/',
    { summary: 'register as an operator (when registration is open); the key is in this answer only', body: registerSchema, status: 201 },
    async (c, { body }) => {
      if (options.registration !== 'open')
        throw new DomainError('registration_closed', 'operators are registered by this instance’s admin (POST /admin/operators)');
      const { secret, operator } = await operators.register(body);
      await audit(c, `operator:${operator.id}`, operator.id, 'operator.register', operator.id);
      return c.json({ ...publicOperator(operator), key: secret, note: 'store the key now: it is not shown again' }, 201);
    },
  );
  app.route('/operators', open);

  const mine = new Hono<{ Variables: { operator: OperatorRecord } }>();
  mine.use(async (c, next) => {
    const session = sessionOf(c.req.raw);
    const operator =
      session?.kind === 'operator' ? activeOnly(session.operator) : await operators.authenticate(c.req.header('authorization'));
    c.set('operator', operator);
    await next();
  });
  const op = documented(mine, catalog, { base: '/operator', security: 'operator' });
  type Env = { Variables: { operator: OperatorRecord } };
  const me = (c: Context<Env>) => c.get('operator');
  const actor = (c: Context<Env>) => `operator:${me(c).id}`;

  op.get('/', { summary: 'your operator profile and balance' }, async (c) =>
    c.json({ ...publicOperator(me(c)), balance: publicBalance(await store.operators.balance(me(c).id)) }),
  );
  op.patch('/', { summary: 'change your name or payout address', body: operatorPatchSchema }, async (c, { body }) => {
    const updated = await store.operators.updateOperator(me(c).id, body);
    await audit(c, actor(c), me(c).id, 'operator.update', me(c).id, { fields: Object.keys(body) });
    return c.json(publicOperator(updated!));
  });
  op.get('/servers', { summary: 'your servers' }, async (c) =>
    c.json({ servers: (await store.operators.servers({ operatorId: me(c).id })).map(publicServer) }),
  );
  op.post(
    '/servers',
    { summary: 'register an MCP server, served at /mcp/<slug>', body: newServerSchema, status: 201 },
    async (c, { body }) => {
      const server = await operators.createServer(me(c), body);
      await audit(c, actor(c), me(c).id, 'server.create', server.slug, { upstream: server.upstreamUrl, custody: server.custody });
      return c.json(publicServer(server), 201);
    },
  );
  op.get('/servers/:slug', { summary: 'one of your servers' }, async (c) =>
    c.json(publicServer(await operators.ownServer(me(c), c.req.param('slug')!))),
  );
  op.patch('/servers/:slug', { summary: 'change a server; new calls get the change', body: serverPatchSchema }, async (c, { body }) => {
    const server = await operators.updateServer(me(c), c.req.param('slug')!, body);
    await audit(c, actor(c), me(c).id, 'server.update', server.slug, { fields: Object.keys(body) });
    return c.json(publicServer(server));
  });
  op.delete('/servers/:slug', { summary: 'remove a server: its Stripe subscriptions are cancelled, its history stays' }, async (c) => {
    const { server, cancelled } = await operators.deleteServer(me(c), c.req.param('slug')!);
    await audit(c, actor(c), me(c).id, 'server.delete', server.slug, { id: server.id, cancelledSubscriptions: cancelled });
    return c.json({ deleted: server.slug, id: server.id, cancelledSubscriptions: cancelled });
  });
  op.get('/webhooks', { summary: 'your webhook endpoints: each gets every event of your servers, signed' }, async (c) =>
    c.json({ endpoints: (await events.endpoints(me(c).id)).map(publicEndpoint) }),
  );
  op.post(
    '/webhooks',
    { summary: 'add a webhook endpoint; its signing secret is in this answer only', body: newEndpointSchema, status: 201 },
    async (c, { body }) => {
      const { endpoint, secret } = await events.addEndpoint(me(c).id, body.url);
      await audit(c, actor(c), me(c).id, 'webhook.create', endpoint.id, { url: endpoint.url });
      return c.json({ ...publicEndpoint(endpoint), secret, note: 'store the secret now: it is not shown again' }, 201);
    },
  );
  op.delete('/webhooks/:id', { summary: 'delete a webhook endpoint; what it had not been sent is given up' }, async (c) => {
    const id = c.req.param('id')!;
    await events.deleteEndpoint(me(c).id, id);
    await audit(c, actor(c), me(c).id, 'webhook.delete', id);
    return c.json({ deleted: id });
  });
  op.get(
    '/webhooks/:id/deliveries',
    { summary: 'one endpoint’s delivery log, newest first', query: deliveriesQuerySchema },
    async (c, { query }) => {
      const page = await events.deliveries(me(c).id, c.req.param('id')!, query);
      return c.json({ deliveries: page.map(publicDelivery), ...(page.length > 0 ? { next: page.at(-1)!.createdAt } : {}) });
    },
  );
  op.get('/balance', { summary: 'your revenue: withdrawable USDC, fiat payable, direct' }, async (c) =>
    c.json(publicBalance(await store.operators.balance(me(c).id))),
  );
  op.get('/withdrawals', { summary: 'your withdrawals, newest first' }, async (c) =>
    c.json({ withdrawals: (await store.operators.withdrawals(me(c).id)).map(publicWithdrawal) }),
  );
  op.get('/withdrawals/:id', { summary: 'one withdrawal' }, async (c) => {
    const w = await store.operators.withdrawal(c.req.param('id')!);
    if (!w || w.operatorId !== me(c).id) throw new DomainError('withdrawal_not_found', `you have no withdrawal ${c.req.param('id')}`);
    return c.json(publicWithdrawal(w));
  });
  op.post(
    '/withdrawals',
    { summary: 'withdraw available USDC to your payout address', body: withdrawalSchema, status: 201 },
    async (c, { body }) => {
      if (!withdrawals)
        throw new DomainError('withdrawals_unavailable', 'this instance has no treasury key (TURNPIKE_TREASURY_KEY): withdrawals are off');
      const { created, withdrawal } = await withdrawals.request(me(c), {
        idempotencyKey: body.idempotencyKey,
        ...(body.usd !== undefined ? { amount: body.usd } : {}),
      });
      if (created)
        await audit(c, actor(c), me(c).id, 'withdrawal.request', withdrawal.id, {
          amount: withdrawal.amount.toString(),
          to: withdrawal.to,
        });
      return c.json(publicWithdrawal(withdrawal), created ? 201 : 200);
    },
  );
  /** The operator's own key, or 404: another operator's key does not exist for them. */
  async function ownKey(c: Context<Env>) {
    const key = await store.credits.key(c.req.param('id')!);
    if (!key || key.operatorId !== me(c).id) throw new DomainError('key_not_found', `you have no API key ${c.req.param('id')}`);
    return key;
  }
  op.post(
    '/keys',
    {
      summary: 'an API key for one of your customers, usable on your servers only, funded by their own top-ups',
      body: operatorKeySchema,
      status: 201,
    },
    async (c, { body }) => {
      if (!credits) throw new DomainError('credits_disabled', 'the credits rail is off on this instance');
      const own = (await store.operators.servers({ operatorId: me(c).id })).map((s) => s.slug);
      const servers = body.scope?.servers ?? own;
      const foreign = servers.filter((s) => !own.includes(s));
      if (servers.length === 0) throw new DomainError('no_servers', 'register a server first: a key you make can pay only on your servers');
      if (foreign.length > 0)
        throw new DomainError('invalid_request', `scope.servers: not your servers: ${foreign.join(', ')}`, { field: 'scope.servers' });
      const { secret, key } = await credits.createKey({ ...body, scope: { ...body.scope, servers }, operatorId: me(c).id });
      await audit(c, actor(c), me(c).id, 'key.create', key.id, { servers });
      return c.json({ ...publicKey(key), key: secret, note: 'store the key now: it is not shown again' }, 201);
    },
  );
  op.get('/keys', { summary: 'the API keys you made' }, async (c) =>
    c.json({ keys: (await store.credits.keys({ operatorId: me(c).id })).map(publicKey) }),
  );
  op.get('/keys/:id', { summary: 'one of your API keys' }, async (c) => c.json(publicKey(await ownKey(c))));
  op.get('/keys/:id/ledger', { summary: 'one of your keys’ ledger, newest first', query: pageSchema }, async (c, { query }) =>
    c.json({ entries: (await store.credits.history((await ownKey(c)).id, query)).map(publicEntry) }),
  );
  for (const action of Object.keys(statusAfter) as (keyof typeof statusAfter)[]) {
    op.post(`/keys/:id/${action}`, { summary: `${action} one of your keys${action === 'revoke' ? ' (final)' : ''}` }, async (c) => {
      const key = await ownKey(c);
      const changed = await credits!.changeStatus(key.id, action);
      await audit(c, actor(c), me(c).id, `key.${action}`, key.id);
      return c.json(publicKey(changed));
    });
  }
  op.post(
    '/keys/:id/postpaid',
    {
      summary: 'bill one of your keys’ calls on one of your servers to a Stripe subscription to your metered price (post-paid)',
      body: linkAccountSchema,
      status: 201,
    },
    async (c, { body }) => {
      if (!options.linkPostpaid)
        throw new DomainError('stripe_not_configured', 'post-paid billing is off here: this instance has no Stripe keys');
      const key = await ownKey(c);
      if (key.status === 'revoked') throw new DomainError('key_already_revoked', 'a revoked key cannot be billed');
      const { server: slug, ...input } = body;
      const server = await operators.ownServer(me(c), slug);
      const account = await options.linkPostpaid(key.id, server.id, input);
      await audit(c, actor(c), me(c).id, 'postpaid.link', account.id, { key: key.id, server: slug, subscription: account.subscription });
      return c.json(publicAccount(account), 201);
    },
  );
  op.get('/keys/:id/postpaid', { summary: 'one of your keys’ post-paid accounts' }, async (c) =>
    c.json({ accounts: (await store.postpaid.accounts((await ownKey(c)).id)).map(publicAccount) }),
  );
  subjectRoutes(op, {
    store,
    keyOf: ownKey,
    issuers: async (c) => (await store.operators.servers({ operatorId: me(c).id })).flatMap((s) => (s.oauth ? [s.oauth.issuer] : [])),
    whose: 'of yours',
    changed: (c, action, keyId, subject) => audit(c, actor(c), me(c).id, action, keyId, subject),
  });
  op.post('/payouts/onboarding', { summary: 'a Stripe Connect (Express) onboarding link for fiat payouts' }, async (c) => {
    if (!payouts) throw stripeOff();
    const link = await payouts.onboarding(me(c));
    await audit(c, actor(c), me(c).id, 'payouts.onboarding', link.account);
    return c.json(link, 201);
  });
  op.get('/payouts', { summary: 'your fiat payouts, newest first' }, async (c) =>
    c.json({ payouts: (await store.operators.payouts(me(c).id)).map(publicPayout) }),
  );
  op.post(
    '/payouts',
    { summary: 'pay your fiat balance out to your connected Stripe account', body: payoutSchema, status: 201 },
    async (c, { body }) => {
      if (!payouts) throw stripeOff();
      const { created, payout } = await payouts.request(me(c), {
        idempotencyKey: body.idempotencyKey,
        ...(body.usd !== undefined ? { amount: body.usd } : {}),
      });
      if (created) await audit(c, actor(c), me(c).id, 'payout.request', payout.id, { amount: payout.amount.toString() });
      return c.json(publicPayout(payout), created ? 201 : 200);
    },
  );
  op.get(
    '/analytics',
    { summary: 'usage and revenue by day, tool, rail and caller; denials; settlement latency (JSON or CSV)', query: analyticsQuerySchema },
    async (c, { query }) => {
      const server = query.server ? await operators.ownServer(me(c), query.server) : undefined;
      return analytics(c, { operatorId: me(c).id, ...query }, server?.id);
    },
  );
  // The admin's own changes on the account are listed, not the address the admin made them from.
  op.get('/audit', { summary: 'what was done on your account', query: auditQuerySchema }, async (c, { query }) => {
    const entries = await store.operators.auditLog({ operatorId: me(c).id, ...query });
    return c.json({ entries: entries.map(({ ip, ...entry }) => (entry.actor === actor(c) && ip ? { ...entry, ip } : entry)) });
  });
  app.route('/operator', mine);

  const admin = new Hono();
  admin.use(adminAuth(options.adminKey));
  const ad = documented(admin, catalog, { base: '/admin', security: 'admin' });
  ad.post(
    '/operators',
    { summary: 'create an operator; the key is in this answer only', body: registerSchema, status: 201 },
    async (c, { body }) => {
      const { secret, operator } = await operators.register(body);
      await audit(c, 'admin', operator.id, 'operator.create', operator.id);
      return c.json({ ...publicOperator(operator), key: secret, note: 'store the key now: it is not shown again' }, 201);
    },
  );
  ad.get('/operators', { summary: 'every operator' }, async (c) =>
    c.json({ operators: (await store.operators.operators()).map(publicOperator) }),
  );
  ad.get('/operators/:id', { summary: 'an operator, its servers and balance' }, async (c) => {
    const operator = await operators.operatorById(c.req.param('id')!);
    return c.json({
      ...publicOperator(operator),
      balance: publicBalance(await store.operators.balance(operator.id)),
      servers: (await store.operators.servers({ operatorId: operator.id })).map(publicServer),
    });
  });
  for (const [action, status] of [
    ['suspend', 'suspended'],
    ['resume', 'active'],
  ] as const) {
    ad.post(`/operators/:id/${action}`, { summary: `${action} an operator (its servers stop or resume serving)` }, async (c) => {
      const operator = await operators.operatorById(c.req.param('id')!);
      const updated = await store.operators.updateOperator(operator.id, { status });
      await audit(c, 'admin', operator.id, `operator.${action}`, operator.id);
      return c.json(publicOperator(updated!));
    });
  }
  const instance = { summary: 'usage and revenue across the instance (JSON or CSV)', query: analyticsQuerySchema };
  ad.get('/analytics', instance, async (c, { query }) =>
    // The server at the slug now; a slug no registered server holds is a configured endpoint's.
    analytics(c, query, query.server ? ((await store.operators.server(query.server))?.id ?? query.server) : undefined),
  );
  ad.get('/audit', { summary: 'the audit log of admin and operator actions', query: auditQuerySchema }, async (c, { query }) =>
    c.json({ entries: await store.operators.auditLog(query) }),
  );
  app.route('/admin', admin);

  /** Analytics of one server are of its id: a server that held the slug before is not in them. */
  async function analytics(c: Context, q: { operatorId?: string; from: number; to: number; format: 'json' | 'csv' }, serverId?: string) {
    const { format, ...range } = q;
    const result = await store.operators.analytics({ ...range, ...(serverId ? { serverId } : {}) });
    if (format === 'csv') return c.body(analyticsCsv(result), 200, { 'content-type': 'text/csv; charset=utf-8' });
    return c.json(analyticsJson(result, range));
  }

  return app;
}
