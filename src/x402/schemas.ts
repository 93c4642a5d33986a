import { z } from 'zod';

/**
 * x402 wire types (v1 and v2) as zod schemas: everything turnpike reads from a client or a
 * resource server is parsed by one of these first. Objects are loose where the protocol lets
 * senders add fields (extensions, resource metadata), strict in what turnpike relies on.
 */

/** A uint256 as a decimal string, the way x402 carries amounts and times. */
export const uintString = z
  .string()
  // zod runs every check even after one failed; `abort` keeps BigInt() from throwing on non-digits.
  .regex(/^(0|[1-9]\d{0,77})$/, { message: 'expected a non-negative integer as a decimal string', abort: true })
  .refine((s) => BigInt(s) < 1n << 256n, 'expected at most 2^256 - 1');
export const addressString = z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x-prefixed 20-byte address');
const bytes32 = z.string().regex(/^0x[0-9a-fA-F]{64}$/, 'expected 0x followed by 64 hex digits');
// 65 bytes for an EOA; smart wallets and ERC-6492 wrappers are longer. 8 KiB bounds the work.
const signatureHex = z.string().regex(/^0x(?:[0-9a-fA-F]{2}){1,8192}$/, 'expected 0x-prefixed hex bytes');
const extra = z.record(z.string(), z.unknown());

export const paymentRequirementsV2Schema = z.looseObject({
  scheme: z.string().min(1),
  network: z.string().min(1),
  asset: z.string().min(1),
  amount: uintString,
  payTo: z.string().min(1),
  maxTimeoutSeconds: z.number().int().nonnegative(),
  extra: extra.optional(),
});

export const paymentRequirementsV1Schema = z.looseObject({
  scheme: z.string().min(1),
  network: z.string().min(1),
  maxAmountRequired: uintString,
  resource: z.string(),
  description: z.string().optional(),
  mimeType: z.string().optional(),
  outputSchema: z.record(z.string(), z.unknown()).nullable().optional(),
  payTo: z.string().min(1),
  maxTimeoutSeconds: z.number().int().nonnegative(),
  asset: z.string().min(1),
  extra: extra.nullable().optional(),
});

export const resourceInfoSchema = z.looseObject({
  url: z.string(),
  description: z.string().optional(),
  mimeType: z.string().optional(),
});

export const paymentPayloadV2Schema = z.looseObject({
  x402Version: z.literal(2),
  resource: resourceInfoSchema.optional(),
  accepted: paymentRequirementsV2Schema,
  payload: z.record(z.string(), z.unknown()),
  extensions: extra.optional(),
});

export const paymentPayloadV1Schema = z.looseObject({
  x402Version: z.literal(1),
  scheme: z.string().min(1),
  network: z.string().min(1),
  payload: z.record(z.string(), z.unknown()),
});

/** The `exact` scheme's EVM payload: an EIP-3009 authorization and its signature. */
export const exactEvmPayloadSchema = z.object({
  signature: signatureHex,
  authorization: z.object({
    from: addressString,
    to: addressString,
    value: uintString,
    validAfter: uintString,
    validBefore: uintString,
    nonce: bytes32,
  }),
});

/** Body of `POST /verify` and `POST /settle`, either version. */
export const facilitatorRequestSchema = z.discriminatedUnion('x402Version', [
  z.looseObject({
    x402Version: z.literal(1),
    paymentPayload: paymentPayloadV1Schema,
    paymentRequirements: paymentRequirementsV1Schema,
  }),
  z.looseObject({
    x402Version: z.literal(2),
    paymentPayload: paymentPayloadV2Schema,
    paymentRequirements: paymentRequirementsV2Schema,
  }),
]);

export type PaymentRequirementsV1 = z.infer<typeof paymentRequirementsV1Schema>;
export type PaymentRequirementsV2 = z.infer<typeof paymentRequirementsV2Schema>;
export type PaymentPayloadV1 = z.infer<typeof paymentPayloadV1Schema>;
export type PaymentPayloadV2 = z.infer<typeof paymentPayloadV2Schema>;
export type ExactEvmPayload = z.infer<typeof exactEvmPayloadSchema>;
export type FacilitatorRequest = z.infer<typeof facilitatorRequestSchema>;

export type VerifyResponse =
  | { isValid: true; payer: string }
  | { isValid: false; invalidReason: string; invalidMessage?: string; payer?: string };

export type SettleResponse = {
  success: boolean;
  transaction: string;
  network: string;
  payer?: string;
  errorReason?: string;
  errorMessage?: string;
};

export type SupportedResponse = {
  kinds: { x402Version: 1 | 2; scheme: string; network: string; extra?: Record<string, unknown> }[];
  extensions: string[];
  signers: Record<string, string[]>;
};
