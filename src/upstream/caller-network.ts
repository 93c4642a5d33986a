import ipaddr from 'ipaddr.js';

/**
 * The network a caller's address stands for: an IPv4 address itself (an IPv4-mapped IPv6 one
 * as IPv4), an IPv6 address's /64 (one host's or one LAN's, whose temporary addresses change; the
 * least one customer is given, whole); undefined for what is no IP address. What is bound or
 * counted per caller goes by it, so rotating addresses within one /64 makes no new caller.
 *
 * @example networkOf('::ffff:127.0.0.1') // '127.0.0.1'; networkOf('2001:db8:1:2:aaaa::1') // '2001:db8:1:2::/64'
 */
export function networkOf(address: string): string | undefined {
  if (!ipaddr.isValid(address)) return undefined;
  const ip = ipaddr.process(address);
  if (ip.kind() === 'ipv4') return ip.toString();
  const prefix = (ip as ipaddr.IPv6).parts.slice(0, 4);
  return `${new ipaddr.IPv6([...prefix, 0, 0, 0, 0]).toString()}/64`;
}
