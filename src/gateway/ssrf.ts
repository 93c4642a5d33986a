import { lookup, type LookupAddress } from 'node:dns';
import { lookup as lookupAll } from 'node:dns/promises';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector } from 'undici';

/** An upstream URL an operator may not register or reach; `code` says which rule refused it. */
export class UpstreamUrlError extends Error {
  override name = 'UpstreamUrlError';
  constructor(
    readonly code: 'invalid_url' | 'forbidden_address' | 'unresolvable',
    message: string,
  ) {
    super(message);
  }
}

type Subnet = [network: string, prefix: number];

// First match names the class, so the narrow IPv6 classes come before the IPv4-compatible ::/96.
const CLASSES: { name: string; v4: Subnet[]; v6: Subnet[] }[] = [
  { name: 'an unspecified', v4: [['0.0.0.0', 8]], v6: [['::', 128]] },
  { name: 'a loopback', v4: [['127.0.0.0', 8]], v6: [['::1', 128]] },
  { name: 'a private', v4: [['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16]], v6: [['fc00::', 7]] },
  { name: 'a carrier-grade NAT', v4: [['100.64.0.0', 10]], v6: [] },
  { name: 'a link-local (cloud metadata)', v4: [['169.254.0.0', 16]], v6: [] },
  { name: 'a link-local', v4: [], v6: [['fe80::', 10]] },
  { name: 'an IETF protocol', v4: [['192.0.0.0', 24]], v6: [] },
  { name: 'a benchmarking', v4: [['198.18.0.0', 15]], v6: [] },
  { name: 'a multicast', v4: [['224.0.0.0', 4]], v6: [['ff00::', 8]] },
  { name: 'a reserved or broadcast', v4: [['240.0.0.0', 4]], v6: [] },
  { name: 'a local-use NAT64', v4: [], v6: [['64:ff9b:1::', 48]] },
  { name: 'an IPv4-compatible (deprecated)', v4: [], v6: [['::', 96]] },
];

// BlockList itself judges IPv4-mapped IPv6 (::ffff:a.b.c.d, in any spelling) by its IPv4 rules.
// NAT64 (64:ff9b::/96) is how IPv6-only hosts behind DNS64 reach every IPv4 server, so it cannot
// be refused whole: each IPv4 range gets its image inside the prefix, and the embedded address decides.
const lists = CLASSES.map(({ name, v4, v6 }) => {
  const list = new BlockList();
  for (const [network, prefix] of v4) {
    list.addSubnet(network, prefix, 'ipv4');
    list.addSubnet(`64:ff9b::${network}`, 96 + prefix, 'ipv6');
  }
  for (const [network, prefix] of v6) list.addSubnet(network, prefix, 'ipv6');
  return { name, list };
});

// Names that reach a cloud's metadata service wherever the instance runs, whatever DNS says.
const METADATA_NAMES = new Set(['metadata', 'metadata.google.internal', 'metadata.goog', 'instance-data', 'instance-data.ec2.internal']);

/**
 * Why an address may not be an upstream (`"a private"`, `"a loopback"`, …), or undefined for a
 * public one. IPv4-mapped and NAT64 IPv6 addresses are judged by the IPv4 address they carry.
 *
 * @example isForbiddenAddress('169.254.169.254') // 'a link-local (cloud metadata)'
 */
export function isForbiddenAddress(ip: string): string | undefined {
  const address = ip.replace(/%.*$/, ''); // a zone (fe80::1%eth0) would make BlockList miss the range
  const family = isIP(address);
  if (family === 0) return 'an unparseable';
  return lists.find(({ list }) => list.check(address, family === 4 ? 'ipv4' : 'ipv6'))?.name;
}

/** The error for the first forbidden address of `host`, if any. */
function refusal(host: string, addresses: string[]): UpstreamUrlError | undefined {
  for (const address of addresses) {
    const why = isForbiddenAddress(address);
    if (!why) continue;
    const where = address === host ? `${host} is` : `${host} resolves to ${address},`;
    return new UpstreamUrlError('forbidden_address', `${where} ${why} address`);
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
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UpstreamUrlError('invalid_url', 'only http and https upstreams are served');
  if (url.username || url.password) throw new UpstreamUrlError('invalid_url', 'put credentials in `auth`, not in the URL, where they would be shown and logged');
  if (url.port === '0') throw new UpstreamUrlError('invalid_url', 'the port must be 1–65535');
  if (options.allowPrivate) return url;
  const host = bare(url.hostname).replace(/\.$/, '');
  if (METADATA_NAMES.has(host)) throw new UpstreamUrlError('forbidden_address', `${host} is a cloud-metadata name`);
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookupAll(host, { all: true, verbatim: true })).map((a) => a.address);
  } catch (error) {
    throw new UpstreamUrlError('unresolvable', `${host} does not resolve: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const refused = refusal(host, addresses);
  if (refused) throw refused;
  return url;
}

// The addresses checked are the ones the socket then uses, so no second answer can slip in between.
const guardedLookup: LookupFunction = (hostname, options, callback) => {
  lookup(hostname, { ...options, all: true }, (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => {
    if (error) return callback(error, '', 0);
    const refused = refusal(hostname, addresses.map((a) => a.address));
    if (refused) return callback(refused, '', 0);
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
};

/**
 * An undici agent for registered upstreams: every connection's address is checked when it is
 * made, so a name that resolved to a public address at registration cannot be rebound to a
 * private one later. Redirects are not followed (undici's `request` never does unless asked).
 * No idle timeouts: long SSE streams stay open.
 *
 * @example const upstream = { url, headers, timeoutMs, dispatcher: guardedAgent({ allowPrivate: false }) };
 */
export function guardedAgent(options: { allowPrivate: boolean }): Agent {
  const timeouts = { bodyTimeout: 0, headersTimeout: 0, keepAliveTimeout: 30_000 };
  if (options.allowPrivate) return new Agent(timeouts);
  const connector = buildConnector({ lookup: guardedLookup });
  return new Agent({
    ...timeouts,
    connect(connectOptions, callback) {
      // Node skips `lookup` for IP literals, so those are judged here.
      const host = bare(connectOptions.hostname);
      const refused = isIP(host) ? refusal(host, [host]) : undefined;
      if (refused) return callback(refused, null);
      connector(connectOptions, callback);
    },
  });
}
