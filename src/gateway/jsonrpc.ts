import { type Message, cannotHoldPaidResponse, isPaidResponse, isResultWithoutId } from './messages.js';
import { type JsonRpcId, frameMessage, mapSseFrames, withData } from './sse.js';
import { type HeaderRecord, type UpstreamAnswer, toResponse } from '../upstream/upstream.js';

export type { Message } from './messages.js';
export type ToolResult = { isError?: boolean; _meta?: Record<string, unknown>; [key: string]: unknown };

export const rpcError = (id: JsonRpcId, code: number, message: string, status: number, data?: unknown) =>
  new Response(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined ? { data } : {}) } }), {
    status,
    headers: { 'content-type': 'application/json' },
  });

export const rpcResult = (id: JsonRpcId, result: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify({ jsonrpc: '2.0', id, result }), { headers: { 'content-type': 'application/json', ...headers } });

const isSse = (headers: HeaderRecord) => headers['content-type']?.includes('text/event-stream') ?? false;
const decoder = new TextDecoder();

/**
 * Answers a forwarded request from the upstream's answer: the response to `ids.upstream` goes
 * through `fn` (which may settle a payment first) and leaves with the caller's id, `ids.caller`;
 * nothing else that answers a priced call gets out (see `withoutPaidResponses`). A JSON answer is
 * one message, already whole; an SSE stream is rewritten frame by frame as it flows, and read to its
 * end even if the caller hangs up, so a result the upstream produced is charged for and kept.
 * `onEnd(false)` says the answer held no response to the call (its outcome is unknown). `extra`
 * gives headers to add once `fn` is done (see `withHeaders`).
 *
 * `paid`: the answer to a priced call carries nothing but that call's response, and the requests
 * and notifications of a stream: any other response (a result under another id: an upstream that
 * answers a string id with null), a data frame that is not JSON, or an answer that is not the
 * call's response at all is not passed on (`notTheResult`), whatever id or prefix it has.
 *
 * @example
 * await answerCall(answer, { upstream: paidRequestId(), caller: 1 }, async (m) => settleThen(m), (saw) => saw || undo());
 */
export async function answerCall(
  answer: UpstreamAnswer,
  ids: { upstream: JsonRpcId; caller: JsonRpcId },
  fn: (message: Message) => Promise<Message>,
  onEnd: (sawResponse: boolean) => void = () => {},
  extra?: () => HeaderRecord,
  paid = false,
): Promise<Response> {
  const { status, headers, body } = answer;
  const answered = (message: Message) => fn({ ...message, id: ids.caller });
  const unmatched = () => {
    onEnd(false);
    return withHeaders(paid ? notTheResult(answer, ids.caller) : withoutPaidResponses(answer, ids.caller), extra);
  };
  if (encoded(headers) || (body instanceof ReadableStream && !isSse(headers))) return unmatched();
  if (body instanceof ReadableStream) {
    let saw = false;
    const frames = mapSseFrames(
      body,
      async (frame) => {
        if (!saw) {
          const parsed = frameMessage(frame);
          const message = parsed?.message as Message | undefined;
          if (parsed && message?.method === undefined && message?.id === ids.upstream) {
            saw = true;
            return withData(parsed.lines, await answered(message));
          }
        }
        return paid ? onlyRequestsFrame(frame) : withoutPaidFrame(frame);
      },
      { onEnd: () => onEnd(saw), keepReading: true },
    );
    return new Response(frames, { status, headers });
  }
  let message: Message | undefined;
  try {
    message = body && headers['content-type']?.includes('application/json') ? (JSON.parse(decoder.decode(body)) as Message) : undefined;
  } catch {
    message = undefined;
  }
  if (message?.id !== ids.upstream || message.method !== undefined) return unmatched();
  const text = JSON.stringify(await answered(message));
  // Into the answer's own record: a Response's `headers` read back would build a Headers object for each call.
  return new Response(text, { status, headers: extra ? { ...headers, ...extra() } : headers });
}

/**
 * `response` with the headers `extra` gives added, unless it is an event stream: a stream's
 * headers left before the result they would speak of.
 *
 * @example withHeaders(rpcError(id, -32603, 'the tool’s server did not answer', 502), () => ({ 'x-credits-remaining': '5' }))
 */
export function withHeaders(response: Response, extra?: () => HeaderRecord): Response {
  if (!extra || response.headers.get('content-type')?.includes('text/event-stream')) return response;
  for (const [name, value] of Object.entries(extra())) response.headers.set(name, value);
  return response;
}

/**
 * An upstream answer passed on with every response to a priced call removed: the GET stream a
 * caller opens or resumes (`Last-Event-ID`), a free call's stream, a batch's answer. The upstream
 * replays what it sent on a stream when asked to resume it; a paid result it replays there would
 * otherwise leave turnpike unpaid.
 *
 * What cannot be read is not passed on (a 502 JSON-RPC error under `id` instead): an answer
 * with a Content-Encoding (turnpike asks for none, but HTTP lets a server send one anyway), and a
 * body that may hold a paid response (a paid id's prefix, a `\u` escape, a NUL of UTF-16) but is
 * not JSON (an SSE stream labelled text/plain, two messages in a row). Its bytes go to a caller who
 * needs no parser to read them.
 *
 * @example app.get('/', async (c) => withoutPaidResponses(await send(upstream, c.req.raw, undefined)));
 * @example withoutPaidResponses({ status: 200, headers: { 'content-type': 'text/plain' }, body: sseBytes }) // 502
 */
export function withoutPaidResponses(answer: UpstreamAnswer, id: JsonRpcId = null): Response {
  const { status, headers, body } = answer;
  if (encoded(headers)) {
    if (body instanceof ReadableStream) void body.cancel().catch(() => {});
    return unreadable(id, `it came with Content-Encoding ${headers['content-encoding']}`);
  }
  if (body instanceof ReadableStream) {
    const frames = mapSseFrames(body, withoutPaidFrame, { onEnd: () => {} });
    return new Response(frames, { status, headers });
  }
  if (!body) return toResponse(answer);
  // Most answers hold no paid id: looked for in the bytes, they pass without being decoded.
  if (cannotHoldPaidResponse(body) && !body.includes(0)) return toResponse(answer);
  const text = decoder.decode(body);
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return unreadable(id, 'it is not JSON');
  }
  if (!Array.isArray(message)) return isPaidResponse(message) ? new Response(null, { status: 202, headers }) : toResponse(answer);
  const kept = message.filter((m) => !isPaidResponse(m));
  return new Response(kept.length === 0 ? null : JSON.stringify(kept), { status: kept.length === 0 ? 202 : status, headers });
}

/**
 * The answer to a priced call that is not its response (another status, another id, no JSON): the
 * upstream's status if it is an error (its headers kept), else 502, with turnpike's JSON-RPC error
 * under the caller's `id`. Nothing of the upstream's body leaves: it may be the result under
 * another id, or in a form turnpike does not read.
 *
 * @example notTheResult({ status: 500, headers: {}, body: bytes }, 1) // 500, { error: { message: 'the tool’s server answered HTTP 500; …' } }
 */
export function notTheResult(answer: UpstreamAnswer, id: JsonRpcId): Response {
  const { status, body } = answer;
  if (body instanceof ReadableStream) void body.cancel().catch(() => {});
  const { 'content-encoding': _, 'content-type': __, ...headers } = answer.headers;
  const why = status === 200 ? 'something other than the call’s response' : `HTTP ${status}`;
  return withHeaders(
    rpcError(id, -32603, `the tool’s server answered ${why}; you were not charged`, status >= 400 ? status : 502),
    () => headers,
  );
}

/**
 * A frame of a priced call's stream with only requests and notifications kept: a response (the
 * call's own was taken before) or a data frame that is not JSON is dropped; a frame without data
 * (a comment, `retry:`, an event id) passes.
 */
function onlyRequestsFrame(frame: string): string | null | undefined {
  const parsed = frameMessage(frame);
  if (!parsed) return /^data:/m.test(frame) ? null : undefined;
  const { lines, message } = parsed;
  const isRequest = (m: unknown) => typeof m === 'object' && m !== null && typeof (m as Message).method === 'string';
  if (!Array.isArray(message)) return isRequest(message) ? undefined : null;
  const kept = message.filter(isRequest);
  return kept.length === message.length ? undefined : kept.length === 0 ? null : withData(lines, kept);
}

/** Whether an answer's body is content-encoded (gzip, br, …): its bytes cannot be judged as they are. */
const encoded = (headers: HeaderRecord) => {
  const encoding = headers['content-encoding']?.trim().toLowerCase();
  return encoding !== undefined && encoding !== '' && encoding !== 'identity';
};

const unreadable = (id: JsonRpcId, why: string) =>
  rpcError(
    id,
    -32603,
    `the tool’s server sent an answer turnpike cannot read (${why}); it is not passed on, and nothing was charged for it`,
    502,
  );

/**
 * An SSE frame without the responses to priced calls it carries, nor results under the id `null`
 * (`isResultWithoutId`): `undefined` (unchanged) or `null` (dropped) mostly.
 */
function withoutPaidFrame(frame: string): string | null | undefined {
  const paidIdFree = cannotHoldPaidResponse(frame);
  if (paidIdFree && !frame.includes('null')) return undefined;
  const parsed = frameMessage(frame);
  // A frame that may hold one but is not JSON (a framing this parser and the caller's read apart) is dropped.
  if (!parsed) return paidIdFree ? undefined : null;
  const { lines, message } = parsed;
  const withheld = (m: unknown) => isPaidResponse(m) || isResultWithoutId(m);
  if (!Array.isArray(message)) return withheld(message) ? null : undefined;
  const kept = message.filter((m) => !withheld(m));
  return kept.length === message.length ? undefined : kept.length === 0 ? null : withData(lines, kept);
}
