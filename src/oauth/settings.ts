import { z } from 'zod';

/**
 * How a server takes OAuth callers, as the config file and the operator API both say it.
 *
 * @example oauthSettingsSchema.parse({ issuer: 'https://id.example.com', scopes: ['mcp:tools'] }) // required: true
 */
export const oauthSettingsSchema = z
  .strictObject({
    issuer: z
      .url({ protocol: /^https?$/, error: 'expected an http(s) URL' })
      .max(2048)
      .describe('the identity provider (OAuth 2.1 authorization server) whose JWT access tokens the server takes, exactly as their `iss` says'),
    scopes: z
      .array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/, 'expected a scope token (RFC 6749 §3.3)'))
      .max(32)
      .default([])
      .describe('scopes every token must carry'),
    required: z
      .boolean()
      .default(true)
      .describe('every request needs a valid token (401 without one: x402 and API-key callers are refused); false: a request without one is served as on any other server'),
  })
  .describe('callers identified by OAuth access tokens for the server’s URL (MCP authorization); they pay from the credits key their subject is linked to');

export type OAuthSettings = z.output<typeof oauthSettingsSchema>;
