import { type Command, type CommandIO, UsageError, commandHelp, parseFlags } from './command.js';
import { commands } from './commands/index.js';
import { describeFailure } from './failure.js';

const usage = () =>
  [
    'turnpike — x402 payment facilitator and paying proxy for MCP servers',
    '',
    'usage: turnpike <command> [flags]',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(12)}${c.summary}`),
    '',
    'Run `turnpike <command> --help` for its flags.',
    '',
  ].join('\n');

/**
 * Runs one CLI invocation and returns the process exit code: 0 done, 1 failed, 2 bad usage or
 * configuration. Never throws, never prints a stack trace (set TURNPIKE_DEBUG=1 for one).
 */
export async function run(argv: string[], io: CommandIO = process): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const command: Command | undefined = commands.find((c) => c.name === name);
  if (!command) {
    io.stderr.write(`turnpike: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(commandHelp(command));
    return 0;
  }
  try {
    const flags = parseFlags(command, rest);
    return (await command.run(flags, io)) ?? 0;
  } catch (error) {
    const failure = describeFailure(error);
    io.stderr.write(`turnpike ${command.name}: ${failure.message}\n`);
    if (error instanceof UsageError) io.stderr.write(`\nRun \`turnpike ${command.name} --help\` for usage.\n`);
    if (process.env.TURNPIKE_DEBUG && error instanceof Error) io.stderr.write(`${error.stack}\n`);
    return failure.exitCode;
  }
}
