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

/**
 * How often to ask this node for a receipt, learned from what it does rather than from the
 * network's nominal clock: the first look is right after the broadcast (see `waitForReceipt`);
 * after that, a quarter of the time transactions have taken to show up here (a moving average,
 * about half a block interval on a chain with a block clock), between `MIN_POLL_MS` and the
 * network's `receiptPollingMs`. An automining anvil served as Base is asked again within
 * milliseconds; Base itself every 250 ms, as before.
 *
 * @example
 * const cadence = receiptCadence(network);
 * const receipt = await waitForReceipt(client, hash, deadline, cadence.pollMs);
 * if (receipt) cadence.observe(performance.now() - broadcastAt);
 */
export function receiptCadence(network: { blockTimeMs: number; receiptPollingMs: number }) {
  let inclusionMs = network.blockTimeMs / 2;
  return {
    pollMs: () => Math.min(network.receiptPollingMs, Math.max(MIN_POLL_MS, inclusionMs / 4)),
    /** Learns from one transaction that took `ms` from broadcast to receipt. */
    observe(ms: number) {
      inclusionMs = (inclusionMs + Math.max(0, ms)) / 2;
    },
  };
}
