import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { ConfigError } from '../../src/config/errors.js';
import { configVariables, loadConfig } from '../../src/config/load.js';
import { anyText, nearNumber } from './arbitraries.js';

const variables = configVariables().map((v) => v.env);

/** Values an environment variable may hold: words the settings use, numbers, URLs, addresses, junk. */
const envValue = fc.oneof(
  fc.constantFrom(
    'true',
    'FALSE',
    'yes',
    'local',
    'base',
    'json',
    'pretty',
    'debug',
    'admin',
    'open',
    'cdp',
    'self',
    'sqlite:/tmp/x.db',
    'postgres://u@h/db',
    'mysql://x',
  ),
  fc.constantFrom('0', '-1', '65535', '65536', '1.5', '1e3', '0x10', '9007199254740993', '10001', ' 8080 ', '-0', '00'),
  fc.webUrl(),
  fc.stringMatching(/^0x[0-9a-fA-F]{38,42}$/),
  nearNumber,
  anyText,
);

/** Loads with only `env`; a ConfigError is the one way to refuse, and it names a variable that was set. */
function load(env: Record<string, string>) {
  try {
    return loadConfig({ env });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.ok(error.problems.length > 0);
    for (const problem of error.problems) {
      const variable = /^env (TURNPIKE_\w+)$/.exec(problem.source)?.[1];
      assert.ok(
        variable && variable in env,
        `problem ${problem.path} (${problem.message}) names no variable that was set: ${problem.source}`,
      );
    }
    assert.match(error.format(), /invalid configuration/);
    return undefined;
  }
}

describe('configuration from TURNPIKE_* variables (properties)', () => {
  test('any one variable with any value loads, or fails with a ConfigError naming that variable', () => {
    fc.assert(
      fc.property(fc.constantFrom(...variables), envValue, (variable, value) => {
        load({ [variable]: value });
      }),
      { numRuns: 1000 },
    );
  });

  test('any set of variables loads, or fails with a ConfigError whose every problem names a variable that was set', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...variables), envValue, { maxKeys: 8 }), (env) => {
        const config = load(env);
        if (!config) return;
        // What loaded is usable as it stands: integral numbers in range, a store URL always set.
        assert.ok(Number.isSafeInteger(config.http.port) && config.http.port >= 0 && config.http.port <= 65535);
        assert.ok(Number.isSafeInteger(config.http.bodyLimitBytes) && config.http.bodyLimitBytes > 0);
        assert.ok(config.store.url);
        assert.equal(typeof config.credits.topupMinUsd, 'bigint');
      }),
      { numRuns: 500 },
    );
  });

  test('a number variable reads its decimal value exactly, or is refused', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: -1, max: 70_000 }), fc.integer()), fc.constantFrom('', ' ', '\t'), (port, pad) => {
        const config = load({ TURNPIKE_HTTP_PORT: `${pad}${port}${pad}` });
        assert.equal(config?.http.port, port >= 0 && port <= 65535 ? port : undefined);
      }),
      { numRuns: 300 },
    );
  });
});
