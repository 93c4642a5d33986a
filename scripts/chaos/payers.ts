import { randomBytes } from 'node:crypto';
import { x402Client } from '@x402/core/client';
import type { PaymentPayload, PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import type { Address } from 'viem';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { signAuthorization } from '../../test/helpers/payments.js';
import { type Answer, type Call, delivered, retryable, send } from './calls.js';
import { type ChaosTool, failingTools } from './executions.js';
import { type Random, seededRandom } from './rng.js';
import { PRICE } from './stack.js';

export type PayersOptions = {
  mcpUrl: string;
  seed: number;
  /** One x402 worker per account; one credits worker per key. */
  x402: DemoAccount[];
  keys: { id: string; key: string }[];
  /** A payee that is not the server's, for payments made out to the wrong address. */
  stranger: Address;
  /** Where the x402 payers put each payment whose call got its result (the thief reads it too). */
  settled: SettledPayment[];
  running: () => boolean;
};

/** A payment whose call got its result, hence settled: replaying it must not buy anything. */
export type SettledPayment = { call: Call; payment: PaymentPayload };

const MAX_ROUNDS = 3;
/** Rounds in all, counting those turnpike was down for (kills keep it down for up to ~3 s). */
const MAX_DOWN_ROUNDS = 15;
const TIMEOUT_MS = 20_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const callBody = (callId: string, tool: ChaosTool, payment?: unknown) =>
  JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'tools/call',
    params: { name: tool, arguments: { callId }, ...(payment ? { _meta: { 'x402/payment': payment } } : {}) },
  });

/**
 * The chaos clients: x402 payers (one authorization per call, signed by the official x402
 * client) and credits payers (an API key each), calling through turnpike until `running()` turns
 * false. They retry with the same payment or Idempotency-Key, send concurrent copies, replay
 * old payments and make mistakes on purpose; every request and answer is recorded.
 */
export async function runPayers(options: PayersOptions): Promise<Call[]> {
  const calls: Call[] = [];
  const required = await challengeFor(options.mcpUrl);

  const perform = (call: Call, body: string, headers: Record<string, string>, random: Random, copies = 1) =>
    performCall({ mcpUrl: options.mcpUrl, calls }, call, body, headers, random, copies);

  async function x402Worker(payer: DemoAccount, index: number) {
    const random = seededRandom(options.seed * 1000 + index);
    const client = new x402Client().register('eip155:8453', new ExactEvmScheme(payer));
    const payerAddress = payer.address.toLowerCase();
    const paid = () => options.settled.filter((p) => p.call.payer === payerAddress);
    for (let n = 0; options.running(); n++) {
      const callId = `x${index}-${n}`;
      const scenario = random.weighted({ paid: 50, failing: 14, copies: 10, replay: 8, mistake: 8 });
      if (scenario === 'replay' && paid().length > 0) {
        const old = random.pick(paid());
        const call: Call = {
          callId: `r${index}-${n}`,
          rail: 'x402',
          tool: 'ok',
          mistake: 'replayed_payment',
          payer: payerAddress,
          nonce: old.call.nonce!,
          reuses: old.call.callId,
          rounds: [],
        };
        await perform(call, callBody(call.callId, 'ok', old.payment), {}, random);
      } else if (scenario === 'mistake') {
        await x402Mistake(`m${index}-${n}`, payer, client, random);
      } else {
        const tool: ChaosTool = scenario === 'failing' ? random.pick(failingTools) : 'ok';
        const payment = await client.createPaymentPayload(required);
        const nonce = (payment.payload as { authorization: { nonce: string } }).authorization.nonce.toLowerCase();
        const call: Call = { callId, rail: 'x402', tool, payer: payerAddress, nonce, rounds: [] };
        await perform(call, callBody(callId, tool, payment), {}, random, scenario === 'copies' ? random.int(3, 5) : 1);
        if (delivered(call).length > 0) options.settled.push({ call, payment });
      }
      await sleep(random.int(0, 40));
    }
  }

  /** A request a client got wrong, each decidable without the chain: it must be refused, not run, never 5xx. */
  async function x402Mistake(callId: string, payer: DemoAccount, client: x402Client, random: Random) {
    const kind = random.pick(['bad_json', 'bad_payment', 'wrong_amount', 'wrong_payee', 'expired', 'paid_batch'] as const);
    const call: Call = { callId, rail: 'x402', tool: 'ok', mistake: kind, payer: payer.address.toLowerCase(), rounds: [] };
    const accepted = required.accepts[0]!;
    const altered = (change: Partial<typeof accepted>) =>
      client.createPaymentPayload({ ...required, accepts: [{ ...accepted, ...change }] });
    let body: string;
    if (kind === 'bad_json') body = callBody(callId, 'ok').slice(0, -7);
    else if (kind === 'bad_payment') body = callBody(callId, 'ok', 'garbage!');
    else if (kind === 'wrong_amount') body = callBody(callId, 'ok', await altered({ amount: String(PRICE - 1n) }));
    else if (kind === 'wrong_payee') body = callBody(callId, 'ok', await altered({ payTo: options.stranger }));
    else if (kind === 'expired') {
      const payload = await signAuthorization({
        payer,
        payTo: accepted.payTo as Address,
        amount: PRICE,
        validBefore: BigInt(Math.floor(Date.now() / 1000) - 10),
      });
      body = callBody(callId, 'ok', { x402Version: 2, resource: required.resource, accepted, payload });
    } else body = `[${callBody(callId, 'ok', await client.createPaymentPayload(required))}]`;
    await perform(call, body, {}, random);
  }

  async function creditsWorker(key: { id: string; key: string }, index: number) {
    const random = seededRandom(options.seed * 1000 + 500 + index);
    const auth = { authorization: `Bearer ${key.key}` };
    const idempotent: Call[] = [];
    for (let n = 0; options.running(); n++) {
      const callId = `c${index}-${n}`;
      const scenario = random.weighted({
        plain: 25,
        idempotent: 25,
        idempotentCopies: 8,
        plainCopies: 5,
        failing: 12,
        replay: 8,
        mistake: 8,
      });
      const withKey = scenario === 'idempotent' || scenario === 'idempotentCopies' || (scenario === 'failing' && random.next() < 0.5);
      if (scenario === 'replay' && idempotent.length > 0) {
        // The same request again later: answered from the store, charged once.
        const old = random.pick(idempotent);
        await perform(old, callBody(old.callId, old.tool), { ...auth, 'idempotency-key': old.idempotencyKey! }, random);
      } else if (scenario === 'mistake') {
        await creditsMistake(`m${index}-${n}`, key, idempotent, random);
      } else {
        const tool: ChaosTool = scenario === 'failing' ? random.pick(failingTools) : 'ok';
        const call: Call = { callId, rail: 'credits', tool, keyId: key.id, ...(withKey ? { idempotencyKey: callId } : {}), rounds: [] };
        const copies = scenario.endsWith('Copies') ? random.int(3, 5) : 1;
        const headers = withKey ? { ...auth, 'idempotency-key': callId } : auth;
        if (withKey) await perform(call, callBody(callId, tool), headers, random, copies);
        else {
          // Without an Idempotency-Key a retry would be a second purchase: one round only.
          calls.push(call);
          call.rounds.push({
            copies,
            answers: await Promise.all(
              Array.from({ length: copies }, () => send(options.mcpUrl, callBody(callId, tool), headers, TIMEOUT_MS)),
            ),
          });
        }
        if (withKey && delivered(call).length > 0) idempotent.push(call);
      }
      await sleep(random.int(0, 40));
    }
  }

  async function creditsMistake(callId: string, key: { id: string; key: string }, idempotent: Call[], random: Random) {
    const kinds = [
      'unknown_key',
      'bad_json',
      'long_idempotency_key',
      ...(idempotent.length > 0 ? (['reused_idempotency_key'] as const) : []),
    ] as const;
    const kind = random.pick(kinds);
    const call: Call = { callId, rail: 'credits', tool: 'ok', mistake: kind, keyId: key.id, rounds: [] };
    const auth = { authorization: `Bearer ${key.key}` };
    if (kind === 'unknown_key')
      await perform(call, callBody(callId, 'ok'), { authorization: `Bearer tp_${randomBytes(32).toString('hex')}` }, random);
    else if (kind === 'bad_json') await perform(call, callBody(callId, 'ok').slice(0, -7), auth, random);
    else if (kind === 'long_idempotency_key')
      await perform(call, callBody(callId, 'ok'), { ...auth, 'idempotency-key': 'k'.repeat(300) }, random);
    else {
      const old = random.pick(idempotent);
      Object.assign(call, { idempotencyKey: old.idempotencyKey, reuses: old.callId });
      await perform(call, callBody(callId, 'ok'), { ...auth, 'idempotency-key': old.idempotencyKey! }, random);
    }
  }

  await Promise.all([...options.x402.map(x402Worker), ...options.keys.map(creditsWorker)]);
  return calls;
}

/**
 * Sends `body` as `copies` concurrent requests, and again while it is worth it: up to MAX_ROUNDS
 * rounds that got an answer, and meanwhile as long as turnpike is down (a round nobody answered
 * does not count, up to MAX_DOWN_ROUNDS), as a client that wants its result back would. The call
 * goes into `to.calls` once, every round into the call.
 */
export async function performCall(
  to: { mcpUrl: string; calls: Call[] },
  call: Call,
  body: string,
  headers: Record<string, string>,
  random: Random,
  copies = 1,
) {
  if (!to.calls.includes(call)) to.calls.push(call);
  const rounds = call.mistake ? 1 : MAX_ROUNDS;
  for (let answered = 0, round = 0; answered < rounds && round < MAX_DOWN_ROUNDS; round++) {
    if (round > 0) await sleep(random.int(200, 600));
    const answers: Answer[] = await Promise.all(Array.from({ length: copies }, () => send(to.mcpUrl, body, headers, TIMEOUT_MS)));
    call.rounds.push({ copies, answers });
    if (answers.some((a) => a.kind === 'output') || !answers.some(retryable)) return;
    if (answers.some((a) => a.status !== 'connection')) answered++;
  }
}

/** The PaymentRequired turnpike answers an unpaid call with: what every payment is made for. */
export async function challengeFor(mcpUrl: string): Promise<PaymentRequired> {
  const res = await fetch(mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: callBody('challenge', 'ok'),
  });
  const message = (await res.json()) as { result?: { structuredContent?: PaymentRequired } };
  const required = message.result?.structuredContent;
  if (!required?.accepts?.[0]) throw new Error(`turnpike did not answer an unpaid call with a challenge: ${JSON.stringify(message)}`);
  return required;
}
