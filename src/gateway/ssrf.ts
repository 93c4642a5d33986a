import { lookup } from 'node:dns';
import { lookup as lookupAsync } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { Agent } from 'undici';

/** An upstream URL an operator may not register; `code` says which rule refused it. */
export class UpstreamUrlError extends Error {
  override name = 'UpstreamUrlError';
  constructor(
    readonly code: 'invalid_url' | 'forbidden_address' | 'unresolvable',
    message: string,
  ) {
    super(message);
  }
}

const ranges: [string, number, 'ipv4' | 'ipv6', string][] = [
  ['0.0.0.0', 8, 'ipv4', 'an unspecified'],
  ['10.0.0.0', 8, 'ipv4', 'a private'],
  ['100.64.0.0', 10, 'ipv4', 'a carrier-grade NAT'],
  ['127.0.0.0', 8, 'ipv4', 'a loopback'],
  ['169.254.0.0', 16, 'ipv4', 'a link-local (cloud metadata)'],
  ['172.16.0.0', 12, 'ipv4', 'a private'],
  ['192.0.0.0', 24, 'ipv4', 'an IETF protocol'],
  ['192.168.0.0', 16, 'ipv4', 'a private'],
  ['198.18.0.0', 15, 'ipv4', 'a benchmarking'],
  ['224.0.0.0', 4, 'ipv4', 'a multicast'],
  ['240.0.0.0', 4, 'ipv4', 'a reserved'],
  ['::', 128, 'ipv6', 'an unspecified'],
  ['::1', 128, 'ipv6', 'a loopback'],
  ['fc00::', 7, 'ipv6', 'a unique-local (private)'],
  ['fe80::', 10, 'ipv6', 'a link-local'],
  ['ff00::', 8, 'ipv6', 'a multicast'],
  ['64:ff9b::', 96, 'ipv6', 'a NAT64'],
];
const classes = ranges.map(([network, prefix, family, name]) => {
  const list = new BlockList();
  list.addSubnet(network, prefix, family);
  return { list, family, name };
});
const METADATA_NAMES = new Set(['metadata', 'metadata.google.internal', 'metadata.goog', 'instance-data', 'instance-data.ec2.internal']);

/**
 * Why an address may not be an upstream (`"a private"`, `"a loopback"`, …), or undefined for a
 * public one. IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
 *
 * @example isForbiddenAddress('169.254.169.254') // 'a link-local (cloud metadata)'
 */
export function isForbiddenAddress(ip: string): string | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  const address = mapped ?? ip;
  const family = isIP(address) === 4 ? 'ipv4' : isIP(address) === 6 ? 'ipv6' : undefined;
  if (!family) return 'an unparseable';
  return classes.find((c) => c.family === family && c.list.check(address, family))?.name;
}

const hostOf = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1');

/**
 * Checks an upstream URL registered through the API: http(s), no credentials in it, and a host
 * whose every address is public (unless private ones are allowed). The gateway's agent checks
 * again at connect time, since a DNS answer can change after this (rebinding).
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
  if (options.allowPrivate) return url;
  const host = hostOf(url).toLowerCase();
  if (METADATA_NAMES.has(host) || host === 'localhost' || host.endsWith('.localhost')) {
    throw new UpstreamUrlError('forbidden_address', `${host} is a local or cloud-metadata name`);
  }
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookupAsync(host, { all: true, verbatim: true })).map((a) => a.address);
  } catch (error) {
    throw new UpstreamUrlError('unresolvable', `${host} does not resolve: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  for (const address of addresses) {
    const why = isForbiddenAddress(address);
    if (why) throw new UpstreamUrlError('forbidden_address', `${host} resolves to ${address}, ${why} address`);
  }
  return url;
}

/**
 * An undici agent for registered upstreams: every connection's address is checked when it is
 * made, so a name that resolved to a public address at registration cannot be rebound to a
 * private one later. Redirects are not followed (undici's `request` never does unless asked).
 * No idle timeouts: long SSE streams stay open.
 *
 * @example const upstream = { url, headers, timeoutMs, dispatcher: guardedAgent({ allowPrivate: false }) };
 */
export function guardedAgent(options: { allowPrivate: boolean }): Agent {
  return new Agent({
    bodyTimeout: 0,
    headersTimeout: 0,
    keepAliveTimeout: 30_000,
    connect: {
      lookup(hostname, lookupOptions, callback) {
        lookup(hostname, { ...lookupOptions, all: true }, (error, addresses) => {
          if (error) return callback(error, '', 0);
          const list = addresses as unknown as { address: string; family: number }[];
          const refused = options.allowPrivate ? undefined : list.map((a) => [a.address, isForbiddenAddress(a.address)] as const).find(([, why]) => why);
          if (refused) return callback(new UpstreamUrlError('forbidden_address', `${hostname} resolves to ${refused[0]}, ${refused[1]} address`), '', 0);
          if (lookupOptions.all) return (callback as unknown as (e: null, a: typeof list) => void)(null, list);
          return callback(null, list[0]!.address, list[0]!.family);
        });
      },
    },
  });
}
