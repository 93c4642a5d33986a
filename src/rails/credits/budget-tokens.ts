import { sign, verify } from 'hono/jwt';
import { z } from 'zod';
import { DomainError } from '../../errors.js';

/** Claims of a delegated budget token. The ledger row (by `jti`) stays authoritative. */
const claimsSchema = z.object({
  jti: z.string().regex(/^bt_/),
  sub: z.string().regex(/^key_/),
  exp: z.number().int(),
  iat: z.number().int(),
  cap: z.string().regex(/^\d+$/),
});
export type BudgetClaims = z.infer<typeof claimsSchema>;

const ALG = 'HS256';

/** Signs the claims of a budget token minted for a sub-agent. */
export const signBudgetToken = (claims: BudgetClaims, secret: string) => sign(claims, secret, ALG);

/**
 * Checks a budget token's signature and expiry and returns its claims; anything wrong is a
 * specific 401 (tampered, expired, malformed), never a thrown library error.
 *
 * @example const { jti, sub } = await readBudgetToken(jwt, secret);
 */
export async function readBudgetToken(jwt: string, secret: string): Promise<BudgetClaims> {
  let payload: unknown;
  try {
    payload = await verify(jwt, secret, ALG);
  } catch (error) {
    const name = (error as Error).name;
    if (name === 'JwtTokenExpired') throw new DomainError('token_expired', 'the budget token has expired; ask its issuer for a new one');
    if (name === 'JwtTokenSignatureMismatched')
      throw new DomainError('token_invalid', 'the budget token’s signature does not match: it was altered or not issued here');
    throw new DomainError('token_malformed', 'the bearer credential is neither a tp_ API key nor a budget token issued here');
  }
  const claims = claimsSchema.safeParse(payload);
  if (!claims.success) throw new DomainError('token_malformed', 'the budget token’s claims are not ones turnpike issues');
  return claims.data;
}
