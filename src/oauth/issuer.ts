import { createLocalJWKSet, createRemoteJWKSet, customFetch, decodeProtectedHeader, errors, jwtVerify } from 'jose';
import { oauthSubjectSchema } from './settings.js';

/** Longest a request to an issuer (its metadata, its keys) may take. */
export const ISSUER_TIMEOUT_MS = 5_000;
/** Largest document (metadata, key set) read from an issuer. */
const ISSUER_MAX_BYTES = 64 * 1024;
/**
 * Least time between two fetches of one issuer's metadata after a failure, and between two
 * fetches of its keys for a key id not in the set: tokens cannot make turnpike fetch more often.
 */
export const ISSUER_COOLDOWN_MS = 30_000;
/** How long fetched keys are used before they are fetched again. */
const KEYS_MAX_AGE_MS = 10 * 60_000;
/** Signature algorithms taken: asymmetric only, so no token can be signed with a public key as an HMAC secret. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/**
 * The token types (`typ`, case-insensitive, `application/` optional as RFC 7515 §4.1.9 allows) taken for an access
 * token: RFC 9068's `at+jwt`, plain `JWT`, or none. Not stricter (`at+jwt` only), because Keycloak, Auth0's default
 * profile, Entra ID and others sign access tokens as `JWT` or without a `typ`; any other type is a JWT made for
 * something else (a DPoP proof, a logout or security event token, …) and is refused whoever signed it.
 */
const ACCESS_TOKEN_TYPES = new Set(['at+jwt', 'jwt']);

/** Who an access token was issued to, and what it may do. */
export type OAuthPrincipal = { issuer: string; subject: string; scopes: string[] };

/** A token judged: its principal, or what is wrong with it in RFC 6750's terms. */
export type TokenCheck =
  | { ok: true; principal: OAuthPrincipal }
  | { ok: false; status: 401; error: 'invalid_token'; description: string }
  | { ok: false; status: 403; error: 'insufficient_scope'; description: string }
  | { ok: false; status: 503; error: 'issuer_unavailable'; description: string };

/** What a token must be: from this issuer, for this resource (RFC 8707), with these scopes. */
export type Expected = { audience: string; scopes: string[] };

/**
 * An identity provider an operator named. Its keys are found from its metadata (RFC 8414
 * `oauth-authorization-server`, else OpenID `openid-configuration`), whose `issuer` must be this
 * one exactly, and cached; every fetch is bounded in time and size, and a failure is not retried
 * for `ISSUER_COOLDOWN_MS`. Only issuers in the configuration are ever fetched: a token naming any
 * other is refused by its claims without a request.
 *
 * @example const idp = trustedIssuer('https://id.example.com'); await idp.verify(jwt, { audience: 'https://pay.example.com/mcp/search', scopes: [] });
 */
export function trustedIssuer(issuer: string, fetchImpl: typeof fetch = fetch) {
  type RemoteKeys = ReturnType<typeof createRemoteJWKSet>;
  let keys: Promise<RemoteKeys> | undefined;
  let failedAt = -Infinity;

  async function discover(): Promise<RemoteKeys> {
    for (const at of metadataUrls(issuer)) {
      const document = await boundedJson(fetchImpl, at);
      if (document === undefined) continue;
      const { issuer: named, jwks_uri: jwksUri } = document as { issuer?: unknown; jwks_uri?: unknown };
      // RFC 8414 §3.3: metadata that names another issuer is not this issuer's. The keys of an https issuer come over
      // https too: a key set over plain http is whatever anyone on the way answers.
      const keysOver = new URL(issuer).protocol === 'https:' ? /^https:\/\//i : /^https?:\/\//i;
      if (named !== issuer || typeof jwksUri !== 'string' || !keysOver.test(jwksUri)) continue;
      return createRemoteJWKSet(new URL(jwksUri), {
        timeoutDuration: ISSUER_TIMEOUT_MS,
        cooldownDuration: ISSUER_COOLDOWN_MS,
        cacheMaxAge: KEYS_MAX_AGE_MS,
        [customFetch]: (url: string, init: { headers: Headers; signal: AbortSignal }) => boundedGet(fetchImpl, url, init),
      });
    }
    throw new Error(`no metadata naming issuer ${issuer} with a jwks_uri`);
  }

  /** The issuer's key set, discovered once; after a failure, again only past the cooldown. */
  function keySet(now = Date.now()): Promise<RemoteKeys> | undefined {
    if (!keys) {
      if (now - failedAt < ISSUER_COOLDOWN_MS) return undefined;
      keys = discover();
      keys.catch(() => {
        failedAt = Date.now();
        keys = undefined;
      });
    }
    return keys;
  }

  return {
    issuer,
    /** Judges a bearer token: signature by the issuer's keys, `iss`, `aud`, `exp`/`nbf`, `sub`, then the scopes. */
    async verify(token: string, expected: Expected): Promise<TokenCheck> {
      const wrongType = notAnAccessToken(token);
      if (wrongType) return { ok: false, status: 401, error: 'invalid_token', description: wrongType };
      const unavailable = {
        ok: false,
        status: 503,
        error: 'issuer_unavailable',
        description: `the identity provider ${issuer} cannot be reached; retry later`,
      } as const;
      const pending = keySet();
      if (!pending) return unavailable;
      let remote: RemoteKeys;
      try {
        remote = await pending;
      } catch {
        return unavailable;
      }
      // Within the cooldown after a failed fetch, tokens are judged by the keys in hand: a key id not among them
      // cannot make jose fetch again (its own cooldown counts from the last fetch that worked).
      const inHand = Date.now() - failedAt < ISSUER_COOLDOWN_MS ? remote.jwks() : undefined;
      let payload;
      try {
        ({ payload } = await jwtVerify(token, inHand ? createLocalJWKSet(inHand) : remote, {
          issuer,
          audience: expected.audience,
          algorithms: ALGORITHMS,
          requiredClaims: ['sub', 'exp'],
          clockTolerance: 5,
        }));
      } catch (error) {
        // What the token is judged by is a specific JOSE error; a bare one (a key set answered other than 200), a
        // timeout, an unusable key set or a failed request means the keys were not there to judge it.
        const judged = error instanceof errors.JOSEError && error.constructor !== errors.JOSEError;
        if (!judged || error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) {
          // The keys could not be fetched: no further fetch until the cooldown has passed. Keys still fresh are kept
          // (the refetch was for a key id not among them, which any token can ask for); stale ones are not trusted.
          failedAt = Date.now();
          if (!remote.fresh) keys = undefined;
          return unavailable;
        }
        // A key id that could not be looked up (the provider failing) may be a key it has just rotated in.
        if (inHand && error instanceof errors.JWKSNoMatchingKey) return unavailable;
        return { ok: false, status: 401, error: 'invalid_token', description: invalidBecause(error) };
      }
      // RFC 7519 §4.1.2: `sub` is a string; jose checks only that it is present. A subject is what a key is linked to,
      // so anything else (a number, a list, null, a NUL) is refused here, never looked up.
      const subject = oauthSubjectSchema.safeParse(payload.sub);
      if (!subject.success) {
        const description = 'the token subject must be a string of 1 to 255 characters, no control characters';
        return { ok: false, status: 401, error: 'invalid_token', description };
      }
      const scopes = scopesOf(payload);
      const missing = expected.scopes.filter((s) => !scopes.includes(s));
      if (missing.length > 0) {
        return { ok: false, status: 403, error: 'insufficient_scope', description: `the token lacks scope ${missing.join(' ')}` };
      }
      return { ok: true, principal: { issuer, subject: subject.data, scopes } };
    },
  };
}

export type TrustedIssuer = ReturnType<typeof trustedIssuer>;

/**
 * Where an issuer's metadata may be, in the order the MCP authorization spec tries them: RFC 8414
 * and OpenID Connect with the issuer's path inserted after `/.well-known/…`, then OpenID's appended form.
 *
 * @example metadataUrls('https://id.example.com/tenant') // …/.well-known/oauth-authorization-server/tenant, …/.well-known/openid-configuration/tenant, …/tenant/.well-known/openid-configuration
 */
export function metadataUrls(issuer: string): string[] {
  const { origin, pathname } = new URL(issuer);
  const path = pathname.replace(/\/$/, '');
  const urls = [
    `${origin}/.well-known/oauth-authorization-server${path}`,
    `${origin}/.well-known/openid-configuration${path}`,
    `${origin}${path}/.well-known/openid-configuration`,
  ];
  return [...new Set(urls)];
}

/**
 * GETs `url` as the issuer's server answers it: no redirect followed, within `ISSUER_TIMEOUT_MS`
 * (or `signal`), the body read up to `ISSUER_MAX_BYTES`; past either it throws.
 */
async function boundedGet(
  fetchImpl: typeof fetch,
  url: string,
  init: { headers?: Headers | Record<string, string>; signal?: AbortSignal } = {},
): Promise<Response> {
  const signal = init.signal ?? AbortSignal.timeout(ISSUER_TIMEOUT_MS);
  const response = await fetchImpl(url, { method: 'GET', redirect: 'manual', signal, ...(init.headers ? { headers: init.headers } : {}) });
  if (!response.ok || !response.body) {
    await response.body?.cancel().catch(() => {});
    return new Response(null, { status: response.status });
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > ISSUER_MAX_BYTES) {
      await response.body.cancel().catch(() => {});
      throw new Error(`${url} answered more than ${ISSUER_MAX_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return new Response(Buffer.concat(chunks), { status: response.status, headers: response.headers });
}

/** A JSON object from `url`, or undefined for anything else (an error, a redirect, a timeout, a body past the limit). */
async function boundedJson(fetchImpl: typeof fetch, url: string): Promise<unknown> {
  try {
    const response = await boundedGet(fetchImpl, url, { headers: { accept: 'application/json' } });
    if (!response.ok) return undefined;
    const value: unknown = await response.json();
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Why a token's `typ` header says it is not an access token, or undefined if it may be one (see `ACCESS_TOKEN_TYPES`). */
function notAnAccessToken(token: string): string | undefined {
  let typ: unknown;
  try {
    ({ typ } = decodeProtectedHeader(token));
  } catch {
    return undefined; // not a JWS at all: jwtVerify says so
  }
  if (typ === undefined || (typeof typ === 'string' && ACCESS_TOKEN_TYPES.has(typ.toLowerCase().replace(/^application\//, '')))) {
    return undefined;
  }
  const named = typeof typ === 'string' ? typ.replace(/[^\w+./-]/g, '').slice(0, 40) : typeof typ;
  return `the token type (typ ${named}) is not an access token: at+jwt, JWT or none are taken`;
}

/** The granted scopes: RFC 9068's space-separated `scope`, or an `scp` list as some providers send. */
function scopesOf(payload: Record<string, unknown>): string[] {
  if (typeof payload.scope === 'string') return payload.scope.split(' ').filter(Boolean);
  if (Array.isArray(payload.scp)) return payload.scp.filter((s): s is string => typeof s === 'string');
  return [];
}

/** Why a token is refused, in words safe for a quoted `error_description` (no quotes, no backslashes). */
function invalidBecause(error: unknown): string {
  if (error instanceof errors.JWTExpired) return 'the token has expired';
  if (error instanceof errors.JWTClaimValidationFailed) {
    const because: Record<string, string> = {
      iss: 'the token was issued by another identity provider',
      aud: 'the token is for another resource (audience), not this MCP server',
      nbf: 'the token is not valid yet',
      sub: 'the token has no subject',
      exp: 'the token has no expiry',
    };
    return because[error.claim] ?? `the token claim ${error.claim.replace(/[^\w-]/g, '')} is not acceptable`;
  }
  if (error instanceof errors.JOSEAlgNotAllowed) return 'the token signature algorithm is not accepted (asymmetric algorithms only)';
  if (error instanceof errors.JWKSNoMatchingKey) return 'no key of the identity provider matches the token';
  if (error instanceof errors.JWSSignatureVerificationFailed) return 'the token signature does not verify';
  return 'the token is not a signed JWT this server accepts';
}
