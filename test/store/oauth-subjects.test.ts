import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { generateApiKey } from '../../src/rails/credits/api-keys.js';
import { newId } from '../../src/store/ids.js';
import { migrations } from '../../src/store/migrations.js';
import { migrateSqlite } from '../../src/store/sqlite-migrate.js';
import type { Store } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';

const ISSUER = 'https://id.example.com';

for (const backend of backends)
  describe(`OAuth subjects linked to keys (${backend.name})`, { skip: backend.skip }, () => {
    let stores: Store[];
    const newKey = async (operatorId?: string) => {
      const { id, hash } = generateApiKey();
      const created = await stores[0]!.credits.createKey({ id, hash, name: 'org', ...(operatorId ? { operatorId } : {}) });
      assert.ok(created.created);
      return id;
    };
    const newOperator = async () => {
      const id = newId('op');
      const made = await stores[0]!.operators.createOperator({
        id,
        email: `${id}@example.com`,
        name: 'op',
        keyHash: id,
        createdAt: Date.now(),
      });
      assert.ok(made.created);
      return id;
    };
    before(async () => {
      const open = backend.shared();
      stores = [await open(), await open()];
    });
    after(() => Promise.all(stores.map((s) => s.close())));

    test('a subject is linked to one key: linking it again to that key changes nothing, to another key is refused with the first', async () => {
      const [first, second] = [await newKey(), await newKey()];
      const subject = { issuer: ISSUER, subject: 'person-1' };
      assert.deepEqual(await stores[0]!.credits.linkSubject({ ...subject, keyId: first }), { linked: true, keyId: first });
      assert.deepEqual(await stores[0]!.credits.linkSubject({ ...subject, keyId: first }), { linked: false, keyId: first });
      assert.deepEqual(await stores[1]!.credits.linkSubject({ ...subject, keyId: second }), { linked: false, keyId: first });
      assert.equal(await stores[1]!.credits.subjectKey(ISSUER, 'person-1'), first);
      assert.equal(await stores[1]!.credits.subjectKey('https://other.example.com', 'person-1'), undefined);
      assert.deepEqual(
        (await stores[0]!.credits.subjects(first)).map((s) => s.subject),
        ['person-1'],
      );
    });

    test('each operator links a subject on its own: its link pays only on its servers, the instance’s link elsewhere and where the operator has none', async () => {
      const [alice, bob, carol] = [await newOperator(), await newOperator(), await newOperator()];
      const [aliceKey, bobKey, instanceKey] = [await newKey(alice), await newKey(bob), await newKey()];
      const subject = { issuer: ISSUER, subject: 'shared-person' };
      assert.deepEqual(await stores[0]!.credits.linkSubject({ ...subject, keyId: aliceKey }), { linked: true, keyId: aliceKey });
      // The same subject of the same issuer, linked by another operator and by the instance: three links, no conflict.
      assert.deepEqual(await stores[1]!.credits.linkSubject({ ...subject, keyId: bobKey }), { linked: true, keyId: bobKey });
      assert.deepEqual(await stores[0]!.credits.linkSubject({ ...subject, keyId: instanceKey }), { linked: true, keyId: instanceKey });
      // Within one operator a subject is still linked to one key.
      assert.deepEqual(await stores[0]!.credits.linkSubject({ ...subject, keyId: await newKey(alice) }), {
        linked: false,
        keyId: aliceKey,
      });

      const keyOn = (operatorId?: string) => stores[1]!.credits.subjectKey(ISSUER, 'shared-person', operatorId);
      assert.equal(await keyOn(alice), aliceKey);
      assert.equal(await keyOn(bob), bobKey);
      assert.equal(await keyOn(carol), instanceKey);
      assert.equal(await keyOn(), instanceKey);
      assert.equal(await stores[0]!.credits.unlinkSubject({ ...subject, keyId: bobKey }), true);
      assert.equal(await keyOn(bob), instanceKey);
      assert.equal(await stores[0]!.credits.unlinkSubject({ ...subject, keyId: instanceKey }), true);
      assert.equal(await keyOn(bob), undefined, 'never Alice’s link on Bob’s servers');
      assert.equal(await keyOn(), undefined);
      assert.equal(await keyOn(alice), aliceKey);
    });

    test('two instances linking one subject to two keys at once: one link wins and both say which', async () => {
      for (let round = 0; round < 5; round++) {
        const keys = [await newKey(), await newKey()];
        const subject = { issuer: ISSUER, subject: `race-${round}` };
        const results = await Promise.all(stores.map((s, i) => s.credits.linkSubject({ ...subject, keyId: keys[i]! })));
        assert.equal(results.filter((r) => r.linked).length, 1, JSON.stringify(results));
        assert.equal(results[0]!.keyId, results[1]!.keyId);
        assert.equal(await stores[0]!.credits.subjectKey(ISSUER, subject.subject), results[0]!.keyId);
      }
    });

    test('an unlinked subject can be linked to another key; unlinking from a key it is not linked to changes nothing', async () => {
      const [first, second] = [await newKey(), await newKey()];
      const subject = { issuer: ISSUER, subject: 'person-2' };
      await stores[0]!.credits.linkSubject({ ...subject, keyId: first });
      assert.equal(await stores[0]!.credits.unlinkSubject({ ...subject, keyId: second }), false);
      assert.equal(await stores[0]!.credits.subjectKey(ISSUER, 'person-2'), first);
      assert.equal(await stores[0]!.credits.unlinkSubject({ ...subject, keyId: first }), true);
      assert.deepEqual(await stores[1]!.credits.linkSubject({ ...subject, keyId: second }), { linked: true, keyId: second });
    });
  });

test('the links made before links were per operator are kept, each filed under its key’s operator (SQLite migration)', () => {
  const db = new Database(':memory:');
  const upTo = (version: number) => migrations.filter((m) => m.version <= version);
  const oauthVersion = migrations.find((m) => m.name === 'oauth')!.version;
  migrateSqlite(db, upTo(oauthVersion));
  db.exec(`
    INSERT INTO operators (id, email, name, key_hash, created_at, updated_at) VALUES ('op_a', 'a@example.com', 'a', 'h', 1, 1);
    INSERT INTO api_keys (id, hash, name, operator_id, created_at, updated_at) VALUES ('key_a', 'ha', 'a', 'op_a', 1, 1);
    INSERT INTO api_keys (id, hash, name, created_at, updated_at) VALUES ('key_i', 'hi', 'i', 1, 1);
    INSERT INTO oauth_subjects (issuer, subject, key_id, created_at) VALUES ('${ISSUER}', 'person-a', 'key_a', 5);
    INSERT INTO oauth_subjects (issuer, subject, key_id, created_at) VALUES ('${ISSUER}', 'person-i', 'key_i', 6);
  `);
  migrateSqlite(db, migrations);
  assert.deepEqual(db.prepare('SELECT operator_id, issuer, subject, key_id, created_at FROM oauth_subjects ORDER BY subject').all(), [
    { operator_id: 'op_a', issuer: ISSUER, subject: 'person-a', key_id: 'key_a', created_at: 5 },
    { operator_id: '', issuer: ISSUER, subject: 'person-i', key_id: 'key_i', created_at: 6 },
  ]);
  db.close();
});
