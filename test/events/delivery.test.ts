import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, describe, test } from 'node:test';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { Agent } from 'undici';
import { createEvents } from '../../src/events/endpoints.js';
import { callEvent } from '../../src/events/events.js';
import { createLogger } from '../../src/log/logger.js';
import { secretBox } from '../../src/operators/secret-box.js';
import type { Store } from '../../src/store/store.js';
import { guardedAgent } from '../../src/upstream/ssrf.js';
import { eventually } from '../helpers/served.js';
import { backends } from '../helpers/stores.js';
import { startWebhookReceiver, verifySignature } from '../helpers/webhook-receiver.js';

const logger = createLogger({ level: 'silent', format: 'json' });
const box = secretBox('cd'.repeat(32));
const open = new Agent();
const guarded = guardedAgent({ allowPrivate: false, connections: 4 });
const retry = { firstDelayMs: 100, maxDelayMs: 400, maxAttempts: 4 };
const server = { id: 'srv_1', slug: 'weather' };

/** The events service of one instance, its worker not started (tests drive it with `deliverDue`) unless `started`. */
function eventsOf(store: Store, options: { webhooks?: { url: string; secret: string }[]; otlp?: string; allowPrivate?: boolean } = {}) {
  return createEvents({
    store,
    box,
    instance: { webhooks: options.webhooks ?? [], ...(options.otlp ? { otlp: { url: options.otlp } } : {}) },
    allowPrivate: options.allowPrivate ?? true,
    dispatchers: { operator: options.allowPrivate === false ? guarded : open, instance: open },
    retry,
    logger,
    pollMs: 20,
  });
}
const paid = (operatorId?: string) =>
  callEvent({
    type: 'call.paid',
    server,
    tool: 'forecast',
    rail: 'credits',
    amount: 1_000n,
    caller: { keyId: 'key_1' },
    ...(operatorId ? { operatorId } : {}),
  });

for (const backend of backends) {
  describe(`event delivery (${backend.name})`, { skip: backend.skip }, () => {
    test('a webhook is signed as documented: the receiver verifies it, and a wrong secret or altered body does not verify', async () => {
      const store = await backend.open();
      const receiver = await startWebhookReceiver();
      const events = eventsOf(store);
      const { secret } = await events.addEndpoint('op_a', receiver.url);
      receiver.state.secret = secret;
      const event = paid('op_a');
      await store.events.record([event]);
      assert.equal(await events.deliverDue(), 1);
      const [got] = receiver.received;
      assert.ok(got?.signed);
      assert.equal(got.eventId, event.id);
      assert.deepEqual(got.event, JSON.parse(event.payload));
      assert.equal(got.event.caller.keyId, 'key_1');
      assert.equal(got.event.amount, '1000');
      // The check itself refuses what it must.
      const header = receiver.headers[0]!;
      assert.equal(verifySignature(header, got.body, secret), true);
      assert.equal(verifySignature(header, got.body, `${secret}x`), false, 'another secret');
      assert.equal(verifySignature(header, got.body.replace('1000', '9000'), secret), false, 'an altered body');
      assert.equal(verifySignature(header.replace(/t=\d+/, 't=1'), got.body, secret), false, 'another time');
      await store.close();
    });

    test('a receiver that fails is retried with a growing wait until it takes the event, each attempt logged', async () => {
      const store = await backend.open();
      const receiver = await startWebhookReceiver({ failNext: 2 });
      const events = eventsOf(store);
      const { endpoint, secret } = await events.addEndpoint('op_a', receiver.url);
      receiver.state.secret = secret;
      const event = paid('op_a');
      await store.events.record([event]);
      await events.start();
      try {
        await eventually(
          async () => receiver.received.length,
          (n) => n === 1,
          'the third attempt delivered',
        );
      } finally {
        await events.stop();
      }
      const times = receiver.attempts.map((a) => a.at);
      assert.deepEqual(
        receiver.attempts.map((a) => [a.eventId, a.status]),
        [
          [event.id, 500],
          [event.id, 500],
          [event.id, 204],
        ],
      );
      assert.ok(times[1]! - times[0]! >= retry.firstDelayMs - 10, `first wait ${times[1]! - times[0]!} ms`);
      assert.ok(times[2]! - times[1]! >= 2 * retry.firstDelayMs - 10, `second wait ${times[2]! - times[1]!} ms`);
      const [log] = await events.deliveries('op_a', endpoint.id, { limit: 10 });
      assert.equal(log?.state, 'delivered');
      assert.equal(log?.attempts, 3);
      assert.equal(log?.lastStatus, 204);
      await assert.rejects(events.deliveries('op_b', endpoint.id, { limit: 10 }), { code: 'endpoint_not_found' });
      await store.close();
    });

    test('a receiver that never takes it is given up after the last attempt, and /health counts it', async () => {
      const store = await backend.open();
      const receiver = await startWebhookReceiver({ failNext: 100 });
      const events = eventsOf(store);
      const { secret } = await events.addEndpoint('op_a', receiver.url);
      receiver.state.secret = secret;
      await store.events.record([paid('op_a')]);
      assert.equal((await events.health()).undelivered, 1);
      await events.start();
      try {
        await eventually(
          async () => (await events.health()).givenUp,
          (n) => n === 1,
          'given up',
        );
      } finally {
        await events.stop();
      }
      assert.equal(receiver.attempts.length, retry.maxAttempts);
      assert.deepEqual(await events.health(), { undelivered: 0, oldestAgeSeconds: null, givenUp: 1, degraded: false });
      await store.close();
    });

    test('nothing is lost across a restart: events recorded before a crash are delivered after it, with the same ids', async () => {
      const openShared = backend.shared();
      const receiver = await startWebhookReceiver({ secret: 'whsec-for-the-instance-endpoint' });
      const webhooks = [{ url: receiver.url, secret: 'whsec-for-the-instance-endpoint' }];
      const before = await openShared();
      const first = eventsOf(before, { webhooks });
      await first.start();
      await first.stop();
      const recorded = [paid(), paid('op_z')];
      await before.events.record(recorded);
      // The instance claims them and dies before sending (its lease is never finished).
      assert.equal((await before.events.claim(before.instanceId, Date.now(), 300, 10)).length, 2);
      await before.close();

      const after = await openShared();
      // Its own lease is the default minute: a shorter one than an attempt takes (a loaded machine) sends the event twice.
      const second = eventsOf(after, { webhooks });
      await second.start();
      try {
        await eventually(
          async () => receiver.received.length,
          (n) => n === 2,
          'both delivered after the restart',
        );
      } finally {
        await second.stop();
      }
      assert.deepEqual(receiver.received.map((r) => r.eventId).sort(), recorded.map((e) => e.id).sort());
      assert.ok(receiver.received.every((r) => r.signed));
      await after.close();
    });

    test('a delivery claimed by an instance that died holds back nothing: the next one sends it at once, not after the lease', async () => {
      const openShared = backend.shared();
      const receiver = await startWebhookReceiver({ secret: 'whsec-for-the-instance-endpoint' });
      const webhooks = [{ url: receiver.url, secret: 'whsec-for-the-instance-endpoint' }];
      const before = await openShared();
      const first = eventsOf(before, { webhooks });
      await first.start();
      await first.stop();
      const recorded = [paid(), paid()];
      await before.events.record(recorded);
      // One is claimed for a minute (killed mid-attempt), which would keep the claim off the whole endpoint.
      assert.equal((await before.events.claim(before.instanceId, Date.now(), 60_000, 1)).length, 1);

      // While that instance lives, its lease is its own: another instance sends nothing of that endpoint.
      const after = await openShared();
      const live = eventsOf(after, { webhooks });
      await live.start();
      await live.stop();
      assert.equal(await live.deliverDue(), 0);
      assert.equal(receiver.received.length, 0);

      await before.close();
      const second = eventsOf(after, { webhooks });
      await second.start();
      try {
        await eventually(
          async () => receiver.received.length,
          (n) => n === 2,
          'both delivered at once after the instance died',
        );
      } finally {
        await second.stop();
      }
      assert.deepEqual(receiver.received.map((r) => r.eventId).sort(), recorded.map((e) => e.id).sort());
      await after.close();
    });

    test('an operator cannot make turnpike POST to an internal address: refused when added, and at connect time', async () => {
      const store = await backend.open();
      const receiver = await startWebhookReceiver();
      const events = eventsOf(store, { allowPrivate: false });
      await assert.rejects(events.addEndpoint('op_a', receiver.url), { code: 'endpoint_refused', message: /loopback/ });
      await assert.rejects(events.addEndpoint('op_a', 'http://169.254.169.254/latest/meta-data'), { code: 'endpoint_refused' });
      assert.deepEqual(await store.events.endpoints('op_a'), []);
      // A name that resolved to a public address when added and to a private one now: the guarded agent refuses the connection.
      await store.events.addEndpoint({
        id: 'we_rebound',
        operatorId: 'op_a',
        kind: 'webhook',
        url: receiver.url,
        sealedSecret: box.seal('s', 'we_rebound'),
        createdAt: Date.now(),
      });
      await store.events.record([paid('op_a')]);
      await events.deliverDue();
      assert.equal(receiver.attempts.length, 0);
      const [log] = await store.events.deliveries('we_rebound', { limit: 1 });
      assert.equal(log?.state, 'pending');
      assert.match(log?.lastError ?? '', /loopback address/);
      await store.close();
    });

    test('the same stream goes to an OTLP/HTTP logs endpoint as log records a collector parses', async () => {
      const store = await backend.open();
      const collector = await startWebhookReceiver();
      const events = eventsOf(store, { otlp: collector.url });
      await events.start();
      await events.stop();
      const event = paid();
      await store.events.record([event]);
      await events.deliverDue();
      const [got] = collector.received;
      const record = got?.event.resourceLogs[0].scopeLogs[0].logRecords[0];
      assert.equal(record.eventName, 'call.paid');
      assert.equal(record.timeUnixNano, `${BigInt(event.createdAt) * 1_000_000n}`);
      assert.deepEqual(JSON.parse(record.body.stringValue), JSON.parse(event.payload));
      const attributes = Object.fromEntries(record.attributes.map((a: any) => [a.key, a.value.stringValue]));
      assert.deepEqual(attributes, {
        'event.id': event.id,
        'event.name': 'call.paid',
        'turnpike.server.id': 'srv_1',
        'turnpike.server.slug': 'weather',
        'turnpike.tool': 'forecast',
      });
      await store.close();
    });

    test('one operator’s slow endpoint and its flood of events do not hold back another operator’s deliveries', async () => {
      const store = await backend.open();
      // Held behind one slow answer, the other operator would wait 3 s; a loaded machine may take a second or two to deliver at all.
      const slow = await startWebhookReceiver({ delayMs: 3_000 });
      const fast = await startWebhookReceiver();
      const events = eventsOf(store);
      slow.state.secret = (await events.addEndpoint('op_slow', slow.url)).secret;
      fast.state.secret = (await events.addEndpoint('op_fast', fast.url)).secret;
      // The slow operator's 60 events are older: they come first in the outbox.
      await store.events.record(Array.from({ length: 60 }, () => paid('op_slow')));
      const theirs = paid('op_fast');
      await store.events.record([theirs]);
      const started = Date.now();
      await events.start();
      try {
        await eventually(
          async () => fast.received.length,
          (n) => n === 1,
          'the other operator’s event',
        );
        const waited = Date.now() - started;
        assert.ok(waited < 2_000, `the other operator waited ${waited} ms behind a slow endpoint`);
        assert.equal(fast.received[0]!.eventId, theirs.id);
        assert.ok(slow.attempts.length < 60, 'the slow endpoint was still being sent its flood');
      } finally {
        await events.stop();
      }
      await store.close();
    });
  });
}

describe('event delivery after a real crash (sqlite)', () => {
  test('events recorded, some claimed, then SIGKILL: the next process delivers every one, with the same ids', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-events-kill-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'store.db');
    const receiver = await startWebhookReceiver({ secret: 'whsec-kill' });
    const src = (f: string) => JSON.stringify(path.resolve(`src/${f}`));
    // The process that records: 20 events, 5 of them claimed (leased for 500 ms), then it waits to be killed.
    const script = `
      import { openSqliteStore } from ${src('store/sqlite.ts')};
      import { callEvent } from ${src('events/events.ts')};
      import { secretBox } from ${src('operators/secret-box.ts')};
      const store = await openSqliteStore({ path: ${JSON.stringify(file)} });
      const sealed = secretBox('cd'.repeat(32)).seal('whsec-kill', 'we_kill');
      await store.events.addEndpoint({ id: 'we_kill', operatorId: 'op_a', kind: 'webhook', url: ${JSON.stringify(receiver.url)}, sealedSecret: sealed, createdAt: Date.now() });
      const events = Array.from({ length: 20 }, () => callEvent({ type: 'call.paid', server: { id: 's', slug: 's' }, operatorId: 'op_a', amount: 1n }));
      await store.events.record(events);
      await store.events.claim(store.instanceId, Date.now(), 500, 5);
      process.stdout.write(JSON.stringify(events.map((e) => e.id)) + '\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [line] = (await once(readline.createInterface({ input: child.stdout! }), 'line')) as [string];
    const recorded = JSON.parse(line) as string[];
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.equal(receiver.attempts.length, 0, 'nothing was sent before the kill');

    const store = await openSqliteStore({ path: file });
    // Its own lease is the default minute: a shorter one than an attempt takes (a loaded machine) sends an event twice.
    const events = eventsOf(store);
    await events.start();
    try {
      await eventually(
        async () => receiver.received.length,
        (n) => n === 20,
        'all 20 delivered after the restart',
      );
    } finally {
      await events.stop();
    }
    assert.deepEqual(receiver.received.map((r) => r.eventId).sort(), [...recorded].sort());
    assert.ok(receiver.received.every((r) => r.signed));
    await store.close();
  });
});

describe('event delivery across instances (postgres)', { skip: backends[1]!.skip }, () => {
  test('two instances sending one outbox never deliver an event twice, nor one event at once', async () => {
    const openShared = backends[1]!.shared();
    const receiver = await startWebhookReceiver({ secret: 'whsec-shared-by-both-instances', delayMs: 30 });
    const webhooks = [{ url: receiver.url, secret: 'whsec-shared-by-both-instances' }];
    const [a, b] = [await openShared(), await openShared()];
    const [ea, eb] = [eventsOf(a, { webhooks }), eventsOf(b, { webhooks })];
    await ea.start();
    await eb.start();
    const recorded = Array.from({ length: 60 }, () => paid());
    await Promise.all([a.events.record(recorded.slice(0, 30)), b.events.record(recorded.slice(30))]);
    try {
      await eventually(
        async () => receiver.received.length,
        (n) => n >= 60,
        'all 60 delivered',
      );
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await ea.stop();
      await eb.stop();
    }
    const ids = receiver.attempts.map((x) => x.eventId);
    assert.equal(ids.length, 60, 'one attempt per event');
    assert.deepEqual([...new Set(ids)].sort(), recorded.map((e) => e.id).sort());
    await a.close();
    await b.close();
  });
});
