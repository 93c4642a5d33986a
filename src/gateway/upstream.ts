import { Agent, fetch as undiciFetch } from 'undici';

/** Headers that describe one hop, not the message: never forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
  'proxy-connection',
  'host',
  'content-length',
]);
/** The caller's credentials and payments are turnpike's business, never the upstream's. */
const CALLER_ONLY = new Set(['authorization', 'x-api-key', 'payment-signature', 'x-payment', 'cookie']);

export type Upstream = {
  url: string;
  /** The operator's own credential for the upstream, e.g. `Authorization: Bearer …`. */
  headers: Record<string, string>;
  timeoutMs: number;
};

// Long-lived SSE streams must not be cut by undici's default 300 s idle timeouts.
const agent = new Agent({ bodyTimeout: 0, headersTimeout: 0, keepAliveTimeout: 30_000 });

/**
 * Forwards one MCP request to the upstream: the body's bytes as they came, the MCP headers
 * (`Mcp-Session-Id`, `MCP-Protocol-Version`, `Last-Event-ID`, `Mcp-Method`, `Mcp-Name`,
 * `Mcp-Param-*`, anything unknown) kept, the caller's credentials swapped for the operator's.
 * The client's abort reaches the upstream through `signal`.
 */
export async function forward(upstream: Upstream, request: Request, body: Uint8Array | undefined, signal?: AbortSignal): Promise<Response> {
  const headers = new Headers();
  request.headers.forEach((value, name) => {
    if (!HOP_BY_HOP.has(name) && !CALLER_ONLY.has(name)) headers.set(name, value);
  });
  for (const [name, value] of Object.entries(upstream.headers)) headers.set(name, value);
  const response = await undiciFetch(upstream.url, {
    method: request.method,
    headers: Object.fromEntries(headers),
    body: body && body.byteLength > 0 ? body : undefined,
    dispatcher: agent,
    redirect: 'manual',
    signal,
  });
  const out = new Headers();
  response.headers.forEach((value, name) => {
    // undici has already decoded a compressed body, so its encoding no longer applies.
    if (!HOP_BY_HOP.has(name) && name !== 'content-encoding') out.set(name, value);
  });
  const stream = response.body as ReadableStream<Uint8Array> | null;
  return new Response(stream && signal ? endQuietlyOnAbort(stream, signal) : stream, { status: response.status, headers: out });
}

/**
 * A client that hangs up aborts the upstream request, which errors its body; that is the end of
 * the conversation, not a fault to report, so the stream just ends.
 */
function endQuietlyOnAbort(stream: ReadableStream<Uint8Array>, signal: AbortSignal): ReadableStream<Uint8Array> {
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
