import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Verifies a `Turnpike-Signature` header as a receiver should (the README's worked example): the
 * HMAC-SHA256 of `<t>.<raw body>` under the endpoint's secret, compared in constant time, and a
 * timestamp no older than `toleranceSeconds`.
 */
export function verifySignature(header: string | undefined, rawBody: string, secret: string, toleranceSeconds = 300): boolean {
  const parts = Object.fromEntries((header ?? '').split(',').map((p) => p.split('=', 2) as [string, string]));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || !parts.v1 || Math.abs(Date.now() / 1000 - t) > toleranceSeconds) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${rawBody}`).digest();
  const given = Buffer.from(parts.v1, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
