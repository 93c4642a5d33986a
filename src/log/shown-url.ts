/**
 * A URL as it may be shown (logs, messages, banners, `turnpike config`), without the credentials
 * providers put in URLs: the userinfo, path segments that look like keys (Alchemy's `/v2/<key>`,
 * Infura's `/v3/<key>`, QuickNode's token), and query values named like keys (`apikey`, `token`,
 * `dkey`…) or looking like one; the fragment then left out too. A URL with none of these is shown as
 * written; one that does not parse, not at all.
 *
 * @example shownUrl('https://base-mainnet.g.alchemy.com/v2/Yx3kP0aQ9zT2bV7nR4mW8cL1') // 'https://base-mainnet.g.alchemy.com/v2/[redacted]'
 * @example shownUrl('https://user:pass@node.example/rpc?apikey=abc&chain=base') // 'https://[redacted]@node.example/rpc?apikey=[redacted]&chain=base'
 */
export function shownUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return '(unparseable URL)';
  }
  const userinfo = u.username || u.password ? `${REDACTED}@` : '';
  const path = u.pathname
    .split('/')
    .map((segment) => (keyLike(segment) ? REDACTED : segment))
    .join('/');
  const query = u.search
    .slice(1)
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const at = pair.indexOf('=');
      if (at < 0) return keyLike(pair) ? REDACTED : pair;
      const name = pair.slice(0, at);
      return SECRET_PARAM.test(name) || keyLike(pair.slice(at + 1)) ? `${name}=${REDACTED}` : pair;
    });
  // `host` of a URL like `postgres://` may be empty; the pathname of an opaque one holds it all.
  const authority = u.host || userinfo ? `//${userinfo}${u.host}` : '';
  const shown = `${u.protocol}${authority}${path}${query.length > 0 ? `?${query.join('&')}` : ''}`;
  return shown.includes(REDACTED) ? shown : url;
}

/**
 * A setting as it may be shown: a string that is a URL with an authority (`scheme://…`: an RPC
 * node, the store, an upstream, a webhook) as `shownUrl` shows it, anything else as it is.
 *
 * @example shownSetting('postgres://alice:pw@db/turnpike') // 'postgres://[redacted]@db/turnpike'; shownSetting('0xabc…') // '0xabc…'
 */
export const shownSetting = (value: unknown): unknown =>
  typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? shownUrl(value) : value;

const REDACTED = '[redacted]';

/** Query parameter names that carry a credential (`apikey`, `api_key`, `dkey`, `access_token`, `password`, `sig`…). */
const SECRET_PARAM = /key|token|secret|pass|auth|sig|credential|session/i;

/**
 * A key rather than a name: 16 characters or more, and not a lowercase word or words joined by `-`,
 * `_` or `.` (`base-mainnet`, `turnpike_production` stay). Keys are random: digits or capitals.
 */
const keyLike = (segment: string) => segment.length >= 16 && !/^[a-z]+([-_.][a-z]+)*$/.test(segment);
