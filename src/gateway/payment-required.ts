import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import { decodePayment, encodeHeader } from '../x402/codec.js';
import type { FacilitatorRequest, PaymentRequirementsV1, PaymentRequirementsV2 } from '../x402/schemas.js';

/** What a priced tool asks for: the same in the challenge, in verification and in settlement. */
export type ToolOffer = {
  tool: string;
  amount: bigint;
  payTo: Address;
  network: Network;
  mcpUrl: string;
  /** What is being bought, when it is not an MCP tool call (a credits top-up). */
  description?: string;
};

/** The `maxTimeoutSeconds` a challenge states (a client signs for about this long; see the facilitator's window rules). */
export const MAX_TIMEOUT_SECONDS = 120;

/**
 * How a priced call without a good payment is challenged:
 * - `tool-result`: a tool result with `isError` (the x402 MCP transport spec; the default);
 * - `http-402`: HTTP 402 with `PAYMENT-REQUIRED` (v2) and a v1 body, for plain HTTP x402 clients;
 * - `jsonrpc-error`: a JSON-RPC error with code 402 and the PaymentRequired in `error.data`
 *   (earlier x402 MCP drafts; Go's mark3labs/mcp-go-x402).
 */
export const challengeBindings = ['tool-result', 'http-402', 'jsonrpc-error'] as const;
export type ChallengeBinding = (typeof challengeBindings)[number];
/** The JSON-RPC error code of the `jsonrpc-error` binding. */
export const PAYMENT_REQUIRED_CODE = 402;

export function requirementsV2(offer: ToolOffer): PaymentRequirementsV2 {
  const { network } = offer;
  return {
    scheme: 'exact',
    network: network.caip2,
    amount: offer.amount.toString(),
    asset: network.usdc.address,
    payTo: offer.payTo,
    maxTimeoutSeconds: MAX_TIMEOUT_SECONDS,
    extra: { name: network.usdc.name, version: network.usdc.version },
  };
}

export function requirementsV1(offer: ToolOffer): PaymentRequirementsV1 {
  const v2 = requirementsV2(offer);
  return {
    scheme: 'exact',
    network: offer.network.x402v1,
    maxAmountRequired: v2.amount,
    resource: offer.mcpUrl,
    description: describe(offer),
    mimeType: 'application/json',
    payTo: v2.payTo,
    maxTimeoutSeconds: v2.maxTimeoutSeconds,
    asset: v2.asset,
    extra: v2.extra,
  };
}

// The tool is named in resource.description: `resource.url` must stay the real MCP URL.
const describe = (offer: ToolOffer) => offer.description ?? `MCP tool "${offer.tool}"`;

/**
 * The x402 v2 PaymentRequired for one tool call; `error` says why a payment was not accepted,
 * `extensions` carry what else the caller can do (the credits rail's balance and top-up links).
 */
export function paymentRequired(offer: ToolOffer, error: string, extensions?: Record<string, unknown>) {
  return {
    x402Version: 2 as const,
    error,
    resource: { url: offer.mcpUrl, description: describe(offer), mimeType: 'application/json' },
    accepts: [requirementsV2(offer)],
    ...(extensions ? { extensions } : {}),
  };
}
export type PaymentRequired = ReturnType<typeof paymentRequired>;

/**
 * The same challenge in x402 v1's shape (`network: "base"`, `maxAmountRequired`, the resource in
 * the requirement), for MCP clients that speak only v1 (npm `x402-mcp`); `extensions` ride along.
 *
 * @example paymentRequiredV1(offer, required) // { x402Version: 1, error, accepts: [{ network: 'base', maxAmountRequired: '10000', … }] }
 */
export function paymentRequiredV1(offer: ToolOffer, required: PaymentRequired) {
  const { error, extensions } = required;
  return { x402Version: 1 as const, error, accepts: [requirementsV1(offer)], ...(extensions ? { extensions } : {}) };
}

/**
 * The MCP binding of a challenge: a tool *result* (not a JSON-RPC error, whose data the SDKs
 * drop), with the PaymentRequired as structured content and as text. A tool that declares an
 * outputSchema gets the text only: the MCP TypeScript SDK validates structuredContent against the
 * schema even when `isError` is set.
 */
export function challengeResult(required: object, toolHasOutputSchema: boolean) {
  return {
    isError: true,
    ...(toolHasOutputSchema ? {} : { structuredContent: required }),
    content: [{ type: 'text' as const, text: JSON.stringify(required) }],
  };
}

/**
 * The plain-HTTP binding: 402 with `PAYMENT-REQUIRED` (v2) and a v1-shaped body, so both
 * `@x402/fetch` and legacy `x402-fetch` clients can pay.
 */
export function challengeResponse(offer: ToolOffer, required: PaymentRequired): Response {
  const body = { x402Version: 1, error: required.error, accepts: [requirementsV1(offer)] };
  return new Response(JSON.stringify(body), {
    status: 402,
    headers: { 'content-type': 'application/json', 'payment-required': encodeHeader(required) },
  });
}

/**
 * A payment as it arrived (header or `_meta`, object or base64) paired with what this offer
 * requires, in the payment's own x402 version. Throws PaymentDecodeError for a malformed one.
 */
export function paymentRequestFor(raw: unknown, offer: ToolOffer): FacilitatorRequest {
  const payment = decodePayment(raw);
  return payment.x402Version === 2
    ? { x402Version: 2, paymentPayload: payment, paymentRequirements: requirementsV2(offer) }
    : { x402Version: 1, paymentPayload: payment, paymentRequirements: requirementsV1(offer) };
}
