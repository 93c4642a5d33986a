/**
 * The chaos run's MCP upstream, alone in its process so it can be killed: a server built with the
 * official SDK's low-level `Server` (so a tool can answer a real JSON-RPC error, which `McpServer`
 * would wrap into `isError`). A request without a session is served stateless, with a JSON answer;
 * an `initialize` opens a session whose answers are SSE streams kept in an event store, so a
 * client may resume one with Last-Event-ID (as compliant servers may: the thief tries it). Every
 * execution is appended to the log named by `--log` before the answer leaves, with the `callId`
 * argument the caller chose.
 *
 * A fault makes it a loop back to turnpike: `POST /chaos/loop {"to": url, "ms": n}` makes it, for
 * `ms`, forward every request to `/mcp` to `to` (turnpike's own MCP URL) with the request's method,
 * headers (Turnpike-Hop among them) and body, and answer what that answers, as an operator's
 * upstream that was pointed back at turnpike would.
 *
 * Usage: upstream-server.ts --log FILE [--port N]; prints `{"url": …}` when it serves.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { type EventStore, WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import {
  CallToolRequestSchema,
  ErrorCode,
  type JSONRPCMessage,
  ListToolsRequestSchema,
  McpError,
} from '@modelcontextprotocol/sdk/types.js';
import { Hono } from 'hono';
import { listen } from '../../src/http/listen.js';
import { type ChaosTool, type Execution, chaosTools, resultText } from './executions.js';

const { values } = parseArgs({ options: { log: { type: 'string' }, port: { type: 'string', default: '0' } } });
const logFile = values.log!;

const record = (callId: string, tool: ChaosTool) => {
  const line: Execution = { callId, tool, at: Date.now(), pid: process.pid };
  appendFileSync(logFile, `${JSON.stringify(line)}\n`);
};
const callIdOf = (args: Record<string, unknown> | undefined) => String(args?.callId ?? '');

function mcpServer() {
  const server = new Server({ name: 'chaos-upstream', version: '1.0.0' }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: Object.entries(chaosTools).map(([name, description]) => ({
      name,
      description,
      inputSchema: { type: 'object' as const, properties: { callId: { type: 'string' } }, required: ['callId'] },
    })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async ({ params }, extra) => {
    const callId = callIdOf(params.arguments);
    switch (params.name) {
      case 'ok':
        // A little work, so a crash can land between the execution and the answer.
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 30)));
        record(callId, 'ok');
        return { content: [{ type: 'text', text: resultText(callId) }] };
      case 'slow': {
        const progressToken = params._meta?.progressToken;
        if (progressToken !== undefined) {
          const progress = { progressToken, progress: 1, total: 2, message: `working on ${callId}` };
          await extra.sendNotification({ method: 'notifications/progress', params: progress });
        }
        await new Promise((r) => setTimeout(r, 400 + Math.floor(Math.random() * 200)));
        record(callId, 'slow');
        return { content: [{ type: 'text', text: resultText(callId) }] };
      }
      case 'fail':
        record(callId, 'fail');
        return { isError: true, content: [{ type: 'text', text: `failed ${callId}` }] };
      case 'throw':
        record(callId, 'throw');
        throw new McpError(ErrorCode.InternalError, `threw ${callId}`);
      case 'hang':
        record(callId, 'hang');
        return new Promise<never>(() => {});
      default:
        throw new McpError(ErrorCode.InvalidParams, `unknown tool ${params.name}`);
    }
  });
  return server;
}

/**
 * Every message sent on a session's streams, in order, so one can be replayed after the event a
 * client last saw (the SDK examples' InMemoryEventStore, with ids that name their event alone).
 */
function memoryEventStore(): EventStore {
  const events: { id: string; streamId: string; message: JSONRPCMessage }[] = [];
  return {
    async storeEvent(streamId, message) {
      const id = String(events.length);
      events.push({ id, streamId, message });
      return id;
    },
    async replayEventsAfter(lastEventId, { send }) {
      const last = events[Number(lastEventId)];
      if (!last || last.id !== lastEventId) return '';
      for (const e of events.slice(Number(lastEventId) + 1)) if (e.streamId === last.streamId) await send(e.id, e.message);
      return last.streamId;
    },
  };
}

const sessions = new Map<string, WebStandardStreamableHTTPServerTransport>();

/** Where requests are looped to, and until when (ms since the epoch); no loop once that has passed. */
let loop = { to: '', until: 0 };
/** Headers that describe one hop of HTTP, not the request: not forwarded around the loop, nor back. */
const HOP_BY_HOP = new Set([
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'upgrade',
  'te',
  'trailer',
]);
const withoutHopByHop = (headers: Headers) => {
  const out = new Headers();
  headers.forEach((value, name) => {
    if (!HOP_BY_HOP.has(name)) out.set(name, value);
  });
  return out;
};

/** Forwards `request` as it came to where the loop leads, and answers what that answers. */
async function loopBack(request: Request): Promise<Response> {
  const body = request.method === 'GET' || request.method === 'HEAD' ? undefined : await request.arrayBuffer();
  const res = await fetch(loop.to, { method: request.method, headers: withoutHopByHop(request.headers), body, signal: request.signal });
  return new Response(res.body, { status: res.status, headers: withoutHopByHop(res.headers) });
}

const app = new Hono();
app.post('/chaos/loop', async (c) => {
  const { to, ms } = await c.req.json<{ to: string; ms: number }>();
  loop = { to, until: Date.now() + ms };
  return c.json({ looping: to, until: loop.until });
});
app.all('/mcp', async (c) => {
  if (Date.now() < loop.until) return loopBack(c.req.raw);
  const body: unknown = c.req.method === 'POST' ? await c.req.json() : undefined;
  const call = body as { method?: string; params?: { name?: string; arguments?: Record<string, unknown> } } | undefined;
  if (call?.method === 'tools/call' && call.params?.name === 'http500') {
    record(callIdOf(call.params.arguments), 'http500');
    return c.json({ error: 'the server broke' }, 500);
  }
  const sessionId = c.req.header('mcp-session-id');
  let transport: WebStandardStreamableHTTPServerTransport | undefined;
  if (sessionId !== undefined) {
    transport = sessions.get(sessionId);
    if (!transport) return c.json({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } }, 404);
  } else if (call?.method === 'initialize') {
    transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: randomUUID,
      enableJsonResponse: false,
      eventStore: memoryEventStore(),
      onsessioninitialized: (id) => void sessions.set(id, transport!),
    });
    await mcpServer().connect(transport);
  } else {
    transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    await mcpServer().connect(transport);
  }
  return transport.handleRequest(c.req.raw, { parsedBody: body });
});
const server = await listen(app, { host: '127.0.0.1', port: Number(values.port) });
process.stdout.write(`${JSON.stringify({ url: `${server.url}/mcp` })}\n`);
