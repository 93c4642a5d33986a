import { BaseError } from '../errors.js';

/** One thing wrong with the configuration, said where it came from. */
export type ConfigProblem = { path: string; source: string; message: string };

/**
 * The configuration cannot be used. Carries every problem at once, so one run shows all of them.
 *
 * @example
 * try { loadConfig({ file }) } catch (e) { if (e instanceof ConfigError) console.error(e.format()) }
 */
export class ConfigError extends BaseError<'config_invalid'> {
  override name = 'ConfigError';
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map((p) => `${p.path}: ${p.message}`).join('; '), { code: 'config_invalid' });
  }

  /** One line per problem, then where to read about the settings. */
  format(): string {
    const width = Math.min(32, Math.max(...this.problems.map((p) => p.path.length)));
    return [
      `invalid configuration (${this.problems.length} problem${this.problems.length === 1 ? '' : 's'}):`,
      ...this.problems.map((p) => `  ${p.path.padEnd(width)}  ${p.message}  [${p.source}]`),
      'See `turnpike <command> --help` and README.md → Configuration.',
    ].join('\n');
  }
}
