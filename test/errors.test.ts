import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChainUnavailableError } from '../src/chain/errors.js';
import { ConfigError } from '../src/config/errors.js';
import { BaseError, DomainError, errorCodes } from '../src/errors.js';
import { FacilitatorUnavailableError } from '../src/facilitator/errors.js';
import { StoreError } from '../src/store/store.js';
import { UpstreamUrlError } from '../src/upstream/ssrf.js';
import { UpstreamError } from '../src/upstream/upstream.js';
import { PaymentDecodeError, decodePayment } from '../src/x402/codec.js';

describe('one error vocabulary', () => {
  test('a domain error is its code, message and details on the wire, its status only in the table', () => {
    const error = new DomainError('insufficient_balance', 'only 5 are available', { available: '5' });
    assert.deepEqual(JSON.parse(JSON.stringify(error)), { error: 'insufficient_balance', message: 'only 5 are available', available: '5' });
    assert.equal(errorCodes[error.code], 409);
    assert.equal(error.shortMessage, error.message);
    assert.ok(!('status' in error));
  });

  test('a revoked key refused as a credential and a change asked of a revoked key are two codes with their own statuses', () => {
    assert.equal(errorCodes.key_revoked, 401);
    assert.equal(errorCodes.key_already_revoked, 409);
  });

  test('walk finds an error down the cause chain, or the deepest one', () => {
    const root = new Error('ECONNREFUSED');
    const store = new StoreError('cannot open the database', { cause: root });
    const outer = new BaseError('the gateway cannot start', { code: 'start_failed', cause: store });
    assert.equal(
      outer.walk((e) => e instanceof StoreError),
      store,
    );
    assert.equal(outer.walk(), root);
    assert.equal(
      outer.walk((e) => e instanceof ConfigError),
      undefined,
    );
  });

  test('the errors that cross a layer are BaseErrors with a code', () => {
    const crossing: [BaseError, string][] = [
      [new StoreError('x'), 'store_unavailable'],
      [new ChainUnavailableError('x'), 'chain_unavailable'],
      [new FacilitatorUnavailableError('x'), 'facilitator_unavailable'],
      [new UpstreamError('x'), 'upstream_unavailable'],
      [new UpstreamUrlError('forbidden_address', 'x'), 'forbidden_address'],
      [new ConfigError([{ path: 'port', source: 'flag', message: 'x' }]), 'config_invalid'],
    ];
    for (const [error, code] of crossing) {
      assert.ok(error instanceof BaseError, error.name);
      assert.equal(error.code, code);
    }
    assert.throws(
      () => decodePayment('not base64!'),
      (e) => e instanceof PaymentDecodeError && e.code === 'invalid_payload',
    );
  });
});
