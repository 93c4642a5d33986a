import { createHash } from 'node:crypto';
import { type Context, Hono } from 'hono';
import { bodyLimit } from '../http/body-limit.js';
import type { Logger } from 'pino';
import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import { FacilitatorUnavailableError } from '../facilitator/errors.js';
import type { Facilitator } from '../facilitator/facilitator.js';
import { purposes } from '../facilitator/purposes.js';
import type { Metrics } from '../http/metrics.js';
import { type Credential, credentialOf } from '../rails/credits/api-keys.js';
import { type Credits, type Payer, refusalError } from '../rails/credits/credits.js';
import { ApiError } from '../http/api-error.js';
import { clientAddress } from '../http/caller.js';
import type { OpenDebits } from '../rails/credits/open-debits.js';
import type { Store } from '../store/store.js';
import type { OperatorStore } from '../store/operators.js';
import { newId } from '../store/ids.js';
import { type RevenueBook, creditsRef, x402Ref } from '../operators/revenue.js';
import { PaymentDecodeError, encodeHeader } from '../x402/codec.js';
import { reasons } from '../x402/reasons.js';
import type { FacilitatorRequest, SettleResponse } from '../x402/schemas.js';
import {
  type ToolOffer,
  challengeResponse,
  challengeResult,
  paymentRequestFor,
  paymentRequired,
} from './payment-required.js';
import { type Plan, isMetered, listPrice, priceAt, publicPlan, utcMonth } from './plans.js';
import { atomicToUsd } from './pricing.js';
import { type ToolResult, answerCall, rpcError, rpcResult, withoutPaidResponses } from './jsonrpc.js';
import { readJsonBody } from './json-body.js';
import { type Message, classify, forUpstream, headerMismatch, paidRequestId, paymentOf } from './messages.js';
import type { JsonRpcId } from './sse.js';
import { CALLER_HEADER, type Upstream, callDeadline, send } from './upstream.js';

export type GatewayOptions = {
  upstream: Upstream;
  plan: Plan;
  payTo: Address;
  network: Network;
  facilitator: Facilitator;
  /** `tool-result` (the MCP binding, default) or `http-402` (plain x402 over HTTP). */
  challenge: 'tool-result' | 'http-402';
  bodyLimitBytes: number;
  /**
   * Host header values accepted (DNS-rebinding protection), asked per request because the
   * listening address is known only once the server listens.
   */
  allowedHosts: () => Iterable<string>;
  logger: Logger;
  metrics: Metrics;
  /** The server's slug, as key and token scopes name it. */
  server: string;
  /** The credits rail; without it, credentials are ignored and every paid call is x402. */
  credits?: {
    credits: Credits;
    store: Store;
    debits: OpenDebits;
    /** Paid calls one key may make per minute, counted in the store (so on all instances together); 0 or absent: no limit. */
    rateLimitPerMinute?: number;
  };
  /**
   * Where charges and call counts go (revenue, analytics, free calls and tiers). Required by a
   * plan whose price depends on the caller's calls this month.
   */
  revenue?: { book: RevenueBook; usage: OperatorStore; operatorId?: string; custody: 'direct' | 'platform' };
};

/**
 * A counted call (free calls, tiers, a subscriber's allowance): its number in the month, its
 * price, and the rail a call that costs nothing is recorded under.
 */
type Metered = { n: bigint; price: bigint; rail: 'free' | 'subscription'; uncount(): Promise<void> };

const isStream = (response: Response) => response.headers.get('content-type')?.includes('text/event-stream') ?? false;


/** The `_meta` key under which `tools/list` carries each tool's price. */
export const PRICE_META_KEY = 'turnpike/price';
/** The `_meta` key of a credits-paid result: what was charged and what is left. */
export const CREDITS_META_KEY = 'turnpike/credits';
const RECEIPT_META_KEY = 'x402/payment-response';
/** The `_meta` key of a call inside the caller's free calls or free tier: which call of the month it was. */
export const FREE_META_KEY = 'turnpike/free';


/**
 * The paying MCP endpoint: a transparent Streamable HTTP proxy in front of the operator's server
 * that charges for priced `tools/call` requests and passes everything else through untouched.
 *
 * A paid call: challenge without a payment (upstream not contacted) → verify in-process → hold the
 * payment in the journal (so concurrent copies run the tool once) → forward → on a tool error,
 * JSON-RPC error, 5xx, transport failure or timeout, release it (nothing settled) → otherwise
 * settle, then deliver the result with its receipt; if settlement fails, withhold the output.
 */
export function createGateway(options: GatewayOptions): Hono {
  const { facilitator, logger, metrics, plan, revenue } = options;
  const metered = isMetered(plan);
  if ((metered || plan.type === 'subscription') && !revenue) {
    throw new Error(`server ${options.server}: a plan with free calls, tiers or subscriptions needs the revenue store to count calls`);
  }
  const serverLabel = metrics.server(options.server);
  const count = (tool: string, outcome: string) => metrics.calls.inc({ server: serverLabel, tool: metrics.tool(tool), outcome });
  // The stdio bridge bounds sessions per caller, by the address only this side of it knows.
  const upstreamFor = (c: Context): Upstream => {
    const { upstream } = options;
    return upstream.tellCaller ? { ...upstream, headers: { ...upstream.headers, [CALLER_HEADER]: clientAddress(c) ?? 'unknown' } } : upstream;
  };
  const timedForward = async (c: Context, body: Uint8Array | undefined, signal: AbortSignal) => {
    const stop = metrics.upstreamSeconds.startTimer();
    try {
      return await send(upstreamFor(c), c.req.raw, body, signal);
    } finally {
      stop();
    }
  };
  const app = new Hono();
  /** Tools known to declare an outputSchema (seen in tools/list answers passing through). */
  const withOutputSchema = new Set<string>();

  app.use(async (c, next) => {
    const host = c.req.header('host') ?? '';
    const origin = c.req.header('origin');
    const allowed = new Set(options.allowedHosts());
    if (!allowed.has(host) || (origin !== undefined && !allowed.has(hostOf(origin)))) {
      return c.json({ error: 'forbidden_host', message: 'Host or Origin is not one this gateway serves' }, 403);
    }
    return next();
  });

  // A stream the caller opens or resumes never carries a priced call's result: that leaves only through the call's own answer.
  app.on(['GET', 'DELETE'], '/', async (c) => withoutPaidResponses(await send(upstreamFor(c), c.req.raw, undefined, c.req.raw.signal)));

  app.post(
    '/',
    bodyLimit({
      maxSize: options.bodyLimitBytes,
      onError: () => rpcError(null, -32600, `request body larger than ${options.bodyLimitBytes} bytes`, 413),
    }),
    async (c) => {
      // Judged once, forwarded as judged: the upstream parses turnpike's encoding, never the caller's bytes.
      const read = readJsonBody(new Uint8Array(await c.req.arrayBuffer()), c.req.header('content-type'), c.req.header('content-encoding'));
      if (!read.ok) return rpcError(null, read.status === 415 ? -32600 : -32700, read.message, read.status);
      const message = classify(read.value, (name) => listPrice(plan, name));
      const mismatch = message.kind === 'invalid' ? undefined : headerMismatch(message.message, c.req.raw.headers);
      if (mismatch) return rpcError(idOf(read.value), -32600, mismatch, 400);
      switch (message.kind) {
        case 'invalid':
          return rpcError(idOf(read.value), -32600, message.why, 400);
        case 'list':
          return listTools(c, message.message);
        case 'paid':
          return paidCall(c, message.message, { name: message.tool, amount: message.amount });
        case 'forward':
          if (message.tool) count(message.tool, 'free');
          return withoutPaidResponses(await timedForward(c, forUpstream(message.message), c.req.raw.signal));
      }
    },
  );

  /**
   * Counts a priced call of `caller` for a plan with free calls or tiers, and prices it by its
   * number in the month; a call that then does not happen is given back with `uncount`.
   */
  async function meter(caller: string, tool: string, keyId?: string): Promise<Metered | undefined> {
    const subscriber = plan.type === 'subscription' && keyId !== undefined && (await revenue!.usage.activeSubscription(keyId, options.server, Date.now())) !== undefined;
    if (!metered && !subscriber) return undefined;
    const month = utcMonth(Date.now());
    const n = await revenue!.usage.countCall(options.server, caller, month);
    const rail = subscriber ? 'subscription' : 'free';
    return { n, price: priceAt(plan, tool, n), rail, uncount: () => revenue!.usage.uncountCall(options.server, caller, month) };
  }

  const charge = (rail: 'x402' | 'credits' | 'free' | 'subscription', caller: string, tool: string, amount: bigint, ref: string) =>
    revenue && { server: options.server, rail, caller, tool, amount, ref, custody: revenue.custody, ...(revenue.operatorId ? { operatorId: revenue.operatorId } : {}) };

  /** tools/list passes through with each tool's price added under `_meta["turnpike/price"]`. */
  async function listTools(c: Context, rpc: Message) {
    const answer = await send(upstreamFor(c), c.req.raw, forUpstream(rpc), c.req.raw.signal);
    const id = rpc.id ?? null;
    return answerCall(answer, { upstream: id, caller: id }, async (message) => {
      const tools = (message.result as { tools?: { name: string; outputSchema?: unknown; _meta?: object }[] } | undefined)?.tools;
      for (const tool of tools ?? []) {
        if (tool.outputSchema) withOutputSchema.add(tool.name);
        const amount = listPrice(plan, tool.name);
        tool._meta = {
          ...tool._meta,
          [PRICE_META_KEY]: {
            amount: amount.toString(),
            usd: atomicToUsd(amount),
            asset: options.network.usdc.address,
            network: options.network.caip2,
            payTo: options.payTo,
            ...(metered && amount > 0n ? { plan: publicPlan(plan) } : {}),
          },
        };
      }
      return message;
    });
  }

  async function paidCall(c: Context, rpc: Message, tool: { name: string; amount: bigint }) {
    const url = new URL(c.req.url);
    const offer: ToolOffer = { tool: tool.name, amount: tool.amount, payTo: options.payTo, network: options.network, mcpUrl: `${url.origin}${url.pathname}` };
    const upstreamId = paidRequestId();
    const call: PaidCall = { c, rpc, id: rpc.id ?? null, upstreamId, body: forUpstream(rpc, upstreamId), tool, offer };
    const credential = options.credits ? credentialOf(c.req.raw.headers) : undefined;
    return credential ? creditsCall(call, credential) : x402Call(call);
  }

  /**
   * A priced call on its way: `id` is the caller's, `upstreamId` turnpike's (see `paidRequestId`),
   * `body` what the upstream gets (payment removed, turnpike's id).
   */
  type PaidCall = { c: Context; rpc: Message; id: JsonRpcId; upstreamId: string; body: Uint8Array; tool: { name: string; amount: bigint }; offer: ToolOffer };

  function denied(reason: string) {
    metrics.denials.inc({ server: serverLabel, reason });
    revenue?.book.denied(options.server, reason);
  }

  function challenge(call: PaidCall, why: string, reason: string, extensions?: Record<string, unknown>) {
    count(call.tool.name, 'challenged');
    denied(reason);
    const required = paymentRequired(call.offer, why, extensions);
    return options.challenge === 'http-402'
      ? challengeResponse(call.offer, required)
      : rpcResult(call.id, challengeResult(required, withOutputSchema.has(call.tool.name)));
  }

  /** x402: verify, hold the payment, forward, then settle and attach the receipt. */
  async function x402Call(call: PaidCall) {
    const { c, rpc, id, tool, offer } = call;
    const raw = paymentOf(rpc) ?? c.req.header('payment-signature') ?? c.req.header('x-payment');
    if (raw === undefined) return challenge(call, `payment required: tool "${tool.name}" costs ${atomicToUsd(tool.amount)} USDC`, 'payment_missing');
    let request: FacilitatorRequest;
    try {
      request = paymentRequestFor(raw, offer);
    } catch (error) {
      if (error instanceof PaymentDecodeError) return challenge(call, `invalid_payload: ${error.message}`, 'invalid_payload');
      throw error;
    }
    const authorization = (request.paymentPayload.payload as { authorization?: { from?: unknown; value?: unknown } }).authorization;
    const from = typeof authorization?.from === 'string' ? authorization.from.toLowerCase() : undefined;
    const metering = from ? await meter(from, tool.name) : undefined;
    if (metering?.price === 0n) return freeX402Call(call, request, metering);
    if (metering && metering.price !== offer.amount) {
      // This payer's price (their tier) is not the list price: ask for exactly what it is.
      call.offer = { ...offer, amount: metering.price };
      request = paymentRequestFor(raw, call.offer);
    }

    // What this payment is taken for: this call (tool and arguments) on this server, and nothing else.
    const purpose = purposes.call(options.server, callIdentity(options.server, rpc));
    let held;
    try {
      held = await facilitator.reserve(request, purpose);
    } catch (error) {
      await metering?.uncount();
      if (error instanceof FacilitatorUnavailableError) return rpcError(id, -32603, `payment verification is unavailable, retry: ${error.message}`, 503);
      throw error;
    }
    if (!held.isValid) {
      await metering?.uncount();
      // The same call with the same payment again: its answer was lost, not its result.
      const again =
        held.invalidReason === reasons.nonceUsed ? await facilitator.redeliver(request, purpose) : undefined;
      if (again) {
        count(tool.name, 'redelivered');
        const result = JSON.parse(again.result) as ToolResult;
        return withReceipt(rpcResult(id, { ...result, _meta: { ...result._meta, [RECEIPT_META_KEY]: again.receipt } }), again.receipt);
      }
      return challenge(call, `${held.invalidReason}: ${held.invalidMessage ?? ''}`.trim(), held.invalidReason);
    }
    const { key } = held;
    const amount = call.offer.amount;

    let receipt: SettleResponse | undefined;
    const settlementFailed = async (why: string) => {
      await metering?.uncount();
      count(tool.name, 'settlement_failed');
      return { jsonrpc: '2.0', id, result: challengeResult(paymentRequired(call.offer, `settlement failed: ${why}`), withOutputSchema.has(tool.name)) };
    };
    const response = await forwardPaid(call, {
      async undo(why) {
        await metering?.uncount();
        await facilitator.release(key, why);
      },
      async deliver(message, result) {
        // Money the operator will withdraw from the treasury is booked before it moves (the journal
        // row then decides it); revenue paid straight to the operator is only reported, so batched.
        const pending = charge('x402', key.payer, tool.name, amount, x402Ref(key));
        if (pending?.custody === 'platform') await revenue!.book.record(pending);
        else if (pending) revenue!.book.queue(pending);
        await facilitator.keepResult(key, { call: purpose, result: JSON.stringify(result) });
        const stop = metrics.settlementSeconds.startTimer();
        try {
          receipt = await facilitator.settle(request, purpose);
        } catch (error) {
          if (!(error instanceof FacilitatorUnavailableError)) throw error;
          // Nothing reached the chain if the hold is still a hold: the same payment may be retried.
          await facilitator.releaseHold(key);
          return settlementFailed(`${error.message}; retry with the same payment`);
        }
        stop();
        // Pending is not failure: the transaction is out and verified to be payable.
        if (!receipt.success && receipt.errorReason !== 'settlement_pending') {
          return settlementFailed(`${receipt.errorReason}${receipt.errorMessage ? `: ${receipt.errorMessage}` : ''}`);
        }
        count(tool.name, 'paid');
        metrics.revenue.inc({ server: serverLabel, asset: options.network.usdc.address, network: options.network.caip2 }, Number(amount));
        return { ...message, result: { ...result, _meta: { ...result._meta, [RECEIPT_META_KEY]: receipt } } };
      },
    });
    return receipt ? withReceipt(response, receipt) : response;
  }

  /** The receipt in headers too, when the answer is JSON (an SSE stream carries it in the result only). */
  function withReceipt(response: Response, receipt: SettleResponse) {
    if (isStream(response)) return response;
    const encoded = encodeHeader(receipt);
    response.headers.set('payment-response', encoded);
    response.headers.set('x-payment-response', encoded);
    return response;
  }

  /**
   * A call inside the payer's free calls (or free tier): the signed payment proves who the payer
   * is and that they could pay the quoted price (it must be for that price, and covered by their
   * balance), so throwaway keys cannot take the free calls. It is verified, never settled.
   */
  async function freeX402Call(call: PaidCall, request: FacilitatorRequest, metering: Metered) {
    let verdict;
    try {
      verdict = await facilitator.verify(request);
    } catch (error) {
      await metering.uncount();
      if (error instanceof FacilitatorUnavailableError) return rpcError(call.id, -32603, `payment verification is unavailable, retry: ${error.message}`, 503);
      throw error;
    }
    if (!verdict.isValid) {
      await metering.uncount();
      return challenge(call, `${verdict.invalidReason}: ${verdict.invalidMessage ?? ''}`.trim(), verdict.invalidReason);
    }
    return forwardFree(call, metering, verdict.payer.toLowerCase());
  }

  /** Forwards a free-quota call: counted, never charged, given back if it fails. */
  function forwardFree(call: PaidCall, metering: Metered, caller: string) {
    return forwardPaid(call, {
      undo: () => metering.uncount(),
      async deliver(message, result) {
        count(call.tool.name, 'free_quota');
        const free = charge(metering.rail, caller, call.tool.name, 0n, `free:${newId('call')}`);
        if (free) revenue!.book.queue(free);
        return { ...message, result: { ...result, _meta: { ...result._meta, [FREE_META_KEY]: { callsThisMonth: metering.n.toString() } } } };
      },
    });
  }

  /**
   * Credits: debit first (atomically, with the `Idempotency-Key` if one is given), forward while
   * the debit is synced to disk, refund in full if the tool did not produce a result. A refused
   * debit that more money would fix is the payment-required challenge, still offering x402, with
   * where to top up.
   */
  async function creditsCall(call: PaidCall, credential: Credential) {
    const { c, id, tool } = call;
    const { credits, store, debits } = options.credits!;
    const origin = new URL(c.req.url).origin;
    const topup = { x402: `${origin}/credits/topup`, checkout: `${origin}/credits/checkout` };
    const fail = (error: ApiError) => {
      if (error.status === 402) return challenge(call, `${error.code}: ${error.message}`, error.code, { [CREDITS_META_KEY]: error.toJSON() });
      denied(error.code);
      return rpcError(id, -32001, error.message, error.status, error.toJSON());
    };

    let payer: Payer;
    try {
      payer = await credits.authenticate(credential);
      credits.authorize(payer, options.server, tool.name);
    } catch (error) {
      if (error instanceof ApiError) return fail(error);
      throw error;
    }
    const limit = options.credits!.rateLimitPerMinute ?? 0;
    if (limit > 0) {
      const window = Math.floor(Date.now() / 60_000) * 60_000;
      if ((await store.credits.countRequest(payer.key.id, window)) > BigInt(limit)) {
        const retryAfter = Math.max(1, Math.ceil((window + 60_000 - Date.now()) / 1000));
        const refused = fail(new ApiError(429, 'rate_limited', `this key may make ${limit} paid calls a minute; retry in ${retryAfter} s`, { limit, retryAfterSeconds: retryAfter }));
        refused.headers.set('retry-after', String(retryAfter));
        return refused;
      }
    }
    const idempotencyKey = c.req.header('idempotency-key');
    // The message as judged (turnpike's own encoding), not the bytes: a retry is the same request however it was spelled.
    const bodyHash = idempotencyKey ? createHash('sha256').update(JSON.stringify(call.rpc)).digest('hex') : '';
    if (idempotencyKey) {
      if (idempotencyKey.length > 255) return fail(new ApiError(400, 'idempotency_key_invalid', 'Idempotency-Key must be at most 255 characters'));
      const earlier = await store.credits.request(payer.key.id, idempotencyKey);
      if (earlier && earlier.bodyHash !== bodyHash) {
        return fail(new ApiError(409, 'idempotency_key_reused', 'this Idempotency-Key was used with a different request body'));
      }
      if (earlier?.response) {
        count(tool.name, 'replayed');
        return new Response(earlier.response, { headers: { 'content-type': 'application/json', 'idempotent-replayed': 'true' } });
      }
      if (earlier) return fail(new ApiError(409, 'request_in_progress', 'a request with this Idempotency-Key is still running; retry it later'));
    }

    const caller = `key:${payer.key.id}`;
    const metering = await meter(caller, tool.name, payer.key.id);
    if (metering?.price === 0n) return forwardFree(call, metering, caller);
    const amount = metering?.price ?? tool.amount;
    if (amount !== call.offer.amount) call.offer = { ...call.offer, amount };
    const debit = await store.credits.debit({
      keyId: payer.key.id,
      ...(payer.token ? { tokenId: payer.token.id } : {}),
      amount,
      reason: `tools/call ${tool.name}`,
      idempotencyKey: newId('call'),
      ref: { server: options.server, tool: tool.name },
      ...(idempotencyKey ? { request: { idempotencyKey, bodyHash } } : {}),
      open: true,
    });
    if (!debit.ok) {
      await metering?.uncount();
      return fail(refusalError(debit, topup));
    }

    let remaining = debit.balance;
    const response = await forwardPaid(call, {
      async undo(why) {
        await metering?.uncount();
        remaining = (await store.credits.refund(debit.entry.id, why)).balance;
      },
      async deliver(message, result) {
        // The call went out once the debit was decided; the answer waits for it to be on disk.
        await debit.durable;
        count(tool.name, 'paid_credits');
        const receipt = {
          charged: amount.toString(),
          balance: debit.balance.toString(),
          entry: debit.entry.id,
          ...(debit.tokenRemaining !== undefined ? { budgetRemaining: debit.tokenRemaining.toString() } : {}),
        };
        const delivered = { ...message, result: { ...result, _meta: { ...result._meta, [CREDITS_META_KEY]: receipt } } };
        if (idempotencyKey) await store.credits.completeRequest(payer.key.id, idempotencyKey, JSON.stringify(delivered));
        // Queued before the debit is closed, and written before it (see revenueBook).
        const earned = charge('credits', caller, tool.name, amount, creditsRef(debit.entry.id));
        if (earned) revenue!.book.queue(earned);
        debits.delivered(debit.entry.id);
        return delivered;
      },
    });
    if (!isStream(response)) response.headers.set('x-credits-remaining', remaining.toString());
    return response;
  }

  /**
   * Forwards a call that is paid for. If the tool did not run to a result (transport error,
   * timeout, non-200, JSON-RPC error, `isError`, a stream that ended early) the charge is undone;
   * otherwise `deliver` completes it and may rewrite the result.
   */
  async function forwardPaid(
    call: PaidCall,
    charge: { undo(why: string): Promise<void>; deliver(message: Message, result: ToolResult): Promise<Message> },
  ): Promise<Response> {
    const { c, id, tool } = call;
    const undo = (why: string) => {
      count(tool.name, 'failed');
      return charge.undo(why).catch((err: unknown) => logger.error({ err }, 'cannot undo the charge of a failed call'));
    };
    const deadline = callDeadline(options.upstream.timeoutMs);
    let answer;
    try {
      answer = await timedForward(c, call.body, deadline.signal);
    } catch (error) {
      deadline.clear();
      await undo(`upstream unreachable: ${(error as Error).message}`);
      return rpcError(id, -32603, 'the tool’s server did not answer; you were not charged', 502);
    }
    // A result stream runs on under the deadline until it ends; anything else is already whole.
    if (answer.status !== 200 || !(answer.body instanceof ReadableStream)) deadline.clear();
    if (answer.status !== 200) {
      await undo(`upstream answered HTTP ${answer.status}`);
      return withoutPaidResponses(answer);
    }
    return answerCall(
      answer,
      { upstream: call.upstreamId, caller: id },
      async (message) => {
        const result = message.result as ToolResult | undefined;
        if (message.error !== undefined || !result || result.isError) {
          await undo(message.error !== undefined ? 'the tool answered a JSON-RPC error' : 'the tool reported isError');
          return message;
        }
        return charge.deliver(message, result);
      },
      (sawResponse) => {
        deadline.clear();
        if (!sawResponse) void undo('the upstream stream ended before the result');
      },
    );
  }

  return app;
}

/**
 * What makes two requests the same paid call, for giving a lost answer back: the server, the tool
 * and its arguments as sent (the JSON-RPC id may differ between a request and its retry).
 */
function callIdentity(server: string, rpc: Message): string {
  return createHash('sha256').update(JSON.stringify([server, rpc.params?.name, rpc.params?.arguments ?? {}])).digest('hex');
}

/** The id of a request refused as invalid, when it has a usable one. */
function idOf(value: unknown): JsonRpcId {
  const id = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Message).id : undefined;
  return typeof id === 'string' || typeof id === 'number' ? id : null;
}

function hostOf(origin: string): string {
  try {
    return new URL(origin).host;
  } catch {
    return '';
  }
}
