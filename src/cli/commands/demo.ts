import { flatPlan } from '../../pricing/plans.js';
import { z } from 'zod';
import { connectConfiguredChain } from '../../app/chain.js';
import { loadConfig } from '../../config/load.js';
import { loadSecrets } from '../../config/secrets.js';
import { serveGateway } from '../../app/gateway-server.js';
import { createLogger } from '../../log/logger.js';
import { defineCommand } from '../command.js';
import { checkPort } from '../server-flags.js';
import { listenForSignals } from '../signals.js';

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'the whole story on a local chain: a demo MCP server behind turnpike, and an agent that pays it',
  details:
    'Starts the sandbox chain, a small MCP server (a free and a priced tool), and turnpike in front of it; a demo\n' +
    'agent (official MCP SDK + x402 clients) lists tools, calls the free one, is challenged, pays, and prints the\n' +
    'receipt and balances. Then it keeps serving: point your own MCP client at the printed URL. Ctrl-C stops it all.',
  flags: {
    port: { type: 'string', value: 'N', description: 'port of the paying MCP endpoint (default 3402; 0 = any)' },
    'data-dir': { type: 'string', value: 'DIR', description: 'state directory (default .turnpike)' },
    'no-agent': { type: 'boolean', description: 'serve only; skip the demo agent' },
  },
  schema: z.strictObject({
    port: z.string().optional(),
    'data-dir': z.string().optional(),
    'no-agent': z.boolean().default(false),
  }),
  async run(flags, io) {
    const signals = listenForSignals();
    const say = (line: string) => io.stdout.write(`${line}\n`);
    const config = loadConfig({
      env: {},
      overrides: {
        network: 'local',
        dataDir: flags['data-dir'],
        http: { port: flags.port !== undefined && /^\d+$/.test(flags.port) ? Number(flags.port) : (flags.port as unknown as number) },
        log: { level: 'warn' },
      },
    });
    await checkPort(config);
    const logger = createLogger(config.log);
    const secrets = loadSecrets({});
    const chain = await connectConfiguredChain(config, secrets);
    const sandbox = chain.sandbox!;
    // The demo's MCP server and agent (the MCP SDK, x402 clients) load only for this command.
    const { demoPrices, startDemoServer } = await import('../../demo/server.js');
    const upstream = await startDemoServer();
    const payee = sandbox.accounts.payees[0]!.address;
    const gateway = await serveGateway({
      secrets,
      config,
      chain,
      logger,
      endpoints: [
        {
          slug: 'demo',
          path: '/mcp',
          upstream: { url: upstream.mcpUrl, headers: {}, timeoutMs: 30_000 },
          plan: flatPlan(demoPrices),
          payTo: payee,
          challenge: 'tool-result',
        },
      ],
    });
    const mcpUrl = `${gateway.url}/mcp`;
    say(`turnpike demo: local Base sandbox at ${chain.shownRpcUrl} (chain id 8453, Circle USDC at ${chain.network.usdc.address})`);
    say(`  demo MCP server   ${upstream.mcpUrl}  (hello: free, forecast: 0.01 USDC)`);
    say(`  paying endpoint   ${mcpUrl}`);
    say('');
    const ok = flags['no-agent']
      ? true
      : await (await import('../../demo/agent.js')).runDemoAgent({
          mcpUrl: mcpUrl,
          payer: sandbox.accounts.payers[0]!,
          payee,
          usdc: chain.network.usdc.address,
          chain: chain.client,
          say,
        });
    const payer = sandbox.accounts.payers[1]!;
    say('');
    say(`Serving. Point your MCP client at ${mcpUrl}`);
    say(`  pay with the sandbox key ${payer.privateKey} (${payer.address}; LOCAL ONLY, public)`);
    say(`  prices: ${gateway.url}/pricing   health: ${gateway.url}/health   facilitator: ${gateway.facilitator}`);
    say('Press Ctrl-C to stop.');
    await signals.wait();
    await gateway.close();
    await upstream.close();
    await chain.close();
    return ok ? 0 : 1;
  },
});
