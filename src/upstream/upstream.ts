import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { shownUrl } from '../log/shown-url.js';
import type { Dispatcher } from 'undici';
import { HOP_HEADER, nextHops } from './hops.js';
import { guardedAgent } from './ssrf.js';
import { BaseError } from '../errors.js';

/**
 * Headers that describe one hop, not the message: never forwarded, either way. So are those a
 * message's `Connection` header names (see `connectionNamed`). A challenge to a proxy (and its
 * answer) is for the next client only (RFC 9110 §11.7.1): turnpike, never its caller.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'proxy-authentication-info',
  'proxy-connection',
  'host',
  'content-length',
]);
/**
 * The caller's socket address, told by the gateway to an upstream turnpike runs itself (the stdio
 * bridge, which bounds sessions per caller). Set only by turnpike: a caller's own is never forwarded.
 */
export const CALLER_HEADER = 'x-turnpike-caller';
/** The caller's credentials and payments are turnpike's business, never the upstream's. */
const CALLER_ONLY = new Set(['authorization', 'x-api-key', 'payment-signature', 'x-payment', 'cookie', CALLER_HEADER]);
// Answers come back uncompressed, so a paid call's result can be read and its receipt added; a
// body goes out as turnpike encoded it (see `forUpstream`), so it is described here, not by the caller.
// Node met the caller's `Expect: 100-continue` (any other expectation is its 417, before the
// gateway) and turnpike reads a body whole before it forwards one: the upstream has nothing to
// expect, and undici refuses the header (a call would fail as the upstream's fault).
const NOT_FORWARDED = new Set([...HOP_BY_HOP, ...CALLER_ONLY, 'accept-encoding', 'content-encoding', 'content-type', 'expect', HOP_HEADER]);

/**
 * Whether an operator's own upstream header (`headersFromEnv`) is one turnpike can send: not a
 * hop's, nor one turnpike writes itself (the body's encoding and type, the loop guard, the
 * caller's address), nor `expect` (undici refuses it: every call would fail).
 *
 * @example operatorMaySet('X-Api-Key') // true; operatorMaySet('Transfer-Encoding') // false
 */
export const operatorMaySet = (name: string) => {
  const lower = name.toLowerCase();
  return !HOP_BY_HOP.has(lower) && !['content-type', 'content-encoding', 'expect', HOP_HEADER, CALLER_HEADER].includes(lower);
};

/**
 * An upstream's cookies are its own: the caller's never reach it (`cookie` above), and one set on
 * turnpike's origin would reach the console's and every other server's paths.
 */
const UPSTREAM_ONLY = new Set([
  'set-cookie',
  // What turnpike says of a payment is turnpike's alone: an upstream's own would read as a receipt,
  // a challenge or a balance on an answer turnpike did not write them on (a free call, an SSE stream).
  'payment-response',
  'x-payment-response',
  'payment-required',
  'x-credits-remaining',
  'idempotent-replayed',
]);

/** Connections kept to one upstream origin by default (`http.upstreamConnections`); more requests wait for one. */
export const UPSTREAM_CONNECTIONS = 64;

export type Upstream = {
  url: string;
  /** The operator's own credential for the upstream, e.g. `Authorization: Bearer …`. */
  headers: Record<string, string>;
  timeoutMs: number;
  /**
   * Connections for this upstream, at most `http.upstreamConnections` per origin; servers registered
   * through the API get one that refuses private addresses.
   */
  dispatcher?: Dispatcher;
  /** Turnpike's own stdio bridge: told the caller's address in `CALLER_HEADER`. Never set for someone else's server. */
  tellCaller?: boolean;
};

const agent = guardedAgent({ allowPrivate: true, connections: UPSTREAM_CONNECTIONS });

/**
 * The upstream's answer as it came: a JSON answer whole (it is one message), an SSE stream as a
 * stream. Kept out of a `Response` until one is needed, so a paid call's result is read without
 * building one first. Its headers never name a length or a hop (`HOP_BY_HOP`, or what its `Connection`
 * named): its body may be rewritten.
 */
export type UpstreamAnswer = { status: number; headers: HeaderRecord; body: Uint8Array | ReadableStream<Uint8Array> | null };

export const toResponse = (answer: UpstreamAnswer) => new Response(answer.body, { status: answer.status, headers: answer.headers });

/**
 * Header names and values as one record: names in lower case, a repeated header's values joined
 * with ", " (what `Headers.get` reads). Plain records on the way through, not `Headers` objects:
 * a forwarded call's headers are copied twice, and each `Headers` costs validation and a copy.
 *
 * @example { 'content-type': 'application/json', 'mcp-session-id': 'abc' }
 */
export type HeaderRecord = Record<string, string>;

/** What is forwarded of a caller's request besides its body: its method and headers. */
export type Forwarded = { method: string; headers: HeaderRecord };

/**
 * The header fields a message's `Connection` header names: they are for the hop it came on, and a
 * proxy removes them with it (RFC 9110 §7.6.1), in either direction. Undefined when it names none,
 * as the `keep-alive` or `close` of most messages (`keep-alive` is in `HOP_BY_HOP` anyway). A set:
 * a message may name thousands, each looked up for every one of its header fields.
 *
 * @example connectionNamed('keep-alive, X-Secret-Hop') // Set { 'x-secret-hop' }; connectionNamed('keep-alive') // undefined
 */
function connectionNamed(connection: string | string[] | undefined): Set<string> | undefined {
  if (connection === undefined || connection === 'keep-alive' || connection === 'close') return undefined;
  const named = new Set<string>();
  for (const option of (typeof connection === 'string' ? connection : connection.join(',')).split(',')) {
    const name = option.trim().toLowerCase();
    if (name !== '' && name !== 'close' && !HOP_BY_HOP.has(name)) named.add(name);
  }
  return named.size > 0 ? named : undefined;
}

const targets = new WeakMap<Upstream, { url: string; origin: string; path: string }>();

/**
 * An upstream's URL as a dispatcher takes it (origin, and path with its query), parsed once per upstream.
 *
 * @example targetOf({ url: 'http://127.0.0.1:3000/mcp?key=k', … }) // { origin: 'http://127.0.0.1:3000', path: '/mcp?key=k' }
 */
function targetOf(upstream: Upstream): { origin: string; path: string } {
  const known = targets.get(upstream);
  if (known?.url === upstream.url) return known;
  const url = new URL(upstream.url);
  const target = { url: upstream.url, origin: url.origin, path: `${url.pathname}${url.search}` };
  targets.set(upstream, target);
  return target;
}

/**
 * What tells an upstream request that its caller hung up (in MCP, the cancellation of that
 * request): an `AbortSignal`, or the lighter emitter of `hangUpOf`, whose `abort` event undici
 * takes as a signal's.
 */
export type HangUp = AbortSignal | (EventEmitter & { readonly aborted: boolean; readonly reason?: unknown });

/**
 * The hang-up of the caller answered through `outgoing` (Node's response): aborted when its
 * connection closes before the answer is all sent. One emitter and one listener, where the
 * request's `AbortSignal` (an AbortController per request, listened to by undici as an
 * EventTarget) cost ~15 µs per call, a tenth of a call that passes through.
 *
 * @example await send(upstream, { method: 'POST', headers: requestHeaders(c) }, body, hangUpOf(c.env.outgoing));
 */
export function hangUpOf(outgoing: ServerResponse): HangUp {
  const gone = () => !outgoing.writableFinished && (outgoing.destroyed || outgoing.socket === null || outgoing.socket.destroyed);
  const hangUp = Object.assign(new EventEmitter(), { aborted: gone() });
  if (!hangUp.aborted)
    outgoing.once('close', () => {
      if (outgoing.writableFinished) return;
      hangUp.aborted = true;
      hangUp.emit('abort');
    });
  return hangUp;
}

/**
 * Forwards one MCP request to the upstream: `body` as JSON (turnpike's encoding of what it judged), the MCP headers
 * (`Mcp-Session-Id`, `MCP-Protocol-Version`, `Last-Event-ID`, `Mcp-Method`, `Mcp-Name`,
 * `Mcp-Param-*`, anything unknown) kept, the caller's credentials swapped for the operator's,
 * and this turnpike added to `Turnpike-Hop` (see `nextHops`; the gateway refused a loop before).
 * The client's abort reaches the upstream through `signal`.
 */
export async function send(upstream: Upstream, request: Forwarded, body: Uint8Array | undefined, signal?: HangUp): Promise<UpstreamAnswer> {
  const headers: HeaderRecord = {};
  const hop = connectionNamed(request.headers.connection);
  for (const name in request.headers) if (!NOT_FORWARDED.has(name) && !hop?.has(name)) headers[name] = request.headers[name]!;
  if (body) headers['content-type'] = 'application/json';
  for (const name in upstream.headers) headers[name.toLowerCase()] = upstream.headers[name]!;
  // Without it HTTP lets a server compress as it likes; turnpike must read an answer to judge it (see `withoutPaidResponses`).
  headers['accept-encoding'] = 'identity';
  headers[HOP_HEADER] = nextHops(request.headers[HOP_HEADER] ?? null);
  // The dispatcher's request API, not fetch (nor undici's request(url), which parses the URL again
  // on every call): the same connection pool at a fraction of the CPU per call.
  const { origin, path } = targetOf(upstream);
  let response: Dispatcher.ResponseData;
  try {
    response = await (upstream.dispatcher ?? agent).request({
      origin,
      path,
      method: request.method as 'POST' | 'GET' | 'DELETE',
      headers,
      body: body && body.byteLength > 0 ? body : null,
      signal,
    });
  } catch (error) {
    throw new UpstreamError(`the MCP server at ${shown(upstream.url)} did not answer`, error);
  }
  const out: HeaderRecord = {};
  const answerHop = connectionNamed(response.headers.connection);
  for (const name in response.headers) {
    const value = response.headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || UPSTREAM_ONLY.has(name) || answerHop?.has(name)) continue;
    out[name] = typeof value === 'string' ? value : value.join(', ');
  }
  // Served on turnpike's origin, the console's: a page an upstream sends runs sandboxed (in no origin), unsniffed.
  out['content-security-policy'] = 'sandbox';
  out['x-content-type-options'] = 'nosniff';
  const status = response.statusCode;
  if (request.method === 'HEAD' || status === 204 || status === 304) {
    response.body.resume();
    return { status, headers: out, body: null };
  }
  if (!String(response.headers['content-type'] ?? '').includes('text/event-stream')) {
    try {
      return { status, headers: out, body: await response.body.bytes() };
    } catch (error) {
      throw new UpstreamError(`the MCP server at ${shown(upstream.url)} broke off its answer`, error);
    }
  }
  const stream = Readable.toWeb(response.body) as ReadableStream<Uint8Array>;
  return { status, headers: out, body: signal ? endQuietlyOnAbort(stream, signal) : stream };
}

/**
 * A client that hangs up aborts the upstream request, which errors its body; that is the end of
 * the conversation, not a fault to report, so the stream just ends.
 */
function endQuietlyOnAbort(stream: ReadableStream<Uint8Array>, signal: HangUp): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (error) {
        if (signal.aborted) controller.close();
        else controller.error(error);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

/**
 * A paid call's signal: aborted when `ms` pass, and only then, with a `TimeoutError` as its
 * reason. A caller hanging up does not stop a call the upstream is running: its result is read,
 * charged for and kept for the same payment. `clear` once the answer is in. An emitter and a
 * timer, as `hangUpOf`: an AbortController with undici's listener on its signal costs ~4.5 µs
 * more per paid call (`AbortSignal.timeout` ten times as much).
 *
 * @example const deadline = callDeadline(60_000); await send(upstream, request, body, deadline.signal); deadline.clear();
 */
export function callDeadline(ms: number): { signal: HangUp; clear(): void } {
  const signal = Object.assign(new EventEmitter(), { aborted: false, reason: undefined as unknown });
  const timer = setTimeout(() => {
    signal.aborted = true;
    // What undici fails the request with, and so what the undone charge says.
    signal.reason = new DOMException(`the upstream took longer than ${ms} ms`, 'TimeoutError');
    signal.emit('abort');
  }, ms).unref();
  return { signal, clear: () => clearTimeout(timer) };
}

/**
 * An upstream URL as logs and messages may show it: origin and path, a key-like path segment
 * redacted (`shownUrl`: a token some hosted MCP servers put in the path). The query and credentials
 * are dropped: a server with `auth.mode: 'query'` has its secret there.
 *
 * @example shown('https://u:p@mcp.example.com/mcp?api_key=s3cret') // 'https://mcp.example.com/mcp'
 */
export const shown = (url: string) => {
  const { origin, pathname } = new URL(url);
  return shownUrl(`${origin}${pathname}`);
};

/**
 * The upstream could not be reached or broke off: a 502 for the caller, never a 500. `message` (for
 * the log, the operator's events) names the upstream and what failed; `reason` is what a paying
 * caller may be told (it is written in their ledger): a timeout as the deadline said it, else the
 * failure's code alone. A socket error's message names the upstream's address or host, and a
 * caller who learns where the upstream is can call it without paying.
 *
 * @example new UpstreamError('the MCP server at https://mcp.example.com/mcp did not answer', econnrefused).reason // 'ECONNREFUSED'
 */
export class UpstreamError extends BaseError<'upstream_unavailable'> {
  override name = 'UpstreamError';
  readonly reason: string;
  constructor(message: string, cause?: unknown) {
    const failure = cause as { name?: unknown; message?: unknown; code?: unknown } | undefined;
    const said = typeof failure?.message === 'string' ? failure.message : String(cause);
    super(cause === undefined ? message : `${message}: ${said}`, { code: 'upstream_unavailable', cause });
    this.reason =
      failure?.name === 'TimeoutError' && typeof failure.message === 'string'
        ? failure.message
        : typeof failure?.code === 'string' && /^[\w-]{1,40}$/.test(failure.code)
          ? failure.code
          : 'the connection failed';
  }
}
