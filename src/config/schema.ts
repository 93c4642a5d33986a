import { slugSchema } from '../pricing/slug.js';
import { z } from 'zod';
import { networkNames } from '../chain/networks.js';
import { planSchema } from '../pricing/plans.js';
import { logSettingsSchema } from '../log/settings.js';
import { oauthSettingsSchema } from '../oauth/settings.js';
import { challengeBindings } from '../gateway/payment-required.js';
import { usdPrice } from '../pricing/pricing.js';
import { UPSTREAM_CONNECTIONS, operatorMaySet } from '../upstream/upstream.js';
import { settlementModes } from '../facilitator/port.js';
import proxyAddr from 'proxy-addr';

/**
 * The reverse proxies whose `X-Forwarded-For` is believed, as `http.trustedProxies` spells them
 * (comma-separated addresses, CIDRs, or proxy-addr's names `loopback`, `linklocal`,
 * `uniquelocal`): the list, or why it is not one.
 *
 * @example proxyList('loopback, 10.0.0.0/8') // { ok: true, list: ['loopback', '10.0.0.0/8'] }
 * @example proxyList('10.0.0.300') // { ok: false, message: 'invalid IP address: 10.0.0.300' }
 */
function proxyList(setting: string): { ok: true; list: string[] } | { ok: false; message: string } {
  const list = setting
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  try {
    proxyAddr.compile(list);
    return { ok: true, list };
  } catch (error) {
    return { ok: false, message: (error as Error).message };
  }
}

const url = (protocols: RegExp) => z.url({ protocol: protocols, error: 'expected a URL (http, https, ws or wss)' });

/**
 * The configuration file and its environment overrides, in one schema. Every leaf can be set by
 * `TURNPIKE_<PATH>` (see `envVarName`). Secrets are not here: they come from the environment
 * (see `secrets.ts`), so a config file can be committed and shared.
 */
export const configSchema = z.strictObject({
  network: z
    .enum(networkNames)
    .default('local')
    .describe('chain to settle on; `local` starts the embedded sandbox (chain id 8453) unless rpcUrl is set'),
  rpcUrl: url(/^(https?|wss?)$/)
    .optional()
    .describe('JSON-RPC endpoint; any node whose chain id matches the network is accepted'),
  dataDir: z.string().min(1).default('.turnpike').describe('directory for the SQLite database and other state'),
  http: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1').describe('interface to listen on'),
      port: z.number().int().min(0).max(65535).default(3402).describe('port to listen on (0 = any free port)'),
      bodyLimitBytes: z.number().int().positive().default(1_048_576).describe('largest request body accepted'),
      upstreamConnections: z
        .number()
        .int()
        .min(1)
        .max(10_000)
        .default(UPSTREAM_CONNECTIONS)
        .describe('connections kept open to one upstream origin at most; more requests wait for one'),
      trustedProxies: z
        .string()
        .default('')
        .superRefine((setting, ctx) => {
          const parsed = proxyList(setting);
          if (!parsed.ok)
            ctx.addIssue({ code: 'custom', message: `${parsed.message}: expected addresses, CIDRs, loopback, linklocal or uniquelocal` });
        })
        .describe(
          'reverse proxies in front of turnpike whose X-Forwarded-For names the caller (comma-separated addresses, CIDRs, ' +
            'or loopback, linklocal, uniquelocal); none by default. Set it when callers reach turnpike only through a proxy: ' +
            'otherwise each of them is that proxy (one failure throttle, one stdio session bound, one network for kept results)',
        ),
    })
    .prefault({}),
  log: logSettingsSchema.prefault({}),
  store: z
    .strictObject({
      url: z
        .string()
        .regex(/^(sqlite:|postgres(ql)?:\/\/)/, 'expected sqlite:<path> or postgres://user:password@host:port/database')
        .optional()
        .describe(
          'database URL, `sqlite:<path>` or `postgres://…` (several instances may share one); default sqlite:<dataDir>/turnpike.db',
        ),
    })
    .prefault({}),
  stdio: z
    .strictObject({
      maxSessions: z
        .number()
        .int()
        .positive()
        .default(32)
        .describe('sessions (child processes) one stdio server runs at once, all callers together; past it `initialize` gets 503'),
      maxSessionsPerClient: z
        .number()
        .int()
        .positive()
        .default(4)
        .describe('sessions one caller (an IPv4 address, an IPv6 /64) may hold on one stdio server; past it `initialize` gets 429'),
      idleSeconds: z
        .number()
        .positive()
        .max(86_400)
        .default(300)
        .describe(
          'a stdio session its caller has not used for this long (no message of theirs, no answer or progress to one; what the server says on its own does not count) is ended and its process stopped',
        ),
    })
    .prefault({}),
  servers: z
    .array(
      z
        .strictObject({
          slug: slugSchema.describe('served at /mcp/<slug>'),
          upstream: url(/^https?$/)
            .optional()
            .describe('the MCP server’s Streamable HTTP endpoint'),
          stdio: z.string().min(1).optional().describe('or a stdio MCP server command, one process per session'),
          payTo: z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x address'),
          price: usdPrice.default(10_000n).describe('USD price of every tool not named in `tools`'),
          tools: z.record(z.string().min(1), usdPrice).default({}),
          free: z.array(z.string().min(1)).default([]),
          plan: planSchema
            .optional()
            .describe(
              'instead of price/tools/free: a plan (per_call with freeCallsPerMonth, tiered, subscription), as the operator API takes it',
            ),
          challenge: z
            .enum(challengeBindings)
            .default('tool-result')
            .describe('`tool-result` (a tool result, isError), `http-402` (HTTP 402: v2 header, v1 body) or `jsonrpc-error` (error 402)'),
          x402Version: z
            .union([z.literal(1), z.literal(2)])
            .default(2)
            .describe('x402 version of `tool-result` and `jsonrpc-error` challenges: 1 for v1-only clients (x402-mcp); http-402 has both'),
          timeoutSeconds: z.number().positive().max(3600).default(60),
          settlement: z
            .enum(settlementModes)
            .default('strict')
            .describe(
              'x402 results leave `strict`ly after the settlement is mined, or `deferred` once its transaction is signed and journalled ' +
                '(within facilitator.maxDeferredPerPayerUsd; facilitator.mode self only)',
            ),
          /** Upstream credentials by environment variable name: secrets stay out of the file. */
          headersFromEnv: z
            .record(z.string().regex(/^[A-Za-z0-9-]+$/), z.string().regex(/^[A-Z_][A-Z0-9_]*$/))
            .superRefine((headers, ctx) => {
              for (const name of Object.keys(headers).filter((n) => !operatorMaySet(n)))
                ctx.addIssue({
                  code: 'custom',
                  path: [name],
                  message: `${name} describes a hop or is written by turnpike itself; it cannot be set for the upstream`,
                });
            })
            .default({}),
          oauth: oauthSettingsSchema.optional(),
        })
        .refine((s) => (s.upstream === undefined) !== (s.stdio === undefined), 'give exactly one of upstream and stdio'),
    )
    .default([])
    .describe('MCP servers for `turnpike serve` (file only)'),
  credits: z
    .strictObject({
      enabled: z.boolean().default(true).describe('accept API keys and budget tokens on paid calls (the credits rail)'),
      publicUrl: url(/^https?$/)
        .optional()
        .describe('base URL callers reach this gateway at, for Stripe Checkout redirects; default the listening URL'),
      payTo: z
        .string()
        .regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x address')
        .optional()
        .describe('who receives USDC top-ups (POST /credits/topup); default the first server’s payTo'),
      topupMinUsd: usdPrice.default(1_000_000n).describe('smallest USDC top-up, USD'),
      topupMaxUsd: usdPrice.default(1_000_000_000n).describe('largest USDC top-up, USD'),
      packages: z
        .record(
          z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'expected lower-case letters, digits and dashes'),
          z.strictObject({
            priceUsd: usdPrice.refine((v) => v > 0n && v % 10_000n === 0n, 'a Stripe price is whole cents above zero'),
            creditsUsd: usdPrice.refine((v) => v > 0n, 'expected credits above zero'),
          }),
        )
        .default({ '10': { priceUsd: 10_000_000n, creditsUsd: 10_000_000n }, '50': { priceUsd: 50_000_000n, creditsUsd: 50_000_000n } })
        .describe('credit packages sold through Stripe Checkout, by id'),
      rateLimitPerMinute: z
        .number()
        .int()
        .min(0)
        .max(1_000_000)
        .default(0)
        .describe('paid calls one API key (with its budget tokens) may make per minute, on all instances together; 0 = no limit'),
      stripeApiUrl: url(/^https?$/)
        .optional()
        .describe('a Stripe-compatible API (e.g. stripe-mock) instead of api.stripe.com'),
    })
    .prefault({}),
  postpaid: z
    .strictObject({
      reportIntervalSeconds: z
        .number()
        .int()
        .min(1)
        .max(3600)
        .default(60)
        .describe(
          'how often post-paid usage is reported to Stripe’s Billing Meters; /health is degraded when usage waits more than two intervals',
        ),
      reportBatchSize: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(100)
        .describe('usage entries read (and meter events sent at once) per batch of a report'),
    })
    .prefault({}),
  operators: z
    .strictObject({
      registration: z
        .enum(['admin', 'open'])
        .default('admin')
        .describe('`admin`: operators are created with the admin key; `open`: anyone may register at POST /operators'),
      takeRateBps: z.number().int().min(0).max(10_000).default(0).describe('the platform’s share of every charge, in basis points'),
      treasury: z
        .string()
        .regex(/^0x[0-9a-fA-F]{40}$/, 'expected a 0x address')
        .optional()
        .describe('payee of platform-custody servers; default the address of TURNPIKE_TREASURY_KEY (locally, the sandbox treasury)'),
      minWithdrawalUsd: usdPrice.default(1_000_000n).describe('smallest USDC withdrawal, USD'),
      minPayoutUsd: usdPrice.default(1_000_000n).describe('smallest Stripe Connect payout, USD'),
      allowPrivateUpstreams: z
        .boolean()
        .default(false)
        .describe('let operators register upstreams on loopback, private and link-local addresses (SSRF protection off)'),
    })
    .prefault({}),
  events: z
    .strictObject({
      endpoints: z
        .array(
          z.strictObject({
            url: url(/^https?$/),
            /** The signing secret by environment variable name: secrets stay out of the file. */
            secretFromEnv: z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'expected an environment variable name'),
          }),
        )
        .max(10)
        .default([])
        .describe('webhooks sent every event of this instance, signed with the secret in the named environment variable (file only)'),
      otlp: z
        .strictObject({ url: url(/^https?$/).describe('the OTLP/HTTP logs URL, e.g. http://collector:4318/v1/logs') })
        .optional()
        .describe('every event also as an OpenTelemetry log record (OTLP/HTTP JSON)'),
      retry: z
        .strictObject({
          firstDelayMs: z.number().int().min(10).max(3_600_000).default(1_000).describe('wait before the first retry; doubles each time'),
          maxDelayMs: z.number().int().min(10).max(86_400_000).default(3_600_000).describe('longest wait between retries'),
          maxAttempts: z.number().int().min(1).max(100).default(20).describe('attempts before a delivery is given up'),
        })
        .prefault({}),
      unpaid: z
        .strictObject({
          perWindow: z
            .number()
            .int()
            .min(1)
            .max(100_000)
            .default(60)
            .describe('call.challenged and call.refused events of a server sent one by one per window'),
          windowSeconds: z
            .number()
            .int()
            .min(1)
            .max(3_600)
            .default(60)
            .describe('the window; the rest of its challenges and refusals become one calls.suppressed event'),
        })
        .prefault({})
        .describe('bounds the events that callers who neither pay nor authenticate can raise (per server and instance)'),
    })
    .prefault({}),
  facilitator: z
    .strictObject({
      mode: z
        .enum(['self', 'remote', 'cdp'])
        .default('self')
        .describe(
          "how a gateway's x402 payments are verified and settled: `self` with turnpike's relayer keys (and served at /facilitator); " +
            '`remote` by the x402 facilitator at `url` (sent TURNPIKE_REMOTE_FACILITATOR_KEY if set); ' +
            "`cdp` by Coinbase's hosted facilitator (CDP_API_KEY_ID, CDP_API_KEY_SECRET); holds and kept results stay in the local store",
        ),
      url: url(/^https?$/)
        // fetch refuses a URL with credentials, naming it whole in its error, which would reach payers and the log.
        .refine((u) => !/^[a-z]+:\/\/[^/?#]*@/i.test(u), 'a URL cannot carry credentials; send the key as TURNPIKE_REMOTE_FACILITATOR_KEY')
        .optional()
        .describe('the remote facilitator’s base URL (mode `remote`, required); with mode `cdp`, a proxy in front of CDP’s x402 endpoint'),
      minAmountUsd: usdPrice
        .default(1_000n)
        .describe('smallest payment the facilitator API (/verify, /settle) takes, USD; the gateway’s own calls and top-ups may be less'),
      maxValidityOverTimeoutSeconds: z
        .number()
        .int()
        .min(0)
        .max(86_400)
        .optional()
        .describe(
          'opt-in: refuse (validity_too_long) an authorization still valid more than the requirements’ maxTimeoutSeconds plus this many ' +
            'seconds from now; unset, any window is taken, as the reference facilitator does (the official Go client signs for 3600 s)',
        ),
      maxDeferredPerPayerUsd: usdPrice
        .default(1_000_000n)
        .describe(
          'most one payer’s delivered-but-unconfirmed payments (servers with settlement: deferred) may add up to, USD; past it, calls settle strict',
        ),
      maxDeferredTotalUsd: usdPrice
        .default(10_000_000n)
        .describe(
          'most all payers’ delivered-but-unconfirmed payments and uncleared losses together may add up to, USD (a payer may use many ' +
            'addresses); past it, calls settle strict until losses are cleared',
        ),
      failuresPerMinute: z
        .number()
        .int()
        .min(0)
        .max(1_000_000)
        .default(60)
        .describe('refused, invalid or unauthorized facilitator API requests one address may make per minute before 429; 0 = no limit'),
      refusedPaymentsPerMinute: z
        .number()
        .int()
        .min(0)
        .max(1_000_000)
        .default(30)
        .describe(
          'x402 payments to the gateway (paid calls, USDC top-ups) refused after a chain read or a remote facilitator’s answer that one ' +
            'caller network (IPv4 address, IPv6 /64) or one proven payer may make per minute, per instance, before 429; 0 = no limit',
        ),
    })
    .refine((f) => f.mode !== 'remote' || f.url !== undefined, { message: 'facilitator.mode remote needs facilitator.url', path: ['url'] })
    .refine((f) => f.mode !== 'self' || f.url === undefined, {
      message: 'facilitator.url is for modes remote and cdp; mode self settles itself',
      path: ['url'],
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;

/**
 * The proxies `http.trustedProxies` names, as a list (the setting was checked when the config was read).
 *
 * @example trustedProxiesOf(loadConfig({ env: { TURNPIKE_HTTP_TRUSTED_PROXIES: 'loopback, 10.0.0.0/8' } })) // ['loopback', '10.0.0.0/8']
 */
export function trustedProxiesOf(config: Config): string[] {
  const parsed = proxyList(config.http.trustedProxies);
  if (!parsed.ok) throw new Error(`http.trustedProxies: ${parsed.message}`);
  return parsed.list;
}
/** What a config file or the flags may say: everything optional. */
export type ConfigInput = z.input<typeof configSchema>;
