import { parseArgs } from 'node:util';
import type { z } from 'zod';

/** One command-line flag: how it parses and how `--help` describes it. */
export type Flag = {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Placeholder shown in help, e.g. `URL`. */
  value?: string;
  description: string;
};

export type Command<S extends z.ZodType = z.ZodType> = {
  name: string;
  summary: string;
  /** Extra lines shown under the usage line (examples, notes). */
  details?: string;
  flags: Record<string, Flag>;
  /** Validates the parsed flags (strings and booleans, keyed by flag name). */
  schema: S;
  // biome-ignore lint/suspicious/noConfusingVoidType: a command may end without an exit code (then 0)
  run(flags: z.infer<S>, io: CommandIO): Promise<number | void>;
};

export type CommandIO = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };

/** Typed identity: lets `run` see the schema's output type. */
export const defineCommand = <S extends z.ZodType>(command: Command<S>): Command<S> => command;

/** Bad usage: unknown flag, bad value. Exit code 2, the message says what was wrong. */
export class UsageError extends Error {
  override name = 'UsageError';
  constructor(
    message: string,
    readonly problems: string[] = [message],
  ) {
    super(message);
  }
}

/**
 * Parses argv for a command: unknown flags and bad values become one UsageError listing every
 * problem, each under the flag's own name.
 */
export function parseFlags<S extends z.ZodType>(command: Command<S>, argv: string[]): z.infer<S> {
  let values: Record<string, unknown>;
  try {
    const options = Object.fromEntries(
      Object.entries(command.flags).map(([name, { type, short, multiple }]) => [
        name,
        { type, multiple: multiple ?? false, ...(short ? { short } : {}) },
      ]),
    );
    ({ values } = parseArgs({ args: withDashValues(command, argv), options, strict: true, allowPositionals: false }));
  } catch (error) {
    const ambiguous = /^Option '(?:-\w, )?(--[\w-]+)(?: <value>)?' argument is ambiguous/.exec((error as Error).message);
    if (ambiguous) throw new UsageError(`${ambiguous[1]}: missing its value (the next argument is a flag)`);
    // node's messages run on with advice for its own API; the first line is the part about argv.
    throw new UsageError((error instanceof Error ? error.message : String(error)).split('\n')[0]!);
  }
  const parsed = command.schema.safeParse(values);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const [name, index] = issue.path;
    const flag = name === undefined ? 'flags' : `--${String(name)}`;
    const value = name === undefined ? undefined : values[String(name)];
    // A repeatable flag's problem is about one of its values.
    const got = Array.isArray(value) && typeof index === 'number' ? value[index] : value;
    return `${flag}: ${issue.message}${got === undefined ? '' : ` (got ${JSON.stringify(got)})`}`;
  });
  throw new UsageError(problems.join('\n'), problems);
}

/**
 * argv with a value that starts with a dash joined to its string flag, as node's parseArgs wants it
 * written, so the schema judges the value by the flag's name instead of parseArgs calling it
 * ambiguous. A value that is itself one of the command's flags is left alone: that flag's value is missing.
 *
 * @example withDashValues(wrap, ['--price', '-1']) // ['--price=-1'], then "--price: … (got "-1")"
 */
function withDashValues(command: Command, argv: string[]): string[] {
  const flags = Object.entries(command.flags);
  const names = (name: string, f: Flag, arg: string) => arg === `--${name}` || (f.short !== undefined && arg === `-${f.short}`);
  const isFlag = (arg: string) =>
    ['--', '-h', '--help'].includes(arg) || flags.some(([name, f]) => names(name, f, arg) || arg.startsWith(`--${name}=`));
  const takesValue = (arg: string) => flags.some(([name, f]) => f.type === 'string' && names(name, f, arg));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const [arg, next] = [argv[i]!, argv[i + 1]];
    if (takesValue(arg) && next?.startsWith('-') && !isFlag(next)) {
      out.push(arg.startsWith('--') ? `${arg}=${next}` : `${arg}${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

/** `turnpike <name> --help` text, generated from the flag table so it cannot drift. */
export function commandHelp(command: Command): string {
  const rows = Object.entries(command.flags).map(([name, f]) => {
    const left = `${f.short ? `-${f.short}, ` : '    '}--${name}${f.value ? ` ${f.value}` : ''}`;
    return [left, f.description + (f.multiple ? ' (repeatable)' : '')] as const;
  });
  rows.push(['-h, --help', 'show this help']);
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  return [
    `turnpike ${command.name} — ${command.summary}`,
    '',
    `usage: turnpike ${command.name} [flags]`,
    ...(command.details ? ['', command.details] : []),
    '',
    'flags:',
    ...rows.map(([left, right]) => `  ${left.padEnd(width)}${right}`),
    '',
  ].join('\n');
}
