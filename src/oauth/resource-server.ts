import { Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import { decodeJwt } from 'jose';
import { rpcError } from '../gateway/jsonrpc.js';
import { bearerOf } from '../http/caller.js';
import { API_KEY_PREFIX } from '../rails/credits/api-keys.js';
import { ISSUER_COOLDOWN_MS, type OAuthPrincipal, type TokenCheck, type TrustedIssuer } from './issuer.js';

/** The well-known path of RFC 9728 protected resource metadata; a resource's own is this plus its path. */
export const METADATA_PATH = '/.well-known/oauth-protected-resource';

/**
 * An MCP server that takes OAuth access tokens: from `issuer`, for its canonical URL `resource()`
 * (known once the gateway listens), carrying `scopes`. `required`: every request needs a valid
 * token; otherwise a request without one is served as on any server (x402, API keys).
 */
export type ProtectedResource = { issuer: TrustedIssuer; scopes: string[]; required: boolean; resource: () => string };

/** The gateway's request variables: the verified caller, when the request carried a valid token. */
export type OAuthVariables = { oauth?: OAuthPrincipal };

/** Where a resource's metadata is (RFC 9728 §3.1: the well-known path inserted before the resource's path). */
export function metadataUrl(resource: string): string {
  const { origin, pathname } = new URL(resource);
  return `${origin}${METADATA_PATH}${pathname === '/' ? '' : pathname}`;
}

/** The RFC 9728 document of a resource. */
export function metadataDocument(protectedResource: ProtectedResource) {
  return {
    resource: protectedResource.resource(),
    authorization_servers: [protectedResource.issuer.issuer],
    ...(protectedResource.scopes.length > 0 ? { scopes_supported: protectedResource.scopes } : {}),
    bearer_methods_supported: ['header'],
  };
}

/**
 * The OAuth access token in a request, if it carries one: a bearer JWT naming an issuer. API keys
 * (`tp_…`) and budget tokens (turnpike's own, with no `iss`) are not OAuth tokens. The claims are
 * read unverified only to tell them apart; nothing is trusted before `verify`.
 */
export function oauthToken(headers: Headers): string | undefined {
  const bearer = bearerOf(headers.get('authorization'));
  if (bearer === undefined || bearer.startsWith(API_KEY_PREFIX)) return undefined;
  try {
    return typeof decodeJwt(bearer).iss === 'string' ? bearer : undefined;
  } catch {
    return undefined;
  }
}

/** A quoted auth-param value (RFC 9110 §11.2); the texts put here hold no quote or backslash. */
const quoted = (value: string) => `"${value.replace(/["\\]/g, '')}"`;

/**
 * The refusal of a request without a usable token, as RFC 6750 §3 and the MCP authorization spec
 * describe it: 401 (no or invalid token) or 403 (insufficient scope) with `WWW-Authenticate:
 * Bearer resource_metadata="…"` so a client can find where to sign in; 503 if the identity
 * provider cannot be reached (not the caller's fault).
 */
function refusal(resource: ProtectedResource, check: Exclude<TokenCheck, { ok: true }> | undefined): Response {
  const params = [`resource_metadata=${quoted(metadataUrl(resource.resource()))}`];
  if (check && check.status !== 503) params.unshift(`error=${quoted(check.error)}`, `error_description=${quoted(check.description)}`);
  // The scopes to ask for (MCP authorization: a client signing in or stepping up asks for these).
  if (resource.scopes.length > 0 && check?.status !== 503) params.push(`scope=${quoted(resource.scopes.join(' '))}`);
  const status = check?.status ?? 401;
  const message =
    check?.description ?? 'this MCP server takes OAuth access tokens: sign in with its identity provider (see WWW-Authenticate)';
  const response = rpcError(null, -32001, message, status, { error: check?.error ?? 'unauthorized' });
  response.headers.set('www-authenticate', `Bearer ${params.join(', ')}`);
  if (status === 503) response.headers.set('retry-after', String(ISSUER_COOLDOWN_MS / 1000));
  return response;
}

/**
 * Guards a gateway: a request carrying an OAuth token goes on only if the token is valid, with its
 * principal in `c.var.oauth`; one without goes on only if tokens are not `required`. Each refusal
 * is told to `refused` by its RFC 6750 code (`unauthorized` for no token).
 */
export const resourceGuard = (resource: ProtectedResource, refused: (reason: string) => void) =>
  createMiddleware<{ Variables: OAuthVariables }>(async (c, next) => {
    const token = oauthToken(c.req.raw.headers);
    if (token === undefined && !resource.required) return next();
    const check =
      token === undefined ? undefined : await resource.issuer.verify(token, { audience: resource.resource(), scopes: resource.scopes });
    if (!check?.ok) {
      refused(check?.error ?? 'unauthorized');
      return refusal(resource, check);
    }
    c.set('oauth', check.principal);
    return next();
  });

/**
 * `GET /.well-known/oauth-protected-resource/<path>`: the metadata of the MCP server at `<path>`
 * (RFC 9728), 404 for a path that is not one. The root form would describe the origin itself,
 * which is not an MCP server here: it answers 404 with where the servers' documents are.
 */
export function protectedResourceRoutes(resourceAt: (path: string) => Promise<ProtectedResource | undefined>): Hono {
  const app = new Hono();
  app.get(`${METADATA_PATH}/*`, async (c) => {
    const path = c.req.path.slice(METADATA_PATH.length);
    const found = await resourceAt(path);
    if (!found) return c.json({ error: 'not_found', message: `no MCP server at ${path} takes OAuth tokens` }, 404);
    return c.json(metadataDocument(found));
  });
  app.get(METADATA_PATH, (c) =>
    c.json(
      { error: 'not_found', message: `each MCP server that takes OAuth tokens has its own document at ${METADATA_PATH}/mcp/<slug>` },
      404,
    ),
  );
  return app;
}
