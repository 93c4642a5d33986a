import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import {
  type JSONRPCMessage,
  isInitializeRequest,
  isJSONRPCErrorResponse,
  isJSONRPCResultResponse,
} from '@modelcontextprotocol/sdk/types.js';
import { type Context, Hono } from 'hono';
import { clientAddress } from '../http/caller.js';
import { type Listening, listen } from '../http/listen.js';
import { CALLER_HEADER } from './upstream.js';
import { networkOf } from './caller-network.js';
import { shownCommand, splitAssignments } from './stdio-command.js';

/** How much one bridge may run: its sessions are child processes, started for anyone who sends `initialize`. */
export type StdioLimits = {
  /** Sessions (child processes) at once, all callers together. */
  maxSessions: number;
  /** Sessions at once for one caller: one IPv4 address, one IPv6 /64 (`networkOf`). */
  maxSessionsPerClient: number;
  /** A session its caller has not used for this long (a message of theirs, an answer or progress to one) is ended and its process stopped. */
  idleMs: number;
};

type Session = {
  http: WebStandardStreamableHTTPServerTransport;
  child: StdioClientTransport;
  /** Who the session counts against: the caller's network (`networkOf`), or what named it if no IP address. */
  caller: string;
  lastSeen: number;
  /** Resolves true at the child's first message, false if it exits before one. */
  started: Promise<boolean>;
  /** The last lines the child wrote to stderr. */
  stderr: () => string;
};
type Id = string | number;

/**
 * Serves a stdio MCP server as Streamable HTTP on loopback, for the gateway to proxy like any
 * other upstream. A stdio server is single-session, so every MCP session gets a child process of
 * its own, started at `initialize` and ended with the session: concurrent clients that all use
 * request id 1 can never receive each other's answers. Both ends are the official SDK
 * transports; this only wires one to the other.
 *
 * Invariant: at most `maxSessions` children run, at most `maxSessionsPerClient` of them for one
 * caller, and none outlives `idleMs` without its caller's use (a message of theirs,
 * an answer or progress to one: not what the child says on its own). A slot is taken before the child starts, so
 * concurrent `initialize`s cannot overshoot; past a bound, `initialize` is refused (429 for the
 * caller's own bound, 503 for the instance's) with `Retry-After` and no child is started. The
 * caller is the `X-Turnpike-Caller` header the gateway sets from its socket (the bridge listens on
 * loopback only, so only local processes could set it otherwise), else this socket's peer, counted
 * by its network: an IPv6 /64 is one customer's, who gets no more sessions by rotating addresses in it.
 *
 * A program that cannot run (missing, not executable) is logged at start, and each `initialize`
 * is answered 502 with a JSON-RPC error naming the program and the OS's error, no child started; a
 * child that exits before its first message gets its `initialize` the same answer (its stderr
 * logged), never an empty stream to wait on.
 *
 * @example
 * const limits = { maxSessions: 32, maxSessionsPerClient: 4, idleMs: 300_000 };
 * const bridge = await startStdioBridge('npx -y @modelcontextprotocol/server-filesystem ./docs', limits);
 */
export async function startStdioBridge(command: string, limits: StdioLimits, options: { cwd?: string; logger?: Logger } = {}) {
  const { logger, cwd } = options;
  // Callers are told the program and the OS's error; the arguments (tokens, paths) and stderr are for the log only.
  const { assignments, rest } = splitAssignments(command);
  const program = rest.trim().split(/\s+/)[0];
  const cannotStart = (why: string) => `the MCP server program "${program}" cannot start: ${why}`;
  // The values of leading assignments are the operator's credentials for the server: never logged.
  const logged = { command: shownCommand(command) };
  const problem = await programProblem(rest, cwd);
  if (problem) logger?.error({ ...logged, PATH: process.env.PATH }, cannotStart(problem));
  const sessions = new Map<string, Session>();
  /** Every session with a child, initialized or not: what the bounds count. */
  const live = new Set<Session>();
  const app = new Hono();

  /**
   * A session for `caller`, counted in `live` before anything is awaited (the bounds rely on it).
   *
   * @example if (!refusal(c, caller)) session = await open(caller); // nothing awaited between the two
   */
  async function open(caller: string): Promise<Session> {
    // `exec` so that ending the shell ends the server itself; leading assignments go before it
    // (`exec A=b cmd` runs a program named "A=b"; `A=b exec cmd` gives cmd A in its environment).
    const shell = { command: '/bin/sh', args: ['-c', `${assignments.map((a) => `${a} `).join('')}exec ${rest}`] };
    const child = new StdioClientTransport({ ...shell, stderr: 'pipe', ...(cwd ? { cwd } : {}) });
    // Read as it comes (a full pipe would stop the child); the tail says why a child that exits early did.
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => void (stderr = (stderr + chunk.toString()).slice(-STDERR_KEPT)));
    let start!: (answered: boolean) => void;
    const started = new Promise<boolean>((resolve) => (start = resolve));
    const http: WebStandardStreamableHTTPServerTransport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void sessions.set(id, session),
      onsessionclosed: (id) => void (sessions.delete(id), child.close()),
    });
    const session: Session = { http, child, caller, lastSeen: Date.now(), started, stderr: () => stderr };
    live.add(session);
    const idle = setTimeout(() => {
      // Not served from the moment it is idle: a request before the child is gone would get a stream nothing answers.
      if (http.sessionId) sessions.delete(http.sessionId);
      void child.close();
    }, limits.idleMs).unref();
    const seen = () => {
      session.lastSeen = Date.now();
      idle.refresh();
    };
    // Server-to-client messages about a request (progress) ride that request's stream.
    const progressOf = new Map<string | number, Id>();
    http.onmessage = (message) => {
      seen();
      const m = message as { id?: Id; params?: { _meta?: { progressToken?: string | number } } };
      const token = m.params?._meta?.progressToken;
      if (m.id !== undefined && token !== undefined) progressOf.set(token, m.id);
      child.send(message).catch(() => void child.close());
    };
    child.onmessage = (message: JSONRPCMessage) => {
      start(true);
      const token = (message as { params?: { progressToken?: string | number } }).params?.progressToken;
      const relatedRequestId = token === undefined ? undefined : progressOf.get(token);
      // Use is the caller's: an answer, or progress on a request of theirs, counts; what the child
      // says on its own (a heartbeat, a log line) does not keep an abandoned session alive.
      if (isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message) || relatedRequestId !== undefined) seen();
      // A caller that hung up before its answer has no stream left to carry it: the answer is dropped.
      http.send(message, relatedRequestId === undefined ? undefined : { relatedRequestId }).catch(() => {});
    };
    const ended = () => {
      start(false);
      clearTimeout(idle);
      live.delete(session);
      if (http.sessionId) sessions.delete(http.sessionId);
      void http.close();
    };
    child.onclose = ended;
    try {
      await child.start();
      await http.start();
    } catch (error) {
      await child.close();
      ended();
      throw error;
    }
    return session;
  }

  /** The refusal of a new session for `caller` when a bound is reached; undefined while there is room. */
  function refusal(c: Context, caller: string): Response | undefined {
    const mine = [...live].filter((s) => s.caller === caller);
    const full = mine.length >= limits.maxSessionsPerClient ? mine : live.size >= limits.maxSessions ? [...live] : undefined;
    if (!full) return undefined;
    // The first of these sessions to go idle frees a slot then, unless it is used meanwhile.
    const retryAfter = Math.max(1, Math.ceil((Math.min(...full.map((s) => s.lastSeen)) + limits.idleMs - Date.now()) / 1000));
    const message =
      full === mine
        ? `too many MCP sessions from your address (its /64 for IPv6): ${mine.length} open, at most ${limits.maxSessionsPerClient} ` +
          `(stdio.maxSessionsPerClient); end one (DELETE with its Mcp-Session-Id) or retry after ${retryAfter} s`
        : `this MCP server runs its most sessions at once, ${limits.maxSessions} (stdio.maxSessions); retry after ${retryAfter} s`;
    const error = { jsonrpc: '2.0', id: null, error: { code: -32000, message } };
    return c.json(error, full === mine ? 429 : 503, { 'retry-after': String(retryAfter) });
  }

  app.all('/mcp', async (c) => {
    const id = c.req.header('mcp-session-id');
    if (id) {
      const session = sessions.get(id);
      if (!session) return c.json({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } }, 404);
      return session.http.handleRequest(c.req.raw);
    }
    let body: unknown;
    try {
      body = c.req.method === 'POST' ? await c.req.json() : undefined;
    } catch {
      return c.json({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error: the body is not JSON' } }, 400);
    }
    if (!(Array.isArray(body) ? body : [body]).some(isInitializeRequest)) {
      return c.json({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: no session; send initialize first' } }, 400);
    }
    const address = c.req.header(CALLER_HEADER) ?? clientAddress(c) ?? 'unknown';
    const caller = networkOf(address) ?? address;
    const initId = ((Array.isArray(body) ? body : [body]).find(isInitializeRequest) as { id?: string | number }).id ?? null;
    const failed = (why: string, detail: object = {}) => {
      logger?.error({ ...logged, caller: address, ...detail }, why);
      return c.json({ jsonrpc: '2.0', id: initId, error: { code: -32000, message: why } }, 502);
    };
    // Looked at again for each session: the program may have been installed (or removed) since.
    const missing = await programProblem(rest, cwd);
    if (missing) return failed(cannotStart(missing), { PATH: process.env.PATH });
    // The bounds are judged and the slot taken (`open` counts it in `live` before its first await)
    // with nothing awaited between: concurrent initializes cannot all pass one look at the count.
    const refused = refusal(c, caller);
    if (refused) return refused;
    const session = await open(caller);
    const response = await session.http.handleRequest(c.req.raw, { parsedBody: body });
    if (!session.http.sessionId) {
      await session.child.close(); // initialize refused by the transport: no session was made
      return response;
    }
    // Its answer (or first word) comes on the stream; a child that exits first would leave the caller an empty one.
    if (await session.started) return response;
    await response.body?.cancel();
    return failed(`the MCP server program "${program}" exited before it answered initialize; its stderr is in turnpike's log`, {
      stderr: session.stderr(),
    });
  });

  const server: Listening = await listen(app, { host: '127.0.0.1', port: 0 });
  return {
    ...server,
    mcpUrl: `${server.url}/mcp`,
    /** Child processes running now. */
    sessions: () => live.size,
    async close() {
      await Promise.all([...live].map((s) => s.child.close()));
      await server.close();
    },
  };
}

/** Bytes of a child's stderr kept to say why it ended. */
const STDERR_KEPT = 2048;

/**
 * Why the program of a shell command cannot be run, in the OS's words (`ENOENT: no such file or
 * directory, access '/no/such/binary'`), or undefined when it can or when the command is more than
 * a program and its arguments (operators, quotes, variables, assignments: the shell judges those).
 * A bare name is looked for on PATH, as the shell does.
 *
 * @example await programProblem('/no/such/binary') // "ENOENT: no such file or directory, access '/no/such/binary'"
 */
export async function programProblem(command: string, cwd = process.cwd()): Promise<string | undefined> {
  if (/[|&;<>()$`\\"'*?[\]{}=~#!]/.test(command)) return undefined;
  const program = command.trim().split(/\s+/)[0];
  if (!program) return 'the command is empty';
  const candidates = program.includes('/')
    ? [path.resolve(cwd, program)]
    : (process.env.PATH ?? '')
        .split(':')
        .filter(Boolean)
        .map((dir) => path.join(dir, program));
  let why = `ENOENT: "${program}" is not on PATH`;
  for (const file of candidates) {
    try {
      await access(file, constants.X_OK);
      if ((await stat(file)).isFile()) return undefined;
      why = `EISDIR: ${file} is a directory`;
    } catch (error) {
      if (program.includes('/') || (error as NodeJS.ErrnoException).code !== 'ENOENT') why = (error as Error).message;
    }
  }
  return why;
}
