import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EventInput } from '../../src/events/events.js';
import { unpaidEventLimit } from '../../src/events/suppress.js';

const server = (id: string) => ({ id, slug: id });

test('challenges and refusals of one server share the bound, another server has its own, and paid calls are never held back', () => {
  const summaries: EventInput[] = [];
  const limit = unpaidEventLimit({ perWindow: 3, windowMs: 60_000 }, (s) => summaries.push(s));
  const at = Math.floor(Date.now() / 60_000) * 60_000 + 1_000;
  const a = server('a');
  const admitted = [
    limit.admit({ type: 'call.challenged', server: a, reason: 'payment_missing' }, at),
    limit.admit({ type: 'call.refused', server: a, reason: 'oauth_invalid_token' }, at),
    limit.admit({ type: 'call.challenged', server: a, reason: 'payment_missing' }, at),
    limit.admit({ type: 'call.refused', server: a, reason: 'oauth_invalid_token' }, at),
    limit.admit({ type: 'call.challenged', server: a, reason: 'payment_missing' }, at),
    limit.admit({ type: 'call.challenged', server: a, reason: 'payment_missing' }, at),
  ];
  assert.deepEqual(admitted, [true, true, true, false, false, false]);
  assert.ok(limit.admit({ type: 'call.paid', server: a, amount: 10_000n }, at));
  assert.ok(limit.admit({ type: 'call.challenged', server: server('b'), reason: 'payment_missing' }, at));

  // The next window opens with a fresh bound and closes the last one's count.
  assert.ok(limit.admit({ type: 'call.challenged', server: a, reason: 'payment_missing' }, at + 60_000));
  assert.equal(summaries.length, 1);
  assert.deepEqual(summaries[0], {
    type: 'calls.suppressed',
    server: a,
    data: {
      from: new Date(at - 1_000).toISOString(),
      until: new Date(at + 59_000).toISOString(),
      limit: 3,
      suppressed: 3,
      counts: { 'call.refused': { oauth_invalid_token: 1 }, 'call.challenged': { payment_missing: 2 } },
    },
  });
  limit.close(at + 60_000);
  assert.equal(summaries.length, 1, 'nothing suppressed in the open windows: no summary');
});

test('a stopping instance raises the summary of the window still open, for the server’s operator', () => {
  const summaries: EventInput[] = [];
  const limit = unpaidEventLimit({ perWindow: 1, windowMs: 60_000 }, (s) => summaries.push(s));
  const now = Date.now();
  for (let i = 0; i < 5; i++) limit.admit({ type: 'call.refused', server: server('c'), operatorId: 'op_1', reason: 'key_revoked' }, now);
  limit.close(now);
  assert.equal(summaries.length, 1);
  assert.deepEqual(
    [summaries[0]?.operatorId, summaries[0]?.data?.suppressed, summaries[0]?.data?.until],
    ['op_1', 4, new Date(now).toISOString()],
  );
});
