import assert from 'node:assert/strict';
import { type Socket, createServer } from 'node:net';
import { test } from 'node:test';
import { toolsLookups } from '../../src/upstream/upstream-tools.js';
import { eventually } from '../helpers/served.js';

test('tool lookups are bounded: at most `concurrency` run at once against silent upstreams, each given up after its timeout', async () => {
  const sockets = new Set<Socket>();
  const requests: number[] = [];
  const silent = createServer((socket) => {
    sockets.add(socket);
    socket.once('data', () => requests.push(performance.now()));
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(silent.address() as { port: number }).port}/mcp`;
  try {
    const lookups = toolsLookups({ timeoutMs: 400, ttlMs: 60_000, concurrency: 2, waitMs: 100 });
    const sources = Array.from({ length: 6 }, () => lookups.of({ url, headers: {}, timeoutMs: 3_600_000 }));
    const started = performance.now();
    const first = await Promise.all(sources.map((tools) => tools()));
    // Waiting for the lookups themselves would take 1.2 s; waitMs is 100 ms (the margin is for a busy machine).
    assert.ok(performance.now() - started < 1_000, 'a read waits for a first lookup no longer than waitMs');
    assert.ok(first.every((known) => known.tools.length === 0 && /not listed its tools yet/.test(known.error!)));
    // Six lookups, two at a time, 400 ms each: all given up after about 1.2 s (later on a loaded machine).
    // A read after a failed lookup starts none (the TTL is a minute), so polling changes nothing.
    await eventually(
      () => Promise.all(sources.map((tools) => tools())),
      (later) => later.every((known) => /no answer within 0.4 s/.test(known.error ?? '')),
      'every lookup given up',
    );
    // Each lookup sends one request (initialize) and waits: a third starts only when one of two is given up.
    // A busy machine can only delay arrivals, so the k-th pair cannot arrive before k timeouts have passed.
    assert.equal(requests.length, 6);
    const after = requests.map((at) => Math.round(at - started));
    for (let i = 2; i < 6; i++) assert.ok(after[i]! >= 400 * Math.floor(i / 2) - 5, `requests at ${after.join(', ')} ms`);
  } finally {
    await new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), silent.close(() => resolve())));
  }
});
