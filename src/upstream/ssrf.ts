import { lookup, type LookupAddress } from 'node:dns';
import { lookup as lookupAll } from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Agent, buildConnector } from 'undici';
import { BaseError } from '../errors.js';

/** An upstream URL an operator may not register or reach; `code` says which rule refused it. */
export class UpstreamUrlError extends BaseError<'invalid_url' | 'forbidden_address' | 'unresolvable'> {
  override name = 'UpstreamUrlError';
  constructor(code: 'invalid_url' | 'forbidden_address' | 'unresolvable', message: string) {
    super(message, { code });
  }
}

const cidrs = (...list: string[]) => list.map((cidr) => ipaddr.parseCIDR(cidr));

/**
 * ipaddr.js names all of these `reserved`; each gets its own phrase so an operator is told which one it hit.
 *
 * @example ipaddr.subnetMatch(ipaddr.parse('3fff::1'), RESERVED) // 'a documentation'
 */
const RESERVED = {
  'an IETF protocol': cidrs('192.0.0.0/24', '2001::/23'),
  'a documentation': cidrs('192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '2001:db8::/32', '3fff::/20'),
  'a benchmarking': cidrs('198.18.0.0/15'),
  'a 6to4 relay anycast': cidrs('192.88.99.0/24'),
  'a reserved or broadcast': cidrs('240.0.0.0/4'),
};

/**
 * The phrase for each range ipaddr.js's `range()` names; null lets the range through, as globally
 * reachable. A name missing here (a range a later ipaddr.js adds) is refused as 'a special-purpose'.
 *
 * @example V4_PHRASES[ipaddr.parse('100.64.0.1').range()] // 'a carrier-grade NAT'
 */
const V4_PHRASES: Record<string, string | null> = {
  unicast: null,
  as112: null,
  amt: null,
  unspecified: 'an unspecified',
  loopback: 'a loopback',
  private: 'a private',
  carrierGradeNat: 'a carrier-grade NAT',
  linkLocal: 'a link-local (cloud metadata)',
  multicast: 'a multicast',
  broadcast: 'a reserved or broadcast',
};

/**
 * As V4_PHRASES, for IPv6. The forms that carry an IPv4 address are judged by it (see `carried`)
 * before this table is read, so `unicast` and `rfc6052` here are what is left once those are out.
 *
 * @example V6_PHRASES[ipaddr.parse('64:ff9b:1::808:808').range()] // 'a local-use NAT64'
 */
const V6_PHRASES: Record<string, string | null> = {
  unicast: null,
  as112v6: null,
  amt: null,
  unspecified: 'an unspecified',
  loopback: 'a loopback',
  uniqueLocal: 'a private',
  linkLocal: 'a link-local',
  deprecatedSiteLocal: 'a site-local (deprecated)',
  multicast: 'a multicast',
  benchmarking: 'a benchmarking',
  discard: 'a discard-only',
  deprecatedOrchid: 'an ORCHID',
  orchid2: 'an ORCHID',
  droneRemoteIdProtocolEntityTags: 'an ORCHID',
  segmentRouting: 'a segment-routing (SRv6)',
  rfc6052: 'a local-use NAT64',
};

const IPV4_COMPATIBLE = ipaddr.parseCIDR('::/96');
const NAT64_LOCAL_USE = ipaddr.parseCIDR('64:ff9b:1::/48');

/**
 * The IPv4 addresses an IPv6 address hands its traffic to, for the forms a host, translator or
 * relay turns into IPv4: IPv4-mapped and -translated, the well-known NAT64 prefix and IPv4-compatible
 * (last 32 bits), 6to4 (bits 16–47), and Teredo (server in bits 32–63, client in the last 32 bits
 * inverted). Undefined for any other address. The local-use NAT64 prefix leads to a translator the
 * operator runs, at a prefix length this side cannot know, so it is refused whole rather than unwrapped.
 *
 * @example carried(ipaddr.IPv6.parse('2001:0:4136:e378:8000:63bf:3fff:fdd2'), 'teredo') // [65.54.227.120, 192.0.2.45]
 */
function carried(address: ipaddr.IPv6, range: string): ipaddr.IPv4[] | undefined {
  const bytes = address.toByteArray();
  const ipv4 = (from: number, mask = 0) => new ipaddr.IPv4(bytes.slice(from, from + 4).map((byte) => byte ^ mask));
  switch (range) {
    case 'ipv4Mapped':
    case 'rfc6145':
      return [ipv4(12)];
    case 'rfc6052':
      return address.match(NAT64_LOCAL_USE) ? undefined : [ipv4(12)];
    case '6to4':
      return [ipv4(2)];
    case 'teredo':
      return [ipv4(4), ipv4(12, 0xff)];
    case 'unicast':
      return address.match(IPV4_COMPATIBLE) ? [ipv4(12)] : undefined;
    default:
      return undefined;
  }
}

/**
 * The phrase refusing `address`, or undefined if it may be an upstream. An address carrying IPv4
 * ones is refused if any of them is (a Teredo address carries two), and only then.
 *
 * @example judge(ipaddr.parse('2001:0:a00:1::f7f7:f7f7')) // 'a private' (the Teredo server, 10.0.0.1)
 */
function judge(address: ipaddr.IPv4 | ipaddr.IPv6): string | undefined {
  const range = address.range();
  const inside = address instanceof ipaddr.IPv6 ? carried(address, range) : undefined;
  if (inside) return inside.map(judge).find((why) => why !== undefined);
  if (range === 'reserved') return ipaddr.subnetMatch(address, RESERVED, 'a reserved');
  const phrases = address instanceof ipaddr.IPv6 ? V6_PHRASES : V4_PHRASES;
  return Object.hasOwn(phrases, range) ? (phrases[range] ?? undefined) : 'a special-purpose';
}

// Names that reach a cloud's metadata service wherever the instance runs, whatever DNS says.
const METADATA_NAMES = new Set(['metadata', 'metadata.google.internal', 'metadata.goog', 'instance-data', 'instance-data.ec2.internal']);

/**
 * Why an address may not be an upstream (`"a private"`, `"a loopback"`, …), or undefined for a
 * public one. An IPv6 address that carries an IPv4 one (mapped, translated, NAT64, 6to4, Teredo,
 * IPv4-compatible) is judged by the IPv4 address it carries. Only a string both Node and ipaddr.js
 * read as an address is judged, so the two cannot disagree on which address it is.
 *
 * @example isForbiddenAddress('2002:a9fe:a9fe::') // 'a link-local (cloud metadata)'
 */
export function isForbiddenAddress(ip: string): string | undefined {
  if (!isIP(ip) || !ipaddr.isValid(ip)) return 'an unparseable';
  return judge(ipaddr.parse(ip));
}

/**
 * The error for the first forbidden address of `host`, if any. A name's address is not named: on a
 * shared instance the operator asking is not the one whose network it is, and names they choose would
 * map it for them; an address they wrote themselves is.
 *
 * @example refusal('db.internal', ['10.0.0.7'])?.message // 'db.internal resolves to a private address'
 * @example refusal('10.0.0.7', ['10.0.0.7'])?.message // '10.0.0.7 is a private address'
 */
function refusal(host: string, addresses: string[]): UpstreamUrlError | undefined {
  for (const address of addresses) {
    const why = isForbiddenAddress(address);
    if (!why) continue;
    return new UpstreamUrlError('forbidden_address', `${host} ${address === host ? 'is' : 'resolves to'} ${why} address`);
  }
  return undefined;
}

const bare = (hostname: string) => hostname.replace(/^\[(.*)\]$/, '$1');

/**
 * Checks an upstream URL registered through the API: http(s), no credentials in it, a port in
 * 1–65535, and a host whose every address is public (unless private ones are allowed). The
 * gateway's agent checks again at connect time, since a DNS answer can change after this.
 *
 * @example await checkUpstreamUrl('https://mcp.example.com/mcp', { allowPrivate: false });
 */
export async function checkUpstreamUrl(value: string, options: { allowPrivate: boolean }): Promise<URL> {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UpstreamUrlError('invalid_url', `"${value}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UpstreamUrlError('invalid_url', 'only http and https upstreams are served');
  if (url.username || url.password)
    throw new UpstreamUrlError('invalid_url', 'put credentials in `auth`, not in the URL, where they would be shown and logged');
  if (url.port === '0') throw new UpstreamUrlError('invalid_url', 'the port must be 1–65535');
  if (options.allowPrivate) return url;
  const host = bare(url.hostname).replace(/\.$/, '');
  if (METADATA_NAMES.has(host)) throw new UpstreamUrlError('forbidden_address', `${host} is a cloud-metadata name`);
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookupAll(host, { all: true, verbatim: true })).map((a) => a.address);
  } catch (error) {
    throw new UpstreamUrlError(
      'unresolvable',
      `${host} does not resolve: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const refused = refusal(host, addresses);
  if (refused) throw refused;
  return url;
}

// The addresses checked are the ones the socket then uses, so no second answer can slip in between.
const guardedLookup: LookupFunction = (hostname, options, callback) => {
  lookup(hostname, { ...options, all: true }, (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
    if (error) return callback(error, '', 0);
    const refused = refusal(
      hostname,
      addresses.map((a) => a.address),
    );
    if (refused) return callback(refused, '', 0);
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
};

/**
 * An undici agent for registered upstreams: every connection's address is checked when it is
 * made, so a name that resolved to a public address at registration cannot be rebound to a
 * private one later. Redirects are not followed (undici's `request` never does unless asked).
 * No idle timeouts: long SSE streams stay open. At most `connections` sockets per origin, so an
 * upstream that loops back or never answers holds that many descriptors, not one per request.
 *
 * @example const upstream = { url, headers, timeoutMs, dispatcher: guardedAgent({ allowPrivate: false, connections: 64 }) };
 */
export function guardedAgent(options: { allowPrivate: boolean; connections: number }): Agent {
  const pool = { bodyTimeout: 0, headersTimeout: 0, keepAliveTimeout: 30_000, connections: options.connections };
  if (options.allowPrivate) return new Agent(pool);
  const connector = buildConnector({ lookup: guardedLookup });
  return new Agent({
    ...pool,
    connect(connectOptions, callback) {
      // Node skips `lookup` for IP literals, so those are judged here.
      const host = bare(connectOptions.hostname);
      const refused = isIP(host) ? refusal(host, [host]) : undefined;
      if (refused) return callback(refused, null);
      connector(connectOptions, callback);
    },
  });
}
