import assert from 'node:assert/strict';
import { test } from 'node:test';
import { answerCall, withoutPaidResponses } from '../../src/gateway/jsonrpc.js';
import { paidRequestId } from '../../src/gateway/messages.js';
import type { Message } from '../../src/gateway/messages.js';

const sse = (body: ReadableStream<Uint8Array>) => ({ status: 200, headers: { 'content-type': 'text/event-stream' }, body });
const rewriteSseResponse = async (
  body: ReadableStream<Uint8Array>,
  id: number,
  fn: (m: Message) => Promise<Message>,
  onEnd: (saw: boolean) => void,
) => (await answerCall(sse(body), { upstream: id, caller: id }, fn, onEnd)).body!;

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
    await rewriteSseResponse(
      stream(input),
      1,
      async (m) => ({ ...m, result: { rewritten: true } }),
      (saw) => (ended = saw),
    ),
  );
  assert.equal(out, `${progress}${other}id: 8\nevent: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"rewritten":true}}\n\n`);
  assert.equal(ended, true);
});

test('a stream that breaks off before the response reports it, once', async () => {
  const calls: boolean[] = [];
  const out = await rewriteSseResponse(
    stream(['data: {"jsonrpc":"2.0","method":"x"}\n\n'], true),
    1,
    async (m) => m,
    (saw) => calls.push(saw),
  );
  await assert.rejects(read(out), /upstream died/);
  assert.deepEqual(calls, [false]);
});

test("a paid call answered on a stream: the response leaves with the caller's id, and is read and charged even when the caller hangs up first", async () => {
  const upstream = paidRequestId();
  let release!: () => void;
  const late = new Promise<void>((r) => (release = r));
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new TextEncoder().encode('id: 1\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n'));
      await late;
      controller.enqueue(new TextEncoder().encode(`id: 2\ndata: {"jsonrpc":"2.0","id":"${upstream}","result":{"content":[]}}\n\n`));
      controller.close();
    },
  });
  const charged: unknown[] = [];
  let ended: boolean | undefined;
  const answer = await answerCall(
    sse(body),
    { upstream, caller: 7 },
    async (m) => (charged.push(m.id), m),
    (saw) => (ended = saw),
  );
  const reader = answer.body!.getReader();
  assert.match(new TextDecoder().decode((await reader.read()).value), /progress/);
  await reader.cancel();
  release();
  for (const deadline = Date.now() + 10_000; ended === undefined && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(charged, [7], "the result was charged for although nobody was reading, under the caller's id");
  assert.equal(ended, true);
});

test('a stream the caller opens or resumes passes everything but the responses to priced calls', async () => {
  const paid = `data: {"jsonrpc":"2.0","id":"${paidRequestId()}","result":{"content":[{"type":"text","text":"secret"}]}}\n\n`;
  const free = 'id: 3\ndata: {"jsonrpc":"2.0","id":5,"result":{}}\n\n';
  const note = 'data: {"jsonrpc":"2.0","method":"notifications/message","params":{"data":"turnpike-paid:x"}}\n\n';
  const out = await read(withoutPaidResponses(sse(stream([free, paid, note]))).body!);
  assert.equal(out, free + note);
});

test("a stream the caller opens or resumes passes no result under the id null (an upstream that cannot echo a priced call's string id), but errors under it", async () => {
  const orphan = 'data: {"jsonrpc":"2.0","id":null,"result":{"content":[{"type":"text","text":"secret"}]}}\n\n';
  const batch =
    'data: [{"jsonrpc":"2.0","id": null,"result":{}},{"jsonrpc":"2.0","method":"notifications/message","params":{"data":null}}]\n\n';
  const error = 'data: {"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}\n\n';
  const free = 'data: {"jsonrpc":"2.0","id":5,"result":{"structuredContent":null}}\n\n';
  const out = await read(withoutPaidResponses(sse(stream([orphan, batch, error, free]))).body!);
  assert.equal(out, `data: [{"jsonrpc":"2.0","method":"notifications/message","params":{"data":null}}]\n\n${error}${free}`);
});

test('a paid id spelled with JSON escapes is still known: the response leaves neither on a stream nor as a JSON answer', async () => {
  // Every character of the id as \uXXXX: the same id to a JSON parser, none of its bytes literal.
  const escaped = [...paidRequestId()].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');
  const paid = `{"jsonrpc":"2.0","id":"${escaped}","result":{"content":[{"type":"text","text":"secret"}]}}`;
  const free = 'data: {"jsonrpc":"2.0","id":5,"result":{"text":"caf\\u00e9"}}\n\n';
  const out = await read(withoutPaidResponses(sse(stream([free, `data: ${paid}\n\n`]))).body!);
  assert.equal(out, free, 'the escaped response is dropped from the stream; an escape in anything else passes as it came');
  const json = withoutPaidResponses({ status: 200, headers: { 'content-type': 'application/json' }, body: new TextEncoder().encode(paid) });
  assert.equal(json.status, 202);
  assert.equal(await json.text(), '');
});

test("a JSON answer that is a priced call's response is not passed on; a batch keeps its other answers", async () => {
  const id = paidRequestId();
  const json = (value: unknown) => ({
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: new TextEncoder().encode(JSON.stringify(value)),
  });
  const one = withoutPaidResponses(json({ jsonrpc: '2.0', id, result: { secret: true } }));
  assert.equal(one.status, 202);
  assert.equal(await one.text(), '');
  const batch = withoutPaidResponses(
    json([
      { jsonrpc: '2.0', id, result: { secret: true } },
      { jsonrpc: '2.0', id: 1, result: {} },
    ]),
  );
  assert.deepEqual(await batch.json(), [{ jsonrpc: '2.0', id: 1, result: {} }]);
});

test('a frame that may hold a paid response but is not JSON to this parser is dropped: a framing the caller reads apart cannot carry one out', async () => {
  // "\n\r" ends a line, then an empty line: two events to an SSE client, one frame of two data lines (not JSON) here.
  const paid = `data: {"jsonrpc":"2.0","id":"${paidRequestId()}","result":{"content":[{"type":"text","text":"secret"}]}}\n\rdata: 1\n\n`;
  const free = 'data: {"jsonrpc":"2.0","id":5,"result":{}}\n\n';
  const out = await read(withoutPaidResponses(sse(stream([paid, free]))).body!);
  assert.equal(out, free);
});
