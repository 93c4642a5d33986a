import { createFacilitatorConfig } from '@coinbase/x402';
import { type FacilitatorConfig, HTTPFacilitatorClient } from '@x402/core/http';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { type Secrets, requireSecret } from '../config/secrets.js';
import type { FacilitatorRequest, SettleResponse, VerifyResponse } from '../x402/schemas.js';
import { FacilitatorUnavailableError } from './errors.js';

/** What the gateway needs from a facilitator, whether turnpike's own in-process or a remote one. */
export type PaymentFacilitator = {
  verify(request: FacilitatorRequest): Promise<VerifyResponse>;
  settle(request: FacilitatorRequest): Promise<SettleResponse>;
};

/**
 * A facilitator reached over HTTP through the official `HTTPFacilitatorClient`, for operators who
 * delegate verification and settlement instead of running a relayer. A transport failure or a
 * non-answer is FacilitatorUnavailableError, like turnpike's own faults. `apiKey` is sent as
 * `Authorization: Bearer` to /verify and /settle (a turnpike facilitator with TURNPIKE_FACILITATOR_KEYS).
 *
 * @example const remote = remoteFacilitator({ url: 'https://facilitator.example', apiKey });
 */
export function remoteFacilitator({ apiKey, ...config }: FacilitatorConfig & { apiKey?: string }): PaymentFacilitator {
  const bearer = apiKey ? { authorization: `Bearer ${apiKey}` } : undefined;
  const authorized = bearer ? { ...config, createAuthHeaders: async () => ({ verify: bearer, settle: bearer }) } : config;
  const client = new HTTPFacilitatorClient(authorized);
  const call = async <T>(what: string, action: () => Promise<T>): Promise<T> => {
    try {
      return await action();
    } catch (error) {
      throw new FacilitatorUnavailableError(`the remote facilitator did not ${what}: ${(error as Error).message}`, { cause: error });
    }
  };
  // Our wire schemas are a looser reading of the same shapes the client types.
  const args = (r: FacilitatorRequest) => [r.paymentPayload as unknown as PaymentPayload, r.paymentRequirements as unknown as PaymentRequirements] as const;
  return {
    verify: (r) => call('verify', () => client.verify(...args(r)) as Promise<VerifyResponse>),
    settle: (r) => call('settle', () => client.settle(...args(r)) as Promise<SettleResponse>),
  };
}

/**
 * Coinbase's hosted facilitator (`facilitator.mode: cdp`), authenticated with a CDP API key from
 * CDP_API_KEY_ID / CDP_API_KEY_SECRET.
 */
export function cdpFacilitator(secrets: Secrets): PaymentFacilitator {
  const why = 'to use the hosted CDP facilitator (facilitator.mode: cdp)';
  return remoteFacilitator(
    createFacilitatorConfig(requireSecret(secrets, 'cdpApiKeyId', why), requireSecret(secrets, 'cdpApiKeySecret', why)),
  );
}
