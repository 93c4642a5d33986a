import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateApiKey } from '../../src/rails/credits/api-keys.js';
import type { Store } from '../../src/store/store.js';
import { backends } from '../helpers/stores.js';

const ISSUER = 'https://id.example.com';

for (const backend of backends)
  describe(`OAuth subjects linked to keys (${backend.name})`, { skip: backend.skip }, () => {
    let stores: Store[];
    const newKey = async () => {
      const { id, hash } = generateApiKey();
      const created = await stores[0]!.credits.createKey({ id, hash, name: 'org' });
      assert.ok(created.created);
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
