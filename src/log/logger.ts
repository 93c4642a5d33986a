import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';
import type { LogSettings } from './settings.js';

/** Every secret turnpike reads (`loadSecrets`) by its own name, and the usual names of others. */
const SECRET_KEYS = [
  'privateKey',
  'relayerKey',
  'relayerKeys',
  'treasuryKey',
  'adminKey',
  'apiKey',
  'facilitatorKeys',
  'remoteFacilitatorKey',
  'secretsKey',
  'tokenSecret',
  'stripeSecretKey',
  'stripeWebhookSecret',
  'webhookSecret',
  'cdpApiKeySecret',
  'secret',
  'password',
  'signature',
  'mnemonic',
];
/** In lower case (Node's) and as callers and operators spell them (`headersFromEnv: { Authorization: … }`). */
const SECRET_HEADERS = ['authorization', 'x-api-key', 'payment-signature', 'x-payment', 'cookie', 'set-cookie', 'stripe-signature'].flatMap(
  (h) => [h, h.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase()), h.toUpperCase()],
);

/**
 * Paths pino censors. Secret keys at the top and up to three levels down, plus the request
 * headers that carry credentials or a signed payment. Extend it, don't fork it.
 */
export const REDACT_PATHS: string[] = [
  ...SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`, `*.*.*.${k}`]),
  ...SECRET_HEADERS.flatMap((h) => [`headers["${h}"]`, `*.headers["${h}"]`, `*.*.headers["${h}"]`]),
];

/**
 * The process logger: JSON lines by default, human-readable on a terminal (`format: 'auto'`).
 *
 * @example
 * const log = createLogger(config.log);
 * log.info({ network: 'base' }, 'listening');
 */
export function createLogger(options: LogSettings, destination?: DestinationStream): Logger {
  const redact = { paths: REDACT_PATHS, censor: '[redacted]' };
  const usePretty = options.format === 'pretty' || (options.format === 'auto' && !destination && process.stdout.isTTY);
  const stream = destination ?? (usePretty ? pretty()({ sync: true, colorize: true }) : pino.destination(1));
  return pino({ level: options.level, redact, base: undefined }, stream);
}

/** pino-pretty, loaded only by a process that logs for a terminal: a JSON-logging server does not hold it in memory. */
const pretty = () => createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
