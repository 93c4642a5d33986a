import { z } from 'zod';
import { configVariables, loadConfig } from '../../config/load.js';
import { defineCommand } from '../command.js';
import { shownCommand } from '../../upstream/stdio-command.js';
import { shownSetting } from '../../log/shown-url.js';

export const configCommand = defineCommand({
  name: 'config',
  summary: 'check a configuration and print the effective settings (or the variables that set them)',
  details:
    'Settings come from, lowest first: defaults, the --config file (YAML or JSON), TURNPIKE_* variables, flags.\n' +
    'Secrets never come from the file: see README → Secrets.',
  flags: {
    config: { type: 'string', short: 'c', value: 'FILE', description: 'configuration file (YAML or JSON)' },
    variables: { type: 'boolean', description: 'list every setting with its environment variable instead' },
  },
  schema: z.strictObject({ config: z.string().optional(), variables: z.boolean().default(false) }),
  async run(flags, io) {
    if (flags.variables) {
      // Columns as wide as their longest entry plus two spaces, so no name runs into the next.
      const variables = configVariables();
      const width = (pick: (v: (typeof variables)[number]) => string) => Math.max(...variables.map((v) => pick(v).length)) + 2;
      const envWidth = width((v) => v.env);
      const pathWidth = width((v) => v.path);
      for (const v of variables) io.stdout.write(`${v.env.padEnd(envWidth)}${v.path.padEnd(pathWidth)}${v.description}\n`);
      return;
    }
    // Prices are atomic units (bigint); they print as decimal strings. A stdio command's leading
    // assignments are its server's credentials: shown by name only. So are the credentials of any
    // URL (an RPC node's key, the store's password, an upstream's or a webhook's token).
    const replacer = (key: string, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (key === 'stdio' && typeof v === 'string') return shownCommand(v);
      return shownSetting(v);
    };
    io.stdout.write(`${JSON.stringify(loadConfig({ file: flags.config }), replacer, 2)}\n`);
  },
});
