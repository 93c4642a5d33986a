import { keccak256, stringToHex, type Hex } from 'viem';
import { privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';

/** A well-known key: anyone who reads this file can spend from it. Local sandbox only. */
export type DemoAccount = PrivateKeyAccount & { privateKey: Hex; label: string };

function demoAccount(label: string): DemoAccount {
  // Keys come from a public label so they are the same on every machine and obviously worthless.
  const privateKey = keccak256(stringToHex(`turnpike local sandbox / ${label}`));
  return Object.assign(privateKeyToAccount(privateKey), { privateKey, label });
}

const many = (role: string, count: number) => Array.from({ length: count }, (_, i) => demoAccount(`${role} ${i}`));

/**
 * The sandbox's cast: payers hold USDC and no ETH (EIP-3009 is gasless for them), relayers hold
 * ETH to submit authorizations, payees start empty. USDC's owner and its proxy admin are separate,
 * as on a real deployment (the proxy admin cannot call the token).
 */
export function sandboxAccounts(counts: { payers: number; relayers: number; payees: number }) {
  return {
    usdcOwner: demoAccount('usdc owner'),
    usdcProxyAdmin: demoAccount('usdc proxy admin'),
    /** Receives platform-custody payments and pays operators' withdrawals: ETH for gas, no USDC at start. */
    treasury: demoAccount('treasury'),
    relayers: many('relayer', counts.relayers),
    payees: many('payee', counts.payees),
    payers: many('payer', counts.payers),
  };
}

export type SandboxAccounts = ReturnType<typeof sandboxAccounts>;
