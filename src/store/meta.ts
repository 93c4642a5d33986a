import { randomBytes, randomUUID } from 'node:crypto';
import { type Runner, command, get, query, run } from './engine/statement.js';

type Entry = { key: string; value: string; now: number };
/** The `meta` table's statements (also used by areas that keep one value there). */
export const metaSql = {
  upsert: command<Entry>(`INSERT INTO meta (key, value, updated_at) VALUES (@key, @value, @now)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`),
  insert: command<Entry>('INSERT INTO meta (key, value, updated_at) VALUES (@key, @value, @now) ON CONFLICT (key) DO NOTHING'),
  read: query<{ key: string }, { value: string }>('SELECT value FROM meta WHERE key = @key'),
  // A revoked console session: `value` is when it would have expired (ms, zero-padded to 16 digits,
  // so it compares as text on both backends without casting other entries' values), then it is pruned.
  prune: command<{ prefix: string; now: string }>('DELETE FROM meta WHERE key LIKE @prefix AND value < @now'),
  // INTEGER: a bigint from SQLite, a number from PostgreSQL.
  schemaVersion: query<{}, { v: bigint | number | null }>('SELECT MAX(version) AS v FROM schema_migrations'),
};

const REVOKED = 'revoked-session:';

/** The store's own entries: shared secrets, revoked console sessions, and the heartbeat `health` writes. */
export function metaStore({ read, write }: Runner) {
  return {
    /** The secret `name`, made by whichever instance asks first. */
    instanceSecret: (name: string) =>
      write(function* () {
        const key = `secret:${name}`;
        yield* run(metaSql.insert, { key, value: randomBytes(32).toString('hex'), now: Date.now() });
        return (yield* get(metaSql.read, { key }))!.value;
      }),
    /**
     * Ends the console session `id` (which would expire at `until`, ms) on every instance: once
     * revoked, `sessionRevoked(id)` is true until it has expired anyway; expired entries are pruned.
     */
    revokeSession: (id: string, until: number) =>
      write(function* () {
        const now = Date.now();
        const padded = (ms: number) => String(ms).padStart(16, '0');
        yield* run(metaSql.prune, { prefix: `${REVOKED}%`, now: padded(now) });
        yield* run(metaSql.upsert, { key: `${REVOKED}${id}`, value: padded(until), now });
      }),
    sessionRevoked: (id: string) =>
      read(function* () {
        return (yield* get(metaSql.read, { key: `${REVOKED}${id}` })) !== undefined;
      }),
    /** Writes a heartbeat (proving the store takes a write) and answers the schema version. */
    heartbeat: () =>
      write(function* () {
        yield* run(metaSql.upsert, { key: 'heartbeat', value: randomUUID(), now: Date.now() });
        return Number((yield* get(metaSql.schemaVersion, {}))?.v ?? 0);
      }),
  };
}
