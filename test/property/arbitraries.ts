import assert from 'node:assert/strict';
import fc from 'fast-check';

/**
 * Arbitraries shared by the property tests: the strings untrusted input is made of (near misses
 * of numbers, hex, whitespace, any Unicode) and JSON of every shape.
 */

/** Characters that make numbers, and the ones that make numbers subtly wrong. */
const numberish = fc.constantFrom(...'0123456789.$-+eExX_, \t\n\u00a0abfAF'.split(''), '١', '０', '\u2212');

/** Strings that look like numbers, decimals or hex more often than chance would make them. */
export const nearNumber = fc.string({ unit: numberish, maxLength: 30 });

/** Any text at all: mostly ASCII, sometimes every code point. */
export const anyText = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), nearNumber);

/** JSON values, as `JSON.parse` makes them (`-0` included). */
export const json = fc.jsonValue({ maxDepth: 3 });

/** Untrusted values as a parser may receive them: JSON, text, and what JavaScript adds. */
export const anyInput = fc.oneof(
  json,
  anyText,
  fc.anything({ maxDepth: 3, withBigInt: true, withDate: true, withMap: true, withNullPrototype: true }),
);

/** Runs `fn`; an exception other than an instance of `expected` fails the property. */
export function throwsOnly<T>(
  expected: abstract new (...args: never[]) => Error,
  fn: () => T,
): { ok: true; value: T } | { ok: false; error: Error } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    assert.ok(error instanceof expected, `expected a ${expected.name}, got ${String(error)}`);
    return { ok: false, error };
  }
}

/** Hex digits of `n` bytes, mixed case. */
export const hexBytes = (n: number) =>
  fc.uint8Array({ minLength: n, maxLength: n }).chain((bytes) => fc.mixedCase(fc.constant(Buffer.from(bytes).toString('hex'))));
