#!/usr/bin/env node
import { leanHeap } from '../app/heap.js';

// Before the rest of turnpike loads: see leanHeap.
leanHeap();
const { run } = await import('./run.js');
process.exitCode = await run(process.argv.slice(2));
