/**
 * Preloaded (`node --import`) into a bench server that stands for turnpike's own process: the heap
 * settings before the script's modules load, as src/cli/main.ts does before it loads turnpike.
 */
import { leanHeap } from '../../src/app/heap.js';

leanHeap();
