import { command, query } from '../engine/statement.js';
import type { ClaimedDelivery, Delivery, DeliveryState, EndpointKind, EventEndpoint } from './events.js';

export type EndpointRow = {
  id: string;
  operator_id: string | null;
  kind: EndpointKind;
  url: string;
  sealed_secret: string | null;
  created_at: bigint;
};
type DeliveryRow = {
  event_id: string;
  endpoint_id: string;
  type: string;
  state: DeliveryState;
  attempts: bigint | number;
  next_at: bigint;
  last_status: bigint | number | null;
  last_error: string | null;
  created_at: bigint;
  updated_at: bigint;
};
type ClaimedRow = DeliveryRow & { payload: string; event_at: bigint; lease_until: bigint } & {
  [K in keyof EndpointRow as `endpoint_${K}`]: EndpointRow[K];
};

export const toEndpoint = (r: EndpointRow): EventEndpoint => ({
  id: r.id,
  kind: r.kind,
  url: r.url,
  createdAt: Number(r.created_at),
  ...(r.operator_id !== null ? { operatorId: r.operator_id } : {}),
  ...(r.sealed_secret !== null ? { sealedSecret: r.sealed_secret } : {}),
});
export const toDelivery = (r: DeliveryRow): Delivery => ({
  eventId: r.event_id,
  endpointId: r.endpoint_id,
  type: r.type,
  state: r.state,
  attempts: Number(r.attempts),
  nextAt: Number(r.next_at),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
  ...(r.last_status !== null ? { lastStatus: Number(r.last_status) } : {}),
  ...(r.last_error !== null ? { lastError: r.last_error } : {}),
});
export const toClaimed = (r: ClaimedRow): ClaimedDelivery => ({
  ...toDelivery(r),
  payload: r.payload,
  eventAt: Number(r.event_at),
  leaseUntil: Number(r.lease_until),
  endpoint: toEndpoint({
    id: r.endpoint_id,
    operator_id: r.endpoint_operator_id,
    kind: r.endpoint_kind,
    url: r.endpoint_url,
    sealed_secret: r.endpoint_sealed_secret,
    created_at: r.endpoint_created_at,
  }),
});

type Key = { eventId: string; endpointId: string };
const LIVE = 'deleted_at IS NULL';
const DELIVERY_COLUMNS = `d.event_id, d.endpoint_id, e.type, d.state, d.attempts, d.next_at, d.last_status, d.last_error,
  d.created_at, d.updated_at`;

/** The outbox's statements, for both backends. */
export const eventsSql = {
  insertEvent: command<{ id: string; operatorId: string | null; type: string; payload: string; createdAt: number }>(`
    INSERT INTO events (id, operator_id, type, payload, created_at) VALUES (@id, @operatorId, @type, @payload, @createdAt)
    ON CONFLICT (id) DO NOTHING`),
  // Every live endpoint of the event's operator, and the instance's own.
  fanOut: command<{ id: string; operatorId: string | null; now: number }>(`
    INSERT INTO event_deliveries (event_id, endpoint_id, state, attempts, next_at, created_at, updated_at)
    SELECT @id, p.id, 'pending', 0, @now, @now, @now FROM event_endpoints p
    WHERE p.${LIVE} AND (p.operator_id IS NULL OR p.operator_id = @operatorId)`),
  insertEndpoint: command<{
    id: string;
    operatorId: string | null;
    kind: EndpointKind;
    url: string;
    sealedSecret: string | null;
    createdAt: number;
  }>(`
    INSERT INTO event_endpoints (id, operator_id, kind, url, sealed_secret, created_at)
    VALUES (@id, @operatorId, @kind, @url, @sealedSecret, @createdAt)
    ON CONFLICT (id) DO UPDATE SET deleted_at = NULL`),
  // The endpoint's operator, locked while its endpoints are counted: two adds at once cannot both pass the limit.
  operatorOf: query<{ operatorId: string }, { id: string }>('SELECT id FROM operators WHERE id = @operatorId', { lockable: true }),
  liveEndpoints: query<{ operatorId: string }, { n: bigint | number }>(
    `SELECT COUNT(*) AS n FROM event_endpoints WHERE operator_id = @operatorId AND ${LIVE}`,
  ),
  endpointsOf: query<{ operatorId: string | null }, EndpointRow>(
    `SELECT * FROM event_endpoints WHERE ${LIVE} AND operator_id IS NOT DISTINCT FROM @operatorId ORDER BY created_at, id`,
  ),
  endpoint: query<{ id: string }, EndpointRow>(`SELECT * FROM event_endpoints WHERE id = @id AND ${LIVE}`),
  deleteEndpoint: command<{ id: string; operatorId: string | null; now: number }>(
    `UPDATE event_endpoints SET deleted_at = @now WHERE id = @id AND operator_id IS NOT DISTINCT FROM @operatorId AND ${LIVE}`,
  ),
  abandonDeliveries: command<{ endpointId: string; now: number }>(`
    UPDATE event_deliveries SET state = 'failed', last_error = 'the endpoint was deleted', lease_owner = NULL, lease_until = NULL,
                                updated_at = @now
    WHERE endpoint_id = @endpointId AND state = 'pending'`),
  endpointOwners: query<{}, { operator_id: string | null }>(`SELECT DISTINCT operator_id FROM event_endpoints WHERE ${LIVE}`),
  due: query<{ now: number }, { one: number }>(`
    SELECT 1 AS one FROM event_deliveries
    WHERE state = 'pending' AND next_at <= @now AND (lease_until IS NULL OR lease_until < @now) LIMIT 1`),
  // A guarded UPDATE: on PostgreSQL a row another instance claimed meanwhile fails the re-checked lease condition.
  // Fair: an endpoint with deliveries in flight is skipped, at most @perEndpoint of one endpoint are taken, and
  // endpoints take turns (each one's oldest first), so a slow endpoint's backlog never holds back another's.
  claim: command<{ owner: string; now: number; until: number; limit: number; perEndpoint: number }>(`
    UPDATE event_deliveries SET lease_owner = @owner, lease_until = @until
    WHERE (event_id, endpoint_id) IN (
        SELECT event_id, endpoint_id FROM (
          SELECT event_id, endpoint_id, next_at,
                 ROW_NUMBER() OVER (PARTITION BY endpoint_id ORDER BY next_at, event_id) AS turn
          FROM event_deliveries
          WHERE state = 'pending' AND next_at <= @now AND (lease_until IS NULL OR lease_until < @now)
            AND endpoint_id NOT IN (SELECT endpoint_id FROM event_deliveries WHERE state = 'pending' AND lease_until >= @now)
        ) due
        WHERE turn <= @perEndpoint ORDER BY turn, next_at LIMIT @limit)
      AND state = 'pending' AND (lease_until IS NULL OR lease_until < @now)`),
  claimed: query<{ owner: string; until: number }, ClaimedRow>(`
    SELECT ${DELIVERY_COLUMNS}, e.payload, e.created_at AS event_at, d.lease_until,
           p.operator_id AS endpoint_operator_id, p.kind AS endpoint_kind, p.url AS endpoint_url,
           p.sealed_secret AS endpoint_sealed_secret, p.created_at AS endpoint_created_at
    FROM event_deliveries d JOIN events e ON e.id = d.event_id JOIN event_endpoints p ON p.id = d.endpoint_id
    WHERE d.lease_owner = @owner AND d.lease_until = @until AND d.state = 'pending'
    ORDER BY d.next_at`),
  leaseOwners: query<{ now: number }, { lease_owner: string }>(`
    SELECT DISTINCT lease_owner FROM event_deliveries WHERE state = 'pending' AND lease_owner IS NOT NULL AND lease_until >= @now`),
  releaseLeases: command<{ owner: string }>(`
    UPDATE event_deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = @owner AND state = 'pending'`),
  finish: command<Key & { owner: string; state: DeliveryState; nextAt: number; status: number | null; error: string | null; now: number }>(`
    UPDATE event_deliveries SET state = @state, attempts = attempts + 1, next_at = @nextAt, lease_owner = NULL, lease_until = NULL,
                                last_status = @status, last_error = @error, updated_at = @now
    WHERE event_id = @eventId AND endpoint_id = @endpointId AND lease_owner = @owner AND state = 'pending'`),
  deliveries: query<{ endpointId: string; before: number; limit: number }, DeliveryRow>(`
    SELECT ${DELIVERY_COLUMNS} FROM event_deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.endpoint_id = @endpointId AND d.created_at < @before
    ORDER BY d.created_at DESC, d.event_id DESC LIMIT @limit`),
  backlog: query<{}, { pending: bigint | number; oldest: bigint | null; failed: bigint | number | null }>(`
    SELECT SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending,
           MIN(CASE WHEN state = 'pending' THEN created_at END) AS oldest,
           SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS failed
    FROM event_deliveries`),
  pruneDeliveries: command<{ before: number }>(`DELETE FROM event_deliveries WHERE state <> 'pending' AND updated_at < @before`),
  pruneEvents: command<{ before: number }>(`
    DELETE FROM events WHERE created_at < @before
      AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_id = events.id)`),
};
