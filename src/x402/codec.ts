import { z } from 'zod';
import { paymentPayloadV1Schema, paymentPayloadV2Schema } from './schemas.js';
import { BaseError } from '../errors.js';

/** A payment a client sent, in either protocol version. */
export const paymentPayloadSchema = z.discriminatedUnion('x402Version', [paymentPayloadV1Schema, paymentPayloadV2Schema]);
export type PaymentPayload = z.infer<typeof paymentPayloadSchema>;

/** A payment header or `_meta` field that cannot be read; the message names what is wrong (x402's `invalid_payload`). */
export class PaymentDecodeError extends BaseError<'invalid_payload'> {
  override name = 'PaymentDecodeError';
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, { code: 'invalid_payload', cause: options.cause });
  }
}

/** x402 headers are standard base64 (with padding) of UTF-8 JSON. */
export function encodeHeader(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64');
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Reads a payment from a `PAYMENT-SIGNATURE`/`X-PAYMENT` header value or from an MCP
 * `_meta["x402/payment"]` field (an object, or the same base64 string as the header).
 *
 * @example decodePayment(request.headers.get('payment-signature'))
 */
export function decodePayment(value: unknown): PaymentPayload {
  let json: unknown = value;
  if (typeof value === 'string') {
    const text = value.trim();
    if (!BASE64.test(text) || text.length % 4 !== 0) throw new PaymentDecodeError('payment is not base64');
    try {
      json = JSON.parse(Buffer.from(text, 'base64').toString('utf8'));
    } catch {
      throw new PaymentDecodeError('payment is base64 but not JSON');
    }
  }
  const parsed = paymentPayloadSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new PaymentDecodeError(`payment ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}
