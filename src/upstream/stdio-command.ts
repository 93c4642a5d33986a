/**
 * A stdio server's command as turnpike reads it: the `NAME=value` words it may start with (how a
 * stdio server is given its credentials) and the program with its arguments. Apart from the bridge,
 * so what prints a command (banners, `turnpike config`) loads nothing else.
 */

/** A shell assignment with a plain value (no quotes, variables or operators), as may lead a command. */
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=[^\s|&;<>()$`\\"'*?[\]{}~#!]*$/;

/**
 * The `NAME=value` words a command starts with (how a stdio server is given its environment: the
 * child inherits only HOME, LOGNAME, PATH, SHELL, TERM and USER), and the command after them.
 *
 * @example splitAssignments('TOKEN=abc npx -y server ./docs') // { assignments: ['TOKEN=abc'], rest: 'npx -y server ./docs' }
 */
export function splitAssignments(command: string): { assignments: string[]; rest: string } {
  const assignments: string[] = [];
  let rest = command.trimStart();
  for (;;) {
    const word = /^\S+/.exec(rest)?.[0];
    if (word === undefined || !ASSIGNMENT.test(word) || rest.length === word.length) return { assignments, rest };
    assignments.push(word);
    rest = rest.slice(word.length).trimStart();
  }
}

/**
 * A command as it may be shown (logs, start-up banners, `turnpike config`): its leading
 * assignments' values redacted, the rest as written.
 *
 * @example shownCommand('GITHUB_TOKEN=ghp_x npx -y server') // 'GITHUB_TOKEN=[redacted] npx -y server'
 */
export function shownCommand(command: string): string {
  const { assignments, rest } = splitAssignments(command);
  return `${assignments.map((a) => `${a.slice(0, a.indexOf('='))}=[redacted] `).join('')}${rest}`;
}
