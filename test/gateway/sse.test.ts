import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rewriteSseResponse } from '../../src/gateway/sse.js';

const stream = (chunks: string[], fail = false) =>
  new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
      if (fail) controller.error(new Error('upstream died'));
      else controller.close();
    },
  });

async function read(s: ReadableStream<Uint8Array>) {
  let text = '';
  for await (const chunk of s as unknown as AsyncIterable<Uint8Array>) text += new TextDecoder().decode(chunk);
  return text;
}

test('frames pass byte for byte; only the response to our id is rewritten, its id/event lines kept', async () => {
  const progress = 'event: message\r\nid: 7\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\r\n\r\n';
  const other = ': keep-alive\n\nretry: 500\n\n';
  const response = 'id: 8\nevent: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"content":[]}}\n\n';
  let ended: boolean | undefined;
  // Split mid-frame to prove frames are reassembled across chunks.
  const input = [progress + other.slice(0, 5), other.slice(5) + response.slice(0, 20), response.slice(20)];
  const out = await read(
    rewriteSseResponse(stream(input), 1, async (m) => ({ ...m, result: { rewritten: true } }), (saw) => (ended = saw)),
  );
  assert.equal(out, `${progress}${other}id: 8\nevent: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"rewritten":true}}\n\n`);
  assert.equal(ended, true);
});

test('a stream that breaks off before the response reports it, once', async () => {
  const calls: boolean[] = [];
  const out = rewriteSseResponse(stream(['data: {"jsonrpc":"2.0","method":"x"}\n\n'], true), 1, async (m) => m, (saw) => calls.push(saw));
  await assert.rejects(read(out), /upstream died/);
  assert.deepEqual(calls, [false]);
});
