import type { Logger } from 'pino';
import type Stripe from 'stripe';
import { DomainError } from '../../errors.js';
import { newId } from '../../store/ids.js';
import type { OperatorRecord, Payout } from '../../store/operators/operators.js';
import type { Store } from '../../store/store.js';
import { CENT } from '../../pricing/pricing.js';

/**
 * Fiat payouts to operators through Stripe Connect: an Express account and its onboarding link,
 * then transfers of the operator's fiat balance (their share of credits and subscriptions) to
 * it. The amount is reserved with the request; the transfer carries the payout's id as Stripe's
 * idempotency key and as its transfer group. A retry (after a crash, an outage, or an answer that
 * never came) first looks the transfer up by its group, since Stripe forgets idempotency keys
 * after 24 hours: a payout can never transfer twice, however late it is retried.
 *
 * @example
 * const payouts = stripePayouts({ stripe, store, publicUrl: () => url, logger, minimum: 1_000_000n });
 * const { url } = await payouts.onboarding(operator); // send the operator there
 */
export function stripePayouts(deps: { stripe: Stripe; store: Store; publicUrl: () => string; logger: Logger; minimum: bigint }) {
  const { stripe, store } = deps;

  async function transfer(payout: Payout, retry: boolean): Promise<Payout> {
    try {
      const earlier = retry ? (await stripe.transfers.list({ transfer_group: payout.id, limit: 1 })).data[0] : undefined;
      const made =
        earlier ??
        (await stripe.transfers.create(
          {
            amount: Number(payout.amount / CENT),
            currency: 'usd',
            destination: payout.destination,
            transfer_group: payout.id,
            metadata: { payout_id: payout.id, operator_id: payout.operatorId },
          },
          { idempotencyKey: payout.id },
        ));
      return await store.operators.finishPayout(payout.id, { state: 'paid', transferId: made.id });
    } catch (error) {
      if (error instanceof stripe.errors.StripeInvalidRequestError || error instanceof stripe.errors.StripePermissionError) {
        return store.operators.finishPayout(payout.id, { state: 'failed', error: `Stripe refused the transfer: ${error.message}` });
      }
      // Unknown outcome (network, Stripe down): stays requested, the same idempotency key retries it.
      deps.logger.warn({ err: error, payout: payout.id }, 'Stripe transfer outcome unknown; will retry');
      return payout;
    }
  }

  return {
    /** Creates the operator's Express account once, and a fresh onboarding link to it. */
    async onboarding(operator: OperatorRecord) {
      let account = operator.stripeAccount;
      if (!account) {
        const created = await stripe.accounts.create(
          { type: 'express', email: operator.email, metadata: { operator_id: operator.id } },
          { idempotencyKey: `account:${operator.id}` },
        );
        account = created.id;
        await store.operators.updateOperator(operator.id, { stripeAccount: account });
      }
      const link = await stripe.accountLinks.create({
        account,
        type: 'account_onboarding',
        refresh_url: `${deps.publicUrl()}/operator/payouts/onboarding`,
        return_url: `${deps.publicUrl()}/operator`,
      });
      return { account, url: link.url, expiresAt: new Date(link.expires_at * 1000).toISOString() };
    },

    /** Pays out `amount` (default: everything available, in whole cents) to the operator's connected account. */
    async request(operator: OperatorRecord, input: { amount?: bigint; idempotencyKey: string }) {
      if (!operator.stripeAccount)
        throw new DomainError('stripe_account_missing', 'connect a Stripe account first: POST /operator/payouts/onboarding');
      const available = (await store.operators.balance(operator.id)).fiatAvailable;
      const amount = input.amount ?? available - (available % CENT);
      if (amount % CENT !== 0n) throw new DomainError('invalid_request', 'usd: payouts are whole cents', { field: 'usd' });
      const result = await store.operators.requestPayout({
        id: newId('po'),
        operatorId: operator.id,
        amount,
        destination: operator.stripeAccount,
        idempotencyKey: input.idempotencyKey,
        minimum: deps.minimum,
      });
      if (!result.ok) {
        throw new DomainError(
          result.reason,
          result.reason === 'below_minimum'
            ? `a payout is at least ${deps.minimum > 0n ? deps.minimum : 1n} micro-USD`
            : `only ${result.available} micro-USD are available to pay out`,
          {
            available: result.available.toString(),
          },
        );
      }
      return {
        created: result.created,
        payout: result.record.state === 'requested' ? await transfer(result.record, !result.created) : result.record,
      };
    },

    /** Retries payouts whose transfer outcome a crash or an outage left unknown. */
    async reconcile() {
      for (const operator of await store.operators.operators()) {
        for (const payout of await store.operators.payouts(operator.id)) if (payout.state === 'requested') await transfer(payout, true);
      }
    },
  };
}

export type StripePayouts = ReturnType<typeof stripePayouts>;
