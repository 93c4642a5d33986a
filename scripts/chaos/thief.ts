import { randomUUID } from 'node:crypto';
import { x402Client } from '@x402/core/client';
import { decodePaymentRequiredHeader, decodePaymentSignatureHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import { HTTPFacilitatorClient } from '@x402/core/server';
import type { PaymentPayload, PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme as ExactEvmClient } from '@x402/evm/exact/client';
import { ExactEvmScheme as ExactEvmServer } from '@x402/evm/exact/server';
import { paymentMiddleware, x402ResourceServer } from '@x402/hono';
import { Hono } from 'hono';
import type { Address } from 'viem';
import type { DemoAccount } from '../../src/chain/sandbox/accounts.js';
import { listen } from '../../src/http/listen.js';
import { type Answer, type Call, answerOf, delivered, retryable, send, sseData } from './calls.js';
import { RESULT_MARKER } from './executions.js';
import { type SettledPayment, callBody, challengeFor, performCall } from './payers.js';
import { type Random, seededRandom } from './rng.js';

export const theftKinds = ['abort_resume', 'forged_signature', 'utf7_method', 'duplicate_key', 'facilitator_copies'] as const;
export type TheftKind = (typeof theftKinds)[number];
/** Thefts whose request turnpike must refuse with a 4xx before anything runs. */
export const smuggles: TheftKind[] = ['utf7_method', 'duplicate_key'];

/**
 * One try of the thief to get a priced result without paying for it: how its requests came back
 * (`statuses`), and whatever it got that no client may get unpaid (`stolen`: results, or the
 * marker of one, read where no priced result may leave). `facilitator_copies` also names the
 * authorization it paid once and how many of its copies the x402 API answered with a 2xx.
 */
export type Theft = {
  kind: TheftKind;
  callId: string;
  statuses: (number | 'connection')[];
  stolen: string[];
  authorization?: { payer: string; nonce: string };
  served?: number;
};

export type ThiefOptions = {
  /** turnpike's base URL: its MCP endpoint is `/mcp`, its facilitator API `/facilitator`. */
  base: string;
  seed: number;
  /** The thief's own wallet: it pays honestly once in a while, then tries to get more. */
  payer: DemoAccount;
  /** The payee turnpike settles for, which the x402 API in front of its facilitator is paid to. */
  payTo: Address;
  /** Payments whose calls got their results (the honest payers' and the thief's own). */
  settled: SettledPayment[];
  running: () => boolean;
};

const WORKERS = 2;
const FACILITATOR_COPIES = 5;
/** How long the thief reads a resumed or standalone stream, long enough for the slow tool to answer. */
const LISTEN_MS = 1_500;
const TIMEOUT_MS = 20_000;
const FORGED_SIGNATURE = `0x${'11'.repeat(65)}`;
const PROTOCOL = '2025-11-25';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lower = (payment: PaymentPayload) => {
  const { from, nonce } = (payment.payload as { authorization: { from: string; nonce: string } }).authorization;
  return { payer: from.toLowerCase(), nonce: nonce.toLowerCase() };
};
/** A request that may meet turnpike down: `undefined` then. */
async function attempt<T>(fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch {
    return undefined;
  }
}

/**
 * The thief: concurrent clients that try to get priced results without paying, a seeded mix of
 * (1) paying for a slow call in a session, hanging up at its first event and resuming the stream
 * with Last-Event-ID, and opening the session's standalone stream; (2) replaying a settled payment
 * with a forged signature; (3) smuggling a priced call in UTF-7 or behind a duplicate key; (4)
 * sending copies of one payment to an API the official `@x402/hono` middleware guards with
 * turnpike's facilitator. Its honest calls (those it paid for in (1), retried with the same
 * payment until the result is given back) are returned as calls, to be judged like any other.
 */
export async function runThief(options: ThiefOptions): Promise<{ thefts: Theft[]; calls: Call[] }> {
  const mcpUrl = `${options.base}/mcp`;
  const thefts: Theft[] = [];
  const calls: Call[] = [];
  const required = await challengeFor(mcpUrl);
  const client = new x402Client().register('eip155:8453', new ExactEvmClient(options.payer));
  const api = await startPaidApi(`${options.base}/facilitator`, options.payTo);

  const mcpHeaders = (session?: string): Record<string, string> => ({
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': PROTOCOL,
    ...(session ? { 'mcp-session-id': session } : {}),
  });

  async function openSession(): Promise<string | undefined> {
    const post = (message: object, session?: string) => {
      const body = JSON.stringify({ jsonrpc: '2.0', ...message });
      return attempt(() => fetch(mcpUrl, { method: 'POST', headers: mcpHeaders(session), body, signal: AbortSignal.timeout(TIMEOUT_MS) }));
    };
    const params = { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'thief', version: '1' } };
    const res = await post({ id: 0, method: 'initialize', params });
    const session = res?.headers.get('mcp-session-id') ?? undefined;
    await attempt(async () => res?.text());
    if (!session) return undefined;
    const ack = await post({ method: 'notifications/initialized' }, session);
    await attempt(async () => ack?.text());
    return ack?.ok ? session : undefined;
  }

  /** A GET stream of the session (resumed after `lastEventId`, if given), read for LISTEN_MS. */
  async function readStream(session: string, lastEventId?: string): Promise<{ status: number | 'connection'; text: string }> {
    const headers = { ...mcpHeaders(session), accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) };
    const res = await attempt(() => fetch(mcpUrl, { headers, signal: AbortSignal.timeout(LISTEN_MS) }));
    if (!res) return { status: 'connection', text: '' };
    let text = '';
    try {
      for await (const chunk of res.body! as unknown as AsyncIterable<Uint8Array>) text += new TextDecoder().decode(chunk);
    } catch {
      // LISTEN_MS is up
    }
    return { status: res.status, text };
  }

  /**
   * (1) Pays for the slow tool in a session, hangs up at the first event and resumes the stream
   * after it, while holding the session's standalone stream open: neither may carry the result
   * (the call runs on, is charged, and its result is kept for its payment). Then, as an honest
   * client, it sends the same call with the same payment until the result is given back.
   */
  async function abortAndResume(callId: string, random: Random) {
    const theft: Theft = { kind: 'abort_resume', callId, statuses: [], stolen: [] };
    thefts.push(theft);
    const session = await openSession();
    if (!session) return void theft.statuses.push('connection');
    const payment = await client.createPaymentPayload(required);
    const call: Call = { callId, rail: 'x402', tool: 'slow', ...lower(payment), rounds: [] };
    calls.push(call);
    const params = { name: 'slow', arguments: { callId }, _meta: { progressToken: callId, 'x402/payment': payment } };
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params });
    const hangUp = new AbortController();
    const timeout = setTimeout(() => hangUp.abort(), TIMEOUT_MS);
    let lastEventId: string | undefined;
    let answer: Answer = { at: Date.now(), status: 'connection', kind: 'other', reason: 'hung up' };
    try {
      const res = await fetch(mcpUrl, { method: 'POST', headers: mcpHeaders(session), body, signal: hangUp.signal });
      theft.statuses.push(res.status);
      if (res.headers.get('content-type')?.includes('text/event-stream')) {
        const reader = res.body!.getReader();
        let read = '';
        for (let chunk = await reader.read(); !chunk.done && !lastEventId; chunk = await reader.read()) {
          read += new TextDecoder().decode(chunk.value);
          lastEventId = /^id: *(\S+)/m.exec(read)?.[1];
        }
        answer = { ...answer, at: Date.now() };
      } else answer = answerOf(res, await res.text());
    } catch {
      theft.statuses.push('connection');
    } finally {
      clearTimeout(timeout);
      hangUp.abort();
    }
    call.rounds.push({ copies: 1, answers: [answer] });
    if (lastEventId) {
      const streams = await Promise.all([readStream(session, lastEventId), readStream(session)]);
      theft.statuses.push(...streams.map((s) => s.status));
      const seen = streams.flatMap((s) => sseData(s.text));
      for (const data of seen) if (data.includes(RESULT_MARKER) || data.includes('turnpike-paid:')) theft.stolen.push(data.slice(0, 200));
    }
    if (retryable(answer)) {
      // Out of the session: a result given back to its payment needs none, and a session dies with the upstream.
      await performCall({ mcpUrl, calls }, call, body, {}, random);
    }
    if (delivered(call).length > 0) options.settled.push({ call, payment });
  }

  /** (2) A payment another call settled, its signature forged: the same call again must get nothing. */
  async function forgedReplay(old: SettledPayment) {
    const forged = { ...old.payment, payload: { ...old.payment.payload, signature: FORGED_SIGNATURE } };
    const answer = await send(mcpUrl, callBody(old.call.callId, old.call.tool, forged), {}, TIMEOUT_MS);
    const stolen = answer.kind === 'output' ? [`the result of ${old.call.callId} for a forged signature`] : [];
    thefts.push({ kind: 'forged_signature', callId: old.call.callId, statuses: [answer.status], stolen });
  }

  /** (3) A priced call spelled so that a reader other than turnpike's would run it unpaid: refused with a 4xx, never run. */
  async function smuggle(kind: 'utf7_method' | 'duplicate_key', callId: string) {
    const rest = `"params":{"name":"ok","arguments":{"callId":"${callId}"}}}`;
    const [body, type] =
      kind === 'utf7_method'
        ? [`{"jsonrpc":"2.0","id":1,"method":"+AHQAbwBvAGwAcwAvAGMAYQBsAGw-",${rest}`, 'application/json; charset=utf-7']
        : [`{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call",${rest}`, 'application/json'];
    const answer = await send(mcpUrl, body, { 'content-type': type }, TIMEOUT_MS);
    thefts.push({ kind, callId, statuses: [answer.status], stolen: answer.kind === 'output' ? ['a result'] : [] });
  }

  async function worker(index: number) {
    const random = seededRandom(options.seed * 1000 + 900 + index);
    for (let n = 0; options.running(); n++) {
      const callId = `t${index}-${n}`;
      const kind = random.weighted({ abort_resume: 35, forged_signature: 20, utf7_method: 10, duplicate_key: 10, facilitator_copies: 25 });
      if (kind === 'forged_signature' && options.settled.length > 0) await forgedReplay(random.pick(options.settled));
      else if (kind === 'utf7_method' || kind === 'duplicate_key') await smuggle(kind, callId);
      else if (kind === 'facilitator_copies') thefts.push(await facilitatorCopies(api, client, callId));
      else await abortAndResume(callId, random);
      await sleep(random.int(20, 200));
    }
  }

  try {
    await Promise.all(Array.from({ length: WORKERS }, (_, i) => worker(i)));
  } finally {
    await api.close();
  }
  return { thefts, calls };
}

type PaidApi = Awaited<ReturnType<typeof startPaidApi>>;

/**
 * An API built only from the official x402 packages with turnpike's facilitator API as its
 * facilitator: `@x402/hono`'s middleware guards `GET /secret` (0.01 USD to `payTo`, a payee
 * turnpike settles for), which answers a new secret each time. `served` counts, per authorization
 * (payer:nonce, lower case), the 2xx answers that left the middleware.
 */
async function startPaidApi(facilitatorUrl: string, payTo: Address) {
  const served = new Map<string, number>();
  const facilitator = new HTTPFacilitatorClient({ url: facilitatorUrl });
  const resourceServer = new x402ResourceServer(facilitator).register('eip155:8453', new ExactEvmServer());
  const app = new Hono();
  app.use(async (c, next) => {
    await next();
    const header = c.req.header('payment-signature');
    if (header && c.res.status >= 200 && c.res.status < 300) {
      const { payer, nonce } = lower(decodePaymentSignatureHeader(header));
      served.set(`${payer}:${nonce}`, (served.get(`${payer}:${nonce}`) ?? 0) + 1);
    }
  });
  const route = { accepts: { scheme: 'exact', price: '$0.01', network: 'eip155:8453', payTo }, description: 'a new secret' } as const;
  app.use(paymentMiddleware({ 'GET /secret': route }, resourceServer));
  app.get('/secret', (c) => c.json({ secret: randomUUID() }));
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  return { url: `${server.url}/secret`, served, close: () => server.close() };
}

/**
 * (4) Pays the x402 API once and sends FACILITATOR_COPIES concurrent copies of that one
 * PAYMENT-SIGNATURE: at most one may be served, and only if the authorization is settled (the
 * invariant compares `served` with the journal).
 */
async function facilitatorCopies(api: PaidApi, client: x402Client, callId: string): Promise<Theft> {
  const theft: Theft = { kind: 'facilitator_copies', callId, statuses: [], stolen: [] };
  const challenge = await attempt(() => fetch(api.url, { signal: AbortSignal.timeout(TIMEOUT_MS) }));
  const header = challenge?.headers.get('payment-required');
  await attempt(async () => challenge?.text());
  if (!header) return { ...theft, statuses: [challenge?.status ?? 'connection'] };
  const payment = await client.createPaymentPayload(decodePaymentRequiredHeader(header) as PaymentRequired);
  const signature = encodePaymentSignatureHeader(payment);
  theft.statuses = await Promise.all(
    Array.from({ length: FACILITATOR_COPIES }, async () => {
      const copy = { headers: { 'payment-signature': signature }, signal: AbortSignal.timeout(TIMEOUT_MS) };
      const res = await attempt(() => fetch(api.url, copy));
      await attempt(async () => res?.text());
      return res?.status ?? 'connection';
    }),
  );
  theft.authorization = lower(payment);
  theft.served = api.served.get(`${theft.authorization.payer}:${theft.authorization.nonce}`) ?? 0;
  return theft;
}
