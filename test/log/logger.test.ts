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
