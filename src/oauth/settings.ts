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
      .describe(
        'the identity provider (OAuth 2.1 authorization server) whose JWT access tokens the server takes, exactly as their `iss` says',
      ),
    scopes: z
      .array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/, 'expected a scope token (RFC 6749 §3.3)'))
      .max(32)
      .default([])
      .describe('scopes every token must carry'),
    required: z
      .boolean()
      .default(true)
      .describe(
        'every request needs a valid token (401 without one: x402 and API-key callers are refused); false: a request without one is served as on any other server',
      ),
  })
  .describe(
    'callers identified by OAuth access tokens for the server’s URL (MCP authorization); they pay from the credits key their subject is linked to',
  );

export type OAuthSettings = z.output<typeof oauthSettingsSchema>;

/** What names an OAuth caller holds no control character: PostgreSQL text cannot hold a NUL, and no provider's claims have one. */
const noControlCharacter = /^\P{Cc}*$/u;

/**
 * An OAuth caller's subject as turnpike links and looks it up: a token's `sub`, 1 to 255 characters with no control
 * character. Tokens and the admin API both hold to it.
 *
 * @example oauthSubjectSchema.safeParse('agent\u0000').success // false
 */
export const oauthSubjectSchema = z
  .string()
  .min(1)
  .max(255)
  .regex(noControlCharacter, 'expected no control character')
  .describe('the `sub` of the caller’s access tokens');

/** The issuer of an OAuth caller as the admin names it when linking or unlinking: exactly as a server's `oauth.issuer` says. */
export const oauthIssuerSchema = z
  .string()
  .min(1)
  .max(2048)
  .regex(noControlCharacter, 'expected no control character')
  .describe('the identity provider, exactly as a server’s `oauth.issuer` names it');
