import { createHash, createHmac } from 'node:crypto';
import { newId } from '../store/ids.js';
import type { NewEvent } from '../store/events/events.js';

/**
 * What turnpike publishes (see `README.md`, Events out): one event per call the gateway handled,
 * by how it ended, and the notifications a caller's or operator's systems act on.
 */
export const eventTypes = [
  'call.paid',
  'call.free',
  'call.challenged',
  'call.refused',
  'call.failed',
  'call.replayed',
  'settlement.failed',
  'quota.threshold',
  'balance.low',
  'calls.suppressed',
] as const;
export type EventType = (typeof eventTypes)[number];

/** Who called, as far as turnpike knows: a credits key's id, an x402 payer's address, an OAuth subject. Never a secret. */
export type EventCaller = { keyId?: string; payer?: string; subject?: { issuer: string; subject: string } };

/** A caller as charges name it (`key:<id>`, or an x402 payer's address) as events do. */
export const eventCaller = (caller: string): EventCaller => (caller.startsWith('key:') ? { keyId: caller.slice(4) } : { payer: caller });
/** An OAuth caller (a verified token's issuer and subject) as events name them. */
export const subjectOf = (p: { issuer: string; subject: string }): EventCaller => ({ subject: { issuer: p.issuer, subject: p.subject } });

export type EventData = { [fact: string]: string | number | EventData };

export type EventInput = {
  type: EventType;
  server: { id: string; slug: string };
  /** The server's operator (its events also go to that operator's endpoints). */
  operatorId?: string;
  tool?: string;
  caller?: EventCaller;
  rail?: 'x402' | 'credits' | 'invoice' | 'free' | 'subscription';
  /** Integer: atomic USDC for x402, micro-USD for credits (the same unit). */
  amount?: bigint;
  /** Why a call was refused, challenged or failed (a stable code such as `insufficient_balance`). */
  reason?: string;
  /**
   * Notification facts (`quota.threshold`: percent, calls, allowance, month; `balance.low`: balance,
   * threshold; `calls.suppressed`: from, until, limit, suppressed, counts by type and reason).
   */
  data?: EventData;
  /** A notification that must fire once passes an id made from what makes it unique (see `onceId`). */
  id?: string;
};

/** The id of a notification that fires once for these facts (a quota threshold of a caller in a month): the outbox keeps one. */
export const onceId = (...facts: (string | number)[]) =>
  `evt_${createHash('sha256').update(JSON.stringify(facts)).digest('hex').slice(0, 32)}`;

/**
 * An event as the outbox keeps it and every endpoint is sent it: JSON with its id, type, time,
 * server (id and slug), and what applies of tool, caller, rail, amount (an integer string), reason
 * and notification data.
 *
 * @example callEvent({ type: 'call.paid', server: { id: 'srv_1', slug: 'weather' }, tool: 'forecast', rail: 'credits', amount: 1000n, caller: { keyId: 'key_1' } })
 */
export function callEvent(input: EventInput, now = Date.now()): NewEvent {
  const id = input.id ?? newId('evt');
  const payload = {
    id,
    type: input.type,
    createdAt: new Date(now).toISOString(),
    server: input.server,
    ...(input.tool !== undefined ? { tool: input.tool } : {}),
    ...(input.caller && Object.keys(input.caller).length > 0 ? { caller: input.caller } : {}),
    ...(input.rail ? { rail: input.rail } : {}),
    ...(input.amount !== undefined ? { amount: input.amount.toString(), unit: 'micro-USD (atomic USDC)' } : {}),
    // Bounded: a reason may quote an upstream's or a node's error message.
    ...(input.reason ? { reason: input.reason.slice(0, 500) } : {}),
    ...(input.data ? { data: input.data } : {}),
  };
  return {
    id,
    type: input.type,
    payload: JSON.stringify(payload),
    createdAt: now,
    ...(input.operatorId ? { operatorId: input.operatorId } : {}),
  };
}

/** The header a webhook is signed in: `t=<Unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, as Stripe signs. */
export const SIGNATURE_HEADER = 'turnpike-signature';

/** The signature header's value for `body` sent at `timestamp` (Unix seconds) under an endpoint's secret. */
export function signature(secret: string, timestamp: number, body: string): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${v1}`;
}
