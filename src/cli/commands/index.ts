import type { Command } from '../command.js';
import { chainCommand } from './chain.js';

/** Every subcommand, in the order `turnpike --help` lists them. */
export const commands: Command[] = [chainCommand];
