import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';

/**
 * The chaos upstream's tools and what each does. Only `ok` and `slow` produce a result a client
 * may be charged for; every other one must end with nothing settled and every debit refunded.
 */
export const chaosTools = {
  ok: 'answers a result',
  slow: 'sends a progress notification, then answers a result ~0.5 s later (on an SSE stream in a session)',
  fail: 'answers isError',
  throw: 'answers a JSON-RPC error',
  hang: 'never answers',
  http500: 'answers HTTP 500',
} as const;
export type ChaosTool = keyof typeof chaosTools;
export const resultTools: ChaosTool[] = ['ok', 'slow'];
export const failingTools = (Object.keys(chaosTools) as ChaosTool[]).filter((t) => !resultTools.includes(t));
/** The text of a result: whoever reads this marker holds a priced call's result. */
export const RESULT_MARKER = 'priced-result';
export const resultText = (callId: string) => `${RESULT_MARKER} ${callId}`;

/**
 * One line of the upstream's execution log, appended when a tool runs (for `ok` and `slow`, once
 * the result is ready; for `hang`, when it starts), so executions can be matched to charges afterwards.
 */
export const executionSchema = z.object({
  callId: z.string(),
  tool: z.enum(Object.keys(chaosTools) as [ChaosTool, ...ChaosTool[]]),
  at: z.number(),
  pid: z.number(),
});
export type Execution = z.infer<typeof executionSchema>;

/** Every execution in the log; a line cut short by a kill mid-write is not an execution. */
export function readExecutions(file: string): Execution[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((line) => {
      if (!line) return [];
      try {
        return [executionSchema.parse(JSON.parse(line))];
      } catch {
        return [];
      }
    });
}
