import { z } from 'zod';
import { loadConfig } from '../../config/load.js';
import { loadSecrets } from '../../config/secrets.js';
import { createCredits, newKeySchema, publicEntry, publicKey, type statusAfter, topupSchema } from '../../rails/credits/credits.js';
import { DomainError } from '../../errors.js';
import { newId } from '../../store/ids.js';
import { openStore } from '../../store/open.js';
import { UsageError, defineCommand } from '../command.js';

const statusActions = ['suspend', 'resume', 'revoke'] as const satisfies (keyof typeof statusAfter)[];
const actions = ['create', 'list', 'show', 'ledger', 'topup', ...statusActions] as const;
const list = z.array(z.string()).optional();

export const keysCommand = defineCommand({
  name: 'keys',
  summary: 'manage credits API keys on this instance’s store (the admin API’s operations, offline)',
  details:
    'Exactly one action:\n' +
    '  turnpike keys --create NAME [--usd 5.00] [--daily-limit USD] [--lifetime-limit USD] [--expires ISO-TIME] [--server SLUG] [--tool NAME]\n' +
    '  turnpike keys --list | --show KEY_ID | --ledger KEY_ID\n' +
    '  turnpike keys --topup KEY_ID --usd 5.00 [--reason TEXT] [--idempotency-key K]\n' +
    '  turnpike keys --suspend KEY_ID | --resume KEY_ID | --revoke KEY_ID\n' +
    'Prints JSON. A created key’s secret is printed once and stored only as a hash.',
  flags: {
    create: { type: 'string', value: 'NAME', description: 'create a key with this name' },
    list: { type: 'boolean', description: 'list every key' },
    show: { type: 'string', value: 'KEY_ID', description: 'one key' },
    ledger: { type: 'string', value: 'KEY_ID', description: 'a key’s latest ledger entries' },
    topup: { type: 'string', value: 'KEY_ID', description: 'credit a key (with --usd)' },
    suspend: { type: 'string', value: 'KEY_ID', description: 'stop a key spending until resumed' },
    resume: { type: 'string', value: 'KEY_ID', description: 'let a suspended key spend again' },
    revoke: { type: 'string', value: 'KEY_ID', description: 'end a key for good' },
    usd: { type: 'string', value: 'USD', description: 'amount: initial balance with --create, credit with --topup' },
    'daily-limit': { type: 'string', value: 'USD', description: 'most the key may spend per UTC day' },
    'lifetime-limit': { type: 'string', value: 'USD', description: 'most the key may ever spend' },
    expires: { type: 'string', value: 'ISO-TIME', description: 'when the key stops working, e.g. 2027-01-01T00:00:00Z' },
    server: { type: 'string', multiple: true, value: 'SLUG', description: 'limit the key to this server' },
    tool: { type: 'string', multiple: true, value: 'NAME', description: 'limit the key to this tool' },
    reason: { type: 'string', value: 'TEXT', description: 'ledger reason for --topup' },
    'idempotency-key': { type: 'string', value: 'K', description: 'makes a --topup happen once however often it is run' },
    config: { type: 'string', short: 'c', value: 'FILE', description: 'configuration file (finds the store)' },
    'data-dir': { type: 'string', value: 'DIR', description: 'state directory (default .turnpike)' },
  },
  schema: z.strictObject({
    create: z.string().optional(),
    list: z.boolean().optional(),
    show: z.string().optional(),
    ledger: z.string().optional(),
    topup: z.string().optional(),
    suspend: z.string().optional(),
    resume: z.string().optional(),
    revoke: z.string().optional(),
    usd: z.string().optional(),
    'daily-limit': z.string().optional(),
    'lifetime-limit': z.string().optional(),
    expires: z.string().optional(),
    server: list,
    tool: list,
    reason: z.string().optional(),
    'idempotency-key': z.string().optional(),
    config: z.string().optional(),
    'data-dir': z.string().optional(),
  }),
  async run(flags, io) {
    const chosen = actions.filter((a) => flags[a] !== undefined);
    if (chosen.length !== 1) throw new UsageError(`give exactly one of ${actions.map((a) => `--${a}`).join(', ')}`);
    const config = loadConfig({ file: flags.config, overrides: { dataDir: flags['data-dir'] } });
    const store = await openStore(config.store.url!);
    const credits = createCredits({ store, tokenSecret: loadSecrets().tokenSecret ?? (await store.instanceSecret('budget-tokens')) });
    const print = (value: unknown) => io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    // The same schemas as the admin API: a bad flag is reported under its flag name.
    const parse = <S extends z.ZodType>(schema: S, input: unknown, flagOf: Record<string, string>): z.output<S> => {
      const parsed = schema.safeParse(input);
      if (parsed.success) return parsed.data;
      throw new UsageError(parsed.error.issues.map((i) => `--${flagOf[String(i.path[0])] ?? String(i.path[0])}: ${i.message}`).join('\n'));
    };
    try {
      const action = chosen[0]!;
      if (action === 'create') {
        const scope =
          flags.server || flags.tool
            ? { ...(flags.server ? { servers: flags.server } : {}), ...(flags.tool ? { tools: flags.tool } : {}) }
            : undefined;
        const { usd, ...input } = parse(
          newKeySchema,
          {
            name: flags.create,
            usd: flags.usd,
            scope,
            expiresAt: flags.expires,
            dailyLimitUsd: flags['daily-limit'],
            lifetimeLimitUsd: flags['lifetime-limit'],
          },
          { name: 'create', expiresAt: 'expires', dailyLimitUsd: 'daily-limit', lifetimeLimitUsd: 'lifetime-limit', scope: 'tool' },
        );
        const { secret, key } = await credits.createKey(
          input,
          usd ? { amount: usd, reason: 'initial balance', idempotencyKey: newId('create') } : undefined,
        );
        print({ ...publicKey(key), key: secret, note: 'store the key now: it is not shown again' });
      } else if (action === 'list') {
        print({ keys: (await store.credits.keys()).map(publicKey) });
      } else if (action === 'show') {
        print(publicKey(await credits.keyById(flags.show!)));
      } else if (action === 'ledger') {
        const key = await credits.keyById(flags.ledger!);
        print({ entries: (await store.credits.history(key.id, { limit: 50 })).map(publicEntry) });
      } else if (action === 'topup') {
        const input = parse(
          topupSchema,
          { usd: flags.usd, reason: flags.reason, idempotencyKey: flags['idempotency-key'] ?? newId('cli') },
          {},
        );
        const credited = await credits.topUp(flags.topup!, input);
        print({ applied: credited.applied, entry: publicEntry(credited.entry), balance: credited.balance.toString() });
      } else {
        print(publicKey(await credits.changeStatus(flags[action]!, action as (typeof statusActions)[number])));
      }
    } catch (error) {
      if (error instanceof DomainError) {
        io.stderr.write(`turnpike keys: ${error.message}\n`);
        return 1;
      }
      throw error;
    } finally {
      await store.close();
    }
  },
});
