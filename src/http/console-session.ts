import { randomBytes } from 'node:crypto';
import { type Context, Hono } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { createMiddleware } from 'hono/factory';
import { decode, sign, verify } from 'hono/jwt';
import { z } from 'zod';
import type { Operators } from '../operators/operators.js';
import { publicOperator } from '../operators/operators.js';
import type { OperatorRecord } from '../store/operators/operators.js';
import type { Store } from '../store/store.js';
import { DomainError } from '../errors.js';
import { bearerIn } from './caller.js';
import { type RouteDoc, documented } from './documented.js';

/** Who a console session cookie authenticated a request as. */
export type ConsolePrincipal = { kind: 'admin' } | { kind: 'operator'; operator: OperatorRecord };

const COOKIE = 'turnpike_console';
/** A session ends this long after sign-in, whatever happens in between. */
const SESSION_SECONDS = 8 * 3600;
const ALG = 'HS256';
const claimsSchema = z.object({ sub: z.string().min(1), jti: z.string().min(16), exp: z.number().int(), iat: z.number().int() });
const signInSchema = z.strictObject({ key: z.string().min(1).max(512).describe('an operator key (op_…) or the admin key') });

// Set only by `sessionMiddleware` for the request it checked; read by the admin and operator auth.
const principals = new WeakMap<Request, ConsolePrincipal>();

/** The principal this request's console session authenticated, if it carried one and no bearer key. */
export const sessionOf = (request: Request): ConsolePrincipal | undefined => principals.get(request);

export type ConsoleSessionOptions = {
  operators: Operators;
  adminKey: string | undefined;
  /** The store's shared secret (`instanceSecret('console-sessions')`): every instance on the store reads every session. */
  secret: string;
  /** Where signed-out sessions are kept until they expire: the store, shared by every instance. */
  revocations: Pick<Store, 'revokeSession' | 'sessionRevoked'>;
  /** Where callers reach this instance behind a proxy (`credits.publicUrl`): its host is accepted besides the request's own Host. */
  publicUrl?: () => string | undefined;
  catalog: RouteDoc[];
};

/**
 * Console sessions: a key is exchanged once (`POST /console/session`) for an HttpOnly,
 * SameSite=Strict cookie holding a signed JWT (`sub`: `admin` or the operator's id, 8 h expiry),
 * so the key itself never reaches page storage. Sessions are signed, not stored: the signing
 * secret is the store's (shared by every instance), and an admin session's also includes the
 * admin key, so changing `TURNPIKE_ADMIN_KEY` ends every admin session. Signing out ends the
 * session itself, not only the browser's cookie: its id (`jti`) is kept as revoked in the store
 * until it would have expired, so a copy of the cookie taken earlier is refused by every instance. Each request re-reads the
 * operator, so a suspended operator's session stops at once. A write authenticated by the cookie
 * must carry an `Origin` naming this instance (on top of SameSite=Strict): no other site can
 * make one.
 *
 * @example app.route('/', consoleSessionRoutes({ operators, adminKey, secret: await store.instanceSecret('console-sessions') }));
 */
export function consoleSessionRoutes(options: ConsoleSessionOptions): Hono {
  const { operators, adminKey } = options;
  const secretFor = (sub: string) => (sub === 'admin' ? `${options.secret}:admin:${adminKey}` : options.secret);

  /** Callers come over HTTPS (to this socket, or to the public URL of a TLS proxy in front): the cookie is Secure. */
  const isSecure = (c: Context) => new URL(c.req.url).protocol === 'https:' || Boolean(options.publicUrl?.()?.startsWith('https:'));

  /** Writes (and sign-in and sign-out) by cookie must come from a page of this instance. */
  function checkOrigin(c: Context) {
    if (['GET', 'HEAD', 'OPTIONS'].includes(c.req.method)) return;
    const origin = c.req.header('origin');
    let from: URL | undefined;
    try {
      from = origin ? new URL(origin) : undefined;
    } catch {
      from = undefined;
    }
    const publicUrl = options.publicUrl?.();
    const host = from?.host;
    // Where the cookie is Secure, a plain-http page on the same host (a network attacker's) is not this instance.
    const downgraded = isSecure(c) && from?.protocol !== 'https:';
    if (!host || downgraded || (host !== c.req.header('host') && host !== (publicUrl && new URL(publicUrl).host))) {
      const why = 'a console write must come from a console page of this instance (the Origin header did not name it)';
      throw new DomainError('cross_origin', why);
    }
  }

  /** The claims of a session JWT signed here and not expired, or undefined. */
  async function claimsOf(jwt: string | undefined): Promise<z.infer<typeof claimsSchema> | undefined> {
    if (!jwt) return undefined;
    try {
      const sub = claimsSchema.parse(decode(jwt).payload).sub;
      return claimsSchema.parse(await verify(jwt, secretFor(sub), ALG));
    } catch {
      return undefined;
    }
  }

  /** The principal of a session JWT, or undefined when it is absent, tampered, expired, signed out or no longer valid. */
  async function principalOf(jwt: string | undefined): Promise<ConsolePrincipal | undefined> {
    const claims = await claimsOf(jwt);
    if (!claims) return undefined;
    try {
      if (await options.revocations.sessionRevoked(claims.jti)) return undefined;
      if (claims.sub === 'admin') return adminKey ? { kind: 'admin' } : undefined;
      const operator = await operators.operatorById(claims.sub).catch(() => undefined);
      return operator ? { kind: 'operator', operator } : undefined;
    } catch {
      return undefined;
    }
  }

  /** The principal a presented key is, or a 401 naming what to send. */
  async function signIn(key: string): Promise<ConsolePrincipal> {
    if (key.startsWith('op_')) return { kind: 'operator', operator: await operators.authenticate(`Bearer ${key}`) };
    if (adminKey && bearerIn(`Bearer ${key}`, [adminKey])) return { kind: 'admin' };
    throw new DomainError('console_unauthorized', 'this key is neither an operator key (op_…) known here nor the admin key');
  }

  const describe = (p: ConsolePrincipal) =>
    p.kind === 'admin' ? { kind: 'admin' } : { kind: 'operator', operator: publicOperator(p.operator) };

  const app = new Hono();
  // The cookie stands in for a bearer key on the APIs the console calls; an explicit key wins.
  // (`/operator/*` matches `/operator` itself too.)
  // Their answers are one principal's (balances, keys, the audit log, who is signed in): no cache
  // between the browser and here, nor the browser's own, may keep one for whoever asks next.
  for (const path of ['/operator/*', '/admin/*', '/console/session']) {
    app.use(
      path,
      createMiddleware(async (c, next) => {
        c.header('cache-control', 'no-store');
        await next();
      }),
    );
  }
  for (const path of ['/operator/*', '/admin/*']) {
    app.use(
      path,
      createMiddleware(async (c, next) => {
        if (c.req.header('authorization') === undefined) {
          const principal = await principalOf(getCookie(c, COOKIE));
          if (principal) {
            checkOrigin(c);
            principals.set(c.req.raw, principal);
          }
        }
        await next();
      }),
    );
  }
  const session = new Hono();
  const api = documented(session, options.catalog, { base: '/console', security: 'none' });
  const signInDoc = { summary: 'sign in to the console: a key for an HttpOnly session cookie', body: signInSchema, status: 201 };
  api.post('/session', signInDoc, async (c, { body }) => {
    checkOrigin(c);
    const principal = await signIn(body.key);
    const sub = principal.kind === 'admin' ? 'admin' : principal.operator.id;
    const iat = Math.floor(Date.now() / 1000);
    const jti = randomBytes(16).toString('base64url');
    const jwt = await sign({ sub, jti, iat, exp: iat + SESSION_SECONDS }, secretFor(sub), ALG);
    setCookie(c, COOKIE, jwt, { httpOnly: true, sameSite: 'Strict', path: '/', maxAge: SESSION_SECONDS, secure: isSecure(c) });
    return c.json(describe(principal), 201);
  });
  api.get('/session', { summary: 'who the console session is signed in as' }, async (c) => {
    const principal = await principalOf(getCookie(c, COOKIE));
    if (!principal) throw new DomainError('console_signed_out', 'no console session: sign in with an operator key or the admin key');
    return c.json(describe(principal));
  });
  api.delete(
    '/session',
    { summary: 'sign out of the console: the session ends on every instance, whoever holds its cookie' },
    async (c) => {
      checkOrigin(c);
      const claims = await claimsOf(getCookie(c, COOKIE));
      if (claims) await options.revocations.revokeSession(claims.jti, claims.exp * 1000);
      deleteCookie(c, COOKIE, { path: '/' });
      return c.json({ signedOut: true });
    },
  );
  app.route('/console', session);
  return app;
}
