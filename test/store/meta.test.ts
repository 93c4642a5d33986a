import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backends } from '../helpers/stores.js';

for (const backend of backends)
  describe(`the store's own entries (${backend.name})`, { skip: backend.skip }, () => {
    test('a revoked console session is revoked for every instance until it would have expired, then pruned, and never touches the shared secrets', async () => {
      const open = backend.shared();
      const [one, two] = [await open(), await open()];
      try {
        const secret = await one.instanceSecret('console-sessions');
        await one.revokeSession('expired-session-id-0001', Date.now() - 11 * 60_000); // past its expiry and the 10 min kept for clock skew
        assert.equal(await two.sessionRevoked('expired-session-id-0001'), true);
        assert.equal(await two.sessionRevoked('never-revoked-id-0001'), false);
        await two.revokeSession('live-session-id-0000001', Date.now() + 3_600_000);
        assert.equal(await one.sessionRevoked('live-session-id-0000001'), true);
        assert.equal(await one.sessionRevoked('expired-session-id-0001'), false, 'pruned once expired');
        assert.equal(await two.instanceSecret('console-sessions'), secret);
      } finally {
        await one.close();
        await two.close();
      }
    });
  });
