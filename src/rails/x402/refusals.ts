import { DomainError } from '../../errors.js';
import { networkOf } from '../../upstream/caller-network.js';
import { failureThrottle } from '../failure-throttle.js';

/**
 * Who presented a payment: the caller's address (the socket's peer, or the caller a trusted proxy
 * named), counted by its network (`networkOf`); and the payer, only once their signature is proven
 * (`FacilitatorPort.authenticate`): `authorization.from` alone is a claim anyone can write.
 */
export type Presenter = { address?: string; payer?: string };

/**
 * The throttle of refused x402 payments that cost a round trip (`Refusal.costly`: a chain read, a
 * remote facilitator's /verify), per instance, in memory (it is no money state): a caller network,
 * or a proven payer, past `perMinute` such refusals in its minute is answered `rate_limited` (429,
 * `retryAfterSeconds`) before anything is asked of the chain, until its minute ends. Counted by
 * what the caller controls (its network) and by proven facts only (a payer whose signature was
 * recovered or approved), never by a payer an unproven payment names: naming a victim in junk
 * payments counts against the sender's network, not the victim. A payment being judged counts
 * as refused against its network until its verdict (`judging`), so payments sent at once cannot
 * all pass `limited` before the first is refused: at most `perMinute` of one network's are judged
 * or refused at a time. Networks and payers are kept in two bounded maps (`failureThrottle`), so a
 * spray of fresh payer keys cannot push networks out. `perMinute` 0: no limit.
 *
 * @example
 * const throttle = refusalThrottle({ perMinute: 30 });
 * const limited = throttle.limited({ address }); // DomainError('rate_limited') past 30 a minute
 * const end = throttle.judging({ address });
 * try { if (verdict.costly) throttle.refused({ address, payer: proven }); } finally { end(); }
 */
export function refusalThrottle(options: { perMinute: number; maxCallers?: number; now?: () => number }) {
  const { perMinute, ...rest } = options;
  const networks = failureThrottle({ limit: perMinute, ...rest });
  const payers = failureThrottle({ limit: perMinute, ...rest });
  const keys = ({ address, payer }: Presenter) => ({
    network: address === undefined ? undefined : networkOf(address),
    payer: payer?.toLowerCase(),
  });
  return {
    /** The refusal to answer `who` at once, without a round trip, or undefined when their payment may be judged. */
    limited(who: Presenter): DomainError | undefined {
      const { network, payer } = keys(who);
      const byNetwork = network === undefined ? 0 : networks.wait(network);
      const byPayer = payer === undefined ? 0 : payers.wait(payer);
      const wait = Math.max(byNetwork, byPayer);
      if (wait === 0) return undefined;
      const whose = byNetwork >= byPayer ? `from ${network}` : `of payer ${payer}`;
      const message = `too many refused payments ${whose} (${perMinute} a minute, those being judged included); retry in ${wait} s`;
      return new DomainError('rate_limited', message, { limit: perMinute, retryAfterSeconds: wait });
    },
    /**
     * Starts judging a payment from `who`'s network: it counts there as a refusal until the function
     * returned is called (after `refused`, if it was). Not against a payer: anyone holding a payment
     * of theirs (one a settlement elsewhere published) could keep theirs under way and shut them out.
     */
    judging(who: Presenter): () => void {
      const { network } = keys(who);
      return network === undefined ? () => {} : networks.begin(network);
    },
    /** Counts a costly refusal of `who`'s payment: against their network, and their payer when proven. */
    refused(who: Presenter): void {
      const { network, payer } = keys(who);
      if (network !== undefined) networks.failed(network);
      if (payer !== undefined) payers.failed(payer);
    },
  };
}

export type RefusalThrottle = ReturnType<typeof refusalThrottle>;
