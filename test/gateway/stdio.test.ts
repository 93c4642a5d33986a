import assert from 'node:assert/strict';
import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { networks } from '../../src/chain/networks.js';
import { x402Rail } from '../../src/rails/x402/rail.js';
import { createGateway } from '../../src/gateway/gateway.js';
import { priceTableSchema } from '../../src/gateway/pricing.js';
import { flatPlan } from '../../src/gateway/plans.js';
import { startStdioBridge } from '../../src/gateway/stdio-bridge.js';
import { createApp } from '../../src/http/app.js';
import { type Listening, listen } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { createLogger } from '../../src/log/logger.js';
import { useSandbox } from '../helpers/chain.js';

const chain = useSandbox({ isolate: false });
const logger = createLogger({ level: 'silent', format: 'json' });
const docs = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'turnpike-docs-')));
for (let i = 0; i < 50; i++) writeFileSync(path.join(docs, `note-${i}.txt`), `note number ${i}`);
const serverFilesystem = path.join(path.dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/server-filesystem/package.json')), 'dist/index.js');

let bridge: Awaited<ReturnType<typeof startStdioBridge>>;
let gateway: Listening;

async function connect() {
  const client = new Client({ name: 'stdio-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${gateway.url}/mcp`)));
  return client;
}
const text = (r: unknown) => ((r as { content: { text: string }[] }).content).map((c) => c.text).join('');

describe('stdio MCP servers behind the paying proxy (server-filesystem from npm)', () => {
  before(async () => {
    bridge = await startStdioBridge(`${JSON.stringify(process.execPath)} ${JSON.stringify(serverFilesystem)} ${JSON.stringify(docs)}`);
    const { facilitator } = await chain.facilitator([3]);
    const app = createApp(logger);
    let url = '';
    app.route(
      '/mcp',
      createGateway({
        upstream: { url: bridge.mcpUrl, headers: {}, timeoutMs: 10_000 },
        plan: flatPlan(priceTableSchema.parse({ default: '0.01', tools: { read_multiple_files: '0.03' }, free: ['list_allowed_directories'] })),
        payTo: chain.sandbox.accounts.payees[1]!.address,
        network: networks.local,
        rails: [x402Rail({ facilitator })],
        challenge: 'tool-result',
        bodyLimitBytes: 1 << 20,
        allowedHosts: () => [new URL(url).host],
        logger,
        metrics: createMetrics(),
        server: 'test',
      }),
    );
    gateway = await listen(app, { host: '127.0.0.1', port: 0 });
    url = gateway.url;
  });
  after(async () => {
    await gateway?.close();
    await bridge?.close();
  });

  test('a paid call to a stdio server: challenged, paid, answered, settled', async () => {
    const client = await connect();
    const { tools } = await client.listTools();
    assert.equal((tools.find((t) => t.name === 'read_multiple_files')?._meta?.['turnpike/price'] as { usd: string }).usd, '0.03');
    const args = { paths: [path.join(docs, 'note-1.txt'), path.join(docs, 'note-2.txt')] };
    const challenged = await client.callTool({ name: 'read_multiple_files', arguments: args });
    assert.equal(challenged.isError, true);
    // This tool declares an outputSchema, so the challenge comes as text only (the SDK would
    // validate structuredContent against the schema and fail).
    assert.equal(challenged.structuredContent, undefined);
    const required = JSON.parse(text(challenged)) as PaymentRequired;
    const payer = chain.sandbox.accounts.payers[4]!;
    const payment = await new x402Client()
      .register('eip155:8453', new ExactEvmScheme(payer))
      .createPaymentPayload(required);
    const before = await chain.balanceOf(chain.sandbox.accounts.payees[1]!.address);
    const paid = await client.callTool({ name: 'read_multiple_files', arguments: args, _meta: { 'x402/payment': payment } });
    assert.match(text(paid), /note number 1/);
    assert.match(text(paid), /note number 2/);
    assert.equal((paid._meta?.['x402/payment-response'] as { success: boolean }).success, true);
    assert.equal(await chain.balanceOf(chain.sandbox.accounts.payees[1]!.address), before + 30_000n);
    await client.close();
  });

  test('50 concurrent clients, all using request id 1, each get their own answer and pay once each', async () => {
    const payee = chain.sandbox.accounts.payees[1]!.address;
    const before = await chain.balanceOf(payee);
    const clients = await Promise.all(Array.from({ length: 50 }, () => connect()));
    const answers = await Promise.all(
      clients.map(async (client, i) => {
        const args = { path: path.join(docs, `note-${i}.txt`) };
        const challenged = await client.callTool({ name: 'read_text_file', arguments: args });
        const required = JSON.parse(text(challenged)) as PaymentRequired;
        const payer = chain.sandbox.accounts.payers[i % chain.sandbox.accounts.payers.length]!;
        const payment = await new x402Client().register('eip155:8453', new ExactEvmScheme(payer)).createPaymentPayload(required);
        return client.callTool({ name: 'read_text_file', arguments: args, _meta: { 'x402/payment': payment } });
      }),
    );
    answers.forEach((answer, i) => {
      assert.equal(text(answer), `note number ${i}`, `client ${i} got someone else's answer`);
      assert.equal((answer._meta?.['x402/payment-response'] as { success: boolean }).success, true);
    });
    assert.equal(await chain.balanceOf(payee), before + 50n * 10_000n);
    await Promise.all(clients.map((c) => c.close()));
  });
});
