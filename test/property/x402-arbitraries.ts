import fc from 'fast-check';
import type { PaymentPayloadV1, PaymentPayloadV2, PaymentRequirementsV1, PaymentRequirementsV2 } from '../../src/x402/schemas.js';
import { hexBytes, json } from './arbitraries.js';

/** Schema-valid x402 values (v1 and v2), with the extra fields senders may add. */

export const UINT256_MAX = (1n << 256n) - 1n;

export const uint = fc.oneof(fc.bigInt({ min: 0n, max: UINT256_MAX }), fc.bigInt({ min: 0n, max: 10n ** 12n })).map(String);
export const address = hexBytes(20).map((h) => `0x${h}`);
const nonEmpty = fc.string({ minLength: 1, maxLength: 20 });
const record = fc.dictionary(fc.string({ maxLength: 8 }), json, { maxKeys: 4 });

/** Fields the schemas do not name, which loose objects carry through. */
const extraFields = (named: string[]) =>
  fc.dictionary(
    fc.string({ maxLength: 8 }).filter((k) => !named.includes(k)),
    json,
    { maxKeys: 2 },
  );

/** `fc.record` with optional keys absent (not `undefined`), plus fields a sender added. */
function loose<T extends Record<string, unknown>>(
  required: { [K in keyof T]: fc.Arbitrary<T[K]> },
  optional: Record<string, fc.Arbitrary<unknown>> = {},
) {
  const named = [...Object.keys(required), ...Object.keys(optional)];
  return fc
    .tuple(fc.record(required), fc.record(optional, { requiredKeys: [] }), extraFields(named))
    .map(([r, o, extra]) => ({ ...extra, ...o, ...r }) as T);
}

/** The `exact` EVM payload an x402 client signs. */
const exactPayload = fc.record({
  signature: fc
    .integer({ min: 65, max: 200 })
    .chain((n) => hexBytes(n))
    .map((h) => `0x${h}`),
  authorization: fc.record({
    from: address,
    to: address,
    value: uint,
    validAfter: uint,
    validBefore: uint,
    nonce: hexBytes(32).map((h) => `0x${h}`),
  }),
});
const payload = fc.oneof(exactPayload, record);

export const requirementsV2 = loose<PaymentRequirementsV2>(
  { scheme: nonEmpty, network: nonEmpty, asset: nonEmpty, amount: uint, payTo: nonEmpty, maxTimeoutSeconds: fc.maxSafeNat() },
  { extra: record },
);

export const requirementsV1 = loose<PaymentRequirementsV1>(
  {
    scheme: nonEmpty,
    network: nonEmpty,
    maxAmountRequired: uint,
    resource: fc.string(),
    payTo: nonEmpty,
    maxTimeoutSeconds: fc.maxSafeNat(),
    asset: nonEmpty,
  },
  { description: fc.string(), mimeType: fc.string(), outputSchema: fc.option(record), extra: fc.option(record) },
);

export const payloadV2 = loose<PaymentPayloadV2>(
  { x402Version: fc.constant(2 as const), accepted: requirementsV2, payload },
  { resource: loose({ url: fc.webUrl() }, { description: fc.string(), mimeType: fc.string() }), extensions: record },
);

export const payloadV1 = loose<PaymentPayloadV1>({ x402Version: fc.constant(1 as const), scheme: nonEmpty, network: nonEmpty, payload });

export const anyPayload = fc.oneof(payloadV1, payloadV2);

export const facilitatorRequest = fc.oneof(
  loose({ x402Version: fc.constant(1 as const), paymentPayload: payloadV1, paymentRequirements: requirementsV1 }),
  loose({ x402Version: fc.constant(2 as const), paymentPayload: payloadV2, paymentRequirements: requirementsV2 }),
);

/** What JSON does to a value: the form it has after a trip through a header. */
export const viaJson = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** A valid value with one field, at any depth, replaced by arbitrary JSON (or removed). */
export function mutated(arb: fc.Arbitrary<Record<string, unknown>>) {
  return fc.tuple(arb, fc.nat(), fc.option(json, { nil: undefined })).map(([value, pick, replacement]) => {
    const copy = viaJson(value);
    const objects: Record<string, unknown>[] = [];
    const walk = (v: unknown) => {
      if (typeof v !== 'object' || v === null) return;
      objects.push(v as Record<string, unknown>);
      Object.values(v).forEach(walk);
    };
    walk(copy);
    const target = objects[pick % objects.length]!;
    const keys = Object.keys(target);
    if (keys.length === 0) return copy;
    const key = keys[pick % keys.length]!;
    if (replacement === undefined) delete target[key];
    else target[key] = replacement;
    return copy;
  });
}
