import { createFacilitatorConfig } from '@coinbase/x402';
import { type FacilitatorConfig, HTTPFacilitatorClient } from '@x402/core/http';
import { type PaymentPayload, type PaymentRequirements, SettleError, VerifyError } from '@x402/core/types';
import type { Hex, PublicClient } from 'viem';
import type { Network } from '../chain/networks.js';
import type { PaymentJournal, PaymentRecord, SettlementOutcome } from '../store/journal/journal.js';
import { reasonFor, reasons } from '../x402/reasons.js';
import type { FacilitatorRequest, SettleResponse, VerifyResponse } from '../x402/schemas.js';
import { FacilitatorUnavailableError } from './errors.js';
import {
  type PaymentIntent,
  type Rejection,
  answers,
  atSignedPrice,
  intentRules,
  presentsRow,
  takenLate,
  toIntent,
  toNewPayment,
} from './intent.js';
import type { FacilitatorPort, Refusal, Reserved, Verdict } from './port.js';
import { settledBy } from './settle.js';
import { type WalletCheck, alreadyUsed, authenticatePayer, checkPayment } from './verify.js';

/** How long one request to a remote facilitator may take (settling waits for the chain): `HTTPFacilitatorClient`'s default. */
const REQUEST_TIMEOUT_MS = 90_000;

/** What the gateway keeps and reads locally for a remote facilitator. */
type Local = {
  /** The gateway's own journal: holds, settlement outcomes and kept results stay local. */
  journal: PaymentJournal;
  network: Network;
  /** The chain, read (never written) to learn whether a settlement whose answer was lost happened. */
  client?: PublicClient;
  /** One request's time limit (default 90 s). */
  timeoutMs?: number;
  /** For tests that move time; Unix seconds. */
  now?: () => number;
};

/** Where a remote facilitator is, and what the gateway keeps and reads locally for it. */
export type RemoteOptions = Local & {
  /** The facilitator's base URL (its `/verify` and `/settle` under it). */
  url: string;
  /** Sent as `Authorization: Bearer` to /verify and /settle (a turnpike facilitator with TURNPIKE_FACILITATOR_KEYS). */
  apiKey?: string;
};

/** x402's two calls to another facilitator, with its answers as answers and anything else as unavailability. */
type X402Client = {
  verify(request: FacilitatorRequest): Promise<VerifyResponse>;
  settle(request: FacilitatorRequest): Promise<SettleResponse>;
};

/**
 * The `FacilitatorPort` over HTTP (`facilitator.mode: remote`): another x402 facilitator verifies
 * and settles, through the official `HTTPFacilitatorClient`, while the gateway's guarantees are
 * kept in its own journal, which the remote knows nothing of:
 *
 * - the hold: the checks that need no chain, then the payment held locally (one per
 *   authorization), then one remote `/verify` for it (copies of a held payment never reach it);
 * - the settlement: claimed locally first, so one `/settle` per authorization leaves this gateway
 *   (copies presented meanwhile wait for it); a success is written as `settled` with its
 *   transaction before the result is delivered; a `settlement_pending` answer is asked once more
 *   with the identical payment, as x402's servers do (still pending, it is delivered, as
 *   in-process: the remote says its transaction is out); a definite failure is written as `failed`;
 * - an answer that never came (transport failure, timeout, 5xx) leaves the claim `submitting`,
 *   marked as answered without an outcome: the result is withheld and the payment is never taken
 *   again; the same payment sent again asks the remote once more (a claim whose instance stopped
 *   mid-ask is asked again once the request could have timed out), and what it confirms is
 *   delivered from the kept result. An "already used" answer to that second ask (what a
 *   facilitator says of a payment it settled, and of one its payer canceled) is checked on chain:
 *   the token's `AuthorizationUsed` log for the payer and nonce, and that transaction's Transfer
 *   of exactly this payment, settle it; otherwise (or without a chain client) the claim stays open.
 *
 * @example const port = remoteFacilitator({ url: 'https://facilitator.example', apiKey, journal: store.journal, network });
 */
export function remoteFacilitator(options: RemoteOptions) {
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const remote = x402Client({ url: options.url, timeoutMs }, options.apiKey);
  return { url: options.url, ...journalled(remote, options, timeoutMs) };
}

/** A CDP API key: its id and its secret (CDP_API_KEY_ID / CDP_API_KEY_SECRET). */
export type CdpApiKey = { cdpApiKeyId: string; cdpApiKeySecret: string };

/**
 * Coinbase's hosted facilitator (`facilitator.mode: cdp`) as the gateway's `FacilitatorPort`,
 * authenticated with a CDP API key (CDP_API_KEY_ID / CDP_API_KEY_SECRET; a JWT per request,
 * made by `@coinbase/x402`, bound to CDP's host and path); `url` replaces CDP's own endpoint (a
 * proxy that forwards to it). Same local guarantees as `remoteFacilitator`.
 *
 * @example const port = cdpFacilitator({ cdpApiKeyId, cdpApiKeySecret }, { journal: store.journal, network });
 */
export function cdpFacilitator(key: CdpApiKey, options: Omit<RemoteOptions, 'url' | 'apiKey'> & { url?: string }) {
  const config = createFacilitatorConfig(key.cdpApiKeyId, key.cdpApiKeySecret);
  const url = options.url ?? config.url!;
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const remote = x402Client({ ...config, url, timeoutMs });
  return { url, ...journalled(remote, options, timeoutMs) };
}

function x402Client(config: FacilitatorConfig, apiKey?: string): X402Client {
  const bearer = apiKey ? { authorization: `Bearer ${apiKey}` } : undefined;
  const authorized = bearer ? { ...config, createAuthHeaders: async () => ({ verify: bearer, settle: bearer }) } : config;
  const client = new HTTPFacilitatorClient(authorized);
  const unavailable = (what: string, error: unknown) =>
    new FacilitatorUnavailableError(`the remote facilitator did not ${what}: ${(error as Error).message}`, { cause: error });
  // Our wire schemas are a looser reading of the same shapes the client types.
  const args = (r: FacilitatorRequest) =>
    [r.paymentPayload as unknown as PaymentPayload, r.paymentRequirements as unknown as PaymentRequirements] as const;
  return {
    async verify(r) {
      try {
        return (await client.verify(...args(r))) as VerifyResponse;
      } catch (error) {
        // A refusal sent with a 4xx status is still a refusal.
        if (!(error instanceof VerifyError) || error.statusCode >= 500) throw unavailable('verify', error);
        const { invalidReason, invalidMessage, payer } = error;
        const reason = invalidReason ?? reasons.unexpectedVerify;
        return { isValid: false, invalidReason: reason, ...(invalidMessage ? { invalidMessage } : {}), ...(payer ? { payer } : {}) };
      }
    },
    async settle(r) {
      try {
        return (await client.settle(...args(r))) as SettleResponse;
      } catch (error) {
        if (!(error instanceof SettleError) || error.statusCode >= 500) throw unavailable('settle', error);
        const { errorReason, errorMessage, payer, transaction, network } = error;
        return {
          success: false,
          transaction: transaction ?? '',
          network: network ?? r.paymentRequirements.network,
          ...(payer ? { payer } : {}),
          errorReason: errorReason ?? reasons.unexpectedSettle,
          ...(errorMessage ? { errorMessage } : {}),
        };
      }
    },
  };
}

const unixNow = () => Math.floor(Date.now() / 1000);

/** The port over a remote facilitator, with holds, outcomes and kept results in the local journal. */
function journalled(remote: X402Client, local: Local, timeoutMs: number) {
  const { journal, network, client, now = unixNow } = local;
  const rules = intentRules(network);
  const admit = async () => undefined;
  /** A refusal of `request`'s payment, its reason named in the request's version (as the remote and in-process answer). */
  const refuse = (request: FacilitatorRequest, r: Rejection): Refusal => ({
    isValid: false,
    invalidReason: reasonFor(request.x402Version, r.reason),
    invalidMessage: r.message,
    ...(r.payer ? { payer: r.payer } : {}),
    ...(r.costly ? { costly: true } : {}),
  });
  /** The remote's own verdict: a refusal took its /verify (and, behind it, the chain). */
  const askVerify = async (request: FacilitatorRequest): Promise<Verdict> => {
    const verdict = await remote.verify(request);
    return verdict.isValid ? verdict : { ...verdict, costly: true };
  };
  const failed = (networkId: string, r: Rejection): SettleResponse => ({
    success: false,
    transaction: '',
    network: networkId,
    ...(r.payer ? { payer: r.payer } : {}),
    errorReason: r.reason,
    errorMessage: r.message,
  });
  /** What a row says about its settlement; an open claim is pending. */
  const fromRow = (intent: PaymentIntent, record: PaymentRecord | undefined): SettleResponse => {
    const payer = intent.authorization.from;
    if (record?.state === 'settled') return { success: true, transaction: record.txHash ?? '', network: intent.networkId, payer };
    if (record?.state === 'failed') {
      const reason = (record.errorReason ?? reasons.transactionFailed) as Rejection['reason'];
      return failed(intent.networkId, { reason, message: record.errorMessage ?? 'the settlement failed', payer });
    }
    const message = 'the remote facilitator has not confirmed this settlement yet; retry with the same payment';
    return failed(intent.networkId, { reason: reasons.settlementPending, message, payer });
  };
  /** Writes an outcome unless another instance's ask already did (the row is final then), or took the row over (see `adopt`). */
  const finish = async (intent: PaymentIntent, outcome: SettlementOutcome) => {
    try {
      await journal.finish(intent.key, outcome);
    } catch (error) {
      const record = await journal.get(intent.key);
      if (record?.state !== 'settled' && record?.state !== 'failed') throw error;
    }
  };
  // This process's asks, by payment: a copy waits for the ask under way instead of making another.
  const asking = new Map<string, Promise<SettleResponse>>();
  const keyString = (intent: PaymentIntent) => `${intent.key.payer}:${intent.key.nonce}`;

  /** The transaction that moved exactly this payment since `sinceMs` (the hold), whoever sent it (see `settledBy`); undefined without a chain client. */
  const minedFor = (intent: PaymentIntent, sinceMs: number) =>
    client
      ? settledBy(
          client,
          network.blockTimeMs,
          { ...intent.key, payTo: intent.payTo, amount: intent.amount, asset: intent.asset.address },
          sinceMs,
        )
      : Promise.resolve(undefined);

  /**
   * Asks the remote to settle a payment this gateway claimed, once at a time here, and writes down
   * what it confirms. `lostSince`: asked again after an ask whose answer never came (the hold's
   * time), when "already used" may be the first ask's own settlement: the token then says whether
   * it moved this payment. An ask that ends without an outcome is marked (`answeredPending`): the
   * next presentation of the payment may ask again at once.
   */
  function ask(request: FacilitatorRequest, intent: PaymentIntent, lostSince?: number): Promise<SettleResponse> {
    const key = keyString(intent);
    const running = asking.get(key);
    if (running) return running;
    const work = (async () => {
      let answer: SettleResponse;
      try {
        answer = await remote.settle(request);
        if (!answer.success && answer.errorReason === reasons.settlementPending) answer = await remote.settle(request);
      } catch (error) {
        await journal.answeredPending(intent.key);
        throw error;
      }
      // A v1 payment's "used" may come by the v1 reference's name (`invalid_payment`, as turnpike's own names it).
      const used =
        lostSince !== undefined &&
        (answer.errorReason === reasons.nonceUsed || answer.errorReason === reasonFor(request.x402Version, reasons.nonceUsed));
      const mined = used ? await minedFor(intent, lostSince) : undefined;
      if (mined) answer = { success: true, transaction: mined, network: intent.networkId, payer: intent.authorization.from };
      if (answer.success) {
        await finish(intent, { state: 'settled', txHash: answer.transaction as Hex });
      } else if (answer.errorReason === reasons.settlementPending || used) {
        await journal.answeredPending(intent.key);
      } else {
        const { errorReason = reasons.unexpectedSettle, errorMessage } = answer;
        await finish(intent, { state: 'failed', errorReason, ...(errorMessage ? { errorMessage } : {}) });
      }
      return answer;
    })().finally(() => asking.delete(key));
    asking.set(key, work);
    return work;
  }

  /**
   * The answer for a payment already taken: its recorded outcome; for an open claim, the ask under
   * way here, or a new ask when the last one ended without an answer (or its instance stopped
   * before the request could have timed out); else pending (another instance is asking).
   */
  async function answerTaken(request: FacilitatorRequest, intent: PaymentIntent, record: PaymentRecord, purpose: string) {
    if (record.purpose !== purpose || record.state === 'verified' || !presentsRow(intent, record)) {
      return failed(intent.networkId, alreadyUsed(record, intent.authorization.from));
    }
    if (record.state === 'settled' || record.state === 'failed') return fromRow(intent, record);
    const running = asking.get(keyString(intent));
    if (running) {
      await running.catch(() => undefined);
      return fromRow(intent, await journal.get(intent.key));
    }
    if (record.pendingAnswered || Date.now() - record.updatedAt > timeoutMs) {
      // Asked here, it is finished here: taken over from the instance whose ask ended (one taker wins).
      const mine = await journal.adopt(intent.key, record.owner ?? null);
      return mine ? ask(request, intent, record.createdAt) : fromRow(intent, await journal.get(intent.key));
    }
    return fromRow(intent, record);
  }

  // A smart wallet's signature, judged as the remote may judge it (ERC-1271, or ERC-6492 for a
  // wallet not deployed yet) by viem's verifyHash: an `eth_call`, no transaction.
  const wallet: WalletCheck | undefined =
    client &&
    (async (intent, digest) => {
      const payer = intent.authorization.from;
      let signed: boolean;
      try {
        signed = await client.verifyHash({ address: payer, hash: digest, signature: intent.signature });
      } catch (error) {
        throw new FacilitatorUnavailableError('cannot ask the chain whether the wallet signed this payment', { cause: error });
      }
      const message = 'signature is not the payer’s (ECDSA, ERC-1271 or ERC-6492)';
      return signed ? undefined : { reason: reasons.signature, message, payer, costly: true };
    });

  return {
    /**
     * Checked here, never asked of the remote (its `/verify` also judges nonce and balance, and
     * says "used" of a payment whose answer was lost): an EOA's signature locally; a smart wallet's
     * on chain through the gateway's own client, and refused without one; then the local journal,
     * which holds every payment this gateway took (see `authenticatePayer`).
     */
    async authenticate(request, purpose) {
      const signer = await authenticatePayer({ rules, now, journal, wallet }, request, purpose);
      return signer.ok ? { isValid: true, payer: signer.intent.authorization.from } : refuse(request, signer);
    },

    async verify(request) {
      const checked = await checkPayment({ rules, journal, now, admit }, request);
      return checked.ok ? askVerify(request) : refuse(request, checked);
    },

    async reserve(request, purpose): Promise<Reserved> {
      const checked = await checkPayment({ rules, journal, now, admit }, request, purpose);
      if (!checked.ok) return refuse(request, checked);
      const { intent } = checked;
      const payer = intent.authorization.from;
      const held = await journal.reserve(toNewPayment(intent, purpose));
      if (!held.reserved)
        return refuse(request, { reason: reasons.nonceUsed, message: 'this payment is already used by another call', payer });
      let verdict;
      try {
        verdict = await askVerify(request);
      } catch (error) {
        await journal.releaseHold(intent.key);
        throw error;
      }
      if (!verdict.isValid) {
        await journal.releaseHold(intent.key);
        return verdict;
      }
      return { isValid: true, payer, key: intent.key };
    },

    keepResult: (key, kept) => journal.keepResult(key, kept),
    release: (key, why) => journal.failHold(key, { errorReason: 'call_failed', errorMessage: why }),
    releaseHold: (key) => journal.releaseHold(key),

    async settle(request, purpose) {
      const checked = toIntent(request, rules, now());
      if (!checked.ok) {
        const late = await takenLate(journal, rules, request, purpose, checked);
        // Its outcome as the journal holds it: the remote is never asked to settle an expired authorization.
        const final = late?.record.state === 'settled' || late?.record.state === 'failed';
        return final ? answerTaken(request, late.intent, late.record, purpose) : failed(request.paymentRequirements.network, checked);
      }
      const { intent } = checked;
      const claim = await journal.claim(toNewPayment(intent, purpose));
      if (!claim.claimed) return answerTaken(request, intent, claim.record, purpose);
      return ask(request, intent);
    },

    async redeliver(presented, purpose, caller?) {
      // Asked of the remote again (an answer never came), it is the request as it was settled.
      const request = atSignedPrice(presented);
      const checked = toIntent(request, rules, now());
      if (!checked.ok) return undefined;
      const { intent } = checked;
      const record = await journal.get(intent.key);
      if (!record || record.purpose !== purpose || record.state === 'verified' || !presentsRow(intent, record)) return undefined;
      const kept = await journal.keptResult(intent.key);
      if (!answers(kept, purpose, caller)) return undefined;
      const receipt = await answerTaken(request, intent, record, purpose);
      return receipt.success ? { result: kept.result, receipt } : undefined;
    },

    /**
     * Ends the holds of calls a stopped instance left (all, or one owner's): nothing was sent for
     * them. Claims whose answer never came stay for the payer's retry (see `remoteFacilitator`).
     */
    async reconcile(filter?: { owner: string | null }): Promise<number> {
      let ended = 0;
      for (const record of await journal.unfinished(filter)) {
        if (record.state !== 'verified') continue;
        await journal.failHold(record, { errorReason: 'call_abandoned', errorMessage: 'the gateway stopped during the call' });
        ended += 1;
      }
      return ended;
    },
  } satisfies FacilitatorPort & { reconcile(filter?: { owner: string | null }): Promise<number> };
}
