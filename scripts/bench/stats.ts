/** Latency summary of a list of samples in milliseconds. */
export function summarize(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { n: sorted.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), min: sorted[0]!, max: sorted[sorted.length - 1]! };
}

export type Row = { path: string; subject: string; p50Ms: number; p99Ms: number; perSecond?: number; note?: string };
