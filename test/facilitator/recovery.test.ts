import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Address, Hex } from 'viem';
import { networks } from '../../src/chain/networks.js';
import { createFacilitator } from '../../src/facilitator/facilitator.js';
import { recoverOrphans } from '../../src/facilitator/recovery.js';
import type { NewPayment } from '../../src/store/journal/journal.js';
import type { Store } from '../../src/store/store.js';
import { purposes } from '../../src/facilitator/purposes.js';
import { useSandbox } from '../helpers/chain.js';
import { signAuthorization } from '../helpers/payments.js';
import { backends } from '../helpers/stores.js';

const chain = useSandbox({ isolate: false });
const lower = (s: string) => s.toLowerCase() as Address;

async function payment(payerIndex: number): Promise<NewPayment> {
  const payer = chain.sandbox.accounts.payers[payerIndex]!;
  const payTo = chain.sandbox.accounts.payees[0]!.address;
  const { signature, authorization } = await signAuthorization({ payer, payTo, amount: 1_000n });
  return {
    chainId: 8453,
    asset: lower(networks.base.usdc.address),
    payer: lower(payer.address),
    nonce: authorization.nonce.toLowerCase() as Hex,
    payTo: lower(payTo),
    amount: 1_000n,
    validAfter: BigInt(authorization.validAfter),
    validBefore: BigInt(authorization.validBefore),
    signature,
    network: 'eip155:8453',
    purpose: purposes.call('main', 'h'),
  };
}

const facilitatorOn = (store: Store, relayer: number) =>
  createFacilitator({
    network: networks.local,
    client: chain.client,
    journal: store.journal,
    relayerKeys: [chain.sandbox.accounts.relayers[relayer]!.privateKey],
  });

for (const backend of backends) {
  describe(`several instances on one store (${backend.name})`, { skip: backend.skip }, () => {
    const stores: Store[] = [];
    after(() => Promise.all(stores.map((s) => s.close())));

    test('a dead instance’s journal entries are recovered once, by one instance; a live one’s are left alone', async () => {
      const open = backend.shared();
      const instance = async () => {
        const store = await open();
        stores.push(store);
        return store;
      };
      const dead = await instance();
      const claimed = await payment(8);
      assert.deepEqual(await dead.journal.claim(claimed), { claimed: true, deferred: false });
      assert.equal((await dead.journal.get(claimed))?.owner, dead.instanceId);
      await dead.close(); // its lease goes with it, as it would with the process

      const alive = await instance();
      const held = await payment(9);
      assert.deepEqual(await alive.journal.reserve(held), { reserved: true });

      const [b, c] = [await instance(), await instance()];
      const recovered = await Promise.all([recoverOrphans(b, facilitatorOn(b, 1)), recoverOrphans(c, facilitatorOn(c, 2))]);
      assert.equal(recovered[0] + recovered[1], 1, `one recovery in all, not one each: ${recovered}`);
      assert.equal(await b.journal.get(claimed), undefined, 'a claim with nothing sent is released');
      assert.equal((await b.journal.get(held))?.state, 'verified', 'the live instance’s call is still its own');
      assert.deepEqual(await c.journal.unfinishedOwners(), [alive.instanceId]);
    });

    test('two recovery rounds of one instance at once (a round outlasting the 15 s timer) recover a dead instance’s entry once', async () => {
      const open = backend.shared();
      const dead = await open();
      const claimed = await payment(7);
      assert.deepEqual(await dead.journal.claim(claimed), { claimed: true, deferred: false });
      await dead.close();
      const survivor = await open();
      stores.push(survivor);
      const facilitator = facilitatorOn(survivor, 3);
      const rounds = await Promise.all([recoverOrphans(survivor, facilitator), recoverOrphans(survivor, facilitator)]);
      assert.equal(rounds[0] + rounds[1], 1, `one round recovers it, the other finds its owner's lease taken: ${rounds}`);
      assert.equal(await survivor.journal.get(claimed), undefined);
    });

    test('a lease its own instance holds is not given again until released', async () => {
      const store = await backend.shared()();
      stores.push(store);
      const lease = await store.lease('instance:gone');
      assert.ok(lease);
      assert.equal(await store.lease('instance:gone'), undefined, 'held, by this instance: not twice');
      await lease.release();
      const again = await store.lease('instance:gone');
      assert.ok(again, 'free once released');
      await again.release();
    });

    test('a lease is held by one live instance at a time, and freed when it closes', async () => {
      const open = backend.shared();
      const [a, b] = [await open(), await open()];
      stores.push(b);
      const lease = await a.lease('relayer:0xabc');
      assert.ok(lease);
      assert.equal(await b.lease('relayer:0xabc'), undefined);
      assert.ok(await b.lease('relayer:0xdef'), 'other names are free');
      await a.close();
      assert.ok(await b.lease('relayer:0xabc'), 'free again once its holder is gone');
    });
  });
}
