import { z } from 'zod';

/**
 * How the process logs, as the config file's `log` section says it.
 *
 * @example logSettingsSchema.parse({}) // { level: 'info', format: 'auto' }
 */
export const logSettingsSchema = z.strictObject({
  level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('least severe level written'),
  format: z.enum(['auto', 'json', 'pretty']).default('auto').describe('`auto` is pretty on a terminal and JSON otherwise'),
});

export type LogSettings = z.output<typeof logSettingsSchema>;
