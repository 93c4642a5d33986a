import type { Context, Env, Hono } from 'hono';
import type { z } from 'zod';
import { jsonBody, query } from './validate.js';

/** Who may call a route, as the OpenAPI document names it. */
export type Security = 'admin' | 'operator' | 'apiKey' | 'none';

/** One route as the OpenAPI document describes it, made from the schemas that validate it. */
export type RouteDoc = {
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  security: Security;
  body?: z.ZodType;
  query?: z.ZodType;
  /** The success status, when it is not 200. */
  status?: number;
};

type Input<B, Q> = { body: B extends z.ZodType ? z.output<B> : undefined; query: Q extends z.ZodType ? z.output<Q> : undefined };
type Handler<E extends Env, B, Q> = (c: Context<E>, input: Input<B, Q>) => Response | Promise<Response>;

/**
 * Routes whose body and query are validated by zod schemas (a bad one is a 400 naming the field)
 * and recorded in `catalog`, from which `/openapi.json` is made: the document cannot drift from
 * what the code accepts.
 *
 * @example
 * const api = documented(app, catalog, { base: '/operator', security: 'operator' });
 * api.post('/servers', { summary: 'register a server', body: newServerSchema, status: 201 }, (c, { body }) => …);
 */
export function documented<E extends Env>(app: Hono<E>, catalog: RouteDoc[], options: { base: string; security: Security }) {
  const add =
    (method: RouteDoc['method']) =>
    <B extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined>(
      path: string,
      doc: { summary: string; body?: B; query?: Q; status?: number; security?: Security },
      handler: Handler<E, B, Q>,
    ) => {
      catalog.push({
        method,
        path: `${options.base}${path === '/' ? '' : path}`.replace(/:(\w+)/g, '{$1}') || '/',
        summary: doc.summary,
        security: doc.security ?? options.security,
        ...(doc.body ? { body: doc.body } : {}),
        ...(doc.query ? { query: doc.query } : {}),
        ...(doc.status ? { status: doc.status } : {}),
      });
      app.on(method.toUpperCase(), path, async (c) => {
        const input = {
          body: doc.body ? await jsonBody(c, doc.body) : undefined,
          query: doc.query ? query(c, doc.query) : undefined,
        } as Input<B, Q>;
        return handler(c, input);
      });
    };
  return { get: add('get'), post: add('post'), patch: add('patch'), delete: add('delete') };
}
