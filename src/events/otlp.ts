import type { ClaimedDelivery } from '../store/events/events.js';

const text = (key: string, value: string) => ({ key, value: { stringValue: value } });

/**
 * One event as an OTLP/HTTP JSON logs export (`POST <url>`, the collector's `/v1/logs`): a log
 * record named by the event type, its JSON as the body, and its id, server and tool as attributes.
 */
export function otlpLogs(delivery: Pick<ClaimedDelivery, 'eventId' | 'type' | 'payload' | 'eventAt'>): string {
  const event = JSON.parse(delivery.payload) as { server?: { id: string; slug: string }; tool?: string };
  const nanos = `${BigInt(delivery.eventAt) * 1_000_000n}`;
  return JSON.stringify({
    resourceLogs: [
      {
        resource: { attributes: [text('service.name', 'turnpike')] },
        scopeLogs: [
          {
            scope: { name: 'turnpike.events' },
            logRecords: [
              {
                timeUnixNano: nanos,
                observedTimeUnixNano: `${BigInt(Date.now()) * 1_000_000n}`,
                severityNumber: 9,
                severityText: 'INFO',
                eventName: delivery.type,
                body: { stringValue: delivery.payload },
                attributes: [
                  text('event.id', delivery.eventId),
                  text('event.name', delivery.type),
                  ...(event.server ? [text('turnpike.server.id', event.server.id), text('turnpike.server.slug', event.server.slug)] : []),
                  ...(event.tool !== undefined ? [text('turnpike.tool', event.tool)] : []),
                ],
              },
            ],
          },
        ],
      },
    ],
  });
}
