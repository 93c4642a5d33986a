import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type JWK, exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

/** The client every test OpenID provider knows: client_credentials only, as a machine caller (an agent) signs in. */
export const OIDC_CLIENT = { id: 'agent', secret: 'agent-secret-for-tests-0123456789abcdef' };
/** What the provider's resource servers grant. */
export const OIDC_SCOPES = ['mcp:tools', 'other'];

/**
 * A real OpenID provider (`oidc-provider`) on a free loopback port, issuing JWT access tokens
 * (ES256, RFC 9068) for whatever resource indicator (RFC 8707) a client asks, to one
 * client_credentials client. `requests` counts the requests it got by path, `privateJwk` is its
 * signing key (for tests that forge what it would never sign).
 *
 * @example const idp = await startOidcProvider(); const token = await idp.token('http://127.0.0.1:1/mcp/x');
 */
export async function startOidcProvider() {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const privateJwk: JWK = { ...(await exportJWK(privateKey)), kid: 'signing-1', alg: 'ES256', use: 'sig' };
  const requests = new Map<string, number>();
  let handle: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.set(path, (requests.get(path) ?? 0) + 1);
    handle!(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: OIDC_CLIENT.id,
        client_secret: OIDC_CLIENT.secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256',
        scope: OIDC_SCOPES.join(' '),
      },
    ],
    scopes: OIDC_SCOPES,
    ttl: { ClientCredentials: 300 },
    jwks: { keys: [privateJwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({
          audience: resource,
          scope: OIDC_SCOPES.join(' '),
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
  });
  handle = provider.callback();

  /** An access token from the client_credentials grant for `resource`, with `scope`. */
  async function token(resource: string, scope = 'mcp:tools'): Promise<string> {
    const res = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${OIDC_CLIENT.id}:${OIDC_CLIENT.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope }),
    });
    const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
    if (!body.access_token) throw new Error(`the provider refused a token: ${body.error}: ${body.error_description}`);
    return body.access_token;
  }

  return {
    issuer,
    privateJwk,
    token,
    requests: (path: string) => requests.get(path) ?? 0,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
