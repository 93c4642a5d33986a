import { z } from 'zod';
import { type PriceTable, atomicToUsd, priceOf, priceTableSchema, usdPrice } from './pricing.js';

const toolList = z.array(z.string().min(1).max(128)).max(1000).default([]);

/**
 * `per_call`: a price per tool (the price table of `turnpike wrap`), with an optional number of
 * calls per caller per UTC month that cost nothing.
 */
export const perCallPlanSchema = priceTableSchema.extend({
  type: z.literal('per_call'),
  freeCallsPerMonth: z.number().int().min(0).max(1_000_000_000).default(0),
});

/** One step of a graduated price: calls up to `upTo` (the month's count, inclusive) cost `price`. */
const tierSchema = z.strictObject({
  upTo: z.number().int().positive().max(1_000_000_000).optional().describe('last call number of this tier; omitted on the last tier'),
  price: usdPrice,
});

/**
 * `tiered`: graduated by the caller's count of priced calls in the UTC month, e.g. the first
 * 1,000 free, the next 9,000 at 0.005, then 0.01:
 * `[{upTo: 1000, price: "0"}, {upTo: 10000, price: "0.005"}, {price: "0.01"}]`.
 */
export const tieredPlanSchema = z.strictObject({
  type: z.literal('tiered'),
  tiers: z
    .array(tierSchema)
    .min(1)
    .max(20)
    .superRefine((tiers, ctx) => {
      tiers.forEach((tier, i) => {
        const last = i === tiers.length - 1;
        if (last !== (tier.upTo === undefined)) {
          ctx.addIssue({
            code: 'custom',
            path: [i, 'upTo'],
            message: last ? 'the last tier has no upTo: it covers every call after the others' : 'every tier but the last needs upTo',
          });
        }
        const previous = tiers[i - 1]?.upTo;
        if (tier.upTo !== undefined && previous !== undefined && tier.upTo <= previous) {
          ctx.addIssue({ code: 'custom', path: [i, 'upTo'], message: `upTo must be above the previous tier's (${previous})` });
        }
      });
    }),
  free: toolList,
});

/**
 * `subscription`: a monthly price bought through Stripe Checkout, covering `callsPerMonth` calls
 * of a subscriber (an API key); past the allowance, and for everyone else, `overage` per call.
 */
export const subscriptionPlanSchema = z.strictObject({
  type: z.literal('subscription'),
  monthlyUsd: usdPrice.refine((v) => v > 0n && v % 10_000n === 0n, 'a Stripe price is whole cents above zero'),
  callsPerMonth: z.number().int().positive().max(1_000_000_000),
  overage: priceTableSchema,
});

export const planSchema = z.discriminatedUnion('type', [perCallPlanSchema, tieredPlanSchema, subscriptionPlanSchema]);
export type Plan = z.output<typeof planSchema>;
export type PlanInput = z.input<typeof planSchema>;

/**
 * A plan back in its input form (USD strings), which `planSchema` reads again to the same plan:
 * what the store keeps.
 */
export function planInput(plan: Plan): PlanInput {
  const table = <T extends PriceTable>(t: T) => ({
    ...t,
    default: atomicToUsd(t.default),
    tools: Object.fromEntries(Object.entries(t.tools).map(([k, v]) => [k, atomicToUsd(v)])),
  });
  if (plan.type === 'per_call') return table(plan);
  if (plan.type === 'subscription') return { ...plan, monthlyUsd: atomicToUsd(plan.monthlyUsd), overage: table(plan.overage) };
  return { ...plan, tiers: plan.tiers.map((t) => ({ ...t, price: atomicToUsd(t.price) })) };
}

/** The plan of a server configured by a price table (`turnpike wrap`, config files). */
export const flatPlan = (prices: PriceTable): Plan => ({ type: 'per_call', ...prices, freeCallsPerMonth: 0 });

/**
 * Whether every caller's price depends on how often they called this month (a subscription
 * counts its subscribers' calls only).
 */
export const isMetered = (plan: Plan) => plan.type === 'tiered' || (plan.type === 'per_call' && plan.freeCallsPerMonth > 0);

/**
 * The calls a month's count covers at no price, whose 80 % and 100 % are notified: the free calls
 * of a per-call plan, a tiered plan's first tier if it is free, a subscriber's allowance; 0 for none.
 */
export function monthlyAllowance(plan: Plan, subscriber: boolean): bigint {
  if (plan.type === 'per_call') return BigInt(plan.freeCallsPerMonth);
  if (plan.type === 'subscription') return subscriber ? BigInt(plan.callsPerMonth) : 0n;
  const first = plan.tiers[0]!;
  return first.price === 0n && first.upTo !== undefined ? BigInt(first.upTo) : 0n;
}

/**
 * What the caller's `n`th priced call this month (n ≥ 1) of `tool` costs, in atomic units.
 *
 * @example priceAt(plan, 'search', 1001n) // the first call past a free tier of 1,000
 */
export function priceAt(plan: Plan, tool: string, n: bigint): bigint {
  if (plan.type === 'per_call') return n <= BigInt(plan.freeCallsPerMonth) ? 0n : priceOf(plan, tool);
  if (plan.type === 'subscription') return n <= BigInt(plan.callsPerMonth) ? 0n : priceOf(plan.overage, tool);
  if (plan.free.includes(tool)) return 0n;
  return (plan.tiers.find((t) => t.upTo === undefined || n <= BigInt(t.upTo)) ?? plan.tiers.at(-1)!).price;
}

/**
 * What a counted call costs when calls overlap: `calls` is its number in the month (every call
 * counted so far, the ones still running included), `delivered` how many of the month's calls were
 * delivered. Which of the positions `delivered + 1 … calls` this call ends up in depends on how the
 * calls running beside it end, so it costs the highest of their prices: a call made to fail slowly
 * never moves another to a later, cheaper tier. Where prices only rise with the count (free calls,
 * an allowance, ascending tiers) that is `priceAt(calls)`; a call is free only if `calls` is within
 * the free calls. `delivered` at or above `calls` (counts from before delivered ones were kept) is
 * `priceAt(calls)`.
 *
 * @example overlappingPrice(paidThenFree, 'search', 5n, 2n) // max of priceAt at 3, 4, 5: the paid price if tier 1 ends at 3
 */
export function overlappingPrice(plan: Plan, tool: string, calls: bigint, delivered: bigint): bigint {
  const from = delivered < calls ? (delivered < 0n ? 1n : delivered + 1n) : calls;
  // priceAt is constant between steps: each step's first position within the range, and `from`, have every price of it.
  const steps =
    plan.type === 'per_call'
      ? [BigInt(plan.freeCallsPerMonth)]
      : plan.type === 'subscription'
        ? [BigInt(plan.callsPerMonth)]
        : plan.tiers.flatMap((t) => (t.upTo === undefined ? [] : [BigInt(t.upTo)]));
  let price = priceAt(plan, tool, from);
  for (const step of steps) {
    if (step + 1n > from && step + 1n <= calls) {
      const at = priceAt(plan, tool, step + 1n);
      if (at > price) price = at;
    }
  }
  return price;
}

/**
 * The price quoted before the caller is known: the tool's own price, or for tiers the first
 * that charges anything. 0n means the tool is free for everyone, always.
 */
export function listPrice(plan: Plan, tool: string): bigint {
  if (plan.type === 'per_call') return priceOf(plan, tool);
  if (plan.type === 'subscription') return priceOf(plan.overage, tool);
  if (plan.free.includes(tool)) return 0n;
  return plan.tiers.find((t) => t.price > 0n)?.price ?? 0n;
}

/** The tools a plan names (priced or free), for listings that also show unnamed tools. */
export function namedTools(plan: Plan): string[] {
  const table = plan.type === 'subscription' ? plan.overage : plan;
  return [...('tools' in table ? Object.keys(table.tools) : []), ...table.free];
}

/** What a plan says in answers: amounts as atomic strings. */
export function publicPlan(plan: Plan): Record<string, unknown> {
  if (plan.type === 'per_call') {
    return {
      type: plan.type,
      price: plan.default.toString(),
      tools: Object.fromEntries(Object.entries(plan.tools).map(([name, amount]) => [name, amount.toString()])),
      free: plan.free,
      freeCallsPerMonth: plan.freeCallsPerMonth,
    };
  }
  if (plan.type === 'subscription') {
    return {
      type: plan.type,
      monthly: plan.monthlyUsd.toString(),
      callsPerMonth: plan.callsPerMonth,
      overage: publicPlan(flatPlan(plan.overage)),
    };
  }
  return { type: plan.type, tiers: plan.tiers.map((t) => ({ ...t, price: t.price.toString() })), free: plan.free };
}

/** The UTC calendar month of a time, as `yyyymm`: the period free calls and tiers count in. */
export const utcMonth = (ms: number) => {
  const d = new Date(ms);
  return d.getUTCFullYear() * 100 + d.getUTCMonth() + 1;
};
