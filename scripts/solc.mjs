#!/usr/bin/env node
// forge's `solc` for offline builds: answers forge's `--version` probe and its `--standard-json`
// compile with the npm `solc` package (solcjs), so no compiler download is ever needed.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const solc = createRequire(import.meta.url)('solc');
const args = process.argv.slice(2);

if (args.includes('--version')) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
} else if (args.includes('--standard-json')) {
  const input = readFileSync(0, 'utf8');
  const findImports = (path) => {
    try {
      return { contents: readFileSync(path, 'utf8') };
    } catch {
      return { error: `file not found: ${path}` };
    }
  };
  process.stdout.write(solc.compile(input, { import: findImports }));
} else {
  process.stderr.write(`scripts/solc.mjs only supports --version and --standard-json (got: ${args.join(' ')})\n`);
  process.exit(1);
}
