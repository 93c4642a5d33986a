import { Hono } from 'hono';
import { z } from 'zod';
import type { RouteDoc, Security } from './documented.js';

const schemes: Record<Exclude<Security, 'none'>, object> = {
  admin: { type: 'http', scheme: 'bearer', description: 'TURNPIKE_ADMIN_KEY' },
  operator: { type: 'http', scheme: 'bearer', description: 'an operator key, op_…' },
  apiKey: { type: 'http', scheme: 'bearer', description: 'a credits API key, tp_… (or X-API-Key)' },
};

const jsonSchema = (schema: z.ZodType) => z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' });

/** The object schema a query is validated by, under any transform applied after it. */
const objectOf = (schema: z.ZodType | undefined): z.ZodObject | undefined =>
  schema instanceof z.ZodObject ? schema : schema instanceof z.ZodPipe ? objectOf(schema.in as z.ZodType) : undefined;

/**
 * The OpenAPI 3.1 document of the documented routes, with request schemas made from the same
 * zod schemas that validate them.
 */
export function openApiDocument(catalog: readonly RouteDoc[], info: { title: string; version: string }) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of catalog) {
    const pathParams = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    const queryShape = (objectOf(route.query)?.shape ?? {}) as Record<string, z.ZodType>;
    const queryParams = Object.entries(queryShape).map(([name, schema]) => ({
      name,
      in: 'query',
      required: !schema.safeParse(undefined).success,
      schema: jsonSchema(schema),
    }));
    paths[route.path] ??= {};
    paths[route.path]![route.method] = {
      summary: route.summary,
      ...(route.security === 'none' ? { security: [] } : { security: [{ [route.security]: [] }] }),
      ...(pathParams.length + queryParams.length > 0 ? { parameters: [...pathParams, ...queryParams] } : {}),
      ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(route.body) } } } } : {}),
      responses: {
        [String(route.status ?? 200)]: { description: 'success (JSON)' },
        '400': { description: 'invalid request: `{error, message, issues: [{path, message}]}`' },
        ...(route.security === 'none' ? {} : { '401': { description: 'missing or unknown credential' } }),
      },
    };
  }
  return { openapi: '3.1.0', info, components: { securitySchemes: schemes }, paths };
}

/** `GET /openapi.json`. */
export function openApiRoutes(catalog: readonly RouteDoc[], info: { title: string; version: string }): Hono {
  const app = new Hono();
  let document: ReturnType<typeof openApiDocument> | undefined;
  app.get('/openapi.json', (c) => c.json((document ??= openApiDocument(catalog, info))));
  return app;
}
