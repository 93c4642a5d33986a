import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';

test('logs JSON lines with secrets and payment signatures redacted, the rest kept', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().trim().split('\n'));
      done();
    },
  });
  const log = createLogger({ level: 'info', format: 'json' }, sink);
  const key = `0x${'c3'.repeat(32)}`;
  log.info({ relayerKey: key, network: 'base' }, 'settling');
  log.info({ req: { headers: { 'x-payment': 'eyJzaWduYXR1cmUiOiIweGFhIn0=', 'content-type': 'application/json' } } }, 'request');
  log.info({ payment: { payload: { signature: '0xsig', authorization: { from: '0xabc', value: '10000' } } } }, 'verify');
  const [first, second, third] = lines.map((l) => JSON.parse(l));
  assert.equal(first.relayerKey, '[redacted]');
  assert.equal(first.network, 'base');
  assert.equal(second.req.headers['x-payment'], '[redacted]');
  assert.equal(second.req.headers['content-type'], 'application/json');
  assert.equal(third.payment.payload.signature, '[redacted]');
  assert.equal(third.payment.payload.authorization.value, '10000');
  assert.ok(!lines.join('\n').includes(key.slice(2)));
});

test('attacker: every secret turnpike reads, logged under its own name, and credential headers however spelled, are redacted', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...chunk.toString().trim().split('\n'));
      done();
    },
  });
  const log = createLogger({ level: 'trace', format: 'json' }, sink);
  const secrets = {
    treasuryKey: 'LEAK-treasury',
    facilitatorKeys: ['LEAK-facilitator'],
    remoteFacilitatorKey: 'LEAK-remote',
    secretsKey: 'LEAK-secrets',
    tokenSecret: 'LEAK-token',
    stripeSecretKey: 'LEAK-sk_live',
    stripeWebhookSecret: 'LEAK-whsec-1',
    webhookSecret: 'LEAK-whsec-2',
    cdpApiKeySecret: 'LEAK-cdp',
  };
  log.info(secrets, 'top level');
  log.debug({ deps: secrets }, 'one level down');
  // An operator's upstream credential as headersFromEnv spells it, and a caller's as a client may.
  log.warn({ upstream: { headers: { Authorization: 'Bearer LEAK-upstream', 'X-Api-Key': 'LEAK-xapi' } } }, 'upstream');
  log.error({ call: { request: { headers: { COOKIE: 'LEAK-cookie', 'set-cookie': 'LEAK-set' } } } }, 'deeper');
  log.info({ upstream: { headers: { accept: 'application/json' } } }, 'kept');
  const leaked = lines.filter((l) => l.includes('LEAK'));
  assert.deepEqual(leaked, []);
  assert.equal(JSON.parse(lines.at(-1)!).upstream.headers.accept, 'application/json');
});
