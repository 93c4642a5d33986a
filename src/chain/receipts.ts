import type { Hex, PublicClient, TransactionReceipt } from 'viem';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The receipt of a transaction, asked at once and then every `pollMs` (a number, or asked before
 * each wait) until `deadline` (ms since the epoch); undefined if it was not mined by then. A
 * failed ask (not mined yet, or the node briefly unreachable) is asked again, not taken for an answer.
 *
 * @example const receipt = await waitForReceipt(client, txHash, Date.now() + 10_000, network.receiptPollingMs);
 */
export async function waitForReceipt(
  client: PublicClient,
  hash: Hex,
  deadline: number,
  pollMs: number | (() => number),
): Promise<TransactionReceipt | undefined> {
  for (;;) {
    try {
      return await client.getTransactionReceipt({ hash });
    } catch {
      // not mined yet, or the node is briefly unreachable: keep asking until the deadline
    }
    if (Date.now() > deadline) return undefined;
    await sleep(typeof pollMs === 'number' ? pollMs : pollMs());
  }
}

/** The fastest a receipt is asked for again, however fast the node has been. */
const MIN_POLL_MS = 2;
/** Around the moment a block is due: how often to look, from how long before to how long after. */
const DUE_POLL_MS = 10;
const DUE_BEFORE_MS = 40;
const DUE_AFTER_MS = 150;

/**
 * How often to ask this node for a receipt, learned from what it does rather than from the
 * network's nominal clock: the first look is right after the broadcast (see `waitForReceipt`);
 * after that, a quarter of the time transactions have taken to show up here (a moving average,
 * about half a block interval on a chain with a block clock), between `MIN_POLL_MS` and the
 * network's `receiptPollingMs`. An automining anvil served as Base is asked again within
 * milliseconds; Base itself every 250 ms, as before.
 *
 * On a chain with a block clock it also learns when blocks show up on this node: a receipt
 * missing at one look and there at the next came with a block in between. Once it knows that
 * phase, it looks every 10 ms from just before each block is due to just after, and in between
 * no more often than before: a receipt is seen within ~10 ms of its block, not up to a whole
 * polling interval later.
 *
 * @example
 * const cadence = receiptCadence(network);
 * const receipt = await cadence.waitFor(client, hash, Date.now() + 10_000);
 */
export function receiptCadence(network: { blockTimeMs: number; receiptPollingMs: number }) {
  let inclusionMs = network.blockTimeMs / 2;
  /** A moment (performance.now()) a block showed up on this node at or just after, once one was seen arrive. */
  let blockAt: number | undefined;
  const period = network.blockTimeMs;
  const pollMs = () => {
    const steady = Math.min(network.receiptPollingMs, Math.max(MIN_POLL_MS, inclusionMs / 4));
    if (blockAt === undefined || steady <= DUE_POLL_MS) return steady;
    const sinceDue = (((performance.now() - blockAt) % period) + period) % period;
    const untilDue = period - sinceDue;
    if (sinceDue < DUE_AFTER_MS || untilDue <= DUE_BEFORE_MS) return DUE_POLL_MS;
    return Math.min(steady, untilDue - DUE_BEFORE_MS);
  };
  /** Learns from one transaction that took `ms` from broadcast to receipt. */
  const observe = (ms: number) => {
    inclusionMs = (inclusionMs + Math.max(0, ms)) / 2;
  };
  return {
    pollMs,
    observe,
    /**
     * The receipt of `hash` (see `waitForReceipt`), looked for at this cadence; a receipt that was
     * missing at the previous look teaches when blocks come. `sentAt` (performance.now()), when the
     * transaction was just broadcast, teaches how long inclusion takes.
     */
    async waitFor(client: PublicClient, hash: Hex, deadline: number, sentAt?: number): Promise<TransactionReceipt | undefined> {
      let missedAt: number | undefined;
      const receipt = await waitForReceipt(client, hash, deadline, () => {
        missedAt = performance.now();
        return pollMs();
      });
      if (receipt && missedAt !== undefined) blockAt = missedAt;
      if (receipt && sentAt !== undefined) observe(performance.now() - sentAt);
      return receipt;
    },
  };
}
