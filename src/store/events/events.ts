/**
 * The events outbox: every call the gateway handles (and every notification) as an event row,
 * written in the transaction that records the call, and one delivery row per endpoint it goes to,
 * which the delivery worker claims with a lease, sends, and finishes (delivered, retried later, or
 * given up). An event's id never changes: every delivery and retry of it carries the same one.
 */
export type EndpointKind = 'webhook' | 'otlp';

export type NewEvent = {
  /** Unique; an event recorded twice under one id (a notification that fires once) is kept once. */
  id: string;
  /** The operator whose server it concerns; absent for the instance's own (configured) servers. */
  operatorId?: string;
  type: string;
  /** The JSON every endpoint is sent, as it is signed. */
  payload: string;
  createdAt: number;
};

/**
 * Where events go. An endpoint with no `operatorId` is the instance's own (the config file's
 * `events`): it gets every event; an operator's gets the events of that operator's servers.
 */
export type EventEndpoint = {
  id: string;
  operatorId?: string;
  kind: EndpointKind;
  url: string;
  /** An operator's webhook signing secret, sealed (see `secret-box`); the instance's come from its environment. */
  sealedSecret?: string;
  createdAt: number;
};

export type DeliveryState = 'pending' | 'delivered' | 'failed';
/** One event on its way to one endpoint: the delivery log. `attempts` counts the attempts that finished. */
export type Delivery = {
  eventId: string;
  endpointId: string;
  type: string;
  state: DeliveryState;
  attempts: number;
  nextAt: number;
  lastStatus?: number;
  lastError?: string;
  createdAt: number;
  updatedAt: number;
};
/** A delivery claimed by this instance (until `leaseUntil`), with what it sends and where. */
export type ClaimedDelivery = Delivery & { payload: string; eventAt: number; endpoint: EventEndpoint; leaseUntil: number };

/** How an attempt ended: delivered, to be tried again at `retryAt`, or given up (no `retryAt`). */
export type AttemptOutcome = { delivered: true; status: number } | { delivered: false; status?: number; error: string; retryAt?: number };

export interface EventStore {
  /** Appends events with a pending delivery to each live endpoint they go to; an id already recorded changes nothing. */
  record(events: NewEvent[]): Promise<void>;
  /**
   * Adds an endpoint; with `max`, an operator's only while they have fewer live ones (counted with
   * their operator row locked, so adds at once cannot pass it together): false when they have `max`.
   */
  addEndpoint(endpoint: EventEndpoint, max?: number): Promise<boolean>;
  /** Makes the instance's own endpoints (no operator) exactly these; the ids are stable for a kind and URL. */
  setInstanceEndpoints(endpoints: Omit<EventEndpoint, 'operatorId' | 'sealedSecret'>[]): Promise<void>;
  /** The live endpoints of an operator, or the instance's own (null). */
  endpoints(operatorId: string | null): Promise<EventEndpoint[]>;
  endpoint(id: string): Promise<EventEndpoint | undefined>;
  /** Deletes an operator's endpoint (false if it has none of that id); its pending deliveries are given up. */
  deleteEndpoint(id: string, operatorId: string): Promise<boolean>;
  /** The owners of live endpoints (null: the instance's own): whose events are worth recording. */
  endpointOwners(): Promise<(string | null)[]>;
  /** Whether any delivery is due at `now`: a read, so an idle worker takes no write lock to find nothing. */
  due(now: number): Promise<boolean>;
  /**
   * Claims up to `limit` due deliveries for `owner` until `now + leaseMs`: a delivery is claimed by
   * one instance at a time, and claimed again only once the lease has run out (its holder died).
   * Fair between endpoints: none with a delivery in flight (leased) is claimed from, at most
   * `perEndpoint` (default `limit`) of one endpoint are taken, and endpoints take turns.
   */
  claim(owner: string, now: number, leaseMs: number, limit: number, perEndpoint?: number): Promise<ClaimedDelivery[]>;
  /** The instances holding leases on pending deliveries at `now`. */
  leaseOwners(now: number): Promise<string[]>;
  /** Gives back the leases `owner` holds on pending deliveries (it died): they are claimable at once. */
  releaseLeases(owner: string): Promise<number>;
  /** Records how an attempt ended, if `owner` still holds its lease; says whether it did. */
  finish(delivery: { eventId: string; endpointId: string }, owner: string, outcome: AttemptOutcome): Promise<boolean>;
  /** An endpoint's delivery log, newest first. */
  deliveries(endpointId: string, page: { limit: number; before?: number }): Promise<Delivery[]>;
  /** Deliveries not yet made (pending) and the creation time of the oldest; given-up deliveries. */
  backlog(): Promise<{ pending: number; oldestAt?: number; failed: number }>;
  /** Forgets finished deliveries, and events with none left, created before `before`. */
  prune(before: number): Promise<void>;
}
