import { MIMEType } from 'node:util';

/** Why a request body cannot be judged: refused before anything is read from it or written for it. */
export type BodyRefusal = { ok: false; status: 400 | 415; code: 'unsupported_media_type' | 'invalid_json'; message: string };

/** How deep a JSON document may nest; far beyond any MCP message, far below what would exhaust a stack. */
export const MAX_JSON_DEPTH = 64;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const refuse = (status: 400 | 415, code: BodyRefusal['code'], message: string): BodyRefusal => ({ ok: false, status, code, message });

/**
 * Reads a JSON-RPC body exactly one way, so that what turnpike judges is what the upstream parses:
 * `application/json` in UTF-8 only (another charset, or an encoded body, is 415), strict UTF-8
 * (invalid bytes or a byte-order mark are 400), no duplicate keys in any object (parsers disagree
 * on which one wins), no number that a double cannot carry (`12345678901234567890`, `1e400`:
 * turnpike's re-encoding would name another value than the one sent), nesting at most
 * `MAX_JSON_DEPTH` deep. The caller forwards the value it got, re-encoded, never the bytes it read.
 *
 * @example
 * readJsonBody(bytes, 'application/json; charset=utf-7') // { ok: false, status: 415, … }
 * readJsonBody(new TextEncoder().encode('{"a":1,"a":2}'), 'application/json') // { ok: false, status: 400, … }
 */
export function readJsonBody(
  bytes: Uint8Array,
  contentType: string | undefined,
  contentEncoding?: string,
): { ok: true; value: unknown } | BodyRefusal {
  // What MCP clients send, judged without parsing it (0.4 µs a request): no parameters, so no charset.
  if (contentType !== 'application/json') {
    const refused = refusedType(contentType);
    if (refused) return refused;
  }
  if (contentEncoding !== undefined && contentEncoding.trim().toLowerCase() !== 'identity') {
    return refuse(415, 'unsupported_media_type', `Content-Encoding ${contentEncoding} is not accepted; send the JSON uncompressed`);
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return refuse(400, 'invalid_json', 'the body is not valid UTF-8');
  }
  const shape = checkShape(text);
  if (shape) return refuse(400, 'invalid_json', shape);
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return refuse(400, 'invalid_json', 'Parse error: the body is not JSON');
  }
}

/** Why a Content-Type other than a bare `application/json` is refused, if it is: another type, or a charset other than UTF-8. */
function refusedType(contentType: string | undefined): BodyRefusal | undefined {
  let type: MIMEType;
  try {
    type = new MIMEType(contentType ?? '');
  } catch {
    return refuse(415, 'unsupported_media_type', 'Content-Type must be application/json');
  }
  if (type.essence !== 'application/json')
    return refuse(415, 'unsupported_media_type', `Content-Type must be application/json, not ${type.essence}`);
  const charset = type.params.get('charset');
  if (charset !== null && charset.toLowerCase() !== 'utf-8')
    return refuse(415, 'unsupported_media_type', `only UTF-8 JSON is accepted, not charset=${charset}`);
  return undefined;
}

/**
 * What makes a text ambiguous or too deep to judge, scanning it once without building it: an
 * object with a key twice (compared decoded, so `"a"` and `"\u0061"` are one key), a number that
 * re-encodes to another value, or nesting past `MAX_JSON_DEPTH`. Syntax is left to JSON.parse;
 * this only has to find strings, numbers and brackets.
 */
function checkShape(text: string): string | undefined {
  // One entry per open bracket: the keys seen so far for an object, null for an array.
  const open: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22 /* " */) {
      const start = i;
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
      const keys = open.at(-1);
      if (expectKey && keys) {
        const raw = text.slice(start, i + 1);
        let key: string;
        try {
          key = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        } catch {
          return undefined; // not JSON: JSON.parse says so
        }
        if (keys.has(key)) return `duplicate key "${key.slice(0, 64)}" in one object`;
        keys.add(key);
      }
      expectKey = false;
    } else if (ch === 0x7b /* { */ || ch === 0x5b /* [ */) {
      if (open.length >= MAX_JSON_DEPTH) return `JSON nested deeper than ${MAX_JSON_DEPTH} levels`;
      open.push(ch === 0x7b ? new Set() : null);
      expectKey = ch === 0x7b;
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) {
      open.pop();
      expectKey = false;
    } else if (ch === 0x2c /* , */) {
      expectKey = open.at(-1) instanceof Set;
    } else if (ch === 0x2d /* - */ || (ch >= 0x30 && ch <= 0x39) /* 0-9 */) {
      const start = i;
      while (i + 1 < text.length && isNumberChar(text.charCodeAt(i + 1))) i++;
      const token = text.slice(start, i + 1);
      if (!carriedExactly(token)) return `the number ${token.slice(0, 64)} cannot be carried exactly; send it as a string`;
    }
  }
  return undefined;
}

const isNumberChar = (ch: number) =>
  (ch >= 0x30 && ch <= 0x39) || ch === 0x2e /* . */ || ch === 0x65 /* e */ || ch === 0x45 /* E */ || ch === 0x2b || ch === 0x2d;

/**
 * Whether a JSON number re-encodes (`JSON.stringify(JSON.parse(token))`) to the same value it
 * was sent as, compared as exact decimals, so every parser behind turnpike reads what it judged.
 * A token that is not a JSON number is let through: JSON.parse refuses it.
 *
 * @example
 * carriedExactly('1.0') // true: "1" is the same value
 * carriedExactly('9007199254740993') // false: it re-encodes as 9007199254740992
 */
function carriedExactly(token: string): boolean {
  const sent = decimalOf(token);
  if (sent === undefined) return true;
  const parsed = Number(token);
  return Number.isFinite(parsed) && sameDecimal(sent, decimalOf(String(parsed)));
}

type Decimal = { negative: boolean; digits: string; exponent: number };

/** A decimal as sign, significant digits (no leading or trailing zeros; '' for zero) and exponent. */
function decimalOf(text: string): Decimal | undefined {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!match) return undefined;
  const [, sign, whole, fraction = '', exp = '0'] = match;
  let digits = (whole + fraction).replace(/^0+/, '');
  let exponent = Number(exp) - fraction.length;
  const trailing = digits.length - digits.replace(/0+$/, '').length;
  digits = digits.slice(0, digits.length - trailing);
  exponent += trailing;
  return { negative: sign === '-' && digits !== '', digits, exponent: digits === '' ? 0 : exponent };
}

const sameDecimal = (a: Decimal, b: Decimal | undefined) =>
  b !== undefined && a.negative === b.negative && a.digits === b.digits && a.exponent === b.exponent;
