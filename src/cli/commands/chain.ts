import { formatUnits } from 'viem';
import { z } from 'zod';
import { MULTICALL3 } from '../../chain/networks.js';
import { type Sandbox, startSandbox } from '../../chain/sandbox/sandbox.js';
import { defineCommand } from '../command.js';
import { listenForSignals } from '../signals.js';

const count = (max: number) => z.coerce.number().int().min(0).max(max);

export const chainCommand = defineCommand({
  name: 'chain',
  summary: 'run the local Base sandbox: anvil (chain id 8453) with Circle USDC at Base’s address',
  details:
    'Prints the RPC URL, the USDC address and the demo keys, then serves until Ctrl-C.\n' +
    'The keys are public and for this local chain only: never send real funds to them.',
  flags: {
    port: { type: 'string', value: 'N', description: 'RPC port (default: a free port)' },
    payers: { type: 'string', value: 'N', description: 'payer accounts funded with USDC (default 10)' },
    json: { type: 'boolean', description: 'print the sandbox details as one JSON line (for scripts)' },
  },
  schema: z.strictObject({
    port: z.coerce.number().int().min(1).max(65535).optional(),
    payers: count(1000).default(10),
    json: z.boolean().default(false),
  }),
  async run(flags, io) {
    const signals = listenForSignals();
    const sandbox = await startSandbox({ port: flags.port, payers: flags.payers });
    io.stdout.write(flags.json ? `${JSON.stringify(describe(sandbox))}\n` : banner(sandbox));
    await signals.wait();
    await sandbox.stop();
    if (!flags.json) io.stdout.write('sandbox stopped\n');
  },
});

function describe(sandbox: Sandbox) {
  const { accounts } = sandbox;
  const keys = (list: { address: string; privateKey: string }[]) => list.map(({ address, privateKey }) => ({ address, privateKey }));
  return {
    rpcUrl: sandbox.rpcUrl,
    chainId: sandbox.network.chainId,
    usdc: sandbox.usdc,
    multicall3: MULTICALL3,
    localOnly: true,
    payers: keys(accounts.payers),
    relayers: keys(accounts.relayers),
    payees: keys(accounts.payees),
  };
}

function banner(sandbox: Sandbox): string {
  const { accounts, network } = sandbox;
  const usdc = (units: bigint) => `${formatUnits(units, 6)} USDC`;
  const rows = [
    ...accounts.payers.map((a) => [a.label, a.address, a.privateKey, `holds ${usdc(sandbox.payerUsdc)}, no ETH`]),
    ...accounts.relayers.map((a) => [a.label, a.address, a.privateKey, 'holds 1000 ETH for gas']),
    ...accounts.payees.map((a) => [a.label, a.address, a.privateKey, 'starts empty']),
  ];
  return [
    `turnpike sandbox: local Base (chain id ${network.chainId}), ready in ${Math.round(sandbox.startupMs)} ms`,
    `  RPC URL     ${sandbox.rpcUrl}`,
    `  USDC        ${sandbox.usdc}  (Circle FiatTokenV2_2, "${network.usdc.name}" v${network.usdc.version}, 6 decimals)`,
    `  Multicall3  ${MULTICALL3}`,
    '',
    'Demo accounts: LOCAL ONLY. These private keys are public; never use them on a real network.',
    ...rows.map(([label, address, key, note]) => `  ${label!.padEnd(10)} ${address}  ${key}  ${note}`),
    '',
    'Press Ctrl-C to stop.',
    '',
  ].join('\n');
}
