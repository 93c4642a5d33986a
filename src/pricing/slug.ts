import { z } from 'zod';

/**
 * A server's slug: its path (`/mcp/<slug>`) and its name in key scopes, plans and analytics. One
 * rule wherever a slug comes in: the config file, the operator API, queries.
 */
export const slugSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'expected 1–63 lower-case letters, digits and dashes, not starting with a dash');
