import type { Context } from 'hono';
import type { z } from 'zod';
import { DomainError } from '../errors.js';

/** A zod failure as the caller sees it: the first problem in `message`, every one in `issues`. */
function invalid(error: z.ZodError, where: string): DomainError {
  const issues = error.issues.map((i) => ({ path: i.path.join('.') || where, message: i.message }));
  return new DomainError('invalid_request', `${issues[0]!.path}: ${issues[0]!.message}`, { issues });
}

/**
 * The JSON body parsed by `schema`, or a 400 that names the field. An empty body counts as `{}`,
 * so endpoints whose fields are all optional need none.
 *
 * @example const input = await jsonBody(c, topupSchema);
 */
export async function jsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.output<S>> {
  const text = await c.req.text();
  let body: unknown = {};
  let nul = false;
  if (text.trim() !== '') {
    try {
      // A NUL in a name or a value can be stored nowhere (PostgreSQL refuses it in text): refused here, as the caller's mistake.
      body = JSON.parse(text, (key, value) => {
        nul ||= key.includes('\0') || (typeof value === 'string' && value.includes('\0'));
        return value;
      });
    } catch {
      throw new DomainError('invalid_json', 'the request body is not JSON');
    }
  }
  if (nul) throw new DomainError('invalid_request', '(body): a string holds a NUL character (\\u0000), which nothing here can store');
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw invalid(parsed.error, '(body)');
  return parsed.data;
}

/** The query string parsed by `schema`, or a 400 that names the parameter. */
export function query<S extends z.ZodType>(c: Context, schema: S): z.output<S> {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw invalid(parsed.error, '(query)');
  return parsed.data;
}
