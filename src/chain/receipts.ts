import type { Hex, PublicClient, TransactionReceipt } from 'viem';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The receipt of a transaction, asked every `pollMs` until `deadline` (ms since the epoch);
 * undefined if it was not mined by then. A failed ask (not mined yet, or the node briefly
 * unreachable) is asked again, not taken for an answer.
 *
 * @example const receipt = await waitForReceipt(client, txHash, Date.now() + 10_000, network.receiptPollingMs);
 */
export async function waitForReceipt(client: PublicClient, hash: Hex, deadline: number, pollMs: number): Promise<TransactionReceipt | undefined> {
  for (;;) {
    try {
      return await client.getTransactionReceipt({ hash });
    } catch {
      // not mined yet, or the node is briefly unreachable: keep asking until the deadline
    }
    if (Date.now() > deadline) return undefined;
    await sleep(pollMs);
  }
}
