import { type Logger, pino } from 'pino';
import type { Hex, PublicClient } from 'viem';
import type { Network } from '../chain/networks.js';
import { createRelayerPool } from '../chain/relayer.js';
import type { PaymentJournal } from '../store/journal/journal.js';
import type { KeptResult, PaymentKey } from '../store/journal/journal.js';
import { reasonFor, reasons } from '../x402/reasons.js';
import type { FacilitatorRequest, SettleResponse, SupportedResponse } from '../x402/schemas.js';
import {
  type AllowedAsset,
  type PaymentIntent,
  type Rejection,
  answers,
  atSignedPrice,
  intentRules,
  presentsRow,
  toIntent,
  toNewPayment,
} from './intent.js';
import type { Refusal, Reserved, Verdict } from './port.js';
import { createStateReader } from './chain-state.js';
import { purposes } from './purposes.js';
import { type SettleOptions, createSettler } from './settle.js';
import { type Verified, authenticatePayer, checkPayment, deployedWallet, verifyIntent, verifyPayment } from './verify.js';

export type FacilitatorOptions = {
  network: Network;
  client: PublicClient;
  journal: PaymentJournal;
  relayerKeys: readonly Hex[];
  /** Tokens it settles; by default the network's USDC. Nothing else ever gets a transaction. */
  assets?: readonly AllowedAsset[];
  receiptTimeoutMs?: number;
  /** For tests that move time; Unix seconds. */
  now?: () => number;
  /** Settlement outcomes at info, background failures at error; silent by default. */
  logger?: Logger;
  /**
   * Whose payments the public API (`purposes.api`) verifies and settles, asked per request; by
   * default anyone's. A gateway names its own payees: nobody else's business runs on its gas.
   */
  payees?: () => Iterable<string> | Promise<Iterable<string>>;
  /** The smallest payment the public API verifies and settles, atomic units (default 1: zero never is). */
  minimumAmount?: bigint;
  /**
   * Whether the node has Multicall3 (see `ChainConnection.multicall3`; default true): without it,
   * verification reads with plain `eth_call`s and each settlement is its own transaction.
   */
  multicall3?: boolean;
  /** An opt-in bound on an authorization's window, beyond `maxTimeoutSeconds` (see `IntentRules`); none by default. */
  validityOverTimeoutSeconds?: number;
  /** Whether this instance still holds its relayer keys' leases (see `RelayerPoolOptions.mayAct`); always, by default. */
  holdsRelayers?: () => boolean;
  /**
   * The most one payer's deferred payments not yet final may add up to, atomic units (see
   * `settle`'s `deferred`); default 1 USDC.
   */
  maxDeferredPerPayer?: bigint;
  /**
   * The most every payer's deferred payments not settled, and their losses not cleared, may add up
   * to on a token, atomic units: what the instance can lose to payers using many addresses; default 10 USDC.
   */
  maxDeferredTotal?: bigint;
};

/**
 * The x402 `exact` EVM facilitator, in-process: the gateway calls it directly (it is the
 * `FacilitatorPort` of `facilitator.mode: self`), the HTTP routes wrap it. Every payment is taken
 * for one purpose (see `purposes`), which the journal keeps. Business failures are answers
 * (`isValid: false`, `success: false`); only its own faults throw (FacilitatorUnavailableError).
 *
 * @example
 * const facilitator = createFacilitator({ network, client, journal: store.journal, relayerKeys });
 * await facilitator.reconcile();                               // finish what a crash left behind
 * const verdict = await facilitator.verify(body, purposes.api); // { isValid: true, payer }
 */
export function createFacilitator(options: FacilitatorOptions) {
  const { network, client, journal } = options;
  const logger = options.logger ?? pino({ level: 'silent' });
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const rules = intentRules(network, options.assets, options.validityOverTimeoutSeconds);
  const multicall3 = options.multicall3 ?? true;
  const relayers = createRelayerPool({
    keys: options.relayerKeys,
    client,
    network,
    ...(multicall3 ? {} : { maxBatch: 1 }),
    ...(options.holdsRelayers ? { mayAct: options.holdsRelayers } : {}),
  });
  const readState = createStateReader(client, { multicall3 });
  const wallet = deployedWallet(readState);
  const minimumAmount = options.minimumAmount ?? 1n;
  /** The settlement policy, for the public API only: the gateway's own calls and top-ups are its business. */
  async function admit(intent: PaymentIntent, purpose: string | undefined): Promise<Rejection | undefined> {
    if (purpose !== purposes.api) return undefined;
    const payer = intent.authorization.from;
    if (intent.amount < minimumAmount) {
      const message = `this facilitator settles payments of at least ${minimumAmount} atomic units, not ${intent.amount}`;
      return { reason: reasons.amountBelowMinimum, message, payer };
    }
    if (!options.payees) return undefined;
    const payTo = intent.payTo.toLowerCase();
    for (const payee of await options.payees()) if (payee.toLowerCase() === payTo) return undefined;
    return { reason: reasons.recipientNotAllowed, message: `this facilitator settles only for its own payees, not ${intent.payTo}`, payer };
  }
  const pending = new Set<Promise<unknown>>();
  const settler = createSettler({
    rules,
    client,
    readState,
    journal,
    relayers,
    now,
    admit,
    receiptTimeoutMs: options.receiptTimeoutMs ?? network.blockTimeMs * 8,
    deferredCap: options.maxDeferredPerPayer ?? 1_000_000n,
    deferredTotal: options.maxDeferredTotal ?? 10_000_000n,
    background(task) {
      const tracked = task
        .catch((err: unknown) => logger.error({ err }, 'settlement watcher failed'))
        .finally(() => pending.delete(tracked));
      pending.add(tracked);
    },
  });

  return {
    network,
    relayers: relayers.addresses,

    /**
     * Whether a payment would be taken for `purpose` (the public API's is `purposes.api`, which
     * the policy applies to); without one, whether it is good and unused, as proof of its payer.
     */
    async verify(request: FacilitatorRequest, purpose?: string): Promise<Verdict> {
      return answer(request, await verifyPayment({ rules, readState, journal, now, admit }, request, purpose));
    },

    /**
     * Whether a payment is signed by the payer it names and not in the journal already (see
     * `FacilitatorPort.authenticate`): a smart wallet's signature is asked of the chain.
     */
    async authenticate(request: FacilitatorRequest, purpose: string): Promise<Verdict> {
      return answer(request, await authenticatePayer({ rules, now, journal, wallet }, request, purpose));
    },

    /**
     * Verifies a payment and holds it for `purpose`, one tool call (journal state `verified`),
     * before the upstream runs: of concurrent requests carrying the same authorization, one gets
     * the hold. Settle it afterwards with the same purpose, or `release` it if the call failed.
     *
     * The hold is written while the chain state is in flight (the write and the round trip
     * overlap), and given back if the chain then refuses the payment.
     *
     * @example const held = await facilitator.reserve(request, purposes.call(server, callHash));
     */
    async reserve(request: FacilitatorRequest, purpose: string): Promise<Reserved> {
      const refuse = (r: Rejection) => refusal(request, r);
      const checked = await checkPayment({ rules, journal, now, admit }, request, purpose);
      if (!checked.ok) return refuse(checked);
      const { intent } = checked;
      const lost = await journal.losses(intent.key);
      if (lost.count > 0) {
        const message =
          `${lost.count} earlier payment(s) of this payer, ${lost.amount} atomic units in all, were delivered and then failed on ` +
          'chain; no paid call is taken from this payer until the operator clears them (POST /admin/losses/<payer>/clear)';
        return refuse({ reason: reasons.unsettledLosses, message, payer: intent.authorization.from });
      }
      let held: Awaited<ReturnType<PaymentJournal['reserve']>> | undefined;
      const giveBack = () => (held?.reserved ? journal.releaseHold(intent.key) : undefined);
      let verdict;
      try {
        verdict = await verifyIntent({ rules, readState }, intent, async () => {
          held = await journal.reserve(toNewPayment(intent, purpose));
        });
      } catch (error) {
        await giveBack();
        throw error;
      }
      if (!verdict.ok) {
        await giveBack();
        return refuse(verdict);
      }
      if (!held?.reserved) {
        const message = 'this payment is already used by another call';
        return refuse({ reason: reasons.nonceUsed, message, payer: intent.authorization.from, costly: true });
      }
      return { isValid: true, payer: intent.authorization.from, key: intent.key };
    },

    /**
     * Gives up a held payment whose call failed: nothing is settled, and the record says why.
     * Only a hold moves; a payment already claimed is finished by its settlement alone.
     *
     * @example await facilitator.release(key, 'upstream answered 500'); // false: it was no longer a hold
     */
    release: (key: PaymentKey, why: string) => journal.failHold(key, { errorReason: 'call_failed', errorMessage: why }),
    /**
     * Gives a hold back when its settlement could not even start (the chain unreachable): the
     * payer may send the same payment again. A claim already under way is left to finish.
     */
    releaseHold: (key: PaymentKey) => journal.releaseHold(key),

    /** Keeps a paid call's result with its payment, before settling it (see `redeliver`). */
    keepResult: (key: PaymentKey, kept: KeptResult) => journal.keepResult(key, kept),

    /**
     * The result kept for this payment, with its receipt, if the payment was taken for `purpose`
     * (the call's) and settled or is settling (then this waits for the outcome): what a client
     * whose answer was lost gets when it sends the same call with the same payment, while the
     * authorization is still valid. Only the journalled payment itself, signature and every
     * authorization field, gets it, at the price it is signed for (`atSignedPrice`), and from the
     * caller it is bound to (`answers`). Never a second settlement, never a second run of the tool.
     *
     * @example const again = await facilitator.redeliver(request, purposes.call(server, callHash), caller);
     */
    async redeliver(
      request: FacilitatorRequest,
      purpose: string,
      caller?: string,
    ): Promise<{ result: string; receipt: SettleResponse } | undefined> {
      const checked = toIntent(atSignedPrice(request), rules, now());
      if (!checked.ok) return undefined;
      const { intent } = checked;
      const record = await journal.get(intent.key);
      if (record?.purpose !== purpose || !presentsRow(intent, record)) return undefined;
      const kept = await journal.keptResult(intent.key);
      if (!answers(kept, purpose, caller)) return undefined;
      const receipt = await settler.outcome(intent);
      if (!receipt || (!receipt.success && receipt.errorReason !== reasons.settlementPending)) return undefined;
      return { result: kept.result, receipt };
    },

    /**
     * Settles a payment for `purpose` (see `purposes`, and `createSettler` for what repeated or
     * concurrent copies get): the public API's is `purposes.api`, in-process callers name theirs.
     * `deferred` (a call on a `settlement: deferred` server) answers before the receipt when the
     * payer's balance and the per-payer cap allow (see `Deferral`).
     *
     * @example const receipt = await facilitator.settle(request, purposes.topup(payTo, `key:${keyId}`));
     */
    async settle(request: FacilitatorRequest, purpose: string, settleOptions?: SettleOptions): Promise<SettleResponse> {
      const settled = await settler.settle(request, purpose, settleOptions);
      const answer = settled.errorReason ? { ...settled, errorReason: reasonFor(request.x402Version, settled.errorReason) } : settled;
      const { success, payer, transaction, errorReason } = answer;
      logger.info({ success, payer, transaction, network: answer.network, ...(errorReason ? { errorReason } : {}) }, 'settle');
      return answer;
    },

    supported(): SupportedResponse {
      return {
        kinds: [
          { x402Version: 2, scheme: 'exact', network: network.caip2 },
          { x402Version: 1, scheme: 'exact', network: network.x402v1 },
        ],
        extensions: [],
        signers: { 'eip155:*': [...relayers.addresses] },
      };
    },

    /**
     * Finishes the journal entries a previous run left between claim and outcome (all, or one
     * owner's: see `recoverOrphans` for several instances on one store), each adopted first (only
     * its holder finishes or releases an entry): one another instance took over meanwhile is its.
     * Says how many it adopted, each finished or looked at.
     */
    async reconcile(filter?: { owner: string | null }): Promise<number> {
      let adopted = 0;
      for (const record of await journal.unfinished(filter)) {
        const mine = await journal.adopt(record, record.owner ?? null);
        if (!mine) continue;
        adopted += 1;
        await settler.reconcile(mine);
      }
      return adopted;
    },

    /** Waits for settlements still being watched after their requests were answered. */
    async drain(): Promise<void> {
      await Promise.all(pending);
    },
  };
}

export type Facilitator = ReturnType<typeof createFacilitator>;

/** A verification's outcome as x402 answers it (see `refusal`). */
function answer(request: FacilitatorRequest, result: Verified): Verdict {
  return result.ok ? { isValid: true, payer: result.intent.authorization.from } : refusal(request, result);
}

/** A refusal as x402 answers it, its reason named in the request's version, saying whether it was `costly`. */
function refusal(request: FacilitatorRequest, r: Rejection): Refusal {
  return {
    isValid: false,
    invalidReason: reasonFor(request.x402Version, r.reason),
    invalidMessage: r.message,
    ...(r.payer ? { payer: r.payer } : {}),
    ...(r.costly ? { costly: true } : {}),
  };
}
