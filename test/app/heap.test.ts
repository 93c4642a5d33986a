import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { YOUNG_GENERATION_MB } from '../../src/app/heap.js';

/**
 * Runs `body` in a fresh Node process (a heap of its own, as a served turnpike has) and returns its
 * young generation's size in MB when it is done.
 */
async function youngGenerationAfter(body: string): Promise<number> {
  const heap = new URL('../../src/app/heap.ts', import.meta.url).href;
  const script = `
    const v8 = await import('node:v8');
    ${body.replaceAll('HEAP', JSON.stringify(heap))}
    // A server's work: turns of the event loop that each allocate, some of it kept past scavenges.
    const kept = [];
    for (let turn = 0; turn < 30; turn++) {
      for (let i = 0; i < 1e5; i++) { const o = { i, s: 'x' + i }; if (i % 3 === 0) kept.push(o); }
      await new Promise((resolve) => setImmediate(resolve));
    }
    const space = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    process.stdout.write(String(space.space_size / 2 ** 20));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
  return Number(stdout);
}

test('a process that calls leanHeap first holds its young generation at YOUNG_GENERATION_MB while its heap grows turn after turn', async () => {
  const lean = await youngGenerationAfter(`const { leanHeap } = await import(HEAP); leanHeap();`);
  assert.equal(lean, YOUNG_GENERATION_MB);
  // The same work without it: V8 grows its young generation past that.
  assert.ok((await youngGenerationAfter('')) > YOUNG_GENERATION_MB);
});
