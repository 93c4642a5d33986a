import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Context, Hono } from 'hono';
import { bodyLimit } from '../http/body-limit.js';
import type { Logger } from 'pino';
import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import type { Metrics } from '../http/metrics.js';
import type { SettlementMode } from '../facilitator/port.js';
import { clientAddress } from '../http/caller.js';
import type { ChargeRail, OperatorStore } from '../store/operators/operators.js';
import { newId } from '../store/ids.js';
import type { RevenueBook } from '../operators/revenue.js';
import { type OAuthVariables, type ProtectedResource, resourceGuard } from '../oauth/resource-server.js';
import type { Charge, Metered, PaidCall, Rail, RailContext, RailFactory, Taken } from '../rails/rail.js';
import {
  type ChallengeBinding,
  PAYMENT_REQUIRED_CODE,
  type PaymentRequired,
  type ToolOffer,
  challengeResponse,
  challengeResult,
  paymentRequired,
  paymentRequiredV1,
} from './payment-required.js';
import { type Plan, isMetered, listPrice, monthlyAllowance, namedTools, overlappingPrice, publicPlan, utcMonth } from '../pricing/plans.js';
import { atomicToUsd } from '../pricing/pricing.js';
import { type ToolResult, answerCall, notTheResult, rpcError, withHeaders, withoutPaidResponses } from './jsonrpc.js';
import { HOP_HEADER, loopIn } from '../upstream/hops.js';
import { readJsonBody } from './json-body.js';
import { type EventCaller, type EventInput, eventCaller, onceId, subjectOf } from '../events/events.js';
import { type Message, classify, forUpstream, headerMismatch, paidRequestId } from './messages.js';
import type { JsonRpcId } from './sse.js';
import {
  CALLER_HEADER,
  type Forwarded,
  type HangUp,
  type HeaderRecord,
  type Upstream,
  UpstreamError,
  callDeadline,
  hangUpOf,
  send,
} from '../upstream/upstream.js';
import type { ToolsSource } from '../upstream/upstream-tools.js';

export type GatewayOptions = {
  upstream: Upstream;
  plan: Plan;
  payTo: Address;
  network: Network;
  /**
   * The ways a priced call can be paid, asked in order: the first that takes a call decides it
   * (credits before x402, which takes every call the others left).
   */
  rails: RailFactory[];
  /** How a call is challenged (see `challengeBindings`). */
  challenge: ChallengeBinding;
  /** When a paid x402 result leaves (see `settlementModes`); strict by default. */
  settlement?: SettlementMode;
  /**
   * The x402 version of a `tool-result` or `jsonrpc-error` challenge: 2, or 1 for clients that
   * speak only v1 (npm `x402-mcp`); 2 by default. `http-402` always offers both (v2 header, v1 body).
   */
  x402Version?: 1 | 2;
  bodyLimitBytes: number;
  /**
   * Host header values accepted (DNS-rebinding protection), asked per request because the
   * listening address is known only once the server listens.
   */
  allowedHosts: () => Iterable<string>;
  logger: Logger;
  metrics: Metrics;
  /**
   * The upstream's tools (see `toolsLookups`). When given, a priced call of a tool the plan does not
   * name and a recent list of the upstream lacks is answered as MCP answers an unknown tool, not
   * challenged; nothing is forwarded, so no tool can run unpaid. With no recent list, it is charged.
   */
  tools?: ToolsSource;
  /** The server's slug: its path and name. */
  server: string;
  /**
   * A registered server's immutable id (a configured endpoint has none: its slug stands in): what
   * call counts, charges, subscriptions and key scopes are bound to, so that a later server at the
   * same slug inherits none of them.
   */
  serverId?: string;
  /**
   * Where charges and call counts go (revenue, analytics, free calls and tiers). Required by a
   * plan whose price depends on the caller's calls this month.
   */
  revenue?: { book: RevenueBook; usage: OperatorStore; operatorId?: string; custody: 'direct' | 'platform' };
  /** Set when the server takes OAuth access tokens: its callers are identified by them (see `resourceGuard`). */
  oauth?: ProtectedResource;
};

/** The `_meta` key under which `tools/list` carries each tool's price. */
export const PRICE_META_KEY = 'turnpike/price';
/** The `_meta` key of a call inside the caller's free calls or free tier: which call of the month it was. */
export const FREE_META_KEY = 'turnpike/free';

/**
 * The paying MCP endpoint: a transparent Streamable HTTP proxy in front of the operator's server
 * that charges for priced `tools/call` requests and passes everything else through untouched.
 *
 * A paid call: the first rail that takes it answers at once (challenge, refusal, replay) or holds
 * its payment (x402 in the journal, credits as a debit) → forward → on a tool error, JSON-RPC
 * error, 5xx, transport failure or timeout, undo the hold (nothing charged) → otherwise the rail
 * completes the payment (settles, commits), and only then does the result leave.
 */
export function createGateway(options: GatewayOptions): Hono<{ Variables: OAuthVariables }> {
  const { logger, metrics, plan, revenue } = options;
  const serverId = options.serverId ?? options.server;
  const metered = isMetered(plan);
  if ((metered || plan.type === 'subscription') && !revenue) {
    throw new Error(`server ${options.server}: a plan with free calls, tiers or subscriptions needs the revenue store to count calls`);
  }
  const serverLabel = metrics.server(options.server);
  const named = new Set(namedTools(plan));
  /**
   * A tool's metric label: its name once the plan names it or the upstream's last list has it; any
   * other name is only a caller's choice, and taking the bounded label values (see `createMetrics`)
   * would leave every server's real tools `other`: `unlisted`.
   *
   * @example toolLabel('made-up-7') // 'unlisted'
   */
  const toolLabel = (tool: string) => (named.has(tool) || options.tools?.lists(tool) ? metrics.tool(tool) : 'unlisted');
  const count = (tool: string, outcome: string) => metrics.calls.inc({ server: serverLabel, tool: toolLabel(tool), outcome });
  // The stdio bridge bounds sessions per caller, by the address only this side of it knows.
  const upstreamFor = (c: Context): Upstream => {
    const { upstream } = options;
    return upstream.tellCaller
      ? { ...upstream, headers: { ...upstream.headers, [CALLER_HEADER]: clientAddress(c) ?? 'unknown' } }
      : upstream;
  };
  const timedForward = async (c: Context, body: Uint8Array | undefined, signal: HangUp) => {
    const stop = metrics.upstreamSeconds.startTimer();
    try {
      return await send(upstreamFor(c), forwarded(c), body, signal);
    } finally {
      stop();
    }
  };
  const app = new Hono<{ Variables: OAuthVariables }>();
  /** Tools known to declare an outputSchema (seen in tools/list answers passing through). */
  const withOutputSchema = new Set<string>();

  // Before anything else: a request that went round a loop is not forwarded again, nor its body read.
  app.use(async (c, next) => {
    const loop = loopIn(c.req.header(HOP_HEADER) ?? null);
    if (!loop) return next();
    const fix = `the upstream of ${options.server} leads back to turnpike; its operator must point it at the MCP server itself`;
    return rpcError(null, -32001, `loop detected: ${loop} (Turnpike-Hop); ${fix}`, 508, { error: 'loop_detected' });
  });

  app.use(async (c, next) => {
    const host = c.req.header('host') ?? '';
    const origin = c.req.header('origin');
    const allowed = options.allowedHosts();
    if (!has(allowed, host) || (origin !== undefined && !has(allowed, hostOf(origin)))) {
      return c.json({ error: 'forbidden_host', message: 'Host or Origin is not one this gateway serves' }, 403);
    }
    return next();
  });

  // Every request, streams included (the MCP authorization spec): a token, if one is sent or required, must be valid.
  if (options.oauth)
    app.use(
      resourceGuard(options.oauth, (reason) => {
        denied(`oauth_${reason}`);
        event({ type: 'call.refused', reason: `oauth_${reason}` });
      }),
    );

  // A stream the caller opens or resumes never carries a priced call's result: that leaves only through the call's own answer.
  app.on(['GET', 'DELETE'], '/', async (c) => withoutPaidResponses(await send(upstreamFor(c), forwarded(c), undefined, hangUp(c))));

  app.post(
    '/',
    bodyLimit({
      maxSize: options.bodyLimitBytes,
      onError: () => rpcError(null, -32600, `request body larger than ${options.bodyLimitBytes} bytes`, 413),
    }),
    async (c) => {
      // Who called, read before anything is awaited: a caller that hangs up meanwhile takes its socket's address with it.
      const address = clientAddress(c);
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
          if (await unknownTool(message.tool)) return rpcError(message.message.id ?? null, -32602, `Unknown tool: ${message.tool}`, 200);
          return paidCall(c, message.message, { name: message.tool, amount: message.amount }, address);
        case 'forward':
          if (message.tool) {
            count(message.tool, 'free');
            const principal = c.get('oauth');
            event({ type: 'call.free', tool: message.tool, ...(principal ? { caller: subjectOf(principal) } : {}) });
          }
          return withoutPaidResponses(await timedForward(c, forUpstream(message.message), hangUp(c)));
      }
    },
  );

  /** A tool priced by the default that the upstream does not have (its recent list lacks it): no challenge for it. */
  const unknownTool = async (tool: string) =>
    options.tools !== undefined && !named.has(tool) && (await options.tools.offers(tool)) === false;

  /**
   * Counts a priced call of `caller` for a plan with free calls or tiers, and prices it by its
   * number in the month and the calls running beside it (`overlappingPrice`); a call that then does
   * not happen is given back with `uncount`, one that does sends the quota notices its number
   * reaches with `notify` and is counted as delivered with `delivered` once its charge is.
   */
  async function meter(caller: string, tool: string, keyId?: string): Promise<Metered | undefined> {
    const subscriber =
      plan.type === 'subscription' &&
      keyId !== undefined &&
      (await revenue!.usage.activeSubscription(keyId, serverId, Date.now())) !== undefined;
    if (!metered && !subscriber) return undefined;
    const month = utcMonth(Date.now());
    const counted = await revenue!.usage.countCall(serverId, caller, month);
    const n = counted.calls;
    const rail = subscriber ? 'subscription' : 'free';
    const allowance = monthlyAllowance(plan, subscriber);
    const notify = () => {
      for (const percent of allowance > 0n ? [80n, 100n] : []) {
        // The call that reaches the threshold; a number given back and counted again is the same notification (its id).
        if (n !== (allowance * percent + 99n) / 100n) continue;
        const data = { percent: Number(percent), calls: n.toString(), allowance: allowance.toString(), month };
        event({
          type: 'quota.threshold',
          tool,
          caller: eventCaller(caller),
          data,
          id: onceId('quota', serverId, caller, month, data.percent),
        });
      }
    };
    let delivered = false;
    return {
      n,
      // Not priceAt(n): the calls running beside this one may yet fail and leave it an earlier position.
      price: overlappingPrice(plan, tool, n, counted.delivered),
      rail,
      uncount: () => revenue!.usage.uncountCall(serverId, caller, month),
      notify,
      async delivered() {
        if (delivered) return;
        delivered = true;
        // The result is out: a count not recorded only prices this caller's next calls higher, never lower.
        await revenue!.usage.deliverCall(serverId, caller, month).catch((err: unknown) => {
          logger.error({ err, server: options.server }, 'cannot count a delivered call');
        });
      },
    };
  }

  const charge = (rail: ChargeRail, caller: string, tool: string, amount: bigint, ref: string) =>
    revenue && {
      serverId,
      rail,
      caller,
      tool,
      amount,
      ref,
      custody: revenue.custody,
      ...(revenue.operatorId ? { operatorId: revenue.operatorId } : {}),
    };

  const denied = (reason: string) => {
    metrics.denials.inc({ server: serverLabel, reason });
    revenue?.book.denied(serverId, reason);
  };
  const event = (input: Omit<EventInput, 'server' | 'operatorId'>) =>
    revenue?.book.event({
      ...input,
      server: { id: serverId, slug: options.server },
      ...(revenue.operatorId ? { operatorId: revenue.operatorId } : {}),
    });
  /** Who made a priced call, as far as the gateway knows before a rail looks at it. */
  const callerOf = (call: PaidCall): EventCaller | undefined => call.caller ?? (call.principal ? subjectOf(call.principal) : undefined);

  /** `message` answered with the challenge instead, in this server's version and MCP binding. */
  const challengeMessage = (call: PaidCall, v2: PaymentRequired, message: Message): Message => {
    const required = options.x402Version === 1 ? paymentRequiredV1(call.offer, v2) : v2;
    const { jsonrpc, id } = message;
    return options.challenge === 'jsonrpc-error'
      ? { jsonrpc, id, error: { code: PAYMENT_REQUIRED_CODE, message: v2.error, data: required } }
      : { jsonrpc, id, result: challengeResult(required, withOutputSchema.has(call.tool.name)) };
  };
  const context: RailContext = {
    server: options.server,
    serverId,
    ...(revenue?.operatorId ? { operatorId: revenue.operatorId } : {}),
    network: options.network,
    payTo: options.payTo,
    settlement: options.settlement ?? 'strict',
    logger,
    metrics,
    serverLabel,
    count,
    denied,
    event,
    refused(call, reason) {
      denied(reason);
      const caller = callerOf(call);
      event({ type: 'call.refused', tool: call.tool.name, reason, ...(caller ? { caller } : {}) });
    },
    meter,
    challenge(call, why, reason, extensions) {
      count(call.tool.name, 'challenged');
      denied(reason);
      const caller = callerOf(call);
      event({ type: 'call.challenged', tool: call.tool.name, amount: call.offer.amount, reason, ...(caller ? { caller } : {}) });
      const required = paymentRequired(call.offer, why, extensions);
      if (options.challenge === 'http-402') return challengeResponse(call.offer, required);
      return Response.json(challengeMessage(call, required, { jsonrpc: '2.0', id: call.id }));
    },
    withheld: (call, why, message) => challengeMessage(call, paymentRequired(call.offer, why), message),
    free: (call, metering, caller): Charge => ({
      undo: () => metering.uncount(),
      async deliver(message, result) {
        count(call.tool.name, 'free_quota');
        event({ type: 'call.free', tool: call.tool.name, rail: metering.rail, amount: 0n, caller: eventCaller(caller) });
        metering.notify();
        await metering.delivered();
        const free = charge(metering.rail, caller, call.tool.name, 0n, `free:${newId('call')}`);
        if (free) revenue!.book.queue(free);
        return {
          ...message,
          result: { ...result, _meta: { ...result._meta, [FREE_META_KEY]: { callsThisMonth: metering.n.toString() } } },
        };
      },
    }),
    async book(rail, entry) {
      const earned = charge(rail, entry.caller, entry.tool, entry.amount, entry.ref);
      // Money the operator will withdraw from the treasury is booked before it moves (the journal
      // row then decides it); revenue paid straight to the operator is only reported, so batched.
      if (earned?.custody === 'platform' && rail === 'x402') await revenue!.book.record(earned);
      else if (earned) revenue!.book.queue(earned);
    },
  };
  const rails: Rail[] = options.rails.map((rail) => rail(context));

  /** tools/list passes through with each tool's price added under `_meta["turnpike/price"]`. */
  async function listTools(c: Context, rpc: Message) {
    const answer = await send(upstreamFor(c), forwarded(c), forUpstream(rpc), hangUp(c));
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

  /** The MCP URL (origin and path) of the last request URL seen: callers of one server mostly send the same one. */
  let seen = { url: '', mcpUrl: '' };
  const mcpUrlOf = (requestUrl: string) => {
    if (requestUrl !== seen.url) {
      const url = new URL(requestUrl);
      seen = { url: requestUrl, mcpUrl: `${url.origin}${url.pathname}` };
    }
    return seen.mcpUrl;
  };

  async function paidCall(
    c: Context<{ Variables: OAuthVariables }>,
    rpc: Message,
    tool: { name: string; amount: bigint },
    address?: string,
  ) {
    const offer: ToolOffer = {
      tool: tool.name,
      amount: tool.amount,
      payTo: options.payTo,
      network: options.network,
      mcpUrl: mcpUrlOf(c.req.url),
    };
    const upstreamId = paidRequestId();
    const principal = c.get('oauth');
    const call: PaidCall = {
      request: c.req.raw,
      rpc,
      id: rpc.id ?? null,
      upstreamId,
      body: forUpstream(rpc, upstreamId),
      tool,
      offer,
      ...(principal ? { principal } : {}),
      ...(address !== undefined ? { address } : {}),
    };
    let rail: Rail | undefined;
    for (const candidate of rails) {
      if (!(await candidate.takes(call))) continue;
      rail = candidate;
      break;
    }
    if (!rail)
      return context.challenge(call, `payment required: tool "${tool.name}" costs ${atomicToUsd(tool.amount)} USDC`, 'payment_missing');
    const taken = await rail.take(call);
    if (taken instanceof Response) return taken;
    return forwardPaid(c, call, taken);
  }

  /**
   * Forwards a call that is paid for. If the tool did not run to a result (transport error,
   * timeout, non-200, JSON-RPC error, `isError`, a stream that ended early) the charge is undone;
   * otherwise `deliver` completes it and may rewrite the result. The answer carries the rail's `headers`.
   */
  async function forwardPaid(c: Context, call: PaidCall, { charge, headers }: Exclude<Taken, Response>): Promise<Response> {
    const { id, tool } = call;
    /** `why` is written where the caller reads it (their ledger); `detail`, for the operator's events, may say more. */
    const undo = (why: string, detail = why) => {
      count(tool.name, 'failed');
      const caller = callerOf(call);
      event({ type: 'call.failed', tool: tool.name, amount: 0n, reason: detail, ...(caller ? { caller } : {}) });
      return charge.undo(why).catch((err: unknown) => logger.error({ err }, 'cannot undo the charge of a failed call'));
    };
    const deadline = callDeadline(options.upstream.timeoutMs);
    let answer;
    try {
      answer = await timedForward(c, call.body, deadline.signal);
    } catch (error) {
      deadline.clear();
      // The caller is told what failed, never where: a socket error names the upstream's address.
      const unreachable = error instanceof UpstreamError ? error : new UpstreamError('the MCP server did not answer', error);
      logger.warn({ err: unreachable, server: options.server }, 'a paid call’s upstream failed');
      await undo(`upstream unreachable: ${unreachable.reason}`, `upstream unreachable: ${unreachable.message}`);
      return withHeaders(rpcError(id, -32603, 'the tool’s server did not answer; you were not charged', 502), headers);
    }
    // A result stream runs on under the deadline until it ends; anything else is already whole.
    if (answer.status !== 200 || !(answer.body instanceof ReadableStream)) deadline.clear();
    if (answer.status !== 200) {
      await undo(`upstream answered HTTP ${answer.status}`);
      return withHeaders(notTheResult(answer, id), headers);
    }
    return answerCall(
      answer,
      { upstream: call.upstreamId, caller: id },
      async (message) => {
        const result = message.result as ToolResult | undefined;
        if (message.error !== undefined) {
          await undo('the tool answered a JSON-RPC error');
          return errorOnly(message);
        }
        if (!result || result.isError) {
          await undo('the tool reported isError');
          return message;
        }
        return charge.deliver(message, result);
      },
      (sawResponse) => {
        deadline.clear();
        if (!sawResponse) void undo('the upstream stream ended before the result');
      },
      headers,
      true,
    );
  }

  return app;
}

/** The caller's hang-up: from Node's response when node-server serves the app (see `hangUpOf`), else the request's signal. */
function hangUp(c: Context): HangUp {
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  return outgoing ? hangUpOf(outgoing) : c.req.raw.signal;
}

/**
 * The caller's request as it is forwarded: its headers read from Node's request when node-server
 * serves the app (`c.env.incoming`, parsed by Node: no `Headers` object built), else from the web Request.
 */
function forwarded(c: Context): Forwarded {
  const headers: HeaderRecord = {};
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (!incoming) {
    c.req.raw.headers.forEach((value, name) => {
      headers[name] = value;
    });
    return { method: c.req.method, headers };
  }
  const raw = incoming.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name.startsWith(':')) continue; // HTTP/2 pseudo-headers
    const earlier = headers[name];
    headers[name] = earlier === undefined ? raw[i + 1]! : `${earlier}, ${raw[i + 1]!}`;
  }
  return { method: c.req.method, headers };
}

/**
 * A failed call's error response as it leaves uncharged: its `error` alone, never a `result` the
 * upstream wrote beside it (JSON-RPC forbids both; `"error": null` beside a result is a common
 * library habit), and an error that is no error object read as the server's failure.
 *
 * @example errorOnly({ jsonrpc: '2.0', id: 1, error: null, result: { content: [] } })
 * // { jsonrpc: '2.0', id: 1, error: { code: -32603, message: 'the tool’s server answered … ' } }
 */
function errorOnly(message: Message): Message {
  const { error } = message;
  const valid = typeof error === 'object' && error !== null && !Array.isArray(error);
  return {
    jsonrpc: '2.0',
    id: message.id ?? null,
    error: valid ? error : { code: -32603, message: 'the tool’s server answered an invalid JSON-RPC error; you were not charged' },
  };
}

/** The id of a request refused as invalid, when it has a usable one. */
function idOf(value: unknown): JsonRpcId {
  const id = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Message).id : undefined;
  return typeof id === 'string' || typeof id === 'number' ? id : null;
}

/** Whether `values` holds `value`, looked through rather than copied into a Set (a few hosts, asked per request). */
function has(values: Iterable<string>, value: string): boolean {
  for (const one of values) if (one === value) return true;
  return false;
}

function hostOf(origin: string): string {
  try {
    return new URL(origin).host;
  } catch {
    return '';
  }
}
