import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { loadSecrets, requireSecret } from '../../src/config/secrets.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-secrets-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const KEY_A = `0x${'a1'.repeat(32)}`;
const KEY_B = `0x${'b2'.repeat(32)}`;

const failure = (env: NodeJS.ProcessEnv) => {
  try {
    loadSecrets(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error;
  }
  assert.fail('expected a ConfigError');
};

describe('loadSecrets', () => {
  test('reads several relayer keys from the environment', () => {
    assert.deepEqual(loadSecrets({ TURNPIKE_RELAYER_KEY: `${KEY_A}, ${KEY_B}` }).relayerKeys, [KEY_A, KEY_B]);
  });

  test('reads the facilitator API keys as comma-separated secrets, and refuses a short one without echoing it', () => {
    const [a, b] = ['k'.repeat(32), 'q'.repeat(40)];
    assert.deepEqual(loadSecrets({ TURNPIKE_FACILITATOR_KEYS: `${a}, ${b}` }).facilitatorKeys, [a, b]);
    const text = failure({ TURNPIKE_FACILITATOR_KEYS: `${a},tooshort` }).format();
    assert.match(text, /TURNPIKE_FACILITATOR_KEYS/);
    assert.doesNotMatch(text, /tooshort|kkkk/);
  });

  test('reads a secret from a _FILE path, trimmed', () => {
    const file = path.join(dir, 'admin');
    writeFileSync(file, `${'x'.repeat(40)}\n`);
    assert.equal(loadSecrets({ TURNPIKE_ADMIN_KEY_FILE: file }).adminKey, 'x'.repeat(40));
  });

  test('both NAME and NAME_FILE set is an error', () => {
    const error = failure({ TURNPIKE_ADMIN_KEY: 'x'.repeat(40), TURNPIKE_ADMIN_KEY_FILE: '/dev/null' });
    assert.match(error.format(), /either TURNPIKE_ADMIN_KEY or TURNPIKE_ADMIN_KEY_FILE/);
  });

  test('a malformed key is reported by variable name, never by value', () => {
    const bad = '0x1234secretsecret';
    const error = failure({ TURNPIKE_RELAYER_KEY: bad, STRIPE_SECRET_KEY: 'pk_live_oops' });
    const text = error.format();
    assert.match(text, /TURNPIKE_RELAYER_KEY/);
    assert.match(text, /STRIPE_SECRET_KEY/);
    assert.doesNotMatch(text, /1234secret|pk_live_oops/);
  });

  test('an unreadable _FILE names the path', () => {
    const error = failure({ TURNPIKE_RELAYER_KEY_FILE: path.join(dir, 'missing') });
    assert.match(error.format(), /cannot read .*missing \(ENOENT\)/);
  });

  test('requireSecret says which variable to set', () => {
    assert.throws(
      () => requireSecret(loadSecrets({}), 'relayerKeys', 'to settle on base'),
      (e: unknown) =>
        e instanceof ConfigError && /set TURNPIKE_RELAYER_KEY \(or TURNPIKE_RELAYER_KEY_FILE\) to settle on base/.test(e.format()),
    );
  });
});
