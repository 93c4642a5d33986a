#!/usr/bin/env node
// forge's `solc` for offline builds, so no compiler is ever downloaded: it answers forge's
// `--version` probe and its `--allow-paths <root> --base-path <root> --standard-json` compile with
// the npm `solc` package. It calls solcjs's library API rather than its CLI, which rejects
// `--allow-paths` and prints `>>>` notes on stdout that would corrupt forge's JSON. The path
// options are moot here: forge puts every source, imports included, inline in the JSON input.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const solc = createRequire(import.meta.url)('solc');
const args = process.argv.slice(2);

if (args.includes('--version')) {
  // forge reads the `Version: x.y.z+commit…` line.
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
} else if (args.includes('--standard-json')) {
  process.stdout.write(solc.compile(readFileSync(0, 'utf8')));
} else {
  process.stderr.write(`scripts/solc.mjs only supports --version and --standard-json (got: ${args.join(' ')})\n`);
  process.exit(1);
}
