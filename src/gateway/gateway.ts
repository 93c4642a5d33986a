import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Logger } from 'pino';
import type { Address } from 'viem';
import type { Network } from '../chain/networks.js';
import { FacilitatorUnavailableError } from '../facilitator/errors.js';
import type { Facilitator } from '../facilitator/facilitator.js';
import type { Metrics } from '../http/metrics.js';
import { PaymentDecodeError, decodePayment, encodeHeader } from '../x402/codec.js';
import type { FacilitatorRequest, SettleResponse } from '../x402/schemas.js';
import {
  type ToolOffer,
  challengeResponse,
  challengeResult,
  paymentRequired,
  requirementsV1,
  requirementsV2,
} from './payment-required.js';
import { type PriceTable, atomicToUsd, priceOf } from './pricing.js';
import { type JsonRpcId, rewriteSseResponse } from './sse.js';
import { type Upstream, forward } from './upstream.js';

export type GatewayOptions = {
  upstream: Upstream;
  prices: PriceTable;
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
};

type Message = { jsonrpc?: string; id?: JsonRpcId; method?: string; params?: Record<string, unknown>; result?: unknown; error?: unknown };
type ToolResult = { isError?: boolean; _meta?: Record<string, unknown>; [key: string]: unknown };

/** The `_meta` key under which `tools/list` carries each tool's price. */
export const PRICE_META_KEY = 'turnpike/price';
const PAYMENT_META_KEY = 'x402/payment';
const RECEIPT_META_KEY = 'x402/payment-response';

const rpcError = (id: JsonRpcId, code: number, message: string, status: number) =>
  new Response(JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } }), {
    status,
    headers: { 'content-type': 'application/json' },
  });
const rpcResult = (id: JsonRpcId, result: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify({ jsonrpc: '2.0', id, result }), { headers: { 'content-type': 'application/json', ...headers } });

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
  const { facilitator, logger, metrics } = options;
  const timedForward = async (request: Request, body: Uint8Array | undefined, signal: AbortSignal) => {
    const stop = metrics.upstreamSeconds.startTimer();
    try {
      return await forward(options.upstream, request, body, signal);
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

  app.on(['GET', 'DELETE'], '/', (c) => forward(options.upstream, c.req.raw, undefined, c.req.raw.signal));

  app.post(
    '/',
    bodyLimit({
      maxSize: options.bodyLimitBytes,
      onError: () => rpcError(null, -32600, `request body larger than ${options.bodyLimitBytes} bytes`, 413),
    }),
    async (c) => {
      const body = new Uint8Array(await c.req.arrayBuffer());
      let message: unknown;
      try {
        message = JSON.parse(new TextDecoder().decode(body));
      } catch {
        return rpcError(null, -32700, 'Parse error: the body is not JSON', 400);
      }
      if (Array.isArray(message)) {
        const paid = message.some((m) => paidTool(m as Message) !== undefined);
        if (paid) return rpcError(null, -32600, 'a priced tools/call cannot be sent in a batch; send it alone', 400);
        return forward(options.upstream, c.req.raw, body, c.req.raw.signal);
      }
      if (typeof message !== 'object' || message === null) return rpcError(null, -32600, 'Invalid Request: expected a JSON-RPC object', 400);
      const rpc = message as Message;
      if (rpc.method === 'tools/list') return listTools(c, rpc, body);
      const tool = paidTool(rpc);
      if (tool) return paidCall(c, rpc, body, tool);
      if (rpc.method === 'tools/call' && typeof rpc.params?.name === 'string') metrics.calls.inc({ tool: rpc.params.name, outcome: 'free' });
      return timedForward(c.req.raw, body, c.req.raw.signal);
    },
  );

  function paidTool(message: Message): { name: string; amount: bigint } | undefined {
    if (message?.method !== 'tools/call' || typeof message.params?.name !== 'string') return undefined;
    const amount = priceOf(options.prices, message.params.name);
    return amount > 0n ? { name: message.params.name, amount } : undefined;
  }

  /** tools/list passes through with each tool's price added under `_meta["turnpike/price"]`. */
  async function listTools(c: Context, rpc: Message, body: Uint8Array) {
    const response = await forward(options.upstream, c.req.raw, body, c.req.raw.signal);
    return rewrite(response, rpc.id ?? null, async (message) => {
      const tools = (message.result as { tools?: { name: string; outputSchema?: unknown; _meta?: object }[] } | undefined)?.tools;
      for (const tool of tools ?? []) {
        if (tool.outputSchema) withOutputSchema.add(tool.name);
        const amount = priceOf(options.prices, tool.name);
        tool._meta = {
          ...tool._meta,
          [PRICE_META_KEY]: {
            amount: amount.toString(),
            usd: atomicToUsd(amount),
            asset: options.network.usdc.address,
            network: options.network.caip2,
            payTo: options.payTo,
          },
        };
      }
      return message;
    });
  }

  async function paidCall(c: Context, rpc: Message, body: Uint8Array, tool: { name: string; amount: bigint }) {
    const id = rpc.id ?? null;
    const url = new URL(c.req.url);
    const offer: ToolOffer = { tool: tool.name, amount: tool.amount, payTo: options.payTo, network: options.network, mcpUrl: `${url.origin}${url.pathname}` };
    const challenge = (why: string, reason: string) => {
      metrics.calls.inc({ tool: tool.name, outcome: 'challenged' });
      metrics.denials.inc({ reason });
      const required = paymentRequired(offer, why);
      return options.challenge === 'http-402'
        ? challengeResponse(offer, required)
        : rpcResult(id, challengeResult(required, withOutputSchema.has(tool.name)));
    };

    const meta = rpc.params?._meta as Record<string, unknown> | undefined;
    const raw = meta?.[PAYMENT_META_KEY] ?? c.req.header('payment-signature') ?? c.req.header('x-payment');
    if (raw === undefined) return challenge(`payment required: tool "${tool.name}" costs ${atomicToUsd(tool.amount)} USDC`, 'payment_missing');
    let request: FacilitatorRequest;
    try {
      const payment = decodePayment(raw);
      request =
        payment.x402Version === 2
          ? { x402Version: 2, paymentPayload: payment, paymentRequirements: requirementsV2(offer) }
          : { x402Version: 1, paymentPayload: payment, paymentRequirements: requirementsV1(offer) };
    } catch (error) {
      if (error instanceof PaymentDecodeError) return challenge(`invalid_payload: ${error.message}`, 'invalid_payload');
      throw error;
    }

    let held;
    try {
      held = await facilitator.reserve(request);
    } catch (error) {
      if (error instanceof FacilitatorUnavailableError) return rpcError(id, -32603, `payment verification is unavailable, retry: ${error.message}`, 503);
      throw error;
    }
    if (!held.isValid) return challenge(`${held.invalidReason}: ${held.invalidMessage ?? ''}`.trim(), held.invalidReason);
    const { key } = held;
    const release = (why: string) => {
      metrics.calls.inc({ tool: tool.name, outcome: 'failed' });
      return facilitator.release(key, why).catch((err: unknown) => logger.error({ err }, 'cannot release a held payment'));
    };

    let response: Response;
    try {
      const signal = AbortSignal.any([c.req.raw.signal, AbortSignal.timeout(options.upstream.timeoutMs)]);
      response = await timedForward(c.req.raw, body, signal);
    } catch (error) {
      await release(`upstream unreachable: ${(error as Error).message}`);
      return rpcError(id, -32603, 'the tool’s server did not answer; you were not charged', 502);
    }
    if (response.status !== 200) {
      await release(`upstream answered HTTP ${response.status}`);
      return response;
    }

    let receipt: SettleResponse | undefined;
    const settled = await rewrite(
      response,
      id,
      async (message) => {
        const result = message.result as ToolResult | undefined;
        if (message.error !== undefined || !result || result.isError) {
          await release(message.error !== undefined ? 'the tool answered a JSON-RPC error' : 'the tool reported isError');
          return message;
        }
        const stop = metrics.settlementSeconds.startTimer();
        try {
          receipt = await facilitator.settle(request);
        } catch (error) {
          if (!(error instanceof FacilitatorUnavailableError)) throw error;
          metrics.calls.inc({ tool: tool.name, outcome: 'settlement_failed' });
          return { jsonrpc: '2.0', id, result: challengeResult(paymentRequired(offer, `settlement failed: ${error.message}`), withOutputSchema.has(tool.name)) };
        }
        stop();
        // Pending is not failure: the transaction is out and verified to be payable.
        if (!receipt.success && receipt.errorReason !== 'settlement_pending') {
          metrics.calls.inc({ tool: tool.name, outcome: 'settlement_failed' });
          const why = `settlement failed: ${receipt.errorReason}${receipt.errorMessage ? `: ${receipt.errorMessage}` : ''}`;
          return { jsonrpc: '2.0', id, result: challengeResult(paymentRequired(offer, why), withOutputSchema.has(tool.name)) };
        }
        metrics.calls.inc({ tool: tool.name, outcome: 'paid' });
        metrics.revenue.inc({ asset: options.network.usdc.address, network: options.network.caip2 }, Number(tool.amount));
        return { ...message, result: { ...result, _meta: { ...result._meta, [RECEIPT_META_KEY]: receipt } } };
      },
      (sawResponse) => {
        if (!sawResponse) void release('the upstream stream ended before the result');
      },
    );
    if (receipt && !settled.headers.get('content-type')?.includes('text/event-stream')) {
      const encoded = encodeHeader(receipt);
      settled.headers.set('payment-response', encoded);
      settled.headers.set('x-payment-response', encoded);
    }
    return settled;
  }

  return app;
}

/**
 * Rewrites the JSON-RPC response to `id` in an upstream answer, JSON or SSE alike. A JSON answer
 * is read whole (it is one message); an SSE stream is rewritten frame by frame as it flows.
 */
async function rewrite(
  response: Response,
  id: JsonRpcId,
  fn: (message: Message) => Promise<Message>,
  onEnd: (sawResponse: boolean) => void = () => {},
): Promise<Response> {
  const type = response.headers.get('content-type') ?? '';
  if (type.includes('text/event-stream') && response.body) {
    return new Response(rewriteSseResponse(response.body, id, fn, onEnd), { status: response.status, headers: response.headers });
  }
  if (!type.includes('application/json')) {
    onEnd(false);
    return response;
  }
  const text = await response.text();
  let message: Message;
  try {
    message = JSON.parse(text) as Message;
  } catch {
    onEnd(false);
    return new Response(text, { status: response.status, headers: response.headers });
  }
  if (message.id !== id) {
    onEnd(false);
    return new Response(text, { status: response.status, headers: response.headers });
  }
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  return new Response(JSON.stringify(await fn(message)), { status: response.status, headers });
}

function hostOf(origin: string): string {
  try {
    return new URL(origin).host;
  } catch {
    return '';
  }
}
