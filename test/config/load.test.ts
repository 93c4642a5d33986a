import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { configVariables, envVarName, loadConfig } from '../../src/config/load.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
};

function problemsOf(fn: () => unknown) {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${error}`);
    return error;
  }
  assert.fail('expected a ConfigError');
}

describe('loadConfig', () => {
  test('defaults: local sandbox, loopback, SQLite in the data dir', () => {
    const config = loadConfig({ env: {} });
    assert.equal(config.network, 'local');
    assert.equal(config.rpcUrl, undefined);
    assert.deepEqual(config.http, {
      host: '127.0.0.1',
      port: 3402,
      bodyLimitBytes: 1_048_576,
      upstreamConnections: 64,
      trustedProxies: '',
    });
    assert.equal(config.store.url, `sqlite:${path.join('.turnpike', 'turnpike.db')}`);
    assert.equal(config.facilitator.mode, 'self');
  });

  test('reads YAML and JSON files', () => {
    const yaml = loadConfig({ env: {}, file: file('a.yaml', 'network: base\nrpcUrl: http://127.0.0.1:8545\nhttp:\n  port: 8080\n') });
    assert.equal(yaml.network, 'base');
    assert.equal(yaml.http.port, 8080);
    assert.equal(yaml.http.host, '127.0.0.1');
    const json = loadConfig({ env: {}, file: file('a.json', '{"dataDir": "/var/lib/tp", "log": {"level": "debug"}}') });
    assert.equal(json.log.level, 'debug');
    assert.equal(json.store.url, 'sqlite:/var/lib/tp/turnpike.db');
  });

  test('precedence: file < environment < flags, with env strings coerced to numbers', () => {
    const f = file('p.yaml', 'http:\n  port: 1000\n  host: 0.0.0.0\nlog:\n  level: warn\n');
    const config = loadConfig({
      file: f,
      env: { TURNPIKE_HTTP_PORT: '2000', TURNPIKE_LOG_LEVEL: 'error' },
      overrides: { http: { port: 3000 } },
    });
    assert.equal(config.http.port, 3000);
    assert.equal(config.http.host, '0.0.0.0');
    assert.equal(config.log.level, 'error');
  });

  test('a server’s oauth is read with its defaults (no scopes, tokens required), and a bad issuer or scope is named', () => {
    const server = 'slug: s\n    upstream: http://127.0.0.1:4000/mcp\n    payTo: "0x1111111111111111111111111111111111111111"';
    const good = loadConfig({
      env: {},
      file: file('oauth.yaml', `servers:\n  - ${server}\n    oauth: { issuer: https://id.example.com }\n`),
    });
    assert.deepEqual(good.servers[0]!.oauth, { issuer: 'https://id.example.com', scopes: [], required: true });
    const bad = file('oauth-bad.yaml', `servers:\n  - ${server}\n    oauth: { issuer: ftp://id.example.com, scopes: ["a b"], extra: 1 }\n`);
    const paths = problemsOf(() => loadConfig({ env: {}, file: bad })).problems.map((p) => p.path);
    assert.deepEqual(paths.sort(), ['servers.0.oauth.extra', 'servers.0.oauth.issuer', 'servers.0.oauth.scopes.0']);
  });

  test('an upstream header that describes a hop, or that turnpike writes itself, is refused by name; a credential header is taken', () => {
    const server = 'slug: s\n    upstream: http://127.0.0.1:4000/mcp\n    payTo: "0x1111111111111111111111111111111111111111"';
    const good = loadConfig({
      env: {},
      file: file('headers.yaml', `servers:\n  - ${server}\n    headersFromEnv: { X-Api-Key: UPSTREAM_KEY }\n`),
    });
    assert.deepEqual(good.servers[0]!.headersFromEnv, { 'X-Api-Key': 'UPSTREAM_KEY' });
    for (const name of ['Transfer-Encoding', 'Expect', 'Connection', 'Content-Type', 'Turnpike-Hop']) {
      const bad = file(`headers-${name}.yaml`, `servers:\n  - ${server}\n    headersFromEnv: { ${name}: SOME_VAR }\n`);
      const [problem, ...more] = problemsOf(() => loadConfig({ env: {}, file: bad })).problems;
      assert.equal(more.length, 0);
      assert.equal(problem!.path, `servers.0.headersFromEnv.${name}`);
      assert.match(problem!.message, new RegExp(`${name} describes a hop or is written by turnpike itself`));
    }
  });

  test('every bad field is reported at once, each with where it came from', () => {
    const f = file('bad.yaml', 'network: ethereum\nhttp:\n  port: 70000\n  hots: x\n');
    const error = problemsOf(() =>
      loadConfig({ file: f, env: { TURNPIKE_RPC_URL: 'ftp://node', TURNPIKE_HTTP_BODY_LIMIT_BYTES: 'lots' } }),
    );
    const byPath = Object.fromEntries(error.problems.map((p) => [p.path, p]));
    assert.deepEqual(Object.keys(byPath).sort(), ['http.bodyLimitBytes', 'http.hots', 'http.port', 'network', 'rpcUrl']);
    assert.equal(byPath['network']!.source, `file ${f}`);
    assert.match(byPath['network']!.message, /got "ethereum"/);
    assert.equal(byPath['rpcUrl']!.source, 'env TURNPIKE_RPC_URL');
    assert.equal(byPath['http.bodyLimitBytes']!.source, 'env TURNPIKE_HTTP_BODY_LIMIT_BYTES');
    assert.match(byPath['http.hots']!.message, /unknown setting/);
    const text = error.format();
    assert.equal(text.split('\n').length, 7);
    assert.doesNotMatch(text, /at \w+ \(/, 'no stack trace');
  });

  test('a secret in the config file is refused with where secrets come from, without echoing it', () => {
    const f = file('s.yaml', 'relayerKey: "0xdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef"\n');
    const error = problemsOf(() => loadConfig({ file: f, env: {} }));
    assert.equal(error.problems[0]!.path, 'relayerKey');
    assert.match(error.problems[0]!.message, /environment/);
    assert.doesNotMatch(error.format(), /deadbeef/);
  });

  test('unreadable and unparsable files name the file (and line)', () => {
    const missing = problemsOf(() => loadConfig({ file: path.join(dir, 'nope.yaml'), env: {} }));
    assert.match(missing.format(), /file not found/);
    const broken = problemsOf(() => loadConfig({ file: file('broken.yaml', 'a: 1\nb: [unclosed\n'), env: {} }));
    assert.match(broken.format(), /line \d+/);
  });

  test('facilitator.mode remote needs facilitator.url, cdp may have one (a proxy), self refuses one', () => {
    const missing = problemsOf(() => loadConfig({ env: { TURNPIKE_FACILITATOR_MODE: 'remote' } }));
    const problems = missing.problems.map((p) => [p.path, p.message]);
    assert.deepEqual(problems, [['facilitator.url', 'facilitator.mode remote needs facilitator.url']]);
    const remote = loadConfig({ env: { TURNPIKE_FACILITATOR_MODE: 'remote', TURNPIKE_FACILITATOR_URL: 'https://facilitator.example' } });
    assert.deepEqual([remote.facilitator.mode, remote.facilitator.url], ['remote', 'https://facilitator.example']);
    assert.equal(loadConfig({ env: { TURNPIKE_FACILITATOR_MODE: 'cdp' } }).facilitator.url, undefined);
    const self = problemsOf(() => loadConfig({ env: { TURNPIKE_FACILITATOR_URL: 'https://facilitator.example' } }));
    assert.match(self.format(), /facilitator\.url .*mode self settles itself/);
  });

  test('environment variable names derive from the schema', () => {
    assert.equal(envVarName(['http', 'bodyLimitBytes']), 'TURNPIKE_HTTP_BODY_LIMIT_BYTES');
    const vars = configVariables();
    assert.ok(vars.some((v) => v.env === 'TURNPIKE_RPC_URL' && v.description.length > 0));
    assert.ok(vars.every((v) => v.env.startsWith('TURNPIKE_')));
  });
});
