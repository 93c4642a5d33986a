import type { ChaosTool } from './executions.js';

/** How one request came back, as the client saw it. */
export type Answer = {
  at: number;
  /** When the request was sent (requests sent through `send`). */
  sent?: number;
  /** The HTTP status, or `connection` when no answer came (turnpike down, or the client's timeout). */
  status: number | 'connection';
  kind: 'output' | 'challenge' | 'tool_error' | 'rpc_error' | 'other';
  /** Why a challenge or an error: the challenge's `error`, or the error's `data.error` / message. */
  reason?: string;
  /** x402: the receipt delivered with the output. */
  receipt?: { success: boolean; errorReason?: string; transaction: string };
  /** credits: the debit delivered with the output. */
  entry?: string;
  replayed?: boolean;
};

/** Requests sent together (concurrent copies of one request); a retry is another round. */
export type Round = { copies: number; answers: Answer[] };

/**
 * One logical call of a chaos client: its `callId` is in the tool arguments, so the upstream's
 * execution log names it. Every request of a call carries the same body, hence (x402) the same
 * payment or (credits) the same Idempotency-Key, if any.
 */
export type Call = {
  callId: string;
  rail: 'x402' | 'credits';
  tool: ChaosTool;
  /** A client's mistake (garbage, a replayed payment, a reused Idempotency-Key…): never a 5xx, never run. */
  mistake?: string;
  /** x402: the authorization's payer and nonce (lower case). */
  payer?: string;
  nonce?: string;
  /** credits: the API key's id and the Idempotency-Key sent, if any. */
  keyId?: string;
  idempotencyKey?: string;
  /** The call whose payment or Idempotency-Key this one reuses. */
  reuses?: string;
  rounds: Round[];
};

export const answers = (call: Call) => call.rounds.flatMap((r) => r.answers);
export const delivered = (call: Call) => answers(call).filter((a) => a.kind === 'output');

type Json = Record<string, any>;

/** Sends one request and says how it came back; never throws. */
export async function send(url: string, body: string, headers: Record<string, string>, timeoutMs: number): Promise<Answer> {
  const sent = Date.now();
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
  } catch (error) {
    return {
      at: Date.now(),
      sent,
      status: 'connection',
      kind: 'other',
      reason: (error as Error).name === 'TimeoutError' ? 'client timeout' : 'no answer',
    };
  }
  return { ...answerOf(res, text), sent };
}

/** How an answer came back, from its status, headers and body (JSON, or an SSE stream). */
export function answerOf(res: Response, text: string): Answer {
  const at = Date.now();
  let message: Json;
  try {
    message = (res.headers.get('content-type')?.includes('text/event-stream') ? responseInStream(text) : JSON.parse(text)) as Json;
  } catch {
    return { at, status: res.status, kind: 'other', reason: text.slice(0, 120) };
  }
  const replayed = res.headers.get('idempotent-replayed') === 'true' ? { replayed: true } : {};
  if (message.error) {
    const reason = String(message.error.data?.error ?? message.error.message ?? message.error);
    return { at, status: res.status, kind: 'rpc_error', reason };
  }
  const result = message.result as Json | undefined;
  if (!result) return { at, status: res.status, kind: 'other', reason: text.slice(0, 120) };
  if (result.isError) {
    const challenge = result.structuredContent as Json | undefined;
    if (challenge?.x402Version) return { at, status: res.status, kind: 'challenge', reason: String(challenge.error) };
    return { at, status: res.status, kind: 'tool_error' };
  }
  const receipt = result._meta?.['x402/payment-response'] as Answer['receipt'] | undefined;
  const credits = result._meta?.['turnpike/credits'] as { entry: string } | undefined;
  return {
    at,
    status: res.status,
    kind: 'output',
    ...(receipt ? { receipt } : {}),
    ...(credits ? { entry: credits.entry } : {}),
    ...replayed,
  };
}

/** The JSON-RPC response an SSE answer carries (its notifications and priming events aside). */
function responseInStream(text: string): Json {
  const messages = sseData(text).map((data) => JSON.parse(data) as Json);
  const response = messages.find((m) => m.method === undefined && m.id !== undefined);
  if (!response) throw new Error('no response in the stream');
  return response;
}

/** The `data` of each SSE event in `text`, empty ones (priming events) left out. */
export const sseData = (text: string) =>
  text
    .split(/\r?\n\r?\n/)
    .map((event) =>
      event
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trim())
        .join('\n'),
    )
    .filter(Boolean);

/** Worth sending again unchanged: no answer, turnpike's or the chain's fault, or a payment it let go. */
export const retryable = (a: Answer) =>
  a.status === 'connection' ||
  a.status >= 500 ||
  (a.kind === 'challenge' && a.reason?.startsWith('settlement failed')) ||
  a.reason === 'request_in_progress' ||
  // x402's "in progress": another request holds this payment; its result is given back once kept.
  (a.kind === 'challenge' && a.reason?.includes('already used by another call') === true);
