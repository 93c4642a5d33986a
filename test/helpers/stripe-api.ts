import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type Stripe from 'stripe';

type Session = Record<string, unknown> & { id: string; amount_total: number; metadata: Record<string, string> };

/** Stripe's form encoding (`a[b][0][c]=v`) back into nested objects; numeric keys make arrays. */
export function parseStripeForm(body: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [name, value] of new URLSearchParams(body)) {
    const keys = name.split(/\[|\]\[|\]/).filter((k) => k !== '');
    let node: Record<string, unknown> = root;
    keys.forEach((key, i) => {
      if (i === keys.length - 1) node[key] = value;
      else node = (node[key] ??= /^\d+$/.test(keys[i + 1]!) ? [] : {}) as Record<string, unknown>;
    });
  }
  return root;
}

const stripeError = (res: http.ServerResponse, status: number, message: string, param?: string) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { type: 'invalid_request_error', message, ...(param ? { param } : {}) } }));
};

/**
 * The few Stripe API endpoints turnpike calls, answered in Stripe's documented shapes, on a local
 * port, for the official SDK to talk to (Stripe itself is unreachable from tests).
 */
export async function startStripeApi() {
  const apiKey = `sk_test_${randomBytes(12).toString('hex')}`;
  const sessions = new Map<string, Session>();
  const byIdempotencyKey = new Map<string, Session>();
  const requests: { method: string; path: string; body: Record<string, unknown> }[] = [];
  const accounts = new Map<string, Record<string, unknown>>();
  const transfers = new Map<string, Record<string, unknown>>();
  /** Stripe replays the first answer to a request with the same Idempotency-Key (for 24 h), errors included. */
  const replays = new Map<string, { status: number; body: unknown }>();
  /** Set to make the next transfer fail as Stripe does when the platform balance is short. */
  let failNextTransfer = false;
  /** Set to make the next transfer happen while its answer is an error, as a lost response looks to the client. */
  let loseNextTransferAnswer = false;
  /** Subscriptions cancelled through the API, by id. */
  const cancelled = new Set<string>();
  /** Set to make cancellations fail, retries included, as they do while Stripe is down. */
  let failCancels = false;
  /** Subscriptions Stripe knows (for retrieval), by id. */
  const subscriptions = new Map<string, Record<string, unknown> & { id: string; customer: string; status: string }>();
  /** Meter events Stripe took, by identifier: each counted once, as Stripe's meter aggregates them. */
  const meterEvents = new Map<string, { event_name: string; customer: string; value: number; timestamp: number }>();
  /** Every meter event request's identifier, in order, retries and duplicates included. */
  const meterEventRequests: string[] = [];
  /** Set while Stripe is down for meter events: 503 before anything is recorded (so not kept for the idempotency key). */
  let meterEventsDown = false;
  /** The invoice each PaymentIntent paid (what `GET /v1/invoice_payments?payment[payment_intent]=…` finds). */
  const invoicePayments = new Map<string, string>();
  /** Set to make invoice payment look-ups fail, retries included, as they do while Stripe is down. */
  let failInvoicePayments = false;
  /** Set to hold meter event answers (the events are taken) until released: a reporter caught between Stripe and its store. */
  let heldAnswers: (() => void)[] | undefined;

  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      const body = parseStripeForm(text);
      const [path = '', search = ''] = (req.url ?? '').split('?');
      requests.push({ method: req.method!, path, body });
      if (req.headers.authorization !== `Bearer ${apiKey}`) return stripeError(res, 401, 'Invalid API Key provided');
      const answer = (status: number, object: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${randomBytes(6).toString('hex')}` });
        res.end(JSON.stringify(object));
      };
      const send = (object: unknown) => answer(200, object);
      if (req.method === 'POST' && path === '/v1/checkout/sessions') {
        const idempotencyKey = req.headers['idempotency-key'] as string | undefined;
        const earlier = idempotencyKey && byIdempotencyKey.get(idempotencyKey);
        if (earlier) return send(earlier);
        if (body.mode !== 'payment' && body.mode !== 'subscription') return stripeError(res, 400, 'Missing required param: mode.', 'mode');
        if (!body.success_url) return stripeError(res, 400, 'Missing required param: success_url.', 'success_url');
        const items = (body.line_items ?? []) as { quantity: string; price_data: { currency: string; unit_amount: string } }[];
        if (items.length === 0) return stripeError(res, 400, 'Missing required param: line_items.', 'line_items');
        const id = `cs_test_${randomBytes(12).toString('hex')}`;
        const session: Session = {
          id,
          object: 'checkout.session',
          url: `https://checkout.stripe.com/c/pay/${id}`,
          mode: body.mode,
          status: 'open',
          payment_status: 'unpaid',
          amount_total: items.reduce((sum, i) => sum + Number(i.price_data.unit_amount) * Number(i.quantity), 0),
          currency: items[0]!.price_data.currency,
          metadata: (body.metadata ?? {}) as Record<string, string>,
          client_reference_id: body.client_reference_id ?? null,
          customer: null,
          created: Math.floor(Date.now() / 1000),
          livemode: false,
          success_url: body.success_url,
          cancel_url: body.cancel_url ?? null,
        };
        sessions.set(id, session);
        if (idempotencyKey) byIdempotencyKey.set(idempotencyKey, session);
        return send(session);
      }
      const idempotencyKey = req.headers['idempotency-key'] as string | undefined;
      const replay = idempotencyKey ? replays.get(`${path}:${idempotencyKey}`) : undefined;
      if (req.method === 'POST' && replay) return answer(replay.status, replay.body);
      const remember = (object: unknown, status = 200) => {
        if (idempotencyKey) replays.set(`${path}:${idempotencyKey}`, { status, body: object });
        answer(status, object);
      };
      if (req.method === 'POST' && path === '/v1/accounts') {
        if (body.type !== 'express') return stripeError(res, 400, 'Invalid type', 'type');
        const id = `acct_${randomBytes(8).toString('hex')}`;
        const account = {
          id,
          object: 'account',
          type: 'express',
          email: body.email ?? null,
          metadata: body.metadata ?? {},
          charges_enabled: false,
          payouts_enabled: false,
        };
        accounts.set(id, account);
        return remember(account);
      }
      if (req.method === 'POST' && path === '/v1/account_links') {
        if (!accounts.has(String(body.account))) return stripeError(res, 400, `No such account: '${body.account}'`, 'account');
        return remember({
          object: 'account_link',
          url: `https://connect.stripe.com/setup/e/${body.account}/${randomBytes(6).toString('hex')}`,
          created: Math.floor(Date.now() / 1000),
          expires_at: Math.floor(Date.now() / 1000) + 300,
        });
      }
      if (req.method === 'POST' && path === '/v1/transfers') {
        if (!accounts.has(String(body.destination)))
          return stripeError(res, 400, `No such destination: '${body.destination}'`, 'destination');
        if (failNextTransfer) {
          failNextTransfer = false;
          return stripeError(res, 400, 'You have insufficient available funds in your Stripe account.', 'amount');
        }
        const id = `tr_${randomBytes(8).toString('hex')}`;
        const transfer = {
          id,
          object: 'transfer',
          amount: Number(body.amount),
          currency: body.currency,
          destination: body.destination,
          transfer_group: body.transfer_group ?? null,
          metadata: body.metadata ?? {},
        };
        transfers.set(id, transfer);
        if (loseNextTransferAnswer) {
          loseNextTransferAnswer = false;
          return remember({ error: { type: 'api_error', message: 'An unknown error occurred' } }, 500);
        }
        return remember(transfer);
      }
      if (req.method === 'GET' && path === '/v1/transfers') {
        const group = new URLSearchParams(search).get('transfer_group');
        const data = [...transfers.values()].filter((t) => group === null || (t as { transfer_group?: string }).transfer_group === group);
        return send({ object: 'list', data, has_more: false, url: '/v1/transfers' });
      }
      if (req.method === 'POST' && path === '/v1/billing/meter_events') {
        const { event_name, identifier, timestamp } = body as Record<string, string>;
        const payload = (body.payload ?? {}) as Record<string, string>;
        meterEventRequests.push(identifier ?? '');
        if (meterEventsDown) return answer(503, { error: { type: 'api_error', message: 'Stripe is temporarily unavailable' } });
        if (!event_name) return stripeError(res, 400, 'Missing required param: event_name.', 'event_name');
        if (!payload.stripe_customer_id) return stripeError(res, 400, 'Missing required param: payload[stripe_customer_id].', 'payload');
        if (!/^\d+$/.test(payload.value ?? '')) return stripeError(res, 400, 'payload[value] must be a whole number.', 'payload');
        const id = identifier ?? `mev_${randomBytes(8).toString('hex')}`;
        if (meterEvents.has(id))
          return remember({ error: { type: 'invalid_request_error', message: `An event with identifier ${id} already exists.` } }, 400);
        const event = { event_name, customer: payload.stripe_customer_id, value: Number(payload.value), timestamp: Number(timestamp) };
        meterEvents.set(id, event);
        const taken = {
          object: 'billing.meter_event',
          created: Math.floor(Date.now() / 1000),
          event_name,
          identifier: id,
          livemode: false,
          payload,
          timestamp: event.timestamp,
        };
        if (heldAnswers) {
          if (idempotencyKey) replays.set(`${path}:${idempotencyKey}`, { status: 200, body: taken });
          heldAnswers.push(() => answer(200, taken));
          return;
        }
        return remember(taken);
      }
      if (req.method === 'POST' && path === '/v1/billing_portal/sessions') {
        if (!body.customer) return stripeError(res, 400, 'Missing required param: customer.', 'customer');
        const id = `bps_${randomBytes(8).toString('hex')}`;
        return remember({
          id,
          object: 'billing_portal.session',
          customer: body.customer,
          return_url: body.return_url ?? null,
          url: `https://billing.stripe.com/p/session/test_${id}`,
          created: Math.floor(Date.now() / 1000),
          livemode: false,
        });
      }
      if (req.method === 'GET' && path === '/v1/invoice_payments') {
        if (failInvoicePayments) return answer(500, { error: { type: 'api_error', message: 'An unknown error occurred' } });
        const query = new URLSearchParams(search);
        const paymentIntent = query.get('payment[payment_intent]') ?? '';
        const invoice = query.get('payment[type]') === 'payment_intent' ? invoicePayments.get(paymentIntent) : undefined;
        const data = invoice
          ? [
              {
                id: `inpay_${paymentIntent.slice(3)}`,
                object: 'invoice_payment',
                invoice,
                status: 'paid',
                is_default: true,
                payment: { type: 'payment_intent', payment_intent: paymentIntent },
              },
            ]
          : [];
        return send({ object: 'list', data, has_more: false, url: '/v1/invoice_payments' });
      }
      const subscription = /^\/v1\/subscriptions\/([\w]+)$/.exec(path);
      if (req.method === 'GET' && subscription) {
        const found = subscriptions.get(subscription[1]!);
        if (!found) {
          res.writeHead(404, { 'content-type': 'application/json' });
          return res.end(
            JSON.stringify({
              error: { type: 'invalid_request_error', code: 'resource_missing', message: `No such subscription: '${subscription[1]}'` },
            }),
          );
        }
        return send(found);
      }
      if (req.method === 'DELETE' && subscription) {
        if (failCancels) {
          return answer(500, { error: { type: 'api_error', message: 'An unknown error occurred' } });
        }
        cancelled.add(subscription[1]!);
        return send({ id: subscription[1], object: 'subscription', status: 'canceled', metadata: {} });
      }
      const match = /^\/v1\/checkout\/sessions\/([\w]+)$/.exec(path);
      if (req.method === 'GET' && match) {
        const session = sessions.get(match[1]!);
        return session ? send(session) : stripeError(res, 404, `No such checkout.session: '${match[1]}'`, 'id');
      }
      stripeError(res, 404, `Unrecognized request URL (${req.method}: ${path})`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    apiKey,
    sessions,
    requests,
    accounts,
    transfers,
    cancelled,
    subscriptions,
    meterEvents,
    meterEventRequests,
    /** A subscription of `customer` to a metered price, as Stripe returns it, in the current period. */
    subscribe(customer: string, status = 'active') {
      const now = Math.floor(Date.now() / 1000);
      const id = `sub_${randomBytes(8).toString('hex')}`;
      const item = {
        id: `si_${randomBytes(6).toString('hex')}`,
        object: 'subscription_item',
        current_period_start: now - 60,
        current_period_end: now + 30 * 86_400,
      };
      const sub = { id, object: 'subscription', customer, status, metadata: {}, items: { object: 'list', data: [item] } };
      subscriptions.set(id, sub);
      return sub;
    },
    meterEventsDown(down: boolean) {
      meterEventsDown = down;
    },
    /** Holds meter event answers from now on; the returned function sends them and stops holding. */
    holdMeterEventAnswers() {
      heldAnswers = [];
      return () => {
        const held = heldAnswers ?? [];
        heldAnswers = undefined;
        for (const send of held) send();
        return held.length;
      };
    },
    /** The meter events taken for `customer`: how many and the sum of their values. */
    meterUsage(customer: string) {
      const events = [...meterEvents.values()].filter((e) => e.customer === customer);
      return { events: events.length, value: events.reduce((sum, e) => sum + e.value, 0) };
    },
    /** Records that `paymentIntent` paid `invoice` (a subscription's, say), as Stripe's invoice payments say. */
    payInvoice(invoice: string, paymentIntent: string) {
      invoicePayments.set(paymentIntent, invoice);
    },
    failInvoicePayments(fail: boolean) {
      failInvoicePayments = fail;
    },
    failCancels(fail: boolean) {
      failCancels = fail;
    },
    failNextTransfer() {
      failNextTransfer = true;
    },
    loseNextTransferAnswer() {
      loseNextTransferAnswer = true;
    },
    /** Stripe keeps idempotency keys 24 h: after that, a retry with the same key is a new request. */
    forgetIdempotencyKeys() {
      replays.clear();
    },
    /** What Stripe does when the buyer pays: the session completes, paid by a PaymentIntent of its own (a payment-mode one). */
    complete(sessionId: string, paymentStatus: 'paid' | 'unpaid' = 'paid'): Session {
      const session = sessions.get(sessionId)!;
      const paymentIntent = session.mode === 'payment' ? (session.payment_intent ?? `pi_${randomBytes(12).toString('hex')}`) : null;
      Object.assign(session, { status: 'complete', payment_status: paymentStatus, payment_intent: paymentIntent });
      return { ...session };
    },
    /** The card charge of a PaymentIntent, `refunded` of its `amount` refunded so far (what `charge.refunded` carries). */
    charge(paymentIntent: string, amount: number, refunded = 0) {
      return {
        id: `ch_${paymentIntent.slice(3)}`,
        object: 'charge',
        amount,
        amount_captured: amount,
        amount_refunded: refunded,
        currency: 'usd',
        paid: true,
        captured: true,
        refunded: refunded === amount,
        status: 'succeeded',
        payment_intent: paymentIntent,
      };
    },
    /** A refund of a PaymentIntent's charge (what `charge.refund.updated`, `refund.*` carry), made at `created` (s). */
    refund(paymentIntent: string, amount: number, status: string, created: number, id = `re_${paymentIntent.slice(3)}`) {
      return {
        id,
        object: 'refund',
        amount,
        currency: 'usd',
        charge: `ch_${paymentIntent.slice(3)}`,
        payment_intent: paymentIntent,
        created,
        status,
        ...(status === 'failed' ? { failure_reason: 'expired_or_canceled_card' } : {}),
      };
    },
    /** A dispute of a PaymentIntent's charge (what `charge.dispute.*` carry). */
    dispute(paymentIntent: string, amount: number, status = 'needs_response', id = `du_${paymentIntent.slice(3)}`) {
      return {
        id,
        object: 'dispute',
        amount,
        currency: 'usd',
        charge: `ch_${paymentIntent.slice(3)}`,
        payment_intent: paymentIntent,
        reason: 'fraudulent',
        status,
      };
    },
    /** A Stripe Event as Stripe would deliver it. */
    event(type: string, object: object, options: { id?: string; created?: number } = {}) {
      const id = options.id ?? `evt_${randomBytes(12).toString('hex')}`;
      const payload = JSON.stringify({
        id,
        object: 'event',
        api_version: '2026-10-28.endive',
        created: options.created ?? Math.floor(Date.now() / 1000),
        type,
        data: { object },
        livemode: false,
        pending_webhooks: 1,
        request: { id: null, idempotency_key: null },
      });
      return { id, payload };
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The `Stripe-Signature` header for a payload, made by the SDK's own test helper. */
export const signedWebhook = (stripe: Stripe, payload: string, secret: string, timestamp?: number) =>
  stripe.webhooks.generateTestHeaderString({ payload, secret, ...(timestamp !== undefined ? { timestamp } : {}) });
