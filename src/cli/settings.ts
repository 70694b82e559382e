/**
 * The daemon's settings: every option is a flag, an environment variable
 * (`BUTTERFLY_` and the flag in upper snake case) and a field of the `--config` JSON file
 * (the flag in camel case). Flags win over the environment, the environment over the
 * file. Each value is checked here, and an error names where it came from: `--port`,
 * `BUTTERFLY_PORT`, or the file and its field.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';

/** A usage error: printed with the option it names, exit code 2. */
export class UsageError extends Error {}

/** The daemon's commands; `serve` is the one without a sub-command name. */
export type Command = 'serve' | 'simulate' | 'server' | 'proxy' | 'worker';

/** How each command is called in messages. */
export const COMMAND_NAMES: Readonly<Record<Command, string>> = Object.freeze({
  serve: 'butterflyd',
  simulate: 'butterflyd simulate',
  server: 'butterflyd server',
  proxy: 'butterflyd proxy',
  worker: 'butterflyd worker',
});

/** A file or built-in name given in a setting, with the folder a relative path is relative to. */
export interface FileRef {
  readonly value: string;
  /** The working directory for a flag or variable, the config file's folder for a field. */
  readonly base: string;
}

/** A pipeline given by file, or inline in the config file. */
export type PipelineSource = { readonly file: FileRef } | { readonly inline: unknown; readonly base: string; readonly label: string };

/** Every setting, all optional: each command applies its own defaults. */
export interface Settings {
  logLevel?: string;
  maxMessageBytes?: number;
  adminPort?: number;
  adminHost?: string;
  host?: string;
  port?: number;
  engine?: 'node' | 'uws';
  maxBody?: number;
  healthPath?: string;
  drainTimeout?: number;
  accessLog?: boolean;
  serverTiming?: boolean;
  metricsRoutes?: string[];
  requestTimeout?: number;
  maxInFlight?: number;
  pipeline?: PipelineSource;
  workers?: number;
  transport?: 'thread' | 'process';
  maxQueue?: number;
  heartbeat?: number;
  loopback?: string;
  stages?: string[];
  stats?: string;
  stageIndex?: number;
  frontend?: string;
  backend?: string;
  next?: string;
  name?: string;
  idempotent?: boolean;
  stage?: FileRef;
  connect?: string;
  concurrency?: number;
}

type Kind = 'integer' | 'string' | 'choice' | 'boolean' | 'endpoint' | 'endpoints' | 'paths' | 'file' | 'pipeline';

interface SettingDef {
  readonly key: keyof Settings;
  readonly kind: Kind;
  readonly commands: readonly Command[];
  readonly min?: number;
  readonly max?: number;
  readonly choices?: readonly string[];
}

const ALL: readonly Command[] = ['serve', 'simulate', 'server', 'proxy', 'worker'];
const DAEMONS: readonly Command[] = ['serve', 'server', 'proxy', 'worker'];
const FRONT: readonly Command[] = ['serve', 'server'];
const MAX_MS = 2 ** 31 - 1;

/** Every setting; the flag is the key in kebab case. */
export const SETTINGS: readonly SettingDef[] = Object.freeze([
  { key: 'logLevel', kind: 'choice', commands: ALL, choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
  { key: 'maxMessageBytes', kind: 'integer', commands: ALL, min: 1024, max: 2 ** 31 - 1 },
  { key: 'adminPort', kind: 'integer', commands: DAEMONS, min: 0, max: 65535 },
  { key: 'adminHost', kind: 'string', commands: DAEMONS },
  { key: 'host', kind: 'string', commands: FRONT },
  { key: 'port', kind: 'integer', commands: FRONT, min: 0, max: 65535 },
  { key: 'engine', kind: 'choice', commands: FRONT, choices: ['node', 'uws'] },
  { key: 'maxBody', kind: 'integer', commands: FRONT, min: 0, max: 2 ** 31 - 1 },
  { key: 'healthPath', kind: 'string', commands: FRONT },
  { key: 'drainTimeout', kind: 'integer', commands: FRONT, min: 0, max: MAX_MS },
  { key: 'accessLog', kind: 'boolean', commands: FRONT },
  { key: 'serverTiming', kind: 'boolean', commands: FRONT },
  { key: 'metricsRoutes', kind: 'paths', commands: FRONT },
  { key: 'requestTimeout', kind: 'integer', commands: ['serve', 'simulate', 'server'], min: 1, max: MAX_MS },
  { key: 'maxInFlight', kind: 'integer', commands: ['serve', 'simulate', 'server'], min: 1, max: 10_000_000 },
  { key: 'pipeline', kind: 'pipeline', commands: ['serve', 'simulate'] },
  { key: 'workers', kind: 'integer', commands: ['serve', 'simulate', 'worker'], min: 1, max: 256 },
  { key: 'transport', kind: 'choice', commands: ['serve', 'simulate', 'worker'], choices: ['thread', 'process'] },
  { key: 'maxQueue', kind: 'integer', commands: ['serve', 'simulate', 'proxy'], min: 0, max: 10_000_000 },
  { key: 'heartbeat', kind: 'integer', commands: ['serve', 'simulate', 'proxy'], min: 10, max: 60_000 },
  { key: 'loopback', kind: 'endpoint', commands: ['server', 'proxy'] },
  { key: 'stages', kind: 'endpoints', commands: ['server'] },
  { key: 'stats', kind: 'endpoint', commands: ['server', 'proxy'] },
  { key: 'stageIndex', kind: 'integer', commands: ['proxy'], min: 0, max: 254 },
  { key: 'frontend', kind: 'endpoint', commands: ['proxy'] },
  { key: 'backend', kind: 'endpoint', commands: ['proxy'] },
  { key: 'next', kind: 'endpoint', commands: ['proxy'] },
  { key: 'name', kind: 'string', commands: ['proxy'] },
  { key: 'idempotent', kind: 'boolean', commands: ['proxy'] },
  { key: 'stage', kind: 'file', commands: ['worker'] },
  { key: 'connect', kind: 'endpoint', commands: ['worker'] },
  { key: 'concurrency', kind: 'integer', commands: ['worker'], min: 1, max: 4096 },
] as const satisfies readonly SettingDef[]);

/** `maxMessageBytes` → `max-message-bytes`. */
export function flagOf(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `maxMessageBytes` → `BUTTERFLY_MAX_MESSAGE_BYTES`. */
export function envOf(key: string): string {
  return `BUTTERFLY_${flagOf(key).replace(/-/g, '_').toUpperCase()}`;
}

/** The environment variable naming the config file. */
export const CONFIG_ENV = 'BUTTERFLY_CONFIG';

const PARSE_OPTIONS = Object.fromEntries([
  ...SETTINGS.map((d) => [flagOf(d.key), { type: d.kind === 'boolean' ? 'boolean' : 'string' }] as const),
  ['config', { type: 'string' }],
  ['help', { type: 'boolean', short: 'h' }],
  ['version', { type: 'boolean', short: 'v' }],
]) as Record<string, { type: 'string' | 'boolean'; short?: string }>;

/** What the command line asked for. */
export interface Invocation {
  readonly command: Command;
  /** Arguments after the command (simulate's COUNT). */
  readonly positionals: readonly string[];
  readonly help: boolean;
  readonly version: boolean;
  readonly settings: Settings;
}

/**
 * Reads argv, the environment and the config file into settings for one command.
 * @throws UsageError naming the flag, variable or field at fault.
 */
export function readInvocation(argv: readonly string[], env: NodeJS.ProcessEnv, cwd: string): Invocation {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: [...argv], options: PARSE_OPTIONS, allowPositionals: true, strict: true }) as {
      values: Record<string, string | boolean | undefined>;
      positionals: string[];
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const help = values.help === true;
  const version = values.version === true;
  const [first, ...rest] = positionals;
  let command: Command = 'serve';
  if (first !== undefined) {
    if (!(['simulate', 'server', 'proxy', 'worker'] as const).includes(first as never)) {
      if (help || version) return { command, positionals: [], help, version, settings: {} };
      throw new UsageError(`unknown command ${JSON.stringify(first)}; see butterflyd --help`);
    }
    command = first as Command;
  }
  if (help || version) return { command, positionals: rest, help, version, settings: {} };
  if (command !== 'simulate' && rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);

  const settings: Settings = {};
  const out = settings as Record<string, unknown>;
  // The config file first, then the environment over it, then flags over both.
  const configPath = typeof values.config === 'string' ? values.config : env[CONFIG_ENV] || undefined;
  if (configPath !== undefined) {
    const fromFile = readConfigFile(resolve(cwd, configPath), command);
    for (const [key, value] of Object.entries(fromFile)) out[key] = value;
  }
  for (const def of SETTINGS) {
    if (!def.commands.includes(command)) continue;
    const raw = env[envOf(def.key)];
    if (raw === undefined || raw === '') continue;
    out[def.key] = fromText(def, raw, envOf(def.key), cwd, true);
  }
  for (const def of SETTINGS) {
    const flag = flagOf(def.key);
    const raw = values[flag];
    if (raw === undefined) continue;
    if (!def.commands.includes(command)) {
      throw new UsageError(`--${flag} does not apply to ${COMMAND_NAMES[command]} (it is for ${def.commands.map((c) => COMMAND_NAMES[c]).join(', ')})`);
    }
    out[def.key] = typeof raw === 'boolean' ? raw : fromText(def, raw, `--${flag}`, cwd, false);
  }
  return { command, positionals: rest, help, version, settings };
}

const ENDPOINT = /^(ipc:\/\/.+|inproc:\/\/.+|tcp:\/\/[^:]+:(\d+|\*))$/;
const ENDPOINT_TEXT = 'a ZeroMQ endpoint (ipc://PATH or tcp://HOST:PORT)';

/** A value from a flag or an environment variable. */
function fromText(def: SettingDef, raw: string, label: string, cwd: string, fromEnv: boolean): unknown {
  switch (def.kind) {
    case 'integer':
      if (!/^[0-9]+$/.test(raw)) throw rangeError(def, label, raw);
      return checkInteger(def, Number(raw), label, raw);
    case 'boolean':
      // Only the environment gives a boolean as text; a flag is present or not.
      if (fromEnv && /^(1|true|yes|on)$/i.test(raw)) return true;
      if (fromEnv && /^(0|false|no|off)$/i.test(raw)) return false;
      throw new UsageError(`${label} must be true or false (or 1 or 0), got ${JSON.stringify(raw)}`);
    case 'endpoints':
      return checkList(def, raw.split(',').map((s) => s.trim()), label, raw);
    case 'paths':
      return checkList(def, raw.split(',').map((s) => s.trim()).filter((s) => s !== ''), label, raw);
    case 'file':
      return { value: raw, base: cwd } satisfies FileRef;
    case 'pipeline':
      return { file: { value: raw, base: cwd } } satisfies PipelineSource;
    default:
      return checkString(def, raw, label);
  }
}

/** A value from the config file: JSON types, no text conversions. */
function fromJson(def: SettingDef, value: unknown, label: string, base: string): unknown {
  switch (def.kind) {
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) throw rangeError(def, label, value);
      return checkInteger(def, value, label, value);
    case 'boolean':
      if (typeof value !== 'boolean') throw new UsageError(`${label} must be true or false, got ${describe(value)}`);
      return value;
    case 'endpoints':
    case 'paths':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
        throw new UsageError(`${label} must be a list of strings, got ${describe(value)}`);
      }
      return checkList(def, value as string[], label, value);
    case 'file':
      if (typeof value !== 'string' || value === '') throw new UsageError(`${label} must be a module path or a built-in stage name, got ${describe(value)}`);
      return { value, base } satisfies FileRef;
    case 'pipeline':
      if (typeof value === 'string' && value !== '') return { file: { value, base } } satisfies PipelineSource;
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) return { inline: value, base, label } satisfies PipelineSource;
      throw new UsageError(`${label} must be a pipeline file path or a pipeline object, got ${describe(value)}`);
    default:
      if (typeof value !== 'string') throw new UsageError(`${label} must be a string, got ${describe(value)}`);
      return checkString(def, value, label);
  }
}

function rangeError(def: SettingDef, label: string, raw: unknown): UsageError {
  return new UsageError(`${label} must be an integer from ${def.min} to ${def.max}, got ${describe(raw)}`);
}

function checkInteger(def: SettingDef, n: number, label: string, raw: unknown): number {
  if (n < def.min! || n > def.max!) throw rangeError(def, label, raw);
  return n;
}

function checkString(def: SettingDef, value: string, label: string): string {
  if (def.kind === 'choice' && !def.choices!.includes(value)) {
    throw new UsageError(`${label} must be one of ${def.choices!.join(', ')}, got ${JSON.stringify(value)}`);
  }
  if (def.kind === 'endpoint' && !ENDPOINT.test(value)) throw new UsageError(`${label} must be ${ENDPOINT_TEXT}, got ${JSON.stringify(value)}`);
  if (value === '') throw new UsageError(`${label} must not be empty`);
  if (def.key === 'healthPath' && !value.startsWith('/')) throw new UsageError(`${label} must start with /, got ${JSON.stringify(value)}`);
  return value;
}

function checkList(def: SettingDef, items: string[], label: string, raw: unknown): string[] {
  if (def.kind === 'endpoints') {
    if (items.length === 0 || items.length > 255 || !items.every((s) => ENDPOINT.test(s))) {
      throw new UsageError(`${label} must list 1 to 255 ZeroMQ endpoints (ipc://PATH or tcp://HOST:PORT), comma-separated, got ${describe(raw)}`);
    }
  } else if (items.length > 32 || !items.every((s) => s.startsWith('/') && !s.includes('?'))) {
    throw new UsageError(`${label} must list at most 32 paths starting with /, got ${describe(raw)}`);
  }
  return items;
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Reads a JSON config file: an object whose fields are settings in camel case. A field no
 * command knows is an error; one that another command uses is ignored, so that daemons
 * may share a file.
 */
function readConfigFile(path: string, command: Command): Partial<Record<keyof Settings, unknown>> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--config: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--config: ${path} is not valid JSON (${(err as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError(`--config: ${path} must hold a JSON object of settings`);
  const base = dirname(path);
  const out: Partial<Record<keyof Settings, unknown>> = {};
  for (const [field, value] of Object.entries(parsed)) {
    const def = SETTINGS.find((d) => d.key === field);
    if (def === undefined) {
      const known = SETTINGS.find((d) => d.key.toLowerCase() === field.toLowerCase().replace(/[-_]/g, ''));
      throw new UsageError(`config ${path}: unknown field ${JSON.stringify(field)}${known === undefined ? '' : `; did you mean ${JSON.stringify(known.key)}?`}`);
    }
    if (!def.commands.includes(command)) continue;
    out[def.key] = fromJson(def, value, `config ${path}: ${field}`, base);
  }
  return out;
}
