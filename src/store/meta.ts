import { randomBytes, randomUUID } from 'node:crypto';
import { type Runner, command, get, query, run } from './engine/statement.js';

type Entry = { key: string; value: string; now: number };
/** The `meta` table's statements (also used by areas that keep one value there). */
export const metaSql = {
  upsert: command<Entry>(`INSERT INTO meta (key, value, updated_at) VALUES (@key, @value, @now)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`),
  insert: command<Entry>('INSERT INTO meta (key, value, updated_at) VALUES (@key, @value, @now) ON CONFLICT (key) DO NOTHING'),
  read: query<{ key: string }, { value: string }>('SELECT value FROM meta WHERE key = @key'),
  // Signed-out console sessions: only expired rows are pruned (indexed), so a sign-out costs the same however many there are.
  revokeSession: command<{ id: string; expiresAt: number }>(
    'INSERT INTO revoked_sessions (id, expires_at) VALUES (@id, @expiresAt) ON CONFLICT (id) DO NOTHING',
  ),
  pruneSessions: command<{ now: number }>('DELETE FROM revoked_sessions WHERE expires_at < @now'),
  sessionRevoked: query<{ id: string }, { id: string }>('SELECT id FROM revoked_sessions WHERE id = @id'),
  // INTEGER: a bigint from SQLite, a number from PostgreSQL.
  schemaVersion: query<{}, { v: bigint | number | null }>('SELECT MAX(version) AS v FROM schema_migrations'),
};

/** How long a signed-out session is kept past its expiry: another instance's clock may run behind. */
const SKEW_MS = 10 * 60_000;

/** The store's own entries: shared secrets, signed-out console sessions, and the heartbeat `health` writes. */
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
     * revoked, `sessionRevoked(id)` is true until it has expired anyway (plus `SKEW_MS`); expired
     * entries are pruned.
     */
    revokeSession: (id: string, until: number) =>
      write(function* () {
        yield* run(metaSql.pruneSessions, { now: Date.now() });
        yield* run(metaSql.revokeSession, { id, expiresAt: until + SKEW_MS });
      }),
    sessionRevoked: (id: string) =>
      read(function* () {
        return (yield* get(metaSql.sessionRevoked, { id })) !== undefined;
      }),
    /** Writes a heartbeat (proving the store takes a write) and answers the schema version. */
    heartbeat: () =>
      write(function* () {
        yield* run(metaSql.upsert, { key: 'heartbeat', value: randomUUID(), now: Date.now() });
        return Number((yield* get(metaSql.schemaVersion, {}))?.v ?? 0);
      }),
  };
}
