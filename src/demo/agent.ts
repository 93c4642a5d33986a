import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { type Address, type PublicClient, formatUnits } from 'viem';
import { usdcAbi } from '../../contracts-abi/usdc.js';
import type { DemoAccount } from '../chain/sandbox/accounts.js';

type Say = (line: string) => void;
type ToolResult = { isError?: boolean; content?: unknown; structuredContent?: unknown; _meta?: Record<string, unknown> };

/**
 * A wallet-holding agent built only from official packages (the MCP SDK client and the x402
 * client): lists tools with their prices, calls a free one, is challenged by a priced one, pays,
 * and shows the receipt and both balances before and after.
 */
export async function runDemoAgent(options: {
  mcpUrl: string;
  payer: DemoAccount;
  payee: Address;
  usdc: Address;
  chain: PublicClient;
  say: Say;
}) {
  const { say } = options;
  const usdc = async (owner: Address) =>
    `${formatUnits(await options.chain.readContract({ address: options.usdc, abi: usdcAbi, functionName: 'balanceOf', args: [owner] }), 6)} USDC`;
  const text = (r: ToolResult) => ((r.content as { text?: string }[] | undefined) ?? []).map((c) => c.text ?? '').join(' ');

  const client = new Client({ name: 'turnpike-demo-agent', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(options.mcpUrl)));
  try {
    const { tools } = await client.listTools();
    say('agent: tools/list');
    for (const tool of tools) {
      const price = tool._meta?.['turnpike/price'] as { usd: string } | undefined;
      say(`  ${tool.name.padEnd(10)} ${(price ? `${price.usd} USD` : 'unpriced').padEnd(10)} ${tool.description ?? ''}`);
    }

    const hello = (await client.callTool({ name: 'hello', arguments: { name: 'agent' } })) as ToolResult;
    say(`agent: hello (free) → ${text(hello)}`);

    const args = { city: 'Lisbon' };
    const challenged = (await client.callTool({ name: 'forecast', arguments: args })) as ToolResult;
    const required = challenged.structuredContent as PaymentRequired;
    const offer = required.accepts[0]!;
    say(`agent: forecast → payment required: ${formatUnits(BigInt(offer.amount), 6)} USDC to ${offer.payTo} on ${offer.network}`);

    const [payerBefore, payeeBefore] = [await usdc(options.payer.address), await usdc(options.payee)];
    const payment = await new x402Client().register(offer.network, new ExactEvmScheme(options.payer)).createPaymentPayload(required);
    say(`agent: signed an EIP-3009 authorization as ${options.payer.address}; calling again with it`);
    const paid = (await client.callTool({ name: 'forecast', arguments: args, _meta: { 'x402/payment': payment } })) as ToolResult;
    const receipt = paid._meta?.['x402/payment-response'] as { success: boolean; transaction: string; network: string } | undefined;
    say(`agent: forecast (paid) → ${text(paid)}`);
    say(`  receipt     ${receipt?.success ? 'settled' : 'NOT settled'} in ${receipt?.transaction} on ${receipt?.network}`);
    say(`  payer       ${payerBefore} → ${await usdc(options.payer.address)}`);
    say(`  payee       ${payeeBefore} → ${await usdc(options.payee)}`);
    return receipt?.success === true;
  } finally {
    await client.close();
  }
}
