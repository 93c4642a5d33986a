/** JSON-RPC id: what ties a response to the request that asked. */
export type JsonRpcId = string | number | null;

const FRAME_END = /\r\n\r\n|\n\n|\r\r/;
const LINE_END = /\r\n|\n|\r/;

/**
 * What a frame's replacement is: its new text (without the blank line that ends it), `undefined`
 * to pass it on byte for byte, or `null` to drop it.
 */
export type FrameMap = (frame: string) => Promise<string | null | undefined> | string | null | undefined;

/**
 * Passes an SSE stream on frame by frame as it arrives (nothing is buffered whole), each complete
 * frame through `map`. A frame the stream ends in the middle of is never dispatched by a client
 * (the SSE rules), so it is not passed on either.
 *
 * `keepReading`: when the reader cancels (the caller hung up), the source is still read to its end
 * and every frame still mapped, the output thrown away, so what `map` does for a frame (charging a
 * paid call's result and keeping it) happens whether or not anyone is listening. Otherwise a
 * cancel reaches the source. `onEnd` runs once, when the source ended, failed or was cancelled.
 *
 * @example
 * const quiet = mapSseFrames(body, (f) => (f.startsWith(':') ? null : undefined), { onEnd: () => {} });
 */
export function mapSseFrames(
  body: ReadableStream<Uint8Array>,
  map: FrameMap,
  options: { onEnd: () => void; keepReading?: boolean },
): ReadableStream<Uint8Array> {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  const reader = body.getReader();
  let buffer = '';
  let ended = false;
  const end = () => {
    if (!ended) options.onEnd();
    ended = true;
  };

  /** Reads one chunk and maps the frames it completes: the text to pass on, or null at the end. */
  async function step(): Promise<string | null> {
    const chunk = await reader.read();
    if (chunk.done) return null;
    buffer += decoder.decode(chunk.value, { stream: true });
    let out = '';
    for (let match = FRAME_END.exec(buffer); match; match = FRAME_END.exec(buffer)) {
      const raw = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      const mapped = await map(raw);
      if (mapped !== null) out += (mapped ?? raw) + match[0];
    }
    return out;
  }
  // A cancel can come while a pull is reading: steps run one after the other, never interleaved.
  let last: Promise<unknown> = Promise.resolve();
  const next = () => {
    const stepped = last.then(step);
    last = stepped.catch(() => {});
    return stepped;
  };

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        let out: string | null;
        try {
          out = await next();
        } catch (error) {
          end();
          controller.error(error);
          return;
        }
        if (out === null) {
          end();
          controller.close();
          return;
        }
        if (out) return controller.enqueue(encoder.encode(out));
      }
    },
    async cancel(reason) {
      if (!options.keepReading) {
        end();
        return reader.cancel(reason);
      }
      void (async () => {
        try {
          while ((await next()) !== null);
        } catch {
          // The source failed after the caller left: `onEnd` reports the call's outcome.
        } finally {
          end();
        }
      })();
    },
  });
}

/** A frame's JSON-RPC message (its `data:` lines joined), if it carries one. */
export function frameMessage(frame: string): { lines: string[]; message: unknown } | undefined {
  const lines = frame.split(LINE_END);
  const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(l.startsWith('data: ') ? 6 : 5));
  if (data.length === 0) return undefined;
  try {
    return { lines, message: JSON.parse(data.join('\n')) };
  } catch {
    return undefined;
  }
}

/** `lines` with their `data:` replaced by one line carrying `message`; `id:`, `event:` and the rest kept. */
export const withData = (lines: string[], message: unknown) =>
  [...lines.filter((l) => !l.startsWith('data:')), `data: ${JSON.stringify(message)}`].join('\n');
