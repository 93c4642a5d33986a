import type { Command } from '../command.js';
import { chainCommand } from './chain.js';
import { configCommand } from './config.js';
import { demoCommand } from './demo.js';
import { facilitatorCommand } from './facilitator.js';
import { keysCommand } from './keys.js';
import { serveCommand } from './serve.js';
import { wrapCommand } from './wrap.js';

/** Every subcommand, in the order `turnpike --help` lists them. */
export const commands: Command[] = [demoCommand, wrapCommand, serveCommand, facilitatorCommand, keysCommand, chainCommand, configCommand];
