import { settlementModes } from '../facilitator/port.js';
import { slugSchema } from '../pricing/slug.js';
import { getAddress, isAddress } from 'viem';
import { z } from 'zod';
import type { SecretBox } from './secret-box.js';
import { planSchema, publicPlan } from '../pricing/plans.js';
import { UpstreamUrlError, checkUpstreamUrl } from '../upstream/ssrf.js';
import { DomainError } from '../errors.js';
import { type OAuthSettings, oauthSettingsSchema } from '../oauth/settings.js';
import { generateApiKey, hashApiKey, sameHash } from '../rails/credits/api-keys.js';
import { newId } from '../store/ids.js';
import type { OperatorRecord, ServerRecord, UpstreamAuth } from '../store/operators/operators.js';
import type { Store } from '../store/store.js';

const address = z
  .string()
  .refine((a) => isAddress(a, { strict: false }), 'expected a 0x address of 20 bytes')
  .transform((a) => getAddress(a));

export const registerSchema = z.strictObject({
  email: z
    .email()
    .max(254)
    .transform((e) => e.toLowerCase()),
  name: z.string().trim().min(1).max(120),
  payoutAddress: address.optional(),
});

export const operatorPatchSchema = z.strictObject({
  name: z.string().trim().min(1).max(120).optional(),
  payoutAddress: address.nullable().optional(),
});

const authSchema = z.discriminatedUnion('mode', [
  z.strictObject({ mode: z.literal('none') }),
  z.strictObject({ mode: z.literal('header'), secret: z.string().min(1).max(4096).describe('sent as Authorization: Bearer <secret>') }),
  z.strictObject({
    mode: z.literal('query'),
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected a query parameter name'),
    secret: z.string().min(1).max(4096),
  }),
]);

const serverFields = {
  name: z.string().trim().min(1).max(120),
  upstream: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).max(2048),
  auth: authSchema.default({ mode: 'none' }),
  public: z.boolean().default(true),
  custody: z.enum(['direct', 'platform']).default('direct'),
  payTo: address.optional().describe('required with custody "direct": the operator’s own address'),
  plan: planSchema,
  challenge: z.enum(['tool-result', 'http-402']).default('tool-result'),
  settlement: z
    .enum(settlementModes)
    .default('strict')
    .describe(
      '`strict`: x402 results after the settlement is mined; `deferred`: once it is signed and journalled, within the per-payer cap',
    ),
  timeoutSeconds: z.number().positive().max(3600).default(60),
  oauth: oauthSettingsSchema.optional(),
};

export const newServerSchema = z.strictObject({ slug: slugSchema, ...serverFields });
export const serverPatchSchema = z.strictObject({
  name: serverFields.name.optional(),
  upstream: serverFields.upstream.optional(),
  auth: authSchema.optional(),
  public: z.boolean().optional(),
  status: z.enum(['active', 'suspended']).optional().describe('`suspended`: not served (404) nor listed until set back to `active`'),
  custody: z.enum(['direct', 'platform']).optional(),
  payTo: address.optional(),
  plan: planSchema.optional(),
  challenge: z.enum(['tool-result', 'http-402']).optional(),
  settlement: z.enum(settlementModes).optional(),
  timeoutSeconds: z.number().positive().max(3600).optional(),
  oauth: oauthSettingsSchema.nullable().optional().describe('null: take no OAuth callers any more'),
});

/** An operator as the API shows it. */
export const publicOperator = (o: OperatorRecord) => ({
  id: o.id,
  email: o.email,
  name: o.name,
  payoutAddress: o.payoutAddress ?? null,
  status: o.status,
  createdAt: new Date(o.createdAt).toISOString(),
});

/** The operator if active; a suspended one is a 403, however it authenticated. */
export function activeOnly(operator: OperatorRecord): OperatorRecord {
  if (operator.status !== 'active') throw new DomainError('operator_suspended', 'this operator is suspended; contact the instance owner');
  return operator;
}

/** A server as the API shows it: the upstream secret never leaves, only whether one is set. */
export function publicServer(s: ServerRecord) {
  return {
    id: s.id,
    slug: s.slug,
    name: s.name,
    upstream: s.upstreamUrl,
    auth:
      s.auth.mode === 'none'
        ? { mode: 'none' }
        : { mode: s.auth.mode, ...(s.auth.mode === 'query' ? { name: s.auth.name } : {}), secret: '(set)' },
    public: s.public,
    status: s.status,
    custody: s.custody,
    payTo: s.payTo ?? null,
    plan: publicPlan(s.plan),
    challenge: s.challenge,
    settlement: s.settlement,
    timeoutSeconds: s.timeoutMs / 1000,
    oauth: s.oauth ?? null,
    path: `/mcp/${s.slug}`,
    createdAt: new Date(s.createdAt).toISOString(),
    updatedAt: new Date(s.updatedAt).toISOString(),
  };
}

export type OperatorsOptions = {
  store: Store;
  /** Seals upstream secrets; without TURNPIKE_SECRETS_KEY a server cannot be given one. */
  box?: SecretBox;
  allowPrivateUpstreams: boolean;
  /** What an upstream URL reaching this turnpike itself matched (see `isTurnpike`), or undefined: such an upstream loops. */
  isTurnpike: (url: URL) => Promise<string | undefined>;
  /** Slugs served from the config file: not for the API to take. */
  reservedSlugs: ReadonlySet<string>;
  /** Where platform-custody servers are paid; without it only `direct` custody is possible. */
  treasury?: `0x${string}`;
  /** Whether OAuth callers can pay here (they pay from credits keys, so not with credits off); absent: no. */
  oauthCallers?: boolean;
  /** Cancels a Stripe subscription (a deleted server's); absent without Stripe. */
  cancelSubscription?: (id: string) => Promise<void>;
};

/**
 * Operators and their servers: registration (the key shown once, stored hashed), bearer
 * authentication, and server registration with every field checked: a slug nobody has, an
 * upstream that is not on a private network nor this turnpike itself (checked again at connect time by the gateway's
 * agent), a sealed upstream secret, a payee that fits the custody mode.
 *
 * @example
 * const ownUrl = isTurnpike(() => ({ listening: url }));
 * const operators = createOperators({ store, box, allowPrivateUpstreams: false, isTurnpike: ownUrl, reservedSlugs: new Set() });
 * const { secret, operator } = await operators.register({ email: 'a@example.com', name: 'A' });
 */
export function createOperators(options: OperatorsOptions) {
  const { store } = options;

  async function upstreamChecked(url: string) {
    let checked: URL;
    try {
      checked = await checkUpstreamUrl(url, { allowPrivate: options.allowPrivateUpstreams });
    } catch (error) {
      if (error instanceof UpstreamUrlError) throw new DomainError('upstream_refused', `upstream: ${error.message}`, { field: 'upstream' });
      throw error;
    }
    const self = await options.isTurnpike(checked);
    if (self) {
      const why = `upstream: ${checked.origin} is this turnpike (${self}), and a server forwarding to it would loop`;
      throw new DomainError('upstream_is_turnpike', `${why}; give the MCP server's own URL`, { field: 'upstream' });
    }
  }

  /**
   * An identity provider a server may name: turnpike fetches its metadata and keys, so it is held
   * to what an upstream is (not on a private network unless allowed, checked again at connect time).
   */
  async function issuerChecked(oauth: OAuthSettings | null | undefined) {
    if (!oauth) return;
    if (!options.oauthCallers)
      throw new DomainError('oauth_unavailable', 'OAuth callers pay from credits keys, and credits are off on this instance', {
        field: 'oauth',
      });
    try {
      await checkUpstreamUrl(oauth.issuer, { allowPrivate: options.allowPrivateUpstreams });
    } catch (error) {
      if (error instanceof UpstreamUrlError)
        throw new DomainError('issuer_refused', `oauth.issuer: ${error.message}`, { field: 'oauth.issuer' });
      throw error;
    }
  }

  function sealed(auth: z.output<typeof authSchema>, serverId: string): UpstreamAuth {
    if (auth.mode === 'none') return auth;
    if (!options.box)
      throw new DomainError(
        'secrets_key_missing',
        'an upstream secret is kept encrypted, and this instance has no TURNPIKE_SECRETS_KEY; ask its owner to set one',
        { field: 'auth' },
      );
    return {
      mode: auth.mode,
      name: auth.mode === 'query' ? auth.name : 'authorization',
      sealedSecret: options.box.seal(auth.secret, serverId),
    };
  }

  function payee(custody: ServerRecord['custody'], payTo: `0x${string}` | undefined) {
    if (custody === 'direct' && !payTo)
      throw new DomainError('invalid_request', 'payTo: required with custody "direct" (payments go straight to it)', { field: 'payTo' });
    if (custody === 'platform' && !options.treasury)
      throw new DomainError(
        'custody_unavailable',
        'custody "platform" needs a treasury, and this instance has none (TURNPIKE_TREASURY_KEY)',
        { field: 'custody' },
      );
  }

  /** The operator's own server, or 404 — another operator's server does not exist for them. */
  async function ownServer(operator: OperatorRecord, slugValue: string): Promise<ServerRecord> {
    const server = await store.operators.server(slugValue);
    if (!server || server.operatorId !== operator.id) throw new DomainError('server_not_found', `you have no server "${slugValue}"`);
    return server;
  }

  return {
    async register(input: z.output<typeof registerSchema>) {
      const { secret, id, hash } = generateApiKey('op_', 'op');
      const created = await store.operators.createOperator({
        id,
        email: input.email,
        name: input.name,
        keyHash: hash,
        createdAt: Date.now(),
        ...(input.payoutAddress ? { payoutAddress: input.payoutAddress } : {}),
      });
      if (!created.created) throw new DomainError('email_taken', `an operator with ${input.email} is registered already`);
      return { secret, operator: created.operator! };
    },

    /** The operator a bearer key belongs to; unknown → 401, suspended → 403. */
    async authenticate(authorization: string | undefined): Promise<OperatorRecord> {
      const match = /^Bearer\s+(op_\S+)\s*$/i.exec(authorization ?? '');
      if (!match) throw new DomainError('operator_unauthorized', 'send your operator key as Authorization: Bearer op_…');
      const hash = hashApiKey(match[1]!);
      const found = await store.operators.operatorByKeyHash(hash);
      if (!found || !sameHash(found.keyHash, hash)) throw new DomainError('operator_unauthorized', 'this operator key is not known here');
      const { keyHash: _, ...operator } = found;
      return activeOnly(operator);
    },

    async operatorById(id: string) {
      const operator = await store.operators.operator(id);
      if (!operator) throw new DomainError('operator_not_found', `no operator ${id}`);
      return operator;
    },

    ownServer,

    async createServer(operator: OperatorRecord, input: z.output<typeof newServerSchema>): Promise<ServerRecord> {
      if (options.reservedSlugs.has(input.slug)) throw new DomainError('slug_taken', `slug "${input.slug}" is taken`, { field: 'slug' });
      payee(input.custody, input.payTo);
      await upstreamChecked(input.upstream);
      await issuerChecked(input.oauth);
      const id = newId('srv');
      const now = Date.now();
      const server: ServerRecord = {
        id,
        operatorId: operator.id,
        slug: input.slug,
        name: input.name,
        upstreamUrl: input.upstream,
        auth: sealed(input.auth, id),
        public: input.public,
        status: 'active',
        custody: input.custody,
        ...(input.custody === 'direct' ? { payTo: input.payTo! } : {}),
        plan: input.plan,
        challenge: input.challenge,
        settlement: input.settlement,
        timeoutMs: Math.round(input.timeoutSeconds * 1000),
        ...(input.oauth ? { oauth: input.oauth } : {}),
        createdAt: now,
        updatedAt: now,
      };
      const created = await store.operators.createServer(server);
      if (!created.created && created.retired) {
        const why = 'a live subscription, unsettled revenue or an old key still refers to';
        const message = `slug "${input.slug}" belonged to a deleted server that ${why}; choose another slug, or retry once they end`;
        throw new DomainError('slug_retired', message, { field: 'slug' });
      }
      if (!created.created) throw new DomainError('slug_taken', `slug "${input.slug}" is taken`, { field: 'slug' });
      return server;
    },

    /** A change applies to calls that start after it: gateways rebuild on the new `updatedAt`. */
    async updateServer(operator: OperatorRecord, slugValue: string, patch: z.output<typeof serverPatchSchema>): Promise<ServerRecord> {
      const current = await ownServer(operator, slugValue);
      const custody = patch.custody ?? current.custody;
      const payTo = patch.payTo ?? current.payTo;
      payee(custody, payTo);
      if (patch.upstream) await upstreamChecked(patch.upstream);
      // The credential was given for the upstream it goes to: whoever holds an operator key or console
      // session must not send it elsewhere by changing the upstream alone.
      if (
        patch.upstream &&
        !patch.auth &&
        current.auth.mode !== 'none' &&
        new URL(patch.upstream).origin !== new URL(current.upstreamUrl).origin
      )
        throw new DomainError(
          'invalid_request',
          'auth: an upstream at another origin needs its credential again: send auth with the new upstream (or {"mode":"none"})',
          { field: 'auth' },
        );
      await issuerChecked(patch.oauth);
      const updated: ServerRecord = {
        ...current,
        ...(patch.name ? { name: patch.name } : {}),
        ...(patch.upstream ? { upstreamUrl: patch.upstream } : {}),
        ...(patch.auth ? { auth: sealed(patch.auth, current.id) } : {}),
        ...(patch.public !== undefined ? { public: patch.public } : {}),
        ...(patch.status ? { status: patch.status } : {}),
        custody,
        ...(custody === 'direct' ? { payTo: payTo! } : { payTo: undefined }),
        ...(patch.plan ? { plan: patch.plan } : {}),
        ...(patch.challenge ? { challenge: patch.challenge } : {}),
        ...(patch.settlement ? { settlement: patch.settlement } : {}),
        ...(patch.timeoutSeconds ? { timeoutMs: Math.round(patch.timeoutSeconds * 1000) } : {}),
        ...(patch.oauth ? { oauth: patch.oauth } : {}),
        updatedAt: Math.max(Date.now(), current.updatedAt + 1),
      };
      if (custody === 'platform') delete updated.payTo;
      if (patch.oauth === null) delete updated.oauth;
      await store.operators.updateServer(updated);
      return updated;
    },

    /**
     * Cancels the server's Stripe subscriptions (its subscribers are charged no more), then deletes
     * it. Nothing is deleted while a subscription could not be cancelled: retry.
     */
    async deleteServer(operator: OperatorRecord, slugValue: string) {
      const server = await ownServer(operator, slugValue);
      const live = await store.operators.liveSubscriptions(server.id);
      if (live.length > 0 && !options.cancelSubscription) {
        const why = `server "${server.slug}" has ${live.length} Stripe subscriptions and this instance has no Stripe key to cancel them`;
        throw new DomainError('stripe_not_configured', `${why}; configure Stripe, then delete again`);
      }
      for (const sub of live) {
        await options.cancelSubscription!(sub.id);
        await store.operators.subscriptionStatus(sub.id, 'canceled', Date.now());
      }
      await store.operators.deleteServer(server.id);
      return { server, cancelled: live.map((s) => s.id) };
    },

    /** The upstream secret, unsealed for the gateway's use only. */
    secretOf(server: ServerRecord): string | undefined {
      if (server.auth.mode === 'none') return undefined;
      if (!options.box) throw new Error(`server ${server.slug} has a sealed secret and TURNPIKE_SECRETS_KEY is not set`);
      return options.box.open(server.auth.sealedSecret, server.id);
    },
  };
}

export type Operators = ReturnType<typeof createOperators>;
