import { randomBytes } from 'node:crypto';

/**
 * The header naming every turnpike a request has passed through, oldest first (as `Via` does for
 * proxies): each turnpike appends its own token to what came in before forwarding upstream.
 */
export const HOP_HEADER = 'turnpike-hop';
/** A chain of more turnpikes than this is a loop through something that renames them, or a forged chain. */
export const MAX_HOPS = 8;

/** This process's token: random, so no other turnpike (and no caller that has not been an upstream) uses it. */
const SELF = randomBytes(12).toString('base64url');
const TOKEN = /^[\w-]{1,64}$/;

/** The turnpikes a request names; an entry that is not token-shaped is no turnpike's and is dropped. */
const hopsOf = (header: string | null): string[] =>
  (header ?? '')
    .split(',')
    .map((hop) => hop.trim())
    .filter((hop) => TOKEN.test(hop));

/**
 * Why a request that came in with `header` must not be forwarded (it went through this turnpike
 * already, or through MAX_HOPS turnpikes), or undefined. A caller can only get its own request refused.
 *
 * @example loopIn(request.headers.get(HOP_HEADER)) // 'this request already passed through this turnpike'
 */
export function loopIn(header: string | null): string | undefined {
  if (header === null) return undefined;
  const hops = hopsOf(header);
  if (hops.includes(SELF)) return 'this request already passed through this turnpike';
  if (hops.length >= MAX_HOPS) return `this request already passed through ${hops.length} turnpikes (at most ${MAX_HOPS - 1} may)`;
  return undefined;
}

/**
 * The header to send upstream for a request that came in with `header`: what came in (token-shaped
 * entries only), then this turnpike.
 *
 * @example nextHops('a1b2') // 'a1b2, <this turnpike>'; nextHops(null) // '<this turnpike>'
 */
export const nextHops = (header: string | null): string => (header === null ? SELF : [...hopsOf(header), SELF].join(', '));
