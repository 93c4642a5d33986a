import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { Hono } from 'hono';
import { z } from 'zod';
import { type Listening, listen } from '../http/listen.js';

/** The demo's prices: `hello` is free, `forecast` costs a cent. */
export const demoPrices = { default: 10_000n, tools: {}, free: ['hello'] };

function demoServer() {
  const server = new McpServer({ name: 'turnpike-demo', version: '1.0.0' });
  server.registerTool(
    'hello',
    { description: 'Says hello (free)', inputSchema: { name: z.string().default('agent') } },
    async ({ name }) => ({ content: [{ type: 'text', text: `Hello, ${name}!` }] }),
  );
  server.registerTool(
    'forecast',
    { description: 'Tomorrow’s weather for a city (paid)', inputSchema: { city: z.string() } },
    async ({ city }) => {
      // Deterministic, so the demo prints the same thing every time.
      const skies = ['sunny', 'cloudy', 'windy', 'rainy'][[...city].reduce((a, c) => a + c.charCodeAt(0), 0) % 4];
      return { content: [{ type: 'text', text: `${city} tomorrow: ${skies}, 21 °C` }] };
    },
  );
  return server;
}

/**
 * A small MCP server (official SDK, Streamable HTTP, stateless) standing in for an operator's own:
 * the demo puts turnpike in front of it.
 */
export async function startDemoServer(): Promise<Listening & { mcpUrl: string }> {
  const app = new Hono();
  app.all('/mcp', async (c) => {
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    await demoServer().connect(transport);
    return transport.handleRequest(c.req.raw);
  });
  const server = await listen(app, { host: '127.0.0.1', port: 0 });
  return { ...server, mcpUrl: `${server.url}/mcp` };
}
