import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigProblem } from './errors.js';
import { type Config, type ConfigInput, configSchema } from './schema.js';
import { shownSetting } from '../log/shown-url.js';

type Leaf = { path: string[]; type: string; description?: string };

const ENV_PREFIX = 'TURNPIKE_';
const SECRET_LIKE = /key|secret|password|token|mnemonic/i;

/** `['http', 'bodyLimitBytes']` → `TURNPIKE_HTTP_BODY_LIMIT_BYTES`. */
export const envVarName = (keys: string[]) =>
  ENV_PREFIX + keys.map((k) => k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');

/** Every setting of the schema with its environment variable, for `--help` and the README. */
export function configVariables(): { path: string; env: string; description: string }[] {
  return leaves(configSchema, []).map((leaf) => ({
    path: leaf.path.join('.'),
    env: envVarName(leaf.path),
    description: leaf.description ?? '',
  }));
}

export type LoadConfigOptions = {
  /** YAML or JSON file (JSON is YAML). */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** From command-line flags; they win over the environment, which wins over the file. */
  overrides?: ConfigInput;
};

/**
 * Reads the configuration: schema defaults < file < `TURNPIKE_*` environment < flags. Throws a
 * ConfigError listing every bad field with where its value came from.
 *
 * @example
 * const config = loadConfig({ file: 'turnpike.yaml', overrides: { http: { port: 8080 } } });
 */
export function loadConfig({ file, env = process.env, overrides = {} }: LoadConfigOptions = {}): Config {
  const fromFile = file ? readConfigFile(file) : {};
  const fromEnv = envOverrides(env);
  const merged = merge(merge(fromFile, fromEnv), overrides as Record<string, unknown>);
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const sourceOf = (keys: PropertyKey[]): string => {
      if (has(overrides, keys)) return 'flag';
      if (has(fromEnv, keys)) return `env ${envVarName(keys.map(String))}`;
      if (has(fromFile, keys)) return `file ${file}`;
      return 'default';
    };
    throw new ConfigError(result.error.issues.flatMap((issue) => describeIssue(issue, merged, sourceOf)));
  }
  const config = result.data;
  config.store.url ??= `sqlite:${path.join(config.dataDir, 'turnpike.db')}`;
  return config;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : String(error);
    throw new ConfigError([{ path: '(file)', source: `file ${file}`, message: reason }]);
  }
  try {
    const parsed: unknown = parseYaml(text) ?? {};
    if (typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new ConfigError([{ path: '(file)', source: `file ${file}`, message: 'expected a mapping of settings' }]);
    }
    return parsed as Record<string, unknown>;
  } catch (error) {
    if (!(error instanceof YAMLParseError)) throw error;
    const line = error.linePos?.[0].line;
    const where = line ? `line ${line}: ` : '';
    throw new ConfigError([{ path: '(file)', source: `file ${file}`, message: `${where}${error.message.split('\n')[0]}` }]);
  }
}

function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const leaf of leaves(configSchema, [])) {
    const raw = env[envVarName(leaf.path)];
    if (raw === undefined || raw === '') continue;
    setPath(out, leaf.path, coerce(raw, leaf.type));
  }
  return out;
}

/** Env values are strings; turn them into what the leaf expects, or leave them for zod to reject. */
function coerce(raw: string, type: string): unknown {
  if (type === 'number' && /^-?\d+(\.\d+)?$/.test(raw.trim())) return Number(raw);
  if (type === 'boolean' && /^(true|false)$/i.test(raw.trim())) return raw.trim().toLowerCase() === 'true';
  return raw;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown, sourceOf: (keys: PropertyKey[]) => string): ConfigProblem[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => {
      const keys = [...issue.path, key];
      const at = keys.join('.');
      const message = SECRET_LIKE.test(key)
        ? 'secrets are never read from the config file; set them in the environment (see README → Secrets)'
        : 'unknown setting';
      return { path: at, source: sourceOf(keys), message };
    });
  }
  // A URL may carry a credential (an RPC node's key, the store's password), here or in an object
  // given (a server's upstream): the problem is shown without it.
  const value = get(input, issue.path);
  const got = value === undefined ? '' : `, got ${truncate(JSON.stringify(value, (_key, v: unknown) => shownSetting(v)))}`;
  return [{ path: issue.path.join('.') || '(root)', source: sourceOf(issue.path), message: `${issue.message}${got}` }];
}

const truncate = (s: string) => (s.length > 60 ? `${s.slice(0, 57)}...` : s);

/** The settable leaves of a schema, looking through defaults and optionals. */
function leaves(schema: z.core.$ZodType, at: string[]): Leaf[] {
  const def = schema._zod.def as { type: string; innerType?: z.core.$ZodType; shape?: Record<string, z.core.$ZodType> };
  if (def.innerType) {
    const inner = leaves(def.innerType, at);
    const description = (schema as { description?: string }).description;
    return description && inner.length === 1 ? [{ ...inner[0]!, description }] : inner;
  }
  if (def.type === 'object' && def.shape) {
    return Object.entries(def.shape).flatMap(([key, child]) => leaves(child, [...at, key]));
  }
  // Lists of records (servers) are for the file; one variable cannot spell them.
  if (def.type === 'array') return [];
  return [{ path: at, type: def.type, description: (schema as { description?: string }).description }];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) continue;
    out[key] = isObject(value) && isObject(out[key]) ? merge(out[key], value) : value;
  }
  return out;
}

function get(value: unknown, keys: PropertyKey[]): unknown {
  return keys.reduce<unknown>((v, k) => (isObject(v) ? v[k as string] : undefined), value);
}

const has = (value: unknown, keys: PropertyKey[]) => get(value, keys) !== undefined;

function setPath(target: Record<string, unknown>, keys: string[], value: unknown) {
  let node = target;
  for (const key of keys.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
  node[keys[keys.length - 1]!] = value;
}
