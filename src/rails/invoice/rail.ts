import { rpcError } from '../../gateway/jsonrpc.js';
import { paymentIn } from '../../gateway/messages.js';
import { DomainError, errorCodes } from '../../errors.js';
import type { Authorization, PostpaidStore } from '../../store/postpaid/postpaid.js';
import { invoiceRef } from '../../operators/revenue.js';
import type { Store } from '../../store/store.js';
import type { PaidCall, RailContext, RailFactory, Taken } from '../rail.js';
import { credentialOf } from '../credits/api-keys.js';
import { type Credits, type Payer, refusalError } from '../credits/credits.js';
import { deliverCharged, keyedCall, payerOf } from '../credits/rail.js';
import type { OpenCharges, OpenDebits } from '../credits/open-debits.js';

/** The `_meta` key of a post-paid result: what it added to the bill. */
export const INVOICE_META_KEY = 'turnpike/invoice';

/** Post-paid usage entries as open charges: closed when delivered, voided when their call failed or was cut off. */
export const openUsage = (postpaid: PostpaidStore): OpenCharges => ({
  close: (ids) => postpaid.close(ids),
  openBefore: (before) => postpaid.openBefore(before),
  undo: (id) => postpaid.void(id),
});

/** How long a server found with no post-paid account is taken to have none: an account another instance links bills within it. */
export const NO_ACCOUNTS_TTL_MS = 1_000;

/**
 * Which servers have post-paid accounts, so that a call to a server with none costs no lookup.
 * A server with an account is remembered for good (accounts are never removed); one without is
 * asked again once `ttlMs` has passed; `linked` makes an account opened in this process count at once.
 *
 * @example const billed = billedServers(store.postpaid); await billed.has('srv_…'); billed.linked('srv_…');
 */
export function billedServers(postpaid: PostpaidStore, ttlMs = NO_ACCOUNTS_TTL_MS) {
  const billed = new Set<string>();
  const noneUntil = new Map<string, number>();
  return {
    async has(serverId: string): Promise<boolean> {
      if (billed.has(serverId)) return true;
      if ((noneUntil.get(serverId) ?? 0) > Date.now()) return false;
      if (await postpaid.hasAccounts(serverId)) billed.add(serverId);
      // Linked while this was asked: it counts.
      else if (!billed.has(serverId)) noneUntil.set(serverId, Date.now() + ttlMs);
      return billed.has(serverId);
    },
    linked(serverId: string) {
      billed.add(serverId);
      noneUntil.delete(serverId);
    },
  };
}
export type BilledServers = ReturnType<typeof billedServers>;

export type InvoiceRailOptions = {
  credits: Credits;
  store: Store;
  /** Which servers have accounts: a call to a server with none is left to the other rails unasked. */
  billed: BilledServers;
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
      `this call would take the account's usage not yet paid past its credit limit of ${account.creditLimit} micro-USD; the limit frees as invoices are paid, or ask the operator for a higher limit`,
      { unbilled: account.unbilled.toString(), creditLimit: account.creditLimit.toString(), price: amount.toString() },
    );
  }
  if (account.unpaidInvoices > 0 || account.status === 'past_due' || account.status === 'unpaid') {
    const unpaid = account.unpaidInvoices > 0 ? `${account.unpaidInvoices} invoice(s)` : 'its last invoice';
    return new DomainError(
      'account_past_due',
      `the post-paid account has ${unpaid} unpaid (subscription ${account.status}); pay them in the billing portal (POST ${portal} with this key answers its URL), and calls resume within seconds of the payment`,
      { status: account.status, unpaidInvoices: account.unpaidInvoices, portal },
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
 * status and credit limit are checked and an open usage entry written (with the call's
 * `Idempotency-Key` request, as on the credits rail: a retry replays, never bills twice); the call is forwarded
 * while that entry is synced; the entry is voided if the tool did not produce a result, and marked
 * billable once the result is delivered. The usage reporter sends billable entries to Stripe.
 *
 * @example createGateway({ …, rails: [invoiceRail({ credits, store, usage }), creditsRail(…), x402Rail(…)] })
 */
export const invoiceRail =
  (options: InvoiceRailOptions): RailFactory =>
  (context) => {
    return {
      async takes(call) {
        // An OAuth caller whose call carries an x402 payment pays with it (the x402 rail's), as on the credits rail.
        if (call.principal && paymentIn(call.rpc, call.request.headers) !== undefined) return false;
        // A budget token spends its key's prepaid balance: the credits rail's.
        if (!call.principal && credentialOf(call.request.headers)?.type !== 'key') return false;
        // The common case: no account on this server, nothing looked up (the caller is resolved once, by the rail that takes it).
        if (!(await options.billed.has(context.serverId))) return false;
        let payer: Payer;
        try {
          payer = await payerOf(options.credits, call, context.operatorId);
        } catch (error) {
          // A refused credential is the credits rail's to answer (401/403), with nothing recorded here.
          if (error instanceof DomainError) return false;
          throw error;
        }
        return (await options.store.postpaid.account(payer.key.id, context.serverId)) !== undefined;
      },
      // The payer `takes` resolved (once per call).
      take: async (call) => invoiceCall(options, context, call, await payerOf(options.credits, call, context.operatorId)),
    };
  };

async function invoiceCall(options: InvoiceRailOptions, context: RailContext, call: PaidCall, payer: Payer): Promise<Taken> {
  const { id, tool } = call;
  const portal = `${new URL(call.request.url).origin}/credits/portal`;
  const fail = (error: DomainError) => {
    context.refused(call, error.code);
    return rpcError(id, -32001, error.message, errorCodes[error.code], error.toJSON());
  };
  try {
    options.credits.authorize(payer, { slug: context.server, id: context.serverId }, tool.name);
  } catch (error) {
    if (error instanceof DomainError) return fail(error);
    throw error;
  }
  const keyed = await keyedCall(options.store, context, call, payer, options.rateLimitPerMinute, fail);
  if ('taken' in keyed) return keyed.taken;
  const { request, caller, metering, amount } = keyed;
  const usage = await options.store.postpaid.authorize({
    keyId: payer.key.id,
    serverId: context.serverId,
    tool: tool.name,
    amount,
    ...(request ? { request } : {}),
  });
  if (!usage.ok) {
    await metering?.uncount();
    // A concurrent copy of this Idempotency-Key request recorded its entry first, or the key was revoked or suspended meanwhile.
    const { reason } = usage;
    const keyOrRequest =
      reason === 'request_in_progress' || reason === 'key_revoked' || reason === 'key_suspended' || reason === 'key_expired';
    return fail(keyOrRequest ? refusalError({ ok: false, reason }, {}) : usageRefusal(usage, portal, amount));
  }
  const { entry } = usage;
  return {
    charge: {
      async undo() {
        await metering?.uncount();
        await options.store.postpaid.void(entry.id);
      },
      // Invoiced once delivered, not yet collected.
      deliver: (message, result) =>
        deliverCharged(
          options.store,
          context,
          call,
          {
            rail: 'invoice',
            keyId: payer.key.id,
            caller,
            amount,
            durable: usage.durable,
            metaKey: INVOICE_META_KEY,
            receipt: {
              charged: amount.toString(),
              unbilled: usage.unbilled.toString(),
              creditLimit: usage.creditLimit.toString(),
              entry: entry.id,
            },
            ref: invoiceRef(entry.id),
            request,
            close: () => options.usage.delivered(entry.id),
            metering,
          },
          message,
          result,
        ),
    },
  };
}
