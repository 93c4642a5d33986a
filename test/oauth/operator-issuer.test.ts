import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DomainError } from '../../src/errors.js';
import { createOperators, newServerSchema } from '../../src/operators/operators.js';
import type { Store } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';

/** A public address literal: checked without a DNS lookup. */
const UPSTREAM = 'https://93.184.215.14/mcp';

describe('the identity provider an operator names is held to what an upstream is', () => {
  let store: Store;
  before(async () => {
    store = await backends[0]!.open();
  });
  after(() => store.close());

  const server = (slug: string, issuer: string) =>
    newServerSchema.parse({
      slug,
      name: slug,
      upstream: UPSTREAM,
      payTo: `0x${'1'.repeat(40)}`,
      plan: { type: 'per_call', default: '0.01' },
      oauth: { issuer },
    });
  const refusal = (code: string) => (error: unknown) => error instanceof DomainError && error.code === code;

  test('an issuer on a private, loopback or cloud-metadata address is refused (400 issuer_refused) and no server is made', async () => {
    const operators = createOperators({
      store,
      allowPrivateUpstreams: false,
      oauthCallers: true,
      isTurnpike: async () => undefined,
      reservedSlugs: new Set(),
    });
    const { operator } = await operators.register({ email: 'a@example.com', name: 'a' });
    for (const [slug, issuer] of [
      ['one', 'http://127.0.0.1:8080'],
      ['two', 'http://169.254.169.254/'],
      ['three', 'https://10.0.0.7/realms/x'],
    ] as const) {
      await assert.rejects(operators.createServer(operator, server(slug, issuer)), refusal('issuer_refused'), issuer);
      assert.equal(await store.operators.server(slug), undefined);
    }
    const made = await operators.createServer(operator, server('four', 'https://93.184.215.15'));
    assert.equal(made.oauth?.issuer, 'https://93.184.215.15');
    await assert.rejects(
      operators.updateServer(operator, 'four', { oauth: { issuer: 'http://127.0.0.1:1', scopes: [], required: true } }),
      refusal('issuer_refused'),
    );
    assert.equal((await store.operators.server('four'))!.oauth?.issuer, 'https://93.184.215.15');
  });

  test('an upstream or issuer named by a host that resolves to a private address is refused without naming the address', async () => {
    const operators = createOperators({
      store,
      allowPrivateUpstreams: false,
      oauthCallers: true,
      isTurnpike: async () => undefined,
      reservedSlugs: new Set(),
    });
    const { operator } = await operators.register({ email: 'c@example.com', name: 'c' });
    const named = /(127\.0\.0\.1|::1|\b0:0:0:0:0:0:0:1\b)/;
    for (const [slug, input, code] of [
      ['six', { ...server('six', 'https://93.184.215.15'), upstream: 'http://localhost:8080/mcp' }, 'upstream_refused'],
      ['seven', server('seven', 'http://localhost:8080/realms/x'), 'issuer_refused'],
    ] as const) {
      const error = await operators.createServer(operator, input).then(
        () => assert.fail(`${slug} was made`),
        (e: unknown) => e,
      );
      assert.ok(error instanceof DomainError && error.code === code, String(error));
      assert.match(error.message, /localhost resolves to a loopback address$/);
      assert.doesNotMatch(`${error.message} ${JSON.stringify(error)}`, named, 'the address the name resolves to');
    }
  });

  test('without credits (oauthCallers off) a server cannot take OAuth callers: 400 oauth_unavailable', async () => {
    const operators = createOperators({ store, allowPrivateUpstreams: false, isTurnpike: async () => undefined, reservedSlugs: new Set() });
    const { operator } = await operators.register({ email: 'b@example.com', name: 'b' });
    await assert.rejects(operators.createServer(operator, server('five', 'https://93.184.215.15')), refusal('oauth_unavailable'));
  });
});
