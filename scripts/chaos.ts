/**
 * `npm run chaos [-- --seconds 60] [--seed N] [--settlement strict|deferred|both] [--json]`: a soak test of the paying
 * proxy under faults, which then checks that the money adds up; `both` (the default) soaks strict settlement, then
 * deferred, each for `--seconds` with the same seed. Exit code 0 when every invariant holds in every soak, 1 when one
 * fails (the evidence directory is kept and named), 2 for bad flags. `--json` prints one report per soak, an array.
 *
 * Set-up: the sandbox chain in this process; the upstream (an MCP server built with the SDK, tools
 * `ok`, `slow` (a progress notification, then the result), `fail` (isError), `throw` (JSON-RPC
 * error), `hang`, `http500`, each logging its executions with the caller's `callId`; stateless
 * with JSON answers, or in a session with resumable SSE answers) and the built `turnpike wrap`
 * (network base on the sandbox's RPC, price 0.01 USDC, upstream timeout 3 s) each in their own
 * process. x402 payers (the official x402 client signs one authorization per call) and credits
 * payers (an API key each) call it concurrently for `--seconds`, retrying with the same payment or
 * Idempotency-Key after no answer or a 5xx, sending concurrent copies, replaying settled payments
 * and making mistakes (bad JSON, bad payment encodings, wrong amount or payee, expired
 * authorizations, paid calls in a batch, unknown keys, reused Idempotency-Keys). A thief (two more
 * clients, its own wallet) tries to get priced results without paying: it pays for a slow call in
 * an MCP session, hangs up at the first event and resumes the stream with Last-Event-ID while
 * holding the session's standalone stream; it replays settled payments with a forged signature; it
 * smuggles priced calls in a UTF-7 body or behind a duplicate key; and it sends concurrent copies
 * of one payment to an API guarded by the official `@x402/hono` middleware with turnpike's
 * `/facilitator` as its facilitator (`facilitatorCopies` in scripts/chaos/thief.ts). Meanwhile
 * turnpike is killed with SIGKILL and restarted on the same data and port (also as PID 1 of a PID
 * namespace, restarted as PID 1 of a new one, as a container restarts), anvil is stopped with
 * SIGSTOP for 1–3 s, the upstream is killed and restarted, and the upstream becomes a loop back to
 * turnpike for 1–3 s (it forwards every MCP request to turnpike's own MCP URL, Turnpike-Hop header
 * and all, and answers what turnpike answers; turnpike refuses the request that names it with 508,
 * so the caller gets that 508 and is not charged). At the end turnpike is killed once
 * more and restarted, and the run waits until recovery has finished every journal entry and every
 * open debit.
 *
 * The invariants, exactly (a "call" is one callId; its requests all carry the same body):
 *  1. The USDC that left payers equals what the payee received, the payers' and payee's balance
 *     changes, and the sum of the settled journal entries; no payer's USDC went anywhere else.
 *  2. Each authorization the token reports used (AuthorizationUsed) is exactly one settled
 *     journal entry, used in the transaction the entry names, which carries its Transfer; no
 *     authorization is used twice; every transaction a relayer sent succeeded and is named by
 *     the journal; no entry failed with a transaction.
 *  3. After recovery no journal entry is verified, submitting or submitted.
 *  4. Every settled payment belongs to a call a client made whose tool produced its result (`ok`
 *     or `slow` logged it), or to the thief's purchase at the x402 API (judged by 11); a caller
 *     who hung up is no exception: the call runs on and is charged. Every standing (unrefunded)
 *     debit recorded with an Idempotency-Key belongs to such a call, as does every standing debit
 *     a client was shown; per API key, standing debits without an Idempotency-Key are at most the
 *     results produced for that key's calls without one (the store does not name their call).
 *  5. No payment of a call to a failing tool is settled; every debit for a failing tool is refunded.
 *  6. Every x402 call that got its result has its payment settled; every settled payment's
 *     result reached its caller, on a retry with the same payment if the answer was cut off (by a
 *     kill, or by the caller hanging up: the result is kept and given back to that payment),
 *     unless the client gave up while turnpike was down; every debit shown with a
 *     result stands, unless the crash sweep refunded it and it was first shown within 1 s of a
 *     SIGKILL (debits are closed in 100 ms batches, so the last ones before a kill are refunded
 *     in the caller's favour) or first shown in an Idempotency-Key replay after a kill (the
 *     answer was stored before the kill, its debit left open); the results of one
 *     Idempotency-Key show at most one standing debit.
 *  7. A call ran at most once per round (concurrent copies of one payment or Idempotency-Key
 *     run once; another run needs a retry after an answer without the result), or once per
 *     request for credits calls without an Idempotency-Key.
 *  8. Every answer to a mistake is below 500 (no answer at all while turnpike is down is not an
 *     answer), and no mistake ran the tool or got a result (a reused Idempotency-Key whose first
 *     debit was refunded after a kill is free again, and may).
 *  9. Each key's balance equals the sum of its ledger entries, and each entry's balance_after
 *     the running sum, never negative.
 * 10. No debit is open after recovery; each refund undoes one debit of the same key, in full, once.
 * 11. No priced result reached a client without its payment settled or its debit standing (6);
 *     the thief got no result: none (nor the result's text) on a resumed or standalone stream,
 *     none for a forged signature, a 4xx and no run for a smuggled body; and for every
 *     authorization the journal equals the chain (2): at the x402 API, the copies of one payment
 *     were served (2xx) at most once, and as many times as the authorization is settled (0 or 1),
 *     unless a settled payment's answer was cut off (then none was served).
 * 12. Every request sent and answered while the upstream looped back to turnpike was answered
 *     without a 5xx other than 502, 503 or 508 (turnpike refused the loop at once: no timeout,
 *     no 500); that no such call was charged is checks 4 and 5 (the tool never ran).
 * 13. With `--settlement deferred` (the chain then mines a block every 2 s, and turnpike delivers
 *     x402 results once their transaction is signed and journalled, within a cap of 0.05 USDC per
 *     payer), two drainers empty their wallets right after a burst of paid calls is answered, ahead
 *     of the settlements in the next block: every failed payment is a drainer's, each drainer's
 *     losses (deferred payments delivered and then failed) are within the cap, and a drainer with
 *     losses is refused (payer_has_unsettled_losses) without its tool running. Checks 1, 2 and 6
 *     hold for everyone else, and for the drainers apart from the USDC they moved away and the
 *     payments that then failed.
 * 14. Events out (sent to a webhook receiver in this process that verifies `Turnpike-Signature`
 *     and fails a seeded 15 % of deliveries with a 503 or a closed connection): after recovery
 *     and a wait of up to 20 s for the outbox, every event in the store was delivered with a
 *     valid signature and its stored body, unless its delivery is still claimed under the lease
 *     (60 s) of a process a kill ended; every delivered id is in the store, with one body. An
 *     event names no payment or debit, so `call.paid` events are counted per rail, caller, tool
 *     and amount: per standing debit at least one (a debit closes after its charge and event are
 *     written) and per debit at most one; per settled payment (or deferred loss) at most one, and
 *     at least one except for calls a kill cut (an answer lost, or given within 1 s of a SIGKILL:
 *     an x402 call's event rides the 100 ms batch, which a kill may lose).
 * Not an invariant, but reported: settled x402 payments whose answer was cut off by a kill (a
 * transfer on chain cannot be undone; the payer paid for a result it did not receive).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { startChain } from './chaos/chain.js';
import { unrecovered, gatherEvidence, undeliveredEvents } from './chaos/evidence.js';
import { injectFaults, turnpikeKills } from './chaos/faults.js';
import { checkInvariants } from './chaos/invariants.js';
import { type SettledPayment, runPayers } from './chaos/payers.js';
import { formatReport, summarize } from './chaos/report.js';
import { startStack } from './chaos/stack.js';
import { runThief } from './chaos/thief.js';
import { DRAIN_SINK, runDrainers } from './chaos/drainers.js';
import { DEFERRED_CAP, EVENT_LEASE_MS } from './chaos/stack.js';
import { startReceiver } from './chaos/receiver.js';

const X402_PAYERS = 6;
/** The thief's wallet is the chain's payer after the x402 payers'; the drainers' come after it. */
const THIEF_PAYER = X402_PAYERS;
const DRAINERS = 2;
const CREDITS_PAYERS = 4;
const RECOVERY_TIMEOUT_MS = 30_000;
/** After recovery, how long the run waits for the events outbox to empty (retries are at most 1 s apart). */
const EVENTS_TIMEOUT_MS = 20_000;

const flagsSchema = z.object({
  seconds: z.coerce.number().int().positive().default(60),
  seed: z.coerce
    .number()
    .int()
    .nonnegative()
    .default(() => Math.floor(Math.random() * 1_000_000)),
  settlement: z.enum(['strict', 'deferred', 'both']).default('both'),
  json: z.boolean().default(false),
});

let flags: z.infer<typeof flagsSchema>;
try {
  const { values } = parseArgs({
    options: { seconds: { type: 'string' }, seed: { type: 'string' }, settlement: { type: 'string' }, json: { type: 'boolean' } },
  });
  flags = flagsSchema.parse(values);
} catch (error) {
  process.stderr.write(
    `chaos: ${error instanceof z.ZodError ? error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; ') : (error as Error).message}\n`,
  );
  process.exit(2);
}
const progress = (s: string) => process.stderr.write(`chaos: ${s}\n`);

/** One soak in one settlement mode: its own chain, turnpike and evidence directory (kept if a check fails). */
async function soak(settlement: 'strict' | 'deferred') {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'turnpike-chaos-'));
  const deferred = settlement === 'deferred';
  const chain = await startChain(X402_PAYERS + 1 + (deferred ? DRAINERS : 0), deferred ? 2 : 0);
  const receiver = await startReceiver(flags.seed);
  const stack = await startStack(chain, dir, settlement, receiver);
  const keys = await Promise.all(Array.from({ length: CREDITS_PAYERS }, (_, i) => stack.createKey(`chaos-${i}`, '50')));
  progress(
    `turnpike at ${stack.base} (settlement: ${settlement}), chain at ${chain.sandbox.rpcUrl}, evidence in ${dir}; running ${flags.seconds} s with seed ${flags.seed}`,
  );

  const deadline = Date.now() + flags.seconds * 1000;
  const running = () => Date.now() < deadline;
  const { payers: wallets, payees } = chain.sandbox.accounts;
  const settled: SettledPayment[] = [];
  const [paying, thief, faults, draining] = await Promise.all([
    runPayers({
      mcpUrl: stack.mcpUrl,
      seed: flags.seed,
      x402: wallets.slice(0, X402_PAYERS),
      keys,
      stranger: payees[1]!.address,
      settled,
      running,
    }),
    runThief({ base: stack.base, seed: flags.seed, payer: wallets[THIEF_PAYER]!, payTo: stack.payTo, settled, running }),
    injectFaults({ chain, stack, seed: flags.seed, running }),
    deferred
      ? runDrainers({ mcpUrl: stack.mcpUrl, sandbox: chain.sandbox, seed: flags.seed, payers: wallets.slice(THIEF_PAYER + 1), running })
      : { calls: [], drains: [] },
  ]);
  const calls = [...paying, ...thief.calls, ...draining.calls];

  progress('faults over; killing turnpike once more and waiting for its recovery');
  const finalKill = Date.now();
  await stack.turnpike.kill();
  const restartedAt = Date.now();
  await stack.turnpike.start();
  const recoveryDeadline = Date.now() + RECOVERY_TIMEOUT_MS;
  for (
    let left = unrecovered(stack.dbPath);
    left.journal + left.openDebits > 0 && Date.now() < recoveryDeadline;
    left = unrecovered(stack.dbPath)
  ) {
    await new Promise((r) => setTimeout(r, 250));
  }
  const eventsDeadline = Date.now() + EVENTS_TIMEOUT_MS;
  while (undeliveredEvents(stack.dbPath, restartedAt, EVENT_LEASE_MS) > 0 && Date.now() < eventsDeadline)
    await new Promise((r) => setTimeout(r, 250));
  await stack.stop();
  await receiver.close();

  const evidence = await gatherEvidence({
    dbPath: stack.dbPath,
    sandbox: chain.sandbox,
    payees: [stack.payTo],
    executionLog: stack.executionLog,
    turnpikeLog: stack.turnpikeLog,
  });
  await chain.stop();
  const payers = wallets.map((p) => p.address);
  const kills = [...faults.filter((f) => turnpikeKills.includes(f.kind)).map((f) => f.at), finalKill];
  const loops = faults.filter((f) => f.kind === 'upstream_loop');
  const drains = { sink: DRAIN_SINK, cap: DEFERRED_CAP, drainers: draining.drains };
  const checks = checkInvariants(evidence, calls, thief.thefts, {
    payTo: stack.payTo,
    payers,
    kills,
    loops,
    ...(deferred ? { drains } : {}),
    events: { delivered: receiver.delivered, restartedAt, leaseMs: EVENT_LEASE_MS },
  });
  const summary = summarize({
    seconds: flags.seconds,
    seed: flags.seed,
    calls,
    thefts: thief.thefts,
    faults,
    evidence,
    checks,
    eventsFailed: receiver.failed(),
  });
  if (summary.ok) rmSync(dir, { recursive: true, force: true });
  return { ...summary, settlement, dir: summary.ok ? undefined : dir };
}

const modes = flags.settlement === 'both' ? (['strict', 'deferred'] as const) : [flags.settlement];
const reports = [];
for (const mode of modes) reports.push(await soak(mode));
process.stdout.write(
  flags.json
    ? `${JSON.stringify(reports, null, 2)}\n`
    : reports.map((r) => `settlement: ${r.settlement}\n${formatReport(r, r.dir ?? '')}`).join('\n'),
);
process.exitCode = reports.every((r) => r.ok) ? 0 : 1;
