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
 * signing key (for tests that forge what it would never sign). With `signIn`, people sign in too:
 * dynamic client registration (RFC 7591, at `/reg`) and the provider's own login and consent pages
 * (devInteractions: any login name is the account, any password), which `signIn` fills in.
 *
 * @example const idp = await startOidcProvider(); const token = await idp.token('http://127.0.0.1:1/mcp/x');
 */
export async function startOidcProvider(options: { signIn?: boolean } = {}) {
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
    // Its only key is ES256: a registered client's ID tokens are signed with it.
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    // offline_access turns the refresh_token grant on, which MCP hosts register for.
    scopes: options.signIn ? [...OIDC_SCOPES, 'offline_access'] : OIDC_SCOPES,
    ttl: { ClientCredentials: 300 },
    jwks: { keys: [privateJwk] },
    features: {
      devInteractions: { enabled: options.signIn ?? false },
      registration: { enabled: options.signIn ?? false },
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

/**
 * Signs `login` in at an authorization URL of a provider started with `signIn`, as a browser would:
 * follows its redirects with its cookies, submits the login form, then the consent form, and
 * returns the authorization code it redirects to `redirectUri` with.
 *
 * @example const code = await signIn(authorizationUrl, 'alice', 'http://127.0.0.1:9/callback');
 */
export async function signIn(authorizationUrl: URL, login: string, redirectUri: string): Promise<string> {
  const cookies = new Map<string, string>();
  const request = async (url: URL, form?: Record<string, string>) => {
    const res = await fetch(url, {
      method: form ? 'POST' : 'GET',
      redirect: 'manual',
      headers: {
        cookie: [...cookies].map(([name, value]) => `${name}=${value}`).join('; '),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
      },
      ...(form ? { body: new URLSearchParams(form) } : {}),
    });
    for (const set of res.headers.getSetCookie()) {
      const [pair] = set.split(';');
      const [name, value] = [pair!.slice(0, pair!.indexOf('=')), pair!.slice(pair!.indexOf('=') + 1)];
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(set)) cookies.delete(name);
      else cookies.set(name, value);
    }
    return res;
  };
  let url = authorizationUrl;
  let form: Record<string, string> | undefined;
  for (let step = 0; step < 12; step++) {
    const res = await request(url, form);
    form = undefined;
    const location = res.headers.get('location');
    if (location) {
      await res.body?.cancel();
      const next = new URL(location, url);
      if (next.href.startsWith(redirectUri)) {
        const code = next.searchParams.get('code');
        if (!code) throw new Error(`the provider redirected without a code: ${next.search}`);
        return code;
      }
      url = next;
      continue;
    }
    // A page of the provider: its login form, else its consent form, posted back to where it came from.
    const page = await res.text();
    if (res.status !== 200) throw new Error(`the provider answered ${res.status}: ${page.slice(0, 500)}`);
    const prompt = /name="prompt" value="(\w+)"/.exec(page)?.[1];
    if (prompt === 'login') form = { prompt, login, password: 'any' };
    else if (prompt === 'consent') form = { prompt };
    else throw new Error(`an unexpected page from the provider: ${page.slice(0, 500)}`);
  }
  throw new Error('the sign-in did not reach the redirect URI');
}
