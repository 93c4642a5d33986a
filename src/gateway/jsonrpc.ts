import { type JsonRpcId, rewriteSseResponse } from './sse.js';

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
 * is read whole (it is one message); an SSE stream is rewritten frame by frame as it flows.
 * `onEnd(false)` says the answer held no response to `id` (the call's outcome is unknown).
 */
export async function rewrite(
  response: Response,
  id: JsonRpcId,
  fn: (message: Message) => Promise<Message>,
  onEnd: (sawResponse: boolean) => void = () => {},
): Promise<Response> {
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('text/event-stream') && response.body) {
    return new Response(rewriteSseResponse(response.body, id, fn, onEnd), { status: response.status, headers: response.headers });
  }
  if (!type.includes('application/json')) {
    onEnd(false);
    return response;
  }
  const text = await response.text();
  let message: Message;
  try {
    message = JSON.parse(text) as Message;
  } catch {
    onEnd(false);
    return new Response(text, { status: response.status, headers: response.headers });
  }
  if (message.id !== id) {
    onEnd(false);
    return new Response(text, { status: response.status, headers: response.headers });
  }
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  return new Response(JSON.stringify(await fn(message)), { status: response.status, headers });
}
