import { randomUUID } from 'node:crypto';
import type { JsonRpcId } from './sse.js';

export type Message = {
  jsonrpc?: string;
  id?: JsonRpcId;
  method?: string;
  params?: Record<string, unknown>;
  result?: unknown;
  error?: unknown;
};

/** The `_meta` keys a payment travels under (the MCP binding, and x402-mcp's dotted spelling). */
export const PAYMENT_META_KEYS = ['x402/payment', 'x402.payment'] as const;

/**
 * What a POST body is to the gateway, decided from the parsed value alone:
 * - `paid`: a `tools/call` of a priced tool (it goes through a rail), not as a task and without
 *   MCP's own `_meta` keys;
 * - `list`: `tools/list` (prices are added to the answer);
 * - `forward`: anything else, a batch without priced calls included (passed through free);
 * - `invalid`: what no reading can make sense of, refused with `why`.
 *
 * @example
 * classify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search' } }, () => 10_000n)
 * // { kind: 'paid', message, tool: 'search', amount: 10000n }
 */
export type Classified =
  | { kind: 'paid'; message: Message; tool: string; amount: bigint }
  | { kind: 'list'; message: Message }
  | { kind: 'forward'; message: Message | Message[]; tool?: string }
  | { kind: 'invalid'; why: string };

export function classify(value: unknown, priceOf: (tool: string) => bigint): Classified {
  if (Array.isArray(value)) {
    for (const item of value) {
      const one = classifyOne(item, priceOf);
      if (one.kind === 'invalid') return one;
      if (one.kind === 'paid') return { kind: 'invalid', why: 'a priced tools/call cannot be sent in a batch; send it alone' };
    }
    return { kind: 'forward', message: value as Message[] };
  }
  return classifyOne(value, priceOf);
}

function classifyOne(value: unknown, priceOf: (tool: string) => bigint): Classified {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { kind: 'invalid', why: 'Invalid Request: expected a JSON-RPC object' };
  const message = value as Message;
  if (message.method === 'tools/list') return { kind: 'list', message };
  if (message.method !== 'tools/call') return { kind: 'forward', message };
  const name = typeof message.params === 'object' && message.params !== null ? message.params.name : undefined;
  if (typeof name !== 'string') return { kind: 'invalid', why: 'Invalid params: tools/call needs params.name, a string' };
  // No tool is named so, and a call's tool name is recorded with its charge (PostgreSQL refuses a NUL in text).
  if (name.includes('\0')) return { kind: 'invalid', why: 'Invalid params: a tool name cannot hold a NUL character' };
  const amount = priceOf(name);
  if (amount === 0n) return { kind: 'forward', message, tool: name };
  // A task's result is fetched later with tasks/result, outside the call's own answer; MCP's own
  // _meta keys (related-task) can send the answer elsewhere. Either would let a result out unpaid.
  if (message.params!.task !== undefined) {
    return { kind: 'invalid', why: `Invalid params: priced tool "${name}" cannot be called as a task; call it without params.task` };
  }
  const reserved = Object.keys((message.params!._meta as object | undefined) ?? {}).find(isReservedMetaKey);
  if (reserved)
    return { kind: 'invalid', why: `Invalid params: a priced call cannot carry _meta["${reserved}"], which changes where its answer goes` };
  return { kind: 'paid', message, tool: name, amount };
}

/** A `_meta` key MCP reserves for itself (`io.modelcontextprotocol/…`, `dev.mcp/…`: a prefix with a `modelcontextprotocol` or `mcp` label). */
const isReservedMetaKey = (key: string) => {
  const slash = key.indexOf('/');
  return (
    slash > 0 &&
    key
      .slice(0, slash)
      .split('.')
      .some((label) => label === 'modelcontextprotocol' || label === 'mcp')
  );
};

/**
 * Why the routing headers of MCP 2026-07-28 (`Mcp-Method`, `Mcp-Name`) disagree with the body, if
 * they do: a server routing on them would run something other than what turnpike priced.
 *
 * @example headerMismatch({ method: 'tools/call', params: { name: 'free' } }, new Headers({ 'mcp-name': 'premium' }))
 * // 'Mcp-Name says "premium", the body "free"'
 */
export function headerMismatch(message: Message | Message[], headers: Headers): string | undefined {
  const method = headers.get('mcp-method');
  const name = headers.get('mcp-name');
  if (method === null && name === null) return undefined;
  if (Array.isArray(message)) return 'Mcp-Method and Mcp-Name name one message; a batch cannot carry them';
  if (method !== null && method !== message.method) return `Mcp-Method says "${method}", the body "${String(message.method)}"`;
  const named = message.params?.name ?? message.params?.uri;
  if (name !== null && name !== named) return `Mcp-Name says "${name}", the body "${String(named)}"`;
  return undefined;
}

/** The payment a message carries in `params._meta`, under either key. */
function paymentOf(message: Message): unknown {
  const meta = message.params?._meta as Record<string, unknown> | undefined;
  return PAYMENT_META_KEYS.map((k) => meta?.[k]).find((p) => p !== undefined);
}

/**
 * The x402 payment a call carries: in `params._meta` (the MCP binding), else in the
 * `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1) header of the HTTP binding.
 */
export function paymentIn(message: Message, headers: Headers): unknown {
  return paymentOf(message) ?? headers.get('payment-signature') ?? headers.get('x-payment') ?? undefined;
}

/**
 * A paid result's receipt under the `_meta` keys its payer reads: the MCP binding's
 * (`x402/payment-response`), and x402-mcp's dotted one too when the payment came that way.
 *
 * @example receiptMeta(call, receipt) // { 'x402/payment-response': receipt }
 */
export function receiptMeta(message: Message, receipt: unknown): Record<string, unknown> {
  const meta = message.params?._meta as Record<string, unknown> | undefined;
  return { 'x402/payment-response': receipt, ...(meta?.['x402.payment'] !== undefined ? { 'x402.payment-response': receipt } : {}) };
}

/**
 * The bytes the upstream gets for a message turnpike judged: its own UTF-8 JSON encoding (never
 * the caller's bytes), payments removed from every message, and, for a paid call, turnpike's id.
 *
 * @example forUpstream({ jsonrpc: '2.0', id: 1, method: 'ping' }) // '{"jsonrpc":"2.0","id":1,"method":"ping"}' as bytes
 */
export function forUpstream(message: Message | Message[], id?: string): Uint8Array {
  const one = (m: Message): Message => {
    const meta = m.params?._meta;
    if (typeof meta !== 'object' || meta === null || !PAYMENT_META_KEYS.some((k) => k in meta)) return m;
    const kept = Object.fromEntries(Object.entries(meta).filter(([k]) => !(PAYMENT_META_KEYS as readonly string[]).includes(k)));
    const { _meta: _, ...params } = m.params!;
    return { ...m, params: Object.keys(kept).length > 0 ? { ...params, _meta: kept } : params };
  };
  const out = Array.isArray(message) ? message.map(one) : { ...one(message), ...(id !== undefined ? { id } : {}) };
  // Buffer.from, a Uint8Array, encodes a short string in a third less time than TextEncoder.encode.
  return Buffer.from(JSON.stringify(out));
}

const PAID_ID_PREFIX = 'turnpike-paid:';

/**
 * The JSON-RPC id a priced call is forwarded under. turnpike owns these ids: the upstream's
 * answer to one leaves turnpike only through that call's own paid answer (see `isPaidResponse`),
 * never through a stream a caller opens or resumes by itself.
 */
export const paidRequestId = () => `${PAID_ID_PREFIX}${randomUUID()}`;

const PAID_ID_PREFIX_BYTES = Buffer.from(PAID_ID_PREFIX);
// A JSON string may spell any character as `\uXXXX`: an id written so holds no literal prefix.
const ESCAPE = '\\u';
const ESCAPE_BYTES = Buffer.from(ESCAPE);

/**
 * Cheap test before parsing: text, or UTF-8 bytes, that cannot hold a paid call's response: with
 * no paid id's prefix in it, and no `\u` escape that could spell one (those are parsed).
 *
 * @example cannotHoldPaidResponse('{"id":1}') // true; cannotHoldPaidResponse('{"id":"turnpike\\u002dpaid:…"}') // false
 */
export const cannotHoldPaidResponse = (data: string | Uint8Array) => {
  if (typeof data === 'string') return !data.includes(PAID_ID_PREFIX) && !data.includes(ESCAPE);
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return !bytes.includes(PAID_ID_PREFIX_BYTES) && !bytes.includes(ESCAPE_BYTES);
};

/** A response (not a request or notification) to a priced call turnpike forwarded. */
export const isPaidResponse = (message: unknown): boolean => {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Message;
  return m.method === undefined && typeof m.id === 'string' && m.id.startsWith(PAID_ID_PREFIX);
};

/**
 * A result under the id `null`: no request's answer (JSON-RPC gives `null` only to the error about
 * a request whose id could not be read), but what an upstream that cannot echo turnpike's string
 * ids answers a priced call with. It belongs to no call the caller made, so it leaves on no stream.
 *
 * @example isResultWithoutId({ jsonrpc: '2.0', id: null, result: {} }) // true; isResultWithoutId({ jsonrpc: '2.0', id: null, error: {} }) // false
 */
export const isResultWithoutId = (message: unknown): boolean => {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Message;
  return m.method === undefined && m.id === null && m.result !== undefined;
};
