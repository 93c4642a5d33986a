/** JSON-RPC id: what ties a response to the request that asked. */
export type JsonRpcId = string | number | null;

type Message = { id?: JsonRpcId; result?: unknown; error?: unknown; method?: string };

const FRAME_END = /\r\n\r\n|\n\n|\r\r/;

/**
 * Passes an upstream SSE stream through frame by frame, byte for byte, except the one frame that
 * carries the JSON-RPC response to `id`: that message goes through `rewrite` (which may settle a
 * payment first) and is re-emitted with the frame's other fields (`id:`, `event:`) kept. Progress
 * notifications and anything else stream on as they arrive; nothing is buffered whole.
 *
 * `onEnd(saw)` is called once the stream ends, fails or is cancelled, saying whether that response
 * went through.
 */
export function rewriteSseResponse(
  body: ReadableStream<Uint8Array>,
  id: JsonRpcId,
  rewrite: (message: Message) => Promise<Message>,
  onEnd: (sawResponse: boolean) => void,
): ReadableStream<Uint8Array> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let buffer = '';
  let saw = false;

  const frame = async (raw: string, end: string): Promise<string> => {
    if (saw) return raw + end;
    const lines = raw.split(/\r\n|\n|\r/);
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(l.startsWith('data: ') ? 6 : 5));
    if (data.length === 0) return raw + end;
    let message: Message;
    try {
      message = JSON.parse(data.join('\n')) as Message;
    } catch {
      return raw + end;
    }
    if (message.method !== undefined || message.id !== id) return raw + end;
    saw = true;
    const rewritten = await rewrite(message);
    const others = lines.filter((l) => !l.startsWith('data:'));
    return [...others, `data: ${JSON.stringify(rewritten)}`].join('\n') + end;
  };

  const reader = body.getReader();
  let ended = false;
  const end = () => {
    if (!ended) onEnd(saw);
    ended = true;
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: Awaited<ReturnType<typeof reader.read>>;
      try {
        chunk = await reader.read();
      } catch (error) {
        // The upstream broke off mid-stream: whatever was held for this call is given up.
        end();
        controller.error(error);
        return;
      }
      if (chunk.done) {
        if (buffer) controller.enqueue(encoder.encode(buffer));
        end();
        controller.close();
        return;
      }
      buffer += decoder.decode(chunk.value, { stream: true });
      for (let match = FRAME_END.exec(buffer); match; match = FRAME_END.exec(buffer)) {
        const raw = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        controller.enqueue(encoder.encode(await frame(raw, match[0])));
      }
    },
    cancel: (reason) => {
      end();
      return reader.cancel(reason);
    },
  });
}
