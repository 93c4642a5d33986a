import type { Logger } from 'pino';
import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import type { Message, ToolResult } from '../gateway/jsonrpc.js';
import type { ToolOffer } from '../gateway/payment-required.js';
import type { JsonRpcId } from '../gateway/sse.js';
import type { Metrics } from '../http/metrics.js';
import type { SettlementMode } from '../facilitator/port.js';
import type { OAuthPrincipal } from '../oauth/issuer.js';
import type { EventCaller, EventInput } from '../events/events.js';
import type { HeaderRecord } from '../upstream/upstream.js';

/**
 * A priced call on its way through the gateway: `id` is the caller's, `upstreamId` turnpike's
 * (see `paidRequestId`), `body` what the upstream gets (payment removed, turnpike's id), `offer`
 * what the call costs this caller (a rail may lower it to the caller's tier), `principal` who
 * the caller is when a verified OAuth token says so.
 */
export type PaidCall = {
  request: Request;
  rpc: Message;
  id: JsonRpcId;
  upstreamId: string;
  body: Uint8Array;
  tool: { name: string; amount: bigint };
  offer: ToolOffer;
  /** The caller as a verified OAuth access token names them (see `resourceGuard`). */
  principal?: OAuthPrincipal;
  /** Who the caller is, for events, once the rail knows (a key's id, a payer's address). */
  caller?: EventCaller;
  /** The network address the call came from (the socket's peer), when it came through one. */
  address?: string;
};

/**
 * How a rail is paid for one call that the gateway then forwards: `undo` if the tool did not
 * produce a result (nothing is charged), else `deliver`, which completes the payment before the
 * result leaves and may add its receipt to it.
 */
export type Charge = {
  undo(why: string): Promise<void>;
  deliver(message: Message, result: ToolResult): Promise<Message>;
};

/**
 * What a rail makes of a call: an answer now (challenge, refusal, replay), or the charge to forward
 * it under, with the `headers` its answer carries (a receipt, the balance left), asked once the
 * charge is delivered or undone; an event stream carries none (its headers leave before its result).
 */
export type Taken = Response | { charge: Charge; headers?: () => HeaderRecord };

/**
 * A way to pay for priced calls. The gateway asks its rails in order; the first that `takes` a
 * call (it carries that rail's credential) decides it. Every result a rail lets through passes
 * the gateway's one paid-call procedure: hold → forward → deliver or undo.
 *
 * @example createGateway({ …, rails: [creditsRail({ credits, store, debits }), x402Rail({ facilitator })] })
 */
export type Rail = {
  /** Whether the call is this rail's (it may look the caller up: a post-paid account). */
  takes(call: PaidCall): boolean | Promise<boolean>;
  take(call: PaidCall): Promise<Taken>;
};

/**
 * A counted call (free calls, tiers, a subscriber's allowance): its number in the month, its
 * price, and the rail a call that costs nothing is recorded under. `notify` sends the quota
 * notices its number reaches (80 % and 100 % of the allowance, within it: a free call), once the
 * call is delivered: a count given back (a failed call, a payment found used or not the payer's)
 * notifies nobody. `delivered` counts the call as delivered (what later calls are priced from),
 * once its charge is: settled, debited, invoiced or given free; a second time changes nothing.
 *
 * @example await metering?.delivered(); // after the settlement succeeded, never after `uncount`
 */
export type Metered = {
  n: bigint;
  price: bigint;
  rail: 'free' | 'subscription';
  uncount(): Promise<void>;
  notify(): void;
  delivered(): Promise<void>;
};

/** What the gateway gives the rails it serves: its terms, its counters and its ways to answer. */
export type RailContext = {
  /** The server's slug (its path and name). */
  server: string;
  /** What the server's counts, charges and scopes are bound to: a registered server's id, or a configured one's slug. */
  serverId: string;
  /** The operator who registered the server; none for a configured server. */
  operatorId?: string;
  network: Network;
  payTo: Address;
  /** When a paid x402 result leaves (see `settlementModes`). */
  settlement: SettlementMode;
  logger: Logger;
  metrics: Metrics;
  /** This server's label in `/metrics`. */
  serverLabel: string;
  /** Counts a call's outcome in `/metrics`. */
  count(tool: string, outcome: string): void;
  /** Counts a refusal (metrics and analytics). */
  denied(reason: string): void;
  /** A call refused (not challenged: more money would not help), counted and published as `call.refused`. */
  refused(call: PaidCall, reason: string): void;
  /** Publishes an event of this server (see `RevenueBook.event`): its server and operator are filled in. */
  event(input: Omit<EventInput, 'server' | 'operatorId'>): void;
  /** The payment-required answer to `call`, in the server's binding, saying why; counted as a denial, published as `call.challenged`. */
  challenge(call: PaidCall, why: string, reason: string, extensions?: Record<string, unknown>): Response;
  /**
   * The upstream's answer `message` replaced by the payment-required answer, in the server's
   * binding (a failed settlement withholds the output): a tool result, or the JSON-RPC error.
   */
  withheld(call: PaidCall, why: string, message: Message): Message;
  /** Counts a priced call of `caller` for a metered plan or a subscription, or undefined for neither. */
  meter(caller: string, tool: string, keyId?: string): Promise<Metered | undefined>;
  /** The charge of a call inside free calls or an allowance: counted, never charged. */
  free(call: PaidCall, metering: Metered, caller: string): Charge;
  /**
   * Books what a call earned (revenue, analytics). USDC the operator will withdraw from the
   * treasury (x402, platform custody) is recorded before it moves; everything else is queued.
   */
  book(rail: 'x402' | 'credits' | 'invoice', entry: { caller: string; tool: string; amount: bigint; ref: string }): Promise<void>;
};

/** Builds a rail for one gateway, from what the gateway gives it. */
export type RailFactory = (context: RailContext) => Rail;
