/** The demo MCP server alone in its process, for the proxy bench: prints `{"url": …}` when ready. */
import { startDemoServer } from '../../src/demo/server.js';

const server = await startDemoServer();
process.stdout.write(`${JSON.stringify({ url: server.mcpUrl })}\n`);
