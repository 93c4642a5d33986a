import { rpcError } from '../../gateway/jsonrpc.js';
import { paymentIn } from '../../gateway/messages.js';
import { DomainError, errorCodes } from '../../errors.js';
import type { Authorization, PostpaidStore } from '../../store/postpaid/postpaid.js';
import type { Store } from '../../store/store.js';
import type { PaidCall, RailContext, RailFactory, Taken } from '../rail.js';
import { credentialOf } from '../credits/api-keys.js';
import type { Credits, Payer } from '../credits/credits.js';
import { rateLimit } from '../credits/rail.js';
import type { OpenCharges, OpenDebits } from '../credits/open-debits.js';

/** The `_meta` key of a post-paid result: what it added to the bill. */
export const INVOICE_META_KEY = 'turnpike/invoice';

/** Post-paid usage entries as open charges: closed when delivered, voided when their call failed or was cut off. */
export const openUsage = (postpaid: PostpaidStore): OpenCharges => ({
  close: (ids) => postpaid.close(ids),
  openBefore: (before) => postpaid.openBefore(before),
  undo: (id) => postpaid.void(id),
});

export type InvoiceRailOptions = {
  credits: Credits;
  store: Store;
  /** Usage entries held open while their calls run (see `openDebits`). */
  usage: OpenDebits;
  /** Paid calls one key may make per minute, as on the credits rail (`credits.rateLimitPerMinute`). */
  rateLimitPerMinute?: number;
};

/** The caller-facing refusal of a call the account may not run up, saying what to do. */
export function usageRefusal(refused: Extract<Authorization, { ok: false }>, portal: string, amount: bigint): DomainError {
  const account = refused.account!;
  if (refused.reason === 'credit_limit') {
    return new DomainError(
      'credit_limit_reached',
      `this call would take the account's unbilled usage past its credit limit of ${account.creditLimit} micro-USD; it is billed at the end of the period, or ask the operator for a higher limit`,
      { unbilled: account.unbilled.toString(), creditLimit: account.creditLimit.toString(), price: amount.toString() },
    );
  }
  if (account.status === 'past_due' || account.status === 'unpaid') {
    return new DomainError(
      'account_past_due',
      `the post-paid account's last invoice is unpaid (subscription ${account.status}); pay it in the billing portal (POST ${portal} with this key answers its URL), and calls resume within seconds of the payment`,
      { status: account.status, portal },
    );
  }
  return new DomainError(
    'account_canceled',
    `the post-paid subscription is ${account.status}: calls cannot be billed to it; subscribe again with the operator`,
    { status: account.status, portal },
  );
}

/**
 * The post-paid rail: takes a priced call whose API key (or OAuth subject's key) has a post-paid
 * account on this server. Authorized locally, never asking Stripe: in one transaction the account's
 * status and credit limit are checked and an open usage entry written; the call is forwarded
 * while that entry is synced; the entry is voided if the tool did not produce a result, and marked
 * billable once the result is delivered. The usage reporter sends billable entries to Stripe.
 *
 * @example createGateway({ …, rails: [invoiceRail({ credits, store, usage }), creditsRail(…), x402Rail(…)] })
 */
export const invoiceRail =
  (options: InvoiceRailOptions): RailFactory =>
  (context) => {
    const payers = new WeakMap<PaidCall, Payer>();
    return {
      async takes(call) {
        // An OAuth caller whose call carries an x402 payment pays with it (the x402 rail's), as on the credits rail.
        if (call.principal && paymentIn(call.rpc, call.request.headers) !== undefined) return false;
        const credential = call.principal ? undefined : credentialOf(call.request.headers);
        // A budget token spends its key's prepaid balance: the credits rail's.
        if (!call.principal && credential?.type !== 'key') return false;
        let payer: Payer;
        try {
          payer = call.principal
            ? await options.credits.authenticateSubject(call.principal, context.operatorId)
            : await options.credits.authenticate(credential!);
        } catch (error) {
          // A refused credential is the credits rail's to answer (401/403), with nothing recorded here.
          if (error instanceof DomainError) return false;
          throw error;
        }
        if (!(await options.store.postpaid.account(payer.key.id, context.serverId))) return false;
        payers.set(call, payer);
        return true;
      },
      take: (call) => invoiceCall(options, context, call, payers.get(call)!),
    };
  };

async function invoiceCall(options: InvoiceRailOptions, context: RailContext, call: PaidCall, payer: Payer): Promise<Taken> {
  const { id, tool } = call;
  const portal = `${new URL(call.request.url).origin}/credits/portal`;
  const fail = (error: DomainError) => {
    context.denied(error.code);
    return rpcError(id, -32001, error.message, errorCodes[error.code], error.toJSON());
  };
  try {
    options.credits.authorize(payer, { slug: context.server, id: context.serverId }, tool.name);
  } catch (error) {
    if (error instanceof DomainError) return fail(error);
    throw error;
  }
  const limited = await rateLimit(options.store, payer.key.id, options.rateLimitPerMinute);
  if (limited) {
    const refused = fail(limited);
    refused.headers.set('retry-after', String(limited.details.retryAfterSeconds));
    return refused;
  }
  const caller = `key:${payer.key.id}`;
  const metering = await context.meter(caller, tool.name, payer.key.id);
  if (metering?.price === 0n) return { charge: context.free(call, metering, caller) };
  const amount = metering?.price ?? tool.amount;
  if (amount !== call.offer.amount) call.offer = { ...call.offer, amount };
  const usage = await options.store.postpaid.authorize({ keyId: payer.key.id, serverId: context.serverId, tool: tool.name, amount });
  if (!usage.ok) {
    await metering?.uncount();
    return fail(usageRefusal(usage, portal, amount));
  }
  const { entry } = usage;
  return {
    charge: {
      async undo() {
        await metering?.uncount();
        await options.store.postpaid.void(entry.id);
      },
      async deliver(message, result) {
        // The call went out once its usage was decided; the answer waits for it to be on disk.
        await usage.durable;
        context.count(tool.name, 'paid_invoice');
        const receipt = {
          charged: amount.toString(),
          unbilled: usage.unbilled.toString(),
          creditLimit: usage.creditLimit.toString(),
          entry: entry.id,
        };
        options.usage.delivered(entry.id);
        return { ...message, result: { ...result, _meta: { ...result._meta, [INVOICE_META_KEY]: receipt } } };
      },
    },
  };
}
