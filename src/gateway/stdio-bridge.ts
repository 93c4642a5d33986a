import { randomUUID } from 'node:crypto';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { Hono } from 'hono';
import { type Listening, listen } from '../http/listen.js';

type Session = { http: WebStandardStreamableHTTPServerTransport; child: StdioClientTransport };
type Id = string | number;

/**
 * Serves a stdio MCP server as Streamable HTTP on loopback, for the gateway to proxy like any
 * other upstream. A stdio server is single-session, so every MCP session gets a child process of
 * its own, started at `initialize` and ended with the session: concurrent clients that all use
 * request id 1 can never receive each other's answers. Both ends are the official SDK
 * transports; this only wires one to the other.
 *
 * @example const bridge = await startStdioBridge('npx -y @modelcontextprotocol/server-filesystem ./docs');
 */
export async function startStdioBridge(command: string, options: { cwd?: string } = {}): Promise<Listening & { mcpUrl: string }> {
  const sessions = new Map<string, Session>();
  const app = new Hono();

  async function open(): Promise<Session> {
    // `exec` so that ending the shell ends the server itself.
    const child = new StdioClientTransport({ command: '/bin/sh', args: ['-c', `exec ${command}`], stderr: 'ignore', ...options });
    const http: WebStandardStreamableHTTPServerTransport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => void sessions.set(id, session),
      onsessionclosed: (id) => void (sessions.delete(id), child.close()),
    });
    const session = { http, child };
    // Server-to-client messages about a request (progress) ride that request's stream.
    const progressOf = new Map<string | number, Id>();
    http.onmessage = (message) => {
      const m = message as { id?: Id; params?: { _meta?: { progressToken?: string | number } } };
      const token = m.params?._meta?.progressToken;
      if (m.id !== undefined && token !== undefined) progressOf.set(token, m.id);
      void child.send(message);
    };
    child.onmessage = (message: JSONRPCMessage) => {
      const token = (message as { params?: { progressToken?: string | number } }).params?.progressToken;
      const relatedRequestId = token === undefined ? undefined : progressOf.get(token);
      void http.send(message, relatedRequestId === undefined ? undefined : { relatedRequestId });
    };
    child.onclose = () => {
      if (http.sessionId) sessions.delete(http.sessionId);
      void http.close();
    };
    await child.start();
    await http.start();
    return session;
  }

  app.all('/mcp', async (c) => {
    const id = c.req.header('mcp-session-id');
    if (id) {
      const session = sessions.get(id);
      if (!session) return c.json({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } }, 404);
      return session.http.handleRequest(c.req.raw);
    }
    if (c.req.method !== 'POST') return c.json({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: no session' } }, 400);
    const session = await open();
    const response = await session.http.handleRequest(c.req.raw);
    if (!session.http.sessionId) await session.child.close(); // not an initialize: no session was made
    return response;
  });

  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  return {
    ...server,
    mcpUrl: `${server.url}/mcp`,
    async close() {
      await Promise.all([...sessions.values()].map((s) => s.child.close()));
      await server.close();
    },
  };
}
