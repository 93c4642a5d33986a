import { slugSchema } from '../pricing/slug.js';
import { Hono } from 'hono';
import { z } from 'zod';
import type { Network } from '../chain/networks.js';
import { FacilitatorUnavailableError } from '../facilitator/errors.js';
import type { FacilitatorPort } from '../facilitator/port.js';
import { purposes } from '../facilitator/purposes.js';
import { type ToolOffer, challengeResponse, paymentRequestFor, paymentRequired } from '../gateway/payment-required.js';
import { atomicToUsd, usdPrice } from '../pricing/pricing.js';
import { credentialOf } from '../rails/credits/api-keys.js';
import { callerOf } from '../rails/x402/rail.js';
import { type Credits, type Payer, mintTokenSchema, publicEntry, publicKey, publicToken } from '../rails/credits/credits.js';
import { DomainError } from '../errors.js';
import type { Store } from '../store/store.js';
import { PaymentDecodeError, encodeHeader } from '../x402/codec.js';
import { type FacilitatorRequest, exactEvmPayloadSchema } from '../x402/schemas.js';
import { pageSchema } from './admin-routes.js';
import { portalSchema } from '../rails/invoice/accounts.js';
import { clientAddress } from './caller.js';
import { jsonBody, query } from './validate.js';
import type { RefusalThrottle } from '../rails/x402/refusals.js';

export type CreditsRoutesOptions = {
  credits: Credits;
  store: Store;
  facilitator: FacilitatorPort;
  network: Network;
  topup: { payTo: `0x${string}`; min: bigint; max: bigint };
  /** Opens a Stripe Checkout Session for a key and a package; absent when Stripe is not configured. */
  checkout?: (keyId: string, packageId: string) => Promise<Record<string, string>>;
  /** Opens a Stripe Checkout Session for a server's subscription plan. */
  subscribe?: (keyId: string, server: string) => Promise<Record<string, unknown>>;
  /** Opens a Stripe Customer Portal session for the key's post-paid account (on `server`, or its latest). */
  portal?: (keyId: string, server?: string) => Promise<Record<string, unknown>>;
  /** The instance's throttle of refused x402 payments, shared with the x402 rail (see `refusalThrottle`); none: no limit. */
  refusals?: RefusalThrottle;
};

const checkoutSchema = z.strictObject({ package: z.string().min(1).max(32) });
const subscribeSchema = z.strictObject({ server: slugSchema });

const topupQuery = z.strictObject({ usd: usdPrice });
const alertsSchema = z.strictObject({
  lowBalanceUsd: usdPrice
    .refine((v) => v > 0n, 'expected an amount above zero')
    .nullable()
    .describe('notify (balance.low) when a debit takes the balance below this many USD; null: never'),
});

/** Called after a successful settlement, so the payload is a valid `exact` one. */
const paymentNonce = (request: FacilitatorRequest) =>
  exactEvmPayloadSchema.parse(request.paymentPayload.payload).authorization.nonce.toLowerCase();

/**
 * What a caller does with credits: read the balance and ledger, mint and revoke budget tokens
 * for sub-agents, and buy credits with USDC (`POST /credits/topup`, itself paid with x402).
 *
 * @example app.route('/credits', creditsRoutes({ credits, store, facilitator, network, topup }));
 */
export function creditsRoutes(options: CreditsRoutesOptions): Hono {
  const { credits, store, facilitator, network } = options;
  const app = new Hono();

  const payerOf = async (headers: Headers): Promise<Payer | undefined> => {
    const credential = credentialOf(headers);
    return credential ? credits.authenticate(credential) : undefined;
  };
  const requirePayer = async (headers: Headers, keyOnly = false) => {
    const payer = await payerOf(headers);
    if (!payer) throw new DomainError('credential_missing', 'send an API key as Authorization: Bearer tp_… or X-API-Key');
    if (keyOnly && payer.token) throw new DomainError('key_required', 'this needs the API key itself, not a budget token');
    return payer;
  };

  app.get('/balance', async (c) => {
    const payer = await requirePayer(c.req.raw.headers);
    if (!payer.token) return c.json(publicKey(payer.key));
    const token = publicToken(payer.token);
    // biome-ignore lint/complexity/useMathMinMax: bigints (Math.min takes numbers)
    const spendable = payer.key.balance < payer.token.cap - payer.token.spent ? payer.key.balance : payer.token.cap - payer.token.spent;
    return c.json({ token, spendable: spendable.toString(), spendableUsd: atomicToUsd(spendable) });
  });

  app.get('/ledger', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const entries = await store.credits.history(payer.key.id, query(c, pageSchema));
    return c.json({ entries: entries.map(publicEntry), ...(entries.length > 0 ? { next: entries.at(-1)!.id } : {}) });
  });

  app.post('/tokens', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const { jwt, token } = await credits.mintToken(payer, await jsonBody(c, mintTokenSchema));
    return c.json({ ...publicToken(token), token: jwt }, 201);
  });
  app.get('/tokens', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    return c.json({ tokens: (await store.credits.tokens(payer.key.id)).map((t) => publicToken(t)) });
  });
  app.delete('/tokens/:id', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const token = await store.credits.revokeToken(payer.key.id, c.req.param('id'));
    if (!token) throw new DomainError('token_not_found', `no budget token ${c.req.param('id')} on this key`);
    return c.json(publicToken(token));
  });

  // The key holder's own alert: a debit taking the balance below it publishes `balance.low` (see Events out).
  app.post('/alerts', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const { lowBalanceUsd } = await jsonBody(c, alertsSchema);
    const key = await store.credits.setLowBalanceAlert(payer.key.id, lowBalanceUsd);
    return c.json(publicKey(key!));
  });

  app.post('/checkout', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const { package: packageId } = await jsonBody(c, checkoutSchema);
    if (!options.checkout)
      throw new DomainError(
        'stripe_not_configured',
        'card top-ups are off here: the operator has not set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET',
      );
    return c.json(await options.checkout(payer.key.id, packageId), 201);
  });
  app.post('/subscriptions', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const { server } = await jsonBody(c, subscribeSchema);
    if (!options.subscribe)
      throw new DomainError(
        'stripe_not_configured',
        'subscriptions are off here: the operator has not set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET',
      );
    return c.json(await options.subscribe(payer.key.id, server), 201);
  });
  app.post('/portal', async (c) => {
    const payer = await requirePayer(c.req.raw.headers, true);
    const { server } = await jsonBody(c, portalSchema);
    if (!options.portal)
      throw new DomainError(
        'stripe_not_configured',
        'post-paid billing is off here: the operator has not set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET',
      );
    return c.json(await options.portal(payer.key.id, server), 201);
  });
  // Where Stripe sends the buyer back; the credits arrive with the webhook, not with this visit.
  app.get('/checkout/done', (c) =>
    c.json({ message: 'payment received; the credits appear on the key once Stripe confirms it (usually seconds)' }),
  );
  app.get('/checkout/cancelled', (c) => c.json({ message: 'checkout cancelled; nothing was charged' }));

  /**
   * USDC → credits. Without a payment: 402 with the x402 requirements for `?usd=`. With one: it is
   * settled on chain *before* anything is credited; then the caller's key is credited, or a new
   * key is created and shown once. Retrying with the same payment finishes a top-up a crash
   * interrupted, and can never credit twice; only the retry of the one who asked first (the same
   * key, or without one the same `Idempotency-Key` or network) collects it. A refused top-up counts
   * against its caller's network (`refusals`): past the limit, 429 `rate_limited` with Retry-After,
   * before the chain is asked.
   */
  app.post('/topup', async (c) => {
    const { usd: amount } = query(c, topupQuery);
    const { min, max, payTo } = options.topup;
    if (amount < min || amount > max) {
      throw new DomainError('amount_out_of_bounds', `a top-up is between ${atomicToUsd(min)} and ${atomicToUsd(max)} USD`, {
        min: min.toString(),
        max: max.toString(),
      });
    }
    const payer = await payerOf(c.req.raw.headers);
    if (payer?.token) throw new DomainError('key_required', 'a budget token cannot be topped up; top up its API key');
    const offer: ToolOffer = {
      tool: 'credits',
      amount,
      payTo,
      network,
      mcpUrl: c.req.url,
      description: `${atomicToUsd(amount)} USD of turnpike credits`,
    };
    const challenge = (why: string) => challengeResponse(offer, paymentRequired(offer, why));

    const raw = c.req.header('payment-signature') ?? c.req.header('x-payment');
    if (raw === undefined) return challenge(`payment required: ${atomicToUsd(amount)} USDC buys ${atomicToUsd(amount)} USD of credits`);
    let request: FacilitatorRequest;
    try {
      request = paymentRequestFor(raw, offer);
    } catch (error) {
      if (error instanceof PaymentDecodeError) return challenge(`${error.code}: ${error.message}`);
      throw error;
    }
    // Settling asks the chain (or a remote facilitator) first: a network whose top-ups keep being refused waits.
    const who = { address: clientAddress(c) };
    const limited = options.refusals?.limited(who);
    if (limited) {
      c.header('retry-after', String(limited.details.retryAfterSeconds));
      throw limited;
    }
    // Whom this payment credits, fixed by whoever presents it first: its settlement publishes it,
    // and a copy from the chain shows another key (or caller) and is a payment used, not theirs.
    const recipient = payer ? `key:${payer.key.id}` : `new:${callerOf(c.req.raw.headers, clientAddress(c)) ?? 'unbound'}`;
    // Counted against the network until settled or refused: top-ups sent at once cannot all pass the check above.
    const end = options.refusals?.judging(who);
    let receipt;
    try {
      receipt = await facilitator.settle(request, purposes.topup(payTo, recipient));
      // Counted whatever the reason (a genuine top-up is rarely refused), by network only: no signer is proven here.
      if (!receipt.success && receipt.errorReason !== 'settlement_pending') options.refusals?.refused(who);
    } catch (error) {
      if (error instanceof FacilitatorUnavailableError) {
        return c.json({ error: error.code, message: `${error.message}; retry with the same payment`, retryable: true }, 503);
      }
      throw error;
    } finally {
      end?.();
    }
    if (!receipt.success) {
      if (receipt.errorReason === 'settlement_pending') {
        c.header('retry-after', '2');
        return c.json(
          {
            error: 'settlement_pending',
            message: 'the transfer is on its way; retry with the same payment to collect the credits',
            retryable: true,
          },
          503,
        );
      }
      return challenge(`${receipt.errorReason}${receipt.errorMessage ? `: ${receipt.errorMessage}` : ''}`);
    }
    c.header('payment-response', encodeHeader(receipt));
    c.header('x-payment-response', encodeHeader(receipt));
    const funding = {
      amount,
      reason: `USDC top-up from ${receipt.payer}`,
      idempotencyKey: `x402:${network.chainId}:${receipt.payer?.toLowerCase()}:${paymentNonce(request)}`,
      ref: { transaction: receipt.transaction, payer: receipt.payer, network: receipt.network },
    };
    if (payer) {
      const credited = await store.credits.credit({ keyId: payer.key.id, kind: 'topup', ...funding });
      if (credited.entry.keyId !== payer.key.id) throw new DomainError('already_funded', 'this payment already funded another key');
      return c.json(
        {
          keyId: payer.key.id,
          balance: credited.balance.toString(),
          balanceUsd: atomicToUsd(credited.balance),
          entry: publicEntry(credited.entry),
          receipt,
        },
        credited.applied ? 201 : 200,
      );
    }
    const { secret, key } = await credits.createKey({ name: `USDC top-up by ${receipt.payer}` }, funding);
    return c.json({ ...publicKey(key), key: secret, receipt, note: 'store the key now: it is not shown again' }, 201);
  });

  return app;
}
