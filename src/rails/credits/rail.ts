import { createHash } from 'node:crypto';
import { type Message, type ToolResult, rpcError } from '../../gateway/jsonrpc.js';
import { paymentIn } from '../../gateway/messages.js';
import { DomainError, errorCodes } from '../../errors.js';
import { creditsRef } from '../../operators/revenue.js';
import { newId } from '../../store/ids.js';
import type { Store } from '../../store/store.js';
import type { Metered, PaidCall, RailContext, RailFactory, Taken } from '../rail.js';
import { credentialOf } from './api-keys.js';
import { type Credits, type Payer, refusalError, shortfalls } from './credits.js';
import type { OpenDebits } from './open-debits.js';
import { onceId, subjectOf } from '../../events/events.js';

/** The `_meta` key of a credits-paid result: what was charged and what is left. */
export const CREDITS_META_KEY = 'turnpike/credits';

/**
 * How long a paid call may use its API key as read by an earlier call, instead of reading it
 * again: the debit checks the key's status, expiry, limits and balance in its own transaction, so
 * a revoked or suspended key pays for nothing from the moment that is committed; what this delays
 * by up to a second on other instances (at once on the one that changed it) are the calls of a
 * revoked key that debit nothing: free calls of the month and `Idempotency-Key` replays.
 */
export const KEY_MAX_AGE_MS = 1000;

export type CreditsRailOptions = {
  credits: Credits;
  store: Store;
  debits: OpenDebits;
  /** Paid calls one key may make per minute, counted in the store (so on all instances together); 0 or absent: no limit. */
  rateLimitPerMinute?: number;
};

/**
 * The credits rail: takes a priced call that carries an API key or budget token, or an OAuth
 * caller's without an x402 payment (their subject's linked key pays). Debit first
 * (atomically, with the `Idempotency-Key` if one is given), forward while the debit is synced to
 * disk, refund in full if the tool did not produce a result. A refused debit that more money would
 * fix is the payment-required challenge, still offering x402, with where to top up.
 *
 * @example createGateway({ …, rails: [creditsRail({ credits, store, debits }), x402Rail({ facilitator })] })
 */
export const creditsRail =
  (options: CreditsRailOptions): RailFactory =>
  (context) => ({
    // A caller with a verified OAuth token pays from the key their subject is linked to, with no credential of ours,
    // unless the call carries an x402 payment: the token says who they are, the payment pays (the x402 rail's).
    takes: (call) =>
      call.principal !== undefined
        ? paymentIn(call.rpc, call.request.headers) === undefined
        : credentialOf(call.request.headers) !== undefined,
    take: (call) => creditsCall(options, context, call),
  });

/** Each call's caller, resolved once for all the rails that ask (see `payerOf`). */
const payers = new WeakMap<PaidCall, Promise<Payer>>();

/**
 * The key that pays for `call` (its API key or budget token, or its OAuth subject's key on a
 * server of `operatorId`), resolved once per call whichever rails ask: a refused credential is the
 * same rejected promise (its DomainError) to each.
 *
 * @example const payer = await payerOf(credits, call, context.operatorId);
 */
export function payerOf(credits: Credits, call: PaidCall, operatorId?: string): Promise<Payer> {
  let payer = payers.get(call);
  if (!payer) {
    payer = (
      call.principal
        ? credits.authenticateSubject(call.principal, operatorId)
        : credits.authenticate(credentialOf(call.request.headers)!, Date.now(), KEY_MAX_AGE_MS)
    ).then((found) => {
      // Who the caller is, for events, once their credential says so.
      call.caller = { ...(call.principal ? subjectOf(call.principal) : {}), keyId: found.key.id };
      return found;
    });
    payers.set(call, payer);
  }
  return payer;
}

/** A call's `Idempotency-Key` and the hash of the request as judged, recorded with its charge. */
export type IdempotentCall = { idempotencyKey: string; bodyHash: string };

/**
 * What a call's `Idempotency-Key` makes of it, on either rail that charges a key: none given,
 * `{}`; a new one, the request to record with the charge (`store.credits.debit`,
 * `store.postpaid.authorize`), which a concurrent copy then cannot record again; the key of an
 * answered request, its kept answer (the tool is not run, nothing is charged); of a running one,
 * or of a different request, the refusal. The request is judged as turnpike encodes it, on this
 * server, by this key, token or OAuth subject: a replay answers only the same request in the
 * same scope, never another server's, token's or subject's call.
 *
 * @example const idem = await idempotency(store, context, call, payer); if ('answer' in idem) return …;
 */
async function idempotency(
  store: Store,
  context: RailContext,
  call: PaidCall,
  payer: Payer,
): Promise<{ answer: Response | DomainError } | { request?: IdempotentCall }> {
  const idempotencyKey = call.request.headers.get('idempotency-key') ?? undefined;
  if (idempotencyKey === undefined) return {};
  if (idempotencyKey.length > 255)
    return { answer: new DomainError('idempotency_key_invalid', 'Idempotency-Key must be at most 255 characters') };
  const by = payer.token?.id ?? (payer.subject ? [payer.subject.issuer, payer.subject.subject] : null);
  const bodyHash = createHash('sha256')
    .update(JSON.stringify([context.server, by, call.rpc]))
    .digest('hex');
  const earlier = await store.credits.request(payer.key.id, idempotencyKey);
  if (earlier && earlier.bodyHash !== bodyHash)
    return { answer: new DomainError('idempotency_key_reused', 'this Idempotency-Key was used with a different request body') };
  if (earlier?.response) {
    context.count(call.tool.name, 'replayed');
    context.event({ type: 'call.replayed', tool: call.tool.name, caller: call.caller });
    return { answer: new Response(earlier.response, { headers: { 'content-type': 'application/json', 'idempotent-replayed': 'true' } }) };
  }
  if (earlier) return { answer: refusalError({ ok: false, reason: 'request_in_progress' }, {}) };
  return { request: { idempotencyKey, bodyHash } };
}

/**
 * Delivers a call charged to a key (credits or invoice), the same on both rails: once its charge
 * is durable (`durable`: the call went out once it was decided), the result goes out with its
 * receipt under `metaKey`, kept for its Idempotency-Key request, and booked as revenue; `close`
 * then marks the charge delivered (after the booking, which revenueBook writes before the close).
 *
 * @example return deliverCharged(store, context, call, { rail: 'credits', …, close: () => debits.delivered(id) }, message, result);
 */
export async function deliverCharged(
  store: Store,
  context: RailContext,
  call: PaidCall,
  charged: {
    rail: 'credits' | 'invoice';
    keyId: string;
    caller: string;
    amount: bigint;
    durable: Promise<void>;
    metaKey: string;
    receipt: Record<string, string>;
    ref: string;
    request: IdempotentCall | undefined;
    close(): void;
    /** The call's count (free calls, tiers), counted as delivered here; none on a plan that counts nothing. */
    metering: Metered | undefined;
  },
  message: Message,
  result: ToolResult,
): Promise<Message> {
  const { rail, amount } = charged;
  const tool = call.tool.name;
  await charged.durable;
  context.count(tool, `paid_${rail}`);
  context.event({ type: 'call.paid', tool, rail, amount, caller: call.caller });
  const delivered = { ...message, result: { ...result, _meta: { ...result._meta, [charged.metaKey]: charged.receipt } } };
  if (charged.request) await store.credits.completeRequest(charged.keyId, charged.request.idempotencyKey, JSON.stringify(delivered));
  await context.book(rail, { caller: charged.caller, tool, amount, ref: charged.ref });
  charged.close();
  await charged.metering?.delivered();
  return delivered;
}

/**
 * Counts a paid call of a key in this minute (in the store, so on all instances together) and
 * answers the refusal, with when to retry, if it is past `perMinute`; 0 or absent: no limit.
 *
 * @example const limited = await rateLimit(store, 'key_…', 60); // DomainError('rate_limited', …) past 60 a minute
 */
async function rateLimit(store: Store, keyId: string, perMinute = 0): Promise<DomainError | undefined> {
  if (perMinute <= 0) return undefined;
  const window = Math.floor(Date.now() / 60_000) * 60_000;
  if ((await store.credits.countRequest(keyId, window)) <= BigInt(perMinute)) return undefined;
  const retryAfter = Math.max(1, Math.ceil((window + 60_000 - Date.now()) / 1000));
  return new DomainError('rate_limited', `this key may make ${perMinute} paid calls a minute; retry in ${retryAfter} s`, {
    limit: perMinute,
    retryAfterSeconds: retryAfter,
  });
}

/** A call charged to a key, past its rate limit and `Idempotency-Key`, priced by its plan. */
export type KeyedCall = { request: IdempotentCall | undefined; caller: string; metering: Metered | undefined; amount: bigint };

/**
 * What both rails that charge a key judge before charging, in this order: the key's paid calls a
 * minute (`perMinute`), the call's `Idempotency-Key` (a kept answer is replayed), then its count on
 * the plan and so its price (`call.offer` follows it). `taken`: the call is answered already
 * (refused with `fail`'s answer, replayed, or free on the plan, a free call counted as one).
 *
 * @example const keyed = await keyedCall(store, context, call, payer, 60, fail); if ('taken' in keyed) return keyed.taken;
 */
export async function keyedCall(
  store: Store,
  context: RailContext,
  call: PaidCall,
  payer: Payer,
  perMinute: number | undefined,
  fail: (error: DomainError) => Response,
): Promise<{ taken: Taken } | KeyedCall> {
  const limited = await rateLimit(store, payer.key.id, perMinute);
  if (limited) {
    const refused = fail(limited);
    refused.headers.set('retry-after', String(limited.details.retryAfterSeconds));
    return { taken: refused };
  }
  const idem = await idempotency(store, context, call, payer);
  if ('answer' in idem) return { taken: idem.answer instanceof Response ? idem.answer : fail(idem.answer) };
  const caller = `key:${payer.key.id}`;
  const metering = await context.meter(caller, call.tool.name, payer.key.id);
  if (metering?.price === 0n) return { taken: { charge: context.free(call, metering, caller) } };
  const amount = metering?.price ?? call.tool.amount;
  if (amount !== call.offer.amount) call.offer = { ...call.offer, amount };
  return { request: idem.request, caller, metering, amount };
}

async function creditsCall(options: CreditsRailOptions, context: RailContext, call: PaidCall): Promise<Taken> {
  const { id, tool } = call;
  const { credits, store, debits } = options;
  const fail = (error: DomainError) => {
    // What an x402 payment would settle (a short balance, a subject no key pays for) is the challenge offering it.
    if (shortfalls.has(error.code) || error.code === 'subject_unlinked')
      return context.challenge(call, `${error.code}: ${error.message}`, error.code, { [CREDITS_META_KEY]: error.toJSON() });
    context.refused(call, error.code);
    return rpcError(id, -32001, error.message, errorCodes[error.code], error.toJSON());
  };

  let payer: Payer;
  try {
    payer = await payerOf(credits, call, context.operatorId);
    credits.authorize(payer, { slug: context.server, id: context.serverId }, tool.name);
  } catch (error) {
    if (error instanceof DomainError) return fail(error);
    throw error;
  }
  const keyed = await keyedCall(store, context, call, payer, options.rateLimitPerMinute, fail);
  if ('taken' in keyed) return keyed.taken;
  const { request, caller, metering, amount } = keyed;
  const debit = await store.credits.debit({
    keyId: payer.key.id,
    ...(payer.token ? { tokenId: payer.token.id } : {}),
    amount,
    reason: `tools/call ${tool.name}`,
    idempotencyKey: newId('call'),
    ref: { server: context.server, tool: tool.name },
    ...(request ? { request } : {}),
    open: true,
  });
  if (!debit.ok) {
    await metering?.uncount();
    const { origin } = new URL(call.request.url);
    return fail(refusalError(debit, { x402: `${origin}/credits/topup`, checkout: `${origin}/credits/checkout` }));
  }

  // The debit that takes the balance below the holder's alert threshold notifies them, once per crossing.
  const alert = debit.lowBalanceAlert;
  if (alert !== undefined && debit.balance < alert && debit.balance + amount >= alert) {
    const data = { balance: debit.balance.toString(), threshold: alert.toString() };
    context.event({ type: 'balance.low', caller: call.caller, data, id: onceId('balance.low', debit.entry.id) });
  }
  let remaining = debit.balance;
  return {
    charge: {
      async undo(why) {
        await metering?.uncount();
        remaining = (await store.credits.refund(debit.entry.id, why)).balance;
      },
      deliver: (message, result) =>
        deliverCharged(
          store,
          context,
          call,
          {
            rail: 'credits',
            keyId: payer.key.id,
            caller,
            amount,
            durable: debit.durable,
            metaKey: CREDITS_META_KEY,
            receipt: {
              charged: amount.toString(),
              balance: debit.balance.toString(),
              entry: debit.entry.id,
              ...(debit.tokenRemaining !== undefined ? { budgetRemaining: debit.tokenRemaining.toString() } : {}),
            },
            ref: creditsRef(debit.entry.id),
            request,
            close: () => debits.delivered(debit.entry.id),
            metering,
          },
          message,
          result,
        ),
    },
    headers: () => ({ 'x-credits-remaining': remaining.toString() }),
  };
}
