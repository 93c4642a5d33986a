import { type Op, type Runner, all, get, lock, run } from '../engine/statement.js';
import type { EventStore, NewEvent } from './events.js';
import { eventsSql as sql, toClaimed, toDelivery, toEndpoint } from './statements.js';

/**
 * Appends events to the outbox, each with a pending delivery to every endpoint it goes to: an
 * operation, so that the write recording a batch of calls records their events in the same
 * transaction (see `OperatorStore.recordCalls`). An event id already there is skipped whole.
 */
export function* insertEvents(events: readonly NewEvent[]): Op<void> {
  const now = Date.now();
  for (const e of events) {
    const operatorId = e.operatorId ?? null;
    const inserted = yield* run(sql.insertEvent, { id: e.id, operatorId, type: e.type, payload: e.payload, createdAt: e.createdAt });
    if (inserted === 1) yield* run(sql.fanOut, { id: e.id, operatorId, now });
  }
}

/** The outbox over a backend's runner. */
export function eventStore({ read, write }: Runner): EventStore {
  return {
    record: (events) => write(() => insertEvents(events)),
    addEndpoint: (e, max) =>
      write(function* () {
        if (e.operatorId !== undefined && max !== undefined) {
          yield* lock(sql.operatorOf, { operatorId: e.operatorId });
          if (Number((yield* get(sql.liveEndpoints, { operatorId: e.operatorId }))!.n) >= max) return false;
        }
        yield* run(sql.insertEndpoint, { ...e, operatorId: e.operatorId ?? null, sealedSecret: e.sealedSecret ?? null });
        return true;
      }),
    setInstanceEndpoints: (endpoints) =>
      write(function* () {
        const now = Date.now();
        const keep = new Set(endpoints.map((e) => e.id));
        for (const old of yield* all(sql.endpointsOf, { operatorId: null })) {
          if (keep.has(old.id)) continue;
          yield* run(sql.deleteEndpoint, { id: old.id, operatorId: null, now });
          yield* run(sql.abandonDeliveries, { endpointId: old.id, now });
        }
        for (const e of endpoints) yield* run(sql.insertEndpoint, { ...e, operatorId: null, sealedSecret: null });
      }),
    endpoints: (operatorId) =>
      read(function* () {
        return (yield* all(sql.endpointsOf, { operatorId })).map(toEndpoint);
      }),
    endpoint: (id) =>
      read(function* () {
        const row = yield* get(sql.endpoint, { id });
        return row ? toEndpoint(row) : undefined;
      }),
    deleteEndpoint: (id, operatorId) =>
      write(function* () {
        const now = Date.now();
        if ((yield* run(sql.deleteEndpoint, { id, operatorId, now })) !== 1) return false;
        yield* run(sql.abandonDeliveries, { endpointId: id, now });
        return true;
      }),
    endpointOwners: () =>
      read(function* () {
        return (yield* all(sql.endpointOwners, {})).map((r) => r.operator_id);
      }),
    due: (now) =>
      read(function* () {
        return (yield* get(sql.due, { now })) !== undefined;
      }),
    claim: (owner, now, leaseMs, limit, perEndpoint = limit) =>
      write(function* () {
        const until = now + leaseMs;
        if ((yield* run(sql.claim, { owner, now, until, limit, perEndpoint })) === 0) return [];
        return (yield* all(sql.claimed, { owner, until })).map(toClaimed);
      }),
    leaseOwners: (now) =>
      read(function* () {
        return (yield* all(sql.leaseOwners, { now })).map((r) => r.lease_owner);
      }),
    releaseLeases: (owner) => write(() => run(sql.releaseLeases, { owner })),
    finish: (delivery, owner, outcome) =>
      write(function* () {
        const now = Date.now();
        const state = outcome.delivered ? 'delivered' : outcome.retryAt !== undefined ? 'pending' : 'failed';
        const changed = yield* run(sql.finish, {
          ...delivery,
          owner,
          state,
          nextAt: outcome.delivered ? now : (outcome.retryAt ?? now),
          status: outcome.status ?? null,
          error: outcome.delivered ? null : outcome.error,
          now,
        });
        return changed === 1;
      }),
    deliveries: (endpointId, page) =>
      read(function* () {
        const rows = yield* all(sql.deliveries, { endpointId, before: page.before ?? Number.MAX_SAFE_INTEGER, limit: page.limit });
        return rows.map(toDelivery);
      }),
    backlog: () =>
      read(function* () {
        const row = (yield* get(sql.backlog, {}))!;
        return {
          pending: Number(row.pending ?? 0),
          failed: Number(row.failed ?? 0),
          ...(row.oldest !== null ? { oldestAt: Number(row.oldest) } : {}),
        };
      }),
    prune: (before) =>
      write(function* () {
        yield* run(sql.pruneDeliveries, { before });
        yield* run(sql.pruneEvents, { before });
      }),
  };
}
