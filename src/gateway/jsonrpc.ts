import { type JsonRpcId, rewriteSseResponse } from './sse.js';
import { type UpstreamAnswer, toResponse } from './upstream.js';

export type Message = { jsonrpc?: string; id?: JsonRpcId; method?: string; params?: Record<string, unknown>; result?: unknown; error?: unknown };
export type ToolResult = { isError?: boolean; _meta?: Record<string, unknown>; [key: string]: unknown };

export const rpcError = (id: JsonRpcId, code: number, message: string, status: number, data?: unknown) =>
  new Response(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined ? { data } : {}) } }), {
    status,
    headers: { 'content-type': 'application/json' },
  });

export const rpcResult = (id: JsonRpcId, result: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify({ jsonrpc: '2.0', id, result }), { headers: { 'content-type': 'application/json', ...headers } });

/**
 * Rewrites the JSON-RPC response to `id` in an upstream answer, JSON or SSE alike. A JSON answer
 * is one message, already whole; an SSE stream is rewritten frame by frame as it flows.
 * `onEnd(false)` says the answer held no response to `id` (the call's outcome is unknown).
 */
export async function rewrite(
  answer: UpstreamAnswer,
  id: JsonRpcId,
  fn: (message: Message) => Promise<Message>,
  onEnd: (sawResponse: boolean) => void = () => {},
): Promise<Response> {
  const { status, headers, body } = answer;
  const type = headers.get('content-type') ?? '';
  if (body instanceof ReadableStream) {
    if (type.includes('text/event-stream')) return new Response(rewriteSseResponse(body, id, fn, onEnd), { status, headers });
    onEnd(false);
    return toResponse(answer);
  }
  if (!body || !type.includes('application/json')) {
    onEnd(false);
    return toResponse(answer);
  }
  let message: Message;
  try {
    message = JSON.parse(decoder.decode(body)) as Message;
  } catch {
    onEnd(false);
    return toResponse(answer);
  }
  if (message.id !== id) {
    onEnd(false);
    return toResponse(answer);
  }
  headers.delete('content-length');
  return new Response(JSON.stringify(await fn(message)), { status, headers });
}

const decoder = new TextDecoder();
