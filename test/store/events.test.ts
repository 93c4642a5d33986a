import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { callEvent } from '../../src/events/events.js';
import type { EventEndpoint } from '../../src/store/events/events.js';
import { newId } from '../../src/store/ids.js';
import { backends } from '../helpers/stores.js';

const endpoint = (operatorId?: string): EventEndpoint => ({
  id: newId('we'),
  kind: 'webhook',
  url: 'https://hooks.example.com/turnpike',
  createdAt: Date.now(),
  ...(operatorId ? { operatorId } : {}),
});
const paid = (operatorId?: string) =>
  callEvent({
    type: 'call.paid',
    server: { id: 'srv_1', slug: 'weather' },
    tool: 'forecast',
    rail: 'credits',
    amount: 1_000n,
    ...(operatorId ? { operatorId } : {}),
  });

for (const backend of backends) {
  describe(`events outbox (${backend.name})`, { skip: backend.skip }, () => {
    test('an event goes to every live endpoint of its operator and to the instance’s own, once per id', async () => {
      const store = await backend.open();
      const mine = endpoint('op_a');
      const theirs = endpoint('op_b');
      const instance = { id: 'we_instance', kind: 'otlp' as const, url: 'http://collector:4318/v1/logs', createdAt: Date.now() };
      await store.events.addEndpoint(mine);
      await store.events.addEndpoint(theirs);
      await store.events.setInstanceEndpoints([instance]);
      const event = paid('op_a');
      await store.events.record([event]);
      await store.events.record([event]); // a retry of the same event: nothing new
      const claimed = await store.events.claim(store.instanceId, Date.now(), 60_000, 10);
      assert.deepEqual(claimed.map((d) => d.endpointId).sort(), [instance.id, mine.id].sort());
      assert.ok(claimed.every((d) => d.eventId === event.id && d.payload === event.payload));
      assert.deepEqual(JSON.parse(claimed[0]!.payload).amount, '1000');
      await store.close();
    });

    test('the events of a batch of calls are written in its transaction: a batch that fails leaves no event', async () => {
      const store = await backend.open();
      await store.events.addEndpoint(endpoint('op_a'));
      const event = paid('op_a');
      const broken = { id: 'ch_1', serverId: 's', rail: 'bogus' } as never; // a charge the store refuses
      await assert.rejects(store.operators.recordCalls({ charges: [broken], denials: [], events: [event] }));
      assert.equal((await store.events.backlog()).pending, 0);
      await store.operators.recordCalls({
        charges: [],
        denials: [{ serverId: 's', day: 1, reason: 'payment_missing', count: 1 }],
        events: [event],
      });
      assert.equal((await store.events.backlog()).pending, 1);
      await store.close();
    });

    test('a claimed delivery is nobody else’s until its lease runs out, and then carries the same event id', async () => {
      const open = backend.shared();
      const [a, b] = [await open(), await open()];
      await a.events.addEndpoint(endpoint('op_a'));
      const event = paid('op_a');
      await a.events.record([event]);
      const now = Date.now();
      const [first] = await a.events.claim(a.instanceId, now, 1_000, 10);
      assert.equal(first?.eventId, event.id);
      assert.deepEqual(await b.events.claim(b.instanceId, now + 500, 1_000, 10), [], 'leased to a');
      // a dies with the lease; once it has run out, b takes the delivery, and a can no longer finish it.
      const [again] = await b.events.claim(b.instanceId, now + 1_001, 1_000, 10);
      assert.equal(again?.eventId, event.id);
      assert.equal(await a.events.finish(first!, a.instanceId, { delivered: true, status: 200 }), false);
      assert.equal(await b.events.finish(again!, b.instanceId, { delivered: true, status: 200 }), true);
      assert.deepEqual(await b.events.backlog(), { pending: 0, failed: 0 });
      await a.close();
      await b.close();
    });

    test('a failed attempt is retried at its time, logged, and given up when told; a deleted endpoint’s deliveries are given up', async () => {
      const store = await backend.open();
      const hook = endpoint('op_a');
      await store.events.addEndpoint(hook);
      const [e1, e2] = [paid('op_a'), paid('op_a')];
      await store.events.record([e1, e2]);
      const now = Date.now();
      for (const d of await store.events.claim(store.instanceId, now, 60_000, 10))
        await store.events.finish(d, store.instanceId, { delivered: false, status: 500, error: 'HTTP 500', retryAt: now + 5_000 });
      assert.equal(await store.events.due(now + 1_000), false);
      assert.deepEqual(await store.events.claim(store.instanceId, now + 1_000, 60_000, 10), [], 'not due yet');
      assert.equal(await store.events.due(now + 5_000), true);
      const due = await store.events.claim(store.instanceId, now + 5_000, 60_000, 1);
      assert.equal(due.length, 1);
      assert.equal(due[0]!.attempts, 1);
      await store.events.finish(due[0]!, store.instanceId, { delivered: false, error: 'connect ECONNREFUSED' });
      const log = await store.events.deliveries(hook.id, { limit: 10 });
      assert.deepEqual(
        log.map((d) => [d.state, d.attempts]).sort(),
        [
          ['failed', 2],
          ['pending', 1],
        ].sort(),
      );
      assert.equal(log.find((d) => d.state === 'failed')?.lastError, 'connect ECONNREFUSED');
      const { oldestAt, ...counts } = await store.events.backlog();
      assert.deepEqual(counts, { pending: 1, failed: 1 });
      assert.ok(oldestAt !== undefined && oldestAt <= Date.now());

      assert.equal(await store.events.deleteEndpoint(hook.id, 'op_b'), false, 'not op_b’s');
      assert.equal(await store.events.deleteEndpoint(hook.id, 'op_a'), true);
      assert.deepEqual(await store.events.backlog(), { pending: 0, failed: 2 });
      assert.deepEqual(await store.events.endpointOwners(), []);
      await store.close();
    });
  });
}
