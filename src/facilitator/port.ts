import type { KeptResult, PaymentKey } from '../store/journal/journal.js';
import type { FacilitatorRequest, SettleResponse, VerifyResponse } from '../x402/schemas.js';
import type { SettleOptions } from './settle.js';

/**
 * When a server's paid result leaves: `strict` once the settlement's receipt is in (one block);
 * `deferred` once its transaction is signed and journalled, if the payer's balance covers it net
 * of their other unfinished payments and the per-payer cap allows (else strict for that call).
 */
export const settlementModes = ['strict', 'deferred'] as const;
export type SettlementMode = (typeof settlementModes)[number];

/**
 * A payment refused, as x402 answers it, and whether judging it was `costly`: it took a round trip
 * someone pays for (a chain read, a remote facilitator's /verify), which the gateway throttles per
 * caller (see `refusalThrottle`). Never sent on the wire: x402 has no such field.
 *
 * @example { isValid: false, invalidReason: 'insufficient_funds', payer, costly: true }
 */
export type Refusal = VerifyResponse & { isValid: false; costly?: true };

/** A payment judged good (its payer named), or refused. */
export type Verdict = { isValid: true; payer: string } | Refusal;

/** A payment held for one call, or the reason it is not. */
export type Reserved = Refusal | { isValid: true; payer: string; key: PaymentKey };

/**
 * What the gateway needs from a facilitator to take x402 payments for tool calls and top-ups:
 * more than x402's `/verify` + `/settle`, because a paid call is held while its tool runs. Every
 * implementation keeps these guarantees, in the gateway's own journal (unique per authorization):
 *
 * - one hold per authorization: of concurrent requests carrying one payment, one runs the tool;
 * - no priced result without its settlement: `settle` answers success (or `settlement_pending`
 *   with a transaction signed, journalled and sent) before a result leaves;
 * - one settlement per authorization, for the one purpose it was held for (see `purposes`);
 * - results kept for redelivery: a client whose answer was lost sends the same call with the same
 *   payment and gets the kept result and receipt, never a second run or settlement;
 * - a kept result only for its caller: settlement publishes the payment (the authorization and its
 *   signature are in the transaction's calldata, a deferred one in the mempool before its payer has
 *   the result), so a result is bound to what a retry shows and a chain watcher does not: the call's
 *   `Idempotency-Key`, or without one (most x402 clients) the network the call came from
 *   (`KeptResult.caller`). A watcher on the payer's own network (behind one NAT, or every caller
 *   when turnpike sees only a proxy's address) who guesses the call reads that result free, until
 *   the authorization expires. Not bound to the MCP session: it dies with its upstream, and a payer
 *   retrying in a new one would have paid for nothing.
 *
 * `createFacilitator` implements it in-process (turnpike settles with its own relayers);
 * `remoteFacilitator` and `cdpFacilitator` over HTTP (x402 `/verify` and `/settle` of another
 * facilitator, the hold and the kept result in the local journal). Business failures are answers;
 * a facilitator that cannot do its part throws FacilitatorUnavailableError.
 *
 * @example
 * const held = await port.reserve(request, purposes.call(server, callHash));
 * if (held.isValid) { await port.keepResult(held.key, kept); const receipt = await port.settle(request, kept.call); }
 */
export type FacilitatorPort = {
  /** Whether a payment is good and unused, as proof of its payer (free calls): nothing is held or settled. */
  verify(request: FacilitatorRequest): Promise<Verdict>;
  /**
   * Whether a payment is signed by the payer it names, at whatever price it is signed for, and not
   * one the journal already holds (see `authenticatePayer`): asked, with the `purpose` it would be
   * taken for, before anything is counted in that payer's name (free calls, tier counts, quota
   * notices). Nothing is held; balance and the nonce on chain are not judged. An EOA's signature
   * is checked locally (no round trip); a smart wallet's by the wallet, on chain (a remote
   * facilitator's port asks through the gateway's chain client, never the remote, and refuses it
   * without one); then one journal read. A signature that is not the payer's is
   * `invalid_exact_evm_signature`; the payer's payment already taken is the nonce used (for this
   * same call too: its retry is `redeliver`'s), or, taken for `purpose` and failed, why it failed.
   */
  authenticate(request: FacilitatorRequest, purpose: string): Promise<Verdict>;
  /** Verifies a payment and holds it for `purpose` (one tool call) before the tool runs. */
  reserve(request: FacilitatorRequest, purpose: string): Promise<Reserved>;
  /** Keeps a paid call's result with its held payment, before settling it (see `redeliver`). */
  keepResult(key: PaymentKey, kept: KeptResult): Promise<void>;
  /**
   * Settles a payment for `purpose`: the caller's own hold, or a new one (a top-up); once per
   * authorization. `deferred` asks to answer once the transaction is signed and journalled, before
   * its receipt, when the payer's balance and cap allow (turnpike's own facilitator; the others settle strict).
   */
  settle(request: FacilitatorRequest, purpose: string, options?: SettleOptions): Promise<SettleResponse>;
  /**
   * The result kept for this very payment (signature and every field) taken for `purpose`, with
   * its receipt, once its settlement succeeded or is pending (its transaction out, so a failure is
   * a loss); otherwise undefined. The payment is judged at the price it is signed for
   * (`atSignedPrice`): a retry is answered before its payer's own price is known, and only the
   * journalled row itself matches. A result kept with a `caller` goes only to a retry that shows
   * the same one (an opaque digest the rail makes of what its requests show, see `KeptResult`): a
   * genuine retry sends the same `Idempotency-Key`, or comes from the same network; a copier has
   * neither.
   * FacilitatorUnavailableError when the outcome
   * cannot be known yet (a claim nothing was sent for, a remote not answering): the same payment may be sent again.
   */
  redeliver(
    request: FacilitatorRequest,
    purpose: string,
    caller?: string,
  ): Promise<{ result: string; receipt: SettleResponse } | undefined>;
  /** Ends a hold whose call failed (nothing settled; the record says why). False when it was no longer a hold. */
  release(key: PaymentKey, why: string): Promise<boolean>;
  /** Gives a hold back (the payer may send it again) when its settlement could not even start. Claims stay. */
  releaseHold(key: PaymentKey): Promise<void>;
};
