import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';

/** Where this turnpike is reached: the URL it listens on and the public URL callers use, once known. */
export type OwnUrls = () => { listening?: string; public?: string };

const portOf = (url: URL) => Number(url.port || (url.protocol === 'https:' ? 443 : 80));
const hostOf = (url: URL) =>
  url.hostname
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/\.$/, '')
    .toLowerCase();
const normal = (address: string) => ipaddr.process(address).toNormalizedString();

/** Addresses that reach this machine: loopback, unspecified (connecting to 0.0.0.0 or :: reaches it) or an interface's. */
function isThisMachine(address: string, interfaces: Set<string>): boolean {
  const range = ipaddr.process(address).range();
  return range === 'loopback' || range === 'unspecified' || interfaces.has(normal(address));
}

/**
 * Tells whether an upstream URL is this turnpike: the host and port of its public URL, or its
 * listening port on an address of this machine (loopback, 0.0.0.0, ::, an interface's address;
 * host names resolved). Any path on it is turnpike, so the path is not compared. Answers what it
 * matched, or undefined. Registration refuses these; a name that later resolves here is stopped
 * by the hop header instead (see `loopIn`).
 *
 * @example await isTurnpike(own)(new URL('http://localhost:3402/mcp/x')) // 'its listening port 3402 on this machine'
 */
export function isTurnpike(own: OwnUrls) {
  return async (url: URL): Promise<string | undefined> => {
    const { listening, public: publicUrl } = own();
    const host = hostOf(url);
    const port = portOf(url);
    if (publicUrl) {
      const base = new URL(publicUrl);
      if (hostOf(base) === host && portOf(base) === port) return `its public URL ${base.origin}`;
    }
    if (!listening || portOf(new URL(listening)) !== port) return undefined;
    let addresses: string[];
    try {
      addresses = isIP(host) ? [host] : (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
    } catch {
      return undefined;
    }
    const interfaces = new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => normal(i.address))));
    const here = addresses.some((a) => ipaddr.isValid(a) && isThisMachine(a, interfaces));
    return here ? `its listening port ${port} on this machine` : undefined;
  };
}
