import type { Logger } from 'pino';
import Stripe from 'stripe';
import type { UnreportedUsage } from '../../store/postpaid/postpaid.js';
import type { Lease, Store } from '../../store/store.js';

/** The lease held by the one instance on a store that reports usage. */
export const REPORTER_LEASE = 'postpaid:usage-reporter';

/**
 * Stripe's answer to an identifier it already took (it keeps them at least 24 h): the entry was
 * reported by an earlier attempt whose answer was lost.
 */
const alreadyTaken = (error: unknown) =>
  error instanceof Stripe.errors.StripeInvalidRequestError && /identifier/i.test(error.message) && /already|duplicate/i.test(error.message);

/**
 * Reports billable usage to Stripe's Billing Meters, from the store, in batches: one meter event
 * per usage entry, whose `identifier` (and idempotency key) is the entry's id, so that a retry,
 * after a crash between Stripe taking it and the store marking it, cannot bill it twice. Entries
 * are marked reported only after Stripe took them: a crash loses nothing. One instance on a store
 * reports (it holds the `postpaid:usage-reporter` lease, released when it stops or dies), so
 * instances never send the same entries at once. A refusal Stripe will repeat (no such customer or
 * meter, a timestamp past 35 days) marks the entry refused (logged, counted by /health); anything
 * else (Stripe down) leaves it for the next round.
 *
 * @example const reporter = usageReporter({ stripe, store, logger, intervalMs: 60_000, batchSize: 100 }); reporter.start();
 */
export function usageReporter(deps: { stripe: Stripe; store: Store; logger: Logger; intervalMs: number; batchSize: number }) {
  const { stripe, store, logger } = deps;
  let lease: Lease | undefined;
  let running: Promise<number> | undefined;
  let timer: NodeJS.Timeout | undefined;

  async function send(entry: UnreportedUsage): Promise<'reported' | 'refused' | 'failed'> {
    try {
      await stripe.billing.meterEvents.create(
        {
          event_name: entry.meter,
          payload: { stripe_customer_id: entry.customer, value: entry.amount.toString() },
          identifier: entry.id,
          timestamp: Math.floor(entry.createdAt / 1000),
        },
        { idempotencyKey: `meter-event:${entry.id}` },
      );
      return 'reported';
    } catch (error) {
      if (alreadyTaken(error)) return 'reported';
      if (error instanceof Stripe.errors.StripeInvalidRequestError) {
        logger.error({ entry: entry.id, customer: entry.customer, meter: entry.meter, why: error.message }, 'Stripe refused a usage entry');
        await store.postpaid.refuse(entry.id, error.message);
        return 'refused';
      }
      logger.warn({ err: error, entry: entry.id }, 'usage not reported to Stripe; will retry');
      return 'failed';
    }
  }

  /** Reports every unreported entry, batch by batch, until none is left or Stripe fails; answers how many were reported. */
  async function report(): Promise<number> {
    lease ??= await store.lease(REPORTER_LEASE);
    if (!lease) return 0;
    let total = 0;
    for (;;) {
      const batch = await store.postpaid.unreported(deps.batchSize);
      if (batch.length === 0) return total;
      const outcomes = await Promise.all(batch.map(send));
      const taken = batch.filter((_, i) => outcomes[i] === 'reported').map((e) => e.id);
      if (taken.length > 0) await store.postpaid.reported(taken, Date.now());
      total += taken.length;
      if (outcomes.includes('failed')) return total;
    }
  }

  const reporter = {
    /** One round now (joining one under way). */
    report: () => (running ??= report().finally(() => (running = undefined))),
    start() {
      timer = setInterval(
        () => void reporter.report().catch((err: unknown) => logger.error({ err }, 'usage report failed')),
        deps.intervalMs,
      ).unref();
    },
    /** Stops reporting (after the round under way) and lets another instance take over. */
    async stop() {
      clearInterval(timer);
      await running?.catch(() => undefined);
      await lease?.release();
      lease = undefined;
    },
  };
  return reporter;
}

export type UsageReporter = ReturnType<typeof usageReporter>;
