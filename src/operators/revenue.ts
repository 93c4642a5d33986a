import type { Logger } from 'pino';
import { type Address, type Hex, isAddressEqual } from 'viem';
import type { PaymentKey, PaymentRecord } from '../store/journal/journal.js';
import { newId } from '../store/ids.js';
import type { Charge } from '../store/operators/operators.js';
import type { Store } from '../store/store.js';
import { splitCharge } from './take-rate.js';
import { type EventInput, callEvent } from '../events/events.js';
import { unpaidEventLimit } from '../events/suppress.js';
import type { NewEvent } from '../store/events/events.js';

/** A charge as the gateway knows it; the split, id, state and time are the book's business. */
export type ChargeInput = Pick<Charge, 'serverId' | 'rail' | 'caller' | 'tool' | 'amount' | 'ref' | 'custody'> & { operatorId?: string };

/** How often queued charges and denial counts are written, and pending charges resolved. */
const FLUSH_EVERY_MS = 100;
const RESOLVE_EVERY_MS = 1_000;

/**
 * An x402 charge's reference: its payment's key and the server (slug) that booked it. A payment
 * whose settlement was refused before the chain (its claim given back) may be presented again at
 * another server with the same payee (every platform-custody server is paid to the treasury): a
 * reference of the key alone made the second server's charge a duplicate, dropped, and the first
 * one's (which delivered nothing) took that payment's revenue or loss.
 *
 * @example x402Ref(key, 'weather') // 'x402:8453:0x8335…:0xab…:0x5a…:weather'
 */
export const x402Ref = (key: PaymentKey, server: string) => `x402:${key.chainId}:${key.asset}:${key.payer}:${key.nonce}:${server}`;
export const creditsRef = (debitId: string) => `credits:${debitId}`;
export const invoiceRef = (usageId: string) => `invoice:${usageId}`;

function paymentKeyOf(ref: string): PaymentKey | undefined {
  const [rail, chainId, asset, payer, nonce] = ref.split(':');
  if (rail !== 'x402' || !chainId || !asset || !payer || !nonce) return undefined;
  return { chainId: Number(chainId), asset: asset as Address, payer: payer as Address, nonce: nonce as Hex };
}

/**
 * Whether a journal row is the payment an x402 charge was booked for, and not just one with its
 * key: once a claim is released (its settlement refused before it reached the chain), the payer
 * may sign the same nonce again, to anyone, and have that settled. The charge's own payment was
 * taken for a call on its server (by slug), for its amount, and, under platform custody, paid the
 * treasury; a row that is not that payment earns nothing.
 *
 * @example ownPayment(charge, 'weather', row, treasury) // false for a row paid to the operator's own wallet
 */
function ownPayment(c: Charge, slug: string, record: PaymentRecord, treasury: Address | undefined): boolean {
  if (!tookIt(slug, record) || record.amount !== c.amount) return false;
  return c.custody !== 'platform' || (treasury !== undefined && isAddressEqual(record.payTo, treasury));
}

/** Whether a journal row was taken for a call on the server `slug` (see `purposes.call`). */
const tookIt = (slug: string, record: PaymentRecord) => record.purpose.startsWith(`call:${slug}:`);

/**
 * The revenue book: one charge per paid (or free-quota) call, split between operator and
 * platform at the take rate, plus denial counts for analytics, and each call's event for the
 * outbox (when someone gets events: `events.wanted`), all written in one transaction per batch.
 *
 * A charge is written `pending` and turned `earned` or `void` by the record of the money itself:
 * an x402 charge by its journal row (settled, or failed/released), a credits charge by its debit
 * (closed, or refunded), a post-paid charge by its usage entry (billable, or void). So a crash
 * anywhere leaves revenue that matches what was really paid (post-paid: billed), whatever order
 * the writes reached the disk in. x402 charges are written before settlement (`record`);
 * credits, post-paid and free charges ride the next batch (`queue`), which is written before the
 * batch of debits (usage entries) it belongs to is closed.
 *
 * @example
 * const book = revenueBook(store, { takeRateBps: 250, logger });
 * await book.record({ serverId: 'srv_…', rail: 'x402', ... }); // durable, then settle
 */
export function revenueBook(
  store: Store,
  options: {
    takeRateBps: number;
    logger: Logger;
    /** Where platform-custody servers are paid: a platform charge is earned only by a payment to it. */
    treasury?: Address;
    /**
     * Who gets events, and how many challenges and refusals of a server become events one by one
     * per window (`events.unpaid`; the rest are summarized).
     */
    events?: { wanted(operatorId?: string): boolean; unpaid: { perWindow: number; windowMs: number } };
  },
) {
  const { operators } = store;
  let queued: Charge[] = [];
  let events: NewEvent[] = [];
  let denials = new Map<string, { serverId: string; day: number; reason: string; count: number }>();
  let flusher: NodeJS.Timeout | undefined;
  let resolver: NodeJS.Timeout | undefined;

  const queueEvent = (input: EventInput) => {
    events.push(callEvent(input));
    scheduleFlush();
  };
  const limit = options.events && unpaidEventLimit(options.events.unpaid, queueEvent);

  const charge = (input: ChargeInput, state: Charge['state']): Charge => {
    const { operator, platform } = splitCharge(input.amount, options.takeRateBps);
    return { ...input, id: newId('ch'), operatorShare: operator, platformShare: platform, state, createdAt: Date.now() };
  };

  async function flush() {
    const charges = queued;
    const counts = [...denials.values()];
    const batch = events;
    queued = [];
    denials = new Map();
    events = [];
    if (charges.length + counts.length + batch.length > 0) await operators.recordCalls({ charges, denials: counts, events: batch });
  }

  /** Settles pending charges by what the ledger and the journal say; returns how many it resolved. */
  async function resolve(): Promise<number> {
    let resolved = (await operators.resolveCreditCharges()) + (await operators.resolveInvoiceCharges());
    for (;;) {
      const pending = await operators.pendingCharges(500, 'x402');
      const outcomes: { id: string; state: 'earned' | 'void'; settleMs?: number; lost?: boolean }[] = [];
      const slugs = new Map<string, string>();
      const slugOf = async (serverId: string) => {
        let slug = slugs.get(serverId);
        // A configured endpoint's id is its slug; a registered server's slug is on its row (deleted or not).
        if (slug === undefined) slugs.set(serverId, (slug = (await operators.serverById(serverId))?.slug ?? serverId));
        return slug;
      };
      for (const c of pending) {
        const key = paymentKeyOf(c.ref);
        const record = key ? await store.journal.get(key) : undefined;
        // A deferred payment that failed had its result delivered: no revenue, and a loss (of the server that took it).
        if (!record || record.state === 'failed') {
          const lost = record?.deferred && tookIt(await slugOf(c.serverId), record);
          outcomes.push({ id: c.id, state: 'void', ...(lost ? { lost: true } : {}) });
        }
        // The charge is written just before settlement starts, the row updated when it is done.
        else if (record.state === 'settled')
          outcomes.push(
            ownPayment(c, await slugOf(c.serverId), record, options.treasury)
              ? { id: c.id, state: 'earned', settleMs: Math.max(0, record.updatedAt - c.createdAt) }
              : { id: c.id, state: 'void' },
          );
      }
      if (outcomes.length > 0) await operators.resolveCharges(outcomes);
      resolved += outcomes.length;
      if (pending.length < 500 || outcomes.length === 0) return resolved;
    }
  }

  const scheduleFlush = () => {
    flusher ??= setTimeout(() => {
      flusher = undefined;
      flush().catch((err: unknown) => options.logger.error({ err }, 'cannot write charges'));
    }, FLUSH_EVERY_MS).unref();
  };

  return {
    /**
     * Writes a charge now: `pending` for money about to move (an x402 settlement), `earned` for
     * money that has (a paid subscription invoice).
     */
    record: (input: ChargeInput, state: 'pending' | 'earned' = 'pending') => operators.recordCharges([charge(input, state)]),
    /**
     * Queues a charge for the next batch: a credits debit, a post-paid usage entry or an x402
     * payment (pending until its record decides it), or a call that cost nothing (free calls, a subscriber's allowance).
     */
    queue(input: ChargeInput) {
      queued.push(charge(input, input.rail === 'free' || input.rail === 'subscription' ? 'earned' : 'pending'));
      scheduleFlush();
    },
    /** Counts a refused call by reason, per server (by id) and UTC day. */
    denied(serverId: string, reason: string) {
      const day = Math.floor(Date.now() / 86_400_000);
      const key = `${serverId}\n${day}\n${reason}`;
      const row = denials.get(key) ?? { serverId, day, reason, count: 0 };
      row.count++;
      denials.set(key, row);
      scheduleFlush();
    },
    /**
     * Queues a call's event (or a notification) for the next batch, if anyone gets the events of
     * its operator; otherwise does nothing, so a gateway without endpoints pays nothing for them.
     * Challenges and refusals past a server's bound are counted into a summary instead (`unpaidEventLimit`).
     */
    event(input: EventInput) {
      if (options.events?.wanted(input.operatorId) && limit?.admit(input)) queueEvent(input);
    },
    flush,
    resolve,
    async start() {
      await resolve();
      resolver = setInterval(
        () => void resolve().catch((err: unknown) => options.logger.error({ err }, 'cannot resolve pending charges')),
        RESOLVE_EVERY_MS,
      ).unref();
    },
    async stop() {
      clearInterval(resolver);
      limit?.close();
      clearTimeout(flusher);
      flusher = undefined;
      await flush();
    },
  };
}

export type RevenueBook = ReturnType<typeof revenueBook>;
