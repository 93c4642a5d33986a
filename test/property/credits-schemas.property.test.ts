import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  MAX_TOKEN_SECONDS,
  adjustSchema,
  mintTokenSchema,
  newKeySchema,
  topupSchema,
  transferSchema,
} from '../../src/rails/credits/credits.js';
import { anyInput, anyText, json, nearNumber } from './arbitraries.js';
import { atomicOf } from './oracles.js';
import { mutated } from './x402-arbitraries.js';

const RUNS = { numRuns: 500 };
type Schema = { safeParse(v: unknown): { success: true; data: unknown } | { success: false; error: { issues: unknown[] } } };

/** A USD amount of the API: mostly well formed, sometimes signed, over-precise, zero or not a number. */
const amountText = fc.oneof(
  fc
    .tuple(fc.stringMatching(/^\d{1,13}$/), fc.option(fc.stringMatching(/^\d{0,8}$/), { nil: undefined }))
    .map(([w, f]) => (f === undefined ? w : `${w}.${f}`)),
  fc.constantFrom(
    '0',
    '0.0',
    '0.000000',
    '0.000001',
    '-0',
    '-0.000001',
    '+1',
    '1e2',
    '0x10',
    '',
    ' ',
    'NaN',
    'Infinity',
    '1.0000001',
    '1,5',
    '--1',
    '-$1',
    '$-1',
    '- 1',
  ),
  nearNumber,
);
/** Amounts as JSON may carry them: text, numbers (never accepted: money is a decimal string), anything. */
const amountValue = fc.oneof({ weight: 4, arbitrary: amountText }, fc.double(), fc.integer(), json);

/** What the API should make of an amount: positive micro-USD, or a refusal. */
const positive = (value: unknown) => {
  const amount = typeof value === 'string' ? atomicOf(value) : undefined;
  return typeof amount === 'bigint' && amount > 0n ? amount : undefined;
};
/** A signed amount: a leading `-` takes from the key; the rest must be a positive amount. */
const signed = (value: unknown) => {
  if (typeof value !== 'string') return undefined;
  const negative = value.startsWith('-');
  const magnitude = positive(negative ? value.slice(1) : value);
  if (magnitude === undefined || (negative && value[1] === '-')) return undefined;
  return negative ? -magnitude : magnitude;
};

const text = fc.string({ minLength: 1, maxLength: 30 }).filter((s) => s.trim().length > 0);
const keyId = fc.string({ maxLength: 12 }).map((s) => `key_${s}`);
const scope = fc.record(
  {
    servers: fc.array(fc.string({ minLength: 1, maxLength: 10 }), { maxLength: 3 }),
    tools: fc.array(fc.string({ minLength: 1, maxLength: 10 }), { maxLength: 3 }),
  },
  { requiredKeys: [] },
);

/** For each body schema: valid bodies with the amount left out, the amount's field, and what it should read as. */
const bodies: {
  name: string;
  schema: Schema;
  body: fc.Arbitrary<Record<string, unknown>>;
  field: string;
  expected: (v: unknown) => bigint | undefined;
}[] = [
  {
    name: 'newKeySchema',
    schema: newKeySchema,
    body: fc.record({ name: text, scope }, { requiredKeys: ['name'] }),
    field: 'usd',
    expected: positive,
  },
  {
    name: 'topupSchema',
    schema: topupSchema,
    body: fc.record({ reason: text, idempotencyKey: text }, { requiredKeys: ['idempotencyKey'] }),
    field: 'usd',
    expected: positive,
  },
  { name: 'adjustSchema', schema: adjustSchema, body: fc.record({ reason: text, idempotencyKey: text }), field: 'usd', expected: signed },
  {
    name: 'transferSchema',
    schema: transferSchema,
    body: fc.record({ from: keyId, to: keyId, idempotencyKey: text }).filter((t) => t.from !== t.to),
    field: 'usd',
    expected: positive,
  },
  {
    name: 'mintTokenSchema',
    schema: mintTokenSchema,
    body: fc.record({ scope, ttlSeconds: fc.integer({ min: 1, max: MAX_TOKEN_SECONDS }) }, { requiredKeys: [] }),
    field: 'capUsd',
    expected: positive,
  },
];

describe('credits API bodies (properties)', () => {
  for (const { name, schema, body, field, expected } of bodies) {
    test(`${name}: an amount is accepted exactly when it is a ${expected === signed ? 'signed' : 'positive'} USD decimal of at most 6 decimals, as exact micro-USD`, () => {
      fc.assert(
        fc.property(body, amountValue, (valid, amount) => {
          const parsed = schema.safeParse({ ...valid, [field]: amount });
          const want = expected(amount);
          if (want === undefined) {
            assert.equal(parsed.success, false, `${JSON.stringify(amount)} should be refused`);
            return;
          }
          assert.ok(parsed.success, `${JSON.stringify(amount)} should be accepted`);
          assert.equal((parsed.data as Record<string, unknown>)[field], want);
        }),
        RUNS,
      );
    });

    test(`${name}: arbitrary JSON, and valid bodies with a field changed, never make safeParse throw`, () => {
      const valid = fc.tuple(body, amountText).map(([b, amount]) => ({ ...b, [field]: amount }));
      fc.assert(
        fc.property(
          fc.oneof(
            anyInput,
            mutated(valid),
            fc.tuple(valid, fc.string(), json).map(([b, k, v]) => ({ ...b, [k]: v })),
          ),
          (value) => {
            const parsed = schema.safeParse(value);
            if (!parsed.success) assert.ok(parsed.error.issues.length > 0);
          },
        ),
        RUNS,
      );
    });
  }

  test('newKeySchema: spending limits are USD decimals (zero allowed), read exactly', () => {
    fc.assert(
      fc.property(text, amountValue, (name, limit) => {
        const parsed = newKeySchema.safeParse({ name, dailyLimitUsd: limit, lifetimeLimitUsd: limit });
        const amount = typeof limit === 'string' ? atomicOf(limit) : undefined;
        if (typeof amount !== 'bigint') return assert.equal(parsed.success, false);
        assert.ok(parsed.success);
        assert.equal(parsed.data.dailyLimitUsd, amount);
        assert.equal(parsed.data.lifetimeLimitUsd, amount);
      }),
      RUNS,
    );
  });

  test('transferSchema refuses a transfer from a key to itself; mintTokenSchema a ttl outside 1 s … 24 h', () => {
    fc.assert(
      fc.property(keyId, amountText, fc.oneof(fc.integer(), fc.double()), (id, usd, ttlSeconds) => {
        assert.equal(transferSchema.safeParse({ from: id, to: id, usd, idempotencyKey: 'i' }).success, false);
        const inRange = Number.isInteger(ttlSeconds) && ttlSeconds >= 1 && ttlSeconds <= MAX_TOKEN_SECONDS;
        assert.equal(mintTokenSchema.safeParse({ capUsd: '1', ttlSeconds }).success, inRange);
      }),
      RUNS,
    );
  });

  test('no body schema lets an unknown field through', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 10 }), anyText, (key, value) => {
        const known = [
          'name',
          'usd',
          'scope',
          'expiresAt',
          'dailyLimitUsd',
          'lifetimeLimitUsd',
          'reason',
          'idempotencyKey',
          'from',
          'to',
          'capUsd',
          'ttlSeconds',
        ];
        fc.pre(!known.includes(key));
        assert.equal(topupSchema.safeParse({ usd: '1', idempotencyKey: 'i', [key]: value }).success, false);
        assert.equal(newKeySchema.safeParse({ name: 'n', [key]: value }).success, false);
      }),
      RUNS,
    );
  });
});
