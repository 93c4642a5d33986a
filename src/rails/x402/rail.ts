import { createHash } from 'node:crypto';
import { errorCodes } from '../../errors.js';
import { FacilitatorUnavailableError } from '../../facilitator/errors.js';
import type { FacilitatorPort, Refusal } from '../../facilitator/port.js';
import { purposes } from '../../facilitator/purposes.js';
import { type Message, type ToolResult, rpcError, rpcResult } from '../../gateway/jsonrpc.js';
import { paymentIn, receiptMeta } from '../../gateway/messages.js';
import { paymentRequestFor } from '../../gateway/payment-required.js';
import { atomicToUsd } from '../../pricing/pricing.js';
import { x402Ref } from '../../operators/revenue.js';
import { PaymentDecodeError, encodeHeader } from '../../x402/codec.js';
import { networkOf } from '../../upstream/caller-network.js';
import { reasonFor, reasons } from '../../x402/reasons.js';
import type { FacilitatorRequest, SettleResponse, VerifyResponse } from '../../x402/schemas.js';
import type { Metered, PaidCall, RailContext, RailFactory, Taken } from '../rail.js';
import type { Presenter, RefusalThrottle } from './refusals.js';

/**
 * The x402 rail: takes every priced call no other rail took. Without a payment, the challenge
 * (the upstream is not contacted); with one: verify it and hold it in the journal for this
 * call (concurrent copies run the tool once), and once the tool produced its result, settle it,
 * then deliver the result with its receipt: after the receipt (`settlement: strict`), or once the
 * transaction is signed, journalled and sent when the payer may be deferred (`deferred`, see
 * `settlementModes`). A settlement that fails withholds the output. With `refusals`, a caller
 * network or a proven payer whose payments keep being refused after a round trip (a chain read, a
 * remote's /verify) is answered `rate_limited` before its next payment costs one (see `refusalThrottle`).
 *
 * @example createGateway({ …, rails: [x402Rail({ facilitator, refusals: refusalThrottle({ perMinute: 30 }) })] })
 */
export const x402Rail =
  ({ facilitator, refusals }: { facilitator: FacilitatorPort; refusals?: RefusalThrottle }): RailFactory =>
  (context) => ({
    takes: () => true,
    take: (call) => x402Call(facilitator, context, call, refusals),
  });

async function x402Call(facilitator: FacilitatorPort, context: RailContext, call: PaidCall, refusals?: RefusalThrottle): Promise<Taken> {
  const { rpc, tool, offer } = call;
  const raw = paymentIn(rpc, call.request.headers);
  if (raw === undefined)
    return context.challenge(call, `payment required: tool "${tool.name}" costs ${atomicToUsd(tool.amount)} USDC`, 'payment_missing');
  let request: FacilitatorRequest;
  try {
    request = paymentRequestFor(raw, offer);
  } catch (error) {
    if (error instanceof PaymentDecodeError) return context.challenge(call, `${error.code}: ${error.message}`, error.code);
    throw error;
  }
  // What this payment is taken for: this call (tool and arguments) on this server, and nothing else;
  // and who may have its result again: this caller (see `callerOf`).
  const taken: Taken402 = {
    raw,
    request,
    purpose: purposes.call(context.server, callIdentity(context.server, rpc)),
    caller: callerOf(call.request.headers, call.address),
    network: call.address === undefined ? {} : { address: call.address },
  };
  // Before anything that may take a round trip: a network whose payments keep costing one for nothing
  // waits; a call paid already is still answered what was kept for it (a journal read, no round trip).
  const limitedNetwork = throttled(context, call, refusals, taken.network);
  if (limitedNetwork) return (await keptFor(facilitator, context, call, taken)) ?? limitedNetwork;
  // Counted against the network until judged: payments sent at once cannot all pass the check above before one is refused.
  const end = refusals?.judging(taken.network);
  try {
    return await judged(facilitator, context, call, taken, refusals);
  } finally {
    end?.();
  }
}

/** A call's payment as presented, with what it is taken for (`purpose`), who may have its result again (`caller`) and from where (`network`). */
type Taken402 = { raw: unknown; request: FacilitatorRequest; purpose: string; caller: string | undefined; network: Presenter };

/** The rest of `x402Call`, for a payment the throttle let through, while it is judged. */
async function judged(
  facilitator: FacilitatorPort,
  context: RailContext,
  call: PaidCall,
  payment: Taken402,
  refusals: RefusalThrottle | undefined,
): Promise<Taken> {
  const { id, tool, offer } = call;
  const { raw, network, purpose, caller } = payment;
  let { request } = payment;
  // `authorization.from` is only a claim until the signature is shown to be that payer's, and a
  // payment once settled is public: nothing is counted in a payer's name (free calls, tier counts,
  // quota notices), nor an event named after them, for a payment someone else signed or one the
  // journal already holds. One local recovery and one journal read for an EOA; a smart wallet's on chain.
  let signer;
  try {
    signer = await facilitator.authenticate(request, purpose);
  } catch (error) {
    if (error instanceof FacilitatorUnavailableError) return unavailable(id, error);
    throw error;
  }
  if (!signer.isValid) {
    // A used payment's payer is named only once its signature was proven (then `authenticate` says used).
    const again = await redelivered(facilitator, context, call, { request, purpose, caller, payer: signer.payer }, signer);
    // Its signer unproven: counted against the network that sent it, never the payer it names.
    return again ?? refused(context, call, signer, refusals, network);
  }
  const from = signer.payer.toLowerCase();
  call.caller = { payer: from };
  // This payer's signature is proven: their own refusals count against them too, except "used", which
  // anyone can make of a payment its settlement published.
  const limitedPayer = throttled(context, call, refusals, { payer: from });
  if (limitedPayer) return (await keptFor(facilitator, context, call, payment, from)) ?? limitedPayer;
  const refuse = (verdict: Refusal) => {
    const used = verdict.invalidReason === reasonFor(request.x402Version, reasons.nonceUsed);
    return refused(context, call, verdict, refusals, used ? network : { ...network, payer: from });
  };
  const metering = await context.meter(from, tool.name);
  if (metering?.price === 0n) return freeCall(facilitator, context, call, request, metering, refuse);
  if (metering && metering.price !== offer.amount) {
    // This payer's price (their tier) is not the list price: ask for exactly what it is.
    call.offer = { ...offer, amount: metering.price };
    request = paymentRequestFor(raw, call.offer);
  }

  let held;
  try {
    held = await facilitator.reserve(request, purpose);
  } catch (error) {
    await metering?.uncount();
    if (error instanceof FacilitatorUnavailableError) return unavailable(id, error);
    throw error;
  }
  if (!held.isValid) {
    // Another copy of this payment was held first (a concurrent retry), or the chain says it is used.
    await metering?.uncount();
    const again = await redelivered(facilitator, context, call, { request, purpose, caller, payer: from }, held);
    return again ?? refuse(held);
  }
  const { key } = held;
  const amount = call.offer.amount;

  let receipt: SettleResponse | undefined;
  const settlementFailed = async (message: Message, why: string): Promise<Message> => {
    await metering?.uncount();
    context.count(tool.name, 'settlement_failed');
    context.event({ type: 'settlement.failed', tool: tool.name, rail: 'x402', amount, caller: { payer: key.payer }, reason: why });
    return context.withheld(call, `settlement failed: ${why}`, message);
  };
  return {
    charge: {
      async undo(why) {
        await metering?.uncount();
        await facilitator.release(key, why);
      },
      async deliver(message, result) {
        await context.book('x402', { caller: key.payer, tool: tool.name, amount, ref: x402Ref(key, context.server) });
        await facilitator.keepResult(key, { call: purpose, result: JSON.stringify(result), ...(caller ? { caller } : {}) });
        const stop = context.metrics.settlementSeconds.startTimer();
        try {
          receipt = await facilitator.settle(request, purpose, { deferred: context.settlement === 'deferred' });
        } catch (error) {
          if (!(error instanceof FacilitatorUnavailableError)) throw error;
          // Nothing reached the chain if the hold is still a hold: the same payment may be retried.
          await facilitator.releaseHold(key);
          return settlementFailed(message, `${error.message}; retry with the same payment`);
        }
        stop();
        // Pending is not failure: the transaction is out and verified to be payable.
        if (!receipt.success && receipt.errorReason !== reasons.settlementPending) {
          return settlementFailed(message, `${receipt.errorReason}${receipt.errorMessage ? `: ${receipt.errorMessage}` : ''}`);
        }
        await metering?.delivered();
        context.count(tool.name, 'paid');
        context.event({ type: 'call.paid', tool: tool.name, rail: 'x402', amount, caller: { payer: key.payer } });
        const { network } = context;
        context.metrics.revenue.inc({ server: context.serverLabel, asset: network.usdc.address, network: network.caip2 }, Number(amount));
        return { ...message, result: { ...result, _meta: { ...result._meta, ...receiptMeta(call.rpc, receipt) } } };
      },
    },
    headers: () => (receipt ? receiptHeaders(receipt) : {}),
  };
}

/**
 * A call inside the payer's free calls (or free tier): the signed payment proves who the payer is
 * and that they could pay the quoted price (it must be for that price, and covered by their
 * balance), so throwaway keys cannot take the free calls. It is verified, never settled; a
 * refusal is `refuse`'s answer (which counts it, see `refusalThrottle`).
 */
async function freeCall(
  facilitator: FacilitatorPort,
  context: RailContext,
  call: PaidCall,
  request: FacilitatorRequest,
  metering: Metered,
  refuse: (verdict: Refusal) => Response,
): Promise<Taken> {
  let verdict;
  try {
    verdict = await facilitator.verify(request);
  } catch (error) {
    await metering.uncount();
    if (error instanceof FacilitatorUnavailableError) return unavailable(call.id, error);
    throw error;
  }
  if (!verdict.isValid) {
    await metering.uncount();
    return refuse(verdict);
  }
  return { charge: context.free(call, metering, verdict.payer.toLowerCase()) };
}

/**
 * The same call with the same payment again, its answer lost (not its result): the kept result
 * and receipt, when the payment was refused as used and `redeliver` finds it taken for this very
 * call, from this caller (or the facilitator's unavailability); undefined for any other refusal. The call was
 * counted once, when it was first taken.
 */
async function redelivered(
  facilitator: FacilitatorPort,
  context: RailContext,
  call: PaidCall,
  { request, purpose, caller, payer }: { request: FacilitatorRequest; purpose: string; caller: string | undefined; payer?: string },
  verdict: VerifyResponse & { isValid: false },
): Promise<Response | undefined> {
  if (verdict.invalidReason !== reasonFor(request.x402Version, reasons.nonceUsed)) return undefined;
  return kept(facilitator, context, call, { request, purpose, caller, payer });
}

/**
 * A throttled caller's payment, when it is the one this very call was paid with from this caller:
 * the kept result and receipt (as `redelivered` gives them), so a payer whose answer was lost is
 * not kept from what it paid for by others' refusals; undefined otherwise, or when the facilitator
 * cannot say (the throttle's answer stands then).
 */
async function keptFor(facilitator: FacilitatorPort, context: RailContext, call: PaidCall, taken: Taken402, payer?: string) {
  const { request, purpose, caller } = taken;
  const again = await kept(facilitator, context, call, { request, purpose, caller, payer });
  return again?.status === 200 ? again : undefined;
}

/** The kept result of `call`'s payment for `purpose` and `caller`, answered again; undefined when there is none. */
async function kept(
  facilitator: FacilitatorPort,
  context: RailContext,
  call: PaidCall,
  { request, purpose, caller, payer }: { request: FacilitatorRequest; purpose: string; caller: string | undefined; payer?: string },
): Promise<Response | undefined> {
  const { rpc, id, tool } = call;
  let again;
  try {
    again = await facilitator.redeliver(request, purpose, caller);
  } catch (error) {
    // A remote asked again for a settlement whose answer never came, unreachable still: the same payment may be sent again.
    if (error instanceof FacilitatorUnavailableError) return unavailable(id, error);
    throw error;
  }
  if (!again) return undefined;
  if (payer) call.caller = { payer: payer.toLowerCase() };
  context.count(tool.name, 'redelivered');
  context.event({ type: 'call.replayed', tool: tool.name, caller: call.caller });
  const result = JSON.parse(again.result) as ToolResult;
  return rpcResult(id, { ...result, _meta: { ...result._meta, ...receiptMeta(rpc, again.receipt) } }, receiptHeaders(again.receipt));
}

/**
 * The challenge again, saying why the facilitator refused the payment; a `costly` refusal is
 * counted against `who` (see `refusalThrottle`).
 */
function refused(context: RailContext, call: PaidCall, verdict: Refusal, refusals?: RefusalThrottle, who: Presenter = {}) {
  if (verdict.costly) refusals?.refused(who);
  return context.challenge(call, `${verdict.invalidReason}: ${verdict.invalidMessage ?? ''}`.trim(), verdict.invalidReason);
}

/**
 * The `rate_limited` answer (429, `Retry-After`) for `who` while their refused payments are past
 * the throttle's limit, as the credits rail answers its own; undefined when their payment may be judged.
 */
function throttled(context: RailContext, call: PaidCall, refusals: RefusalThrottle | undefined, who: Presenter): Response | undefined {
  const limited = refusals?.limited(who);
  if (!limited) return undefined;
  context.refused(call, limited.code);
  const answer = rpcError(call.id, -32001, limited.message, errorCodes[limited.code], limited.toJSON());
  answer.headers.set('retry-after', String(limited.details.retryAfterSeconds));
  return answer;
}

/** The answer when the facilitator could not judge a payment: the same payment may be sent again. */
const unavailable = (id: PaidCall['id'], error: FacilitatorUnavailableError) =>
  rpcError(id, -32603, `payment verification is unavailable, retry: ${error.message}`, 503);

/** The receipt as headers, under both names clients read (an SSE stream carries it in the result only: see `withHeaders`). */
function receiptHeaders(receipt: SettleResponse): Record<string, string> {
  const encoded = encodeHeader(receipt);
  return { 'payment-response': encoded, 'x-payment-response': encoded };
}

/**
 * What makes two requests the same paid call, for giving a lost answer back: the server, the tool
 * and its arguments as sent (the JSON-RPC id may differ between a request and its retry).
 */
function callIdentity(server: string, rpc: Message): string {
  return createHash('sha256')
    .update(JSON.stringify([server, rpc.params?.name, rpc.params?.arguments ?? {}]))
    .digest('hex');
}

/**
 * Who may have a paid call's result again, as the facilitator keeps it (and whom a top-up without
 * a key makes its key for): a digest of the request's
 * `Idempotency-Key` (a retry sends it again; a chain watcher has none), never the key itself;
 * without one (most x402 clients), a digest of the network the call came from (`networkOf`): a
 * retry comes from the payer's own machine, a watcher who copies the payment from its settlement
 * from elsewhere. Not the payment, which its settlement publishes, nor the MCP session, which dies
 * with its upstream (a payer retrying in a new one would have paid for nothing). Undefined when
 * neither is known (a call that came through no socket): whoever presents the payment with the
 * same call then gets it.
 *
 * @example callerOf(new Headers({ 'idempotency-key': 'a1b2' }), '203.0.113.7') // 'idempotency-key:' + sha256 hex
 * @example callerOf(new Headers(), '::ffff:203.0.113.7') // 'network:' + sha256 hex of '203.0.113.7'
 */
export function callerOf(headers: Headers, address: string | undefined): string | undefined {
  const key = headers.get('idempotency-key');
  if (key) return `idempotency-key:${createHash('sha256').update(key).digest('hex')}`;
  const network = address === undefined ? undefined : networkOf(address);
  return network && `network:${createHash('sha256').update(network).digest('hex')}`;
}
