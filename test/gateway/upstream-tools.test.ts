import assert from 'node:assert/strict';
import { type Socket, createServer } from 'node:net';
import { test } from 'node:test';
import { toolsLookups } from '../../src/gateway/upstream-tools.js';

test('tool lookups are bounded: at most `concurrency` run at once against silent upstreams, each given up after its timeout', async () => {
  const sockets = new Set<Socket>();
  const requests: number[] = [];
  const silent = createServer((socket) => {
    sockets.add(socket);
    socket.on('data', () => requests.push(performance.now()));
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(silent.address() as { port: number }).port}/mcp`;
  try {
    const lookups = toolsLookups({ timeoutMs: 400, ttlMs: 60_000, concurrency: 2, waitMs: 100 });
    const sources = Array.from({ length: 6 }, () => lookups.of({ url, headers: {}, timeoutMs: 3_600_000 }));
    const started = performance.now();
    const first = await Promise.all(sources.map((tools) => tools()));
    assert.ok(performance.now() - started < 400, 'a read waits for a first lookup no longer than waitMs');
    assert.ok(first.every((known) => known.tools.length === 0 && /not listed its tools yet/.test(known.error!)));
    // Six lookups, two at a time, 400 ms each: all given up after about 1.2 s.
    await new Promise((r) => setTimeout(r, 1_600));
    const later = await Promise.all(sources.map((tools) => tools()));
    assert.ok(later.every((known) => /no answer within 0.4 s/.test(known.error!)), JSON.stringify(later));
    // Each lookup sends one request (initialize) and waits: a third starts only when one of two is given up.
    assert.equal(requests.length, 6);
    const at = requests.map(Math.round).join(', ');
    for (let i = 0; i + 2 < requests.length; i++) assert.ok(requests[i + 2]! - requests[i]! > 300, `requests at ${at} ms`);
  } finally {
    await new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), silent.close(() => resolve())));
  }
});
