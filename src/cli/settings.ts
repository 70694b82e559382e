/**
 * The daemon's settings, read from the option schema (`OPTIONS`): every option a command
 * takes is a flag, an environment variable (`BUTTERFLY_` and the flag in upper snake case)
 * and a field of the `--config` JSON file (the flag in camel case). Flags win over the
 * environment, the environment over the file. Each value is checked by the schema's rule,
 * and an error names where it came from: `--port`, `BUTTERFLY_PORT`, or the file and its field.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { InvalidOptionError } from '../errors.js';
import { type Command, COMMAND_NAMES, OPTION_NAMES, type OptionName, envOf, fieldOf, flagOf, fromJson, fromText, specOf } from '../options.js';

export { type Command, COMMAND_NAMES } from '../options.js';

/** A usage error: printed with the option it names, exit code 2. */
export class UsageError extends Error {}

/** A file or built-in name given in a setting, with the folder a relative path is relative to. */
export interface FileRef {
  readonly value: string;
  /** The working directory for a flag or variable, the config file's folder for a field. */
  readonly base: string;
}

/** A pipeline given by file, or inline in the config file. */
export type PipelineSource = { readonly file: FileRef } | { readonly inline: unknown; readonly base: string; readonly label: string };

/** Every setting by option name, all optional: each command applies its own defaults. */
export interface Settings {
  logLevel?: string;
  maxMessageBytes?: number;
  adminPort?: number;
  adminHost?: string;
  host?: string;
  port?: number;
  engine?: 'node' | 'uws';
  maxBodyBytes?: number;
  maxUrlBytes?: number;
  maxHeaderBytes?: number;
  maxHeaderCount?: number;
  keepAliveTimeoutMs?: number;
  headersTimeoutMs?: number;
  requestReadTimeoutMs?: number;
  maxConnections?: number;
  maxInFlightPerConnection?: number;
  writeTimeoutMs?: number;
  maxBodyBytesInFlight?: number;
  healthPath?: string;
  drainTimeoutMs?: number;
  accessLog?: boolean;
  serverTiming?: boolean;
  metricsRoutes?: string[];
  requestTimeoutMs?: number;
  maxInFlight?: number;
  pipeline?: PipelineSource;
  target?: string;
  workers?: number;
  transport?: 'thread' | 'process' | 'inline' | 'adaptive';
  maxQueue?: number;
  maxQueueBytes?: number;
  heartbeatMs?: number;
  liveness?: number;
  loopback?: string;
  stages?: string[];
  stats?: string;
  stageIndex?: number;
  frontend?: string;
  backend?: string;
  next?: string;
  name?: string;
  eventsPublish?: string;
  clients?: string;
  eventsSubscribe?: string;
  idempotent?: boolean;
  stage?: FileRef;
  connect?: string;
  concurrency?: number;
  prefetch?: number;
  curveKey?: FileRef;
  curveServerKey?: FileRef;
  curveAllow?: FileRef;
  insecure?: boolean;
}

/** The options the daemon takes: those of the schema with at least one command. */
export const DAEMON_OPTIONS: readonly OptionName[] = Object.freeze(OPTION_NAMES.filter((name) => (specOf(name).commands?.length ?? 0) > 0));

/** The environment variable naming the config file. */
export const CONFIG_ENV = 'BUTTERFLY_CONFIG';

const PARSE_OPTIONS = Object.fromEntries([
  ...DAEMON_OPTIONS.map((name) => [flagOf(name), { type: specOf(name).kind === 'boolean' ? 'boolean' : 'string' }] as const),
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

function takes(name: OptionName, command: Command): boolean {
  return specOf(name).commands?.includes(command) === true;
}

/** Runs a schema check, turning its error into a usage error with the same message. */
function usage<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof InvalidOptionError) throw new UsageError(err.message);
    throw err;
  }
}

/** A value from a flag or a variable: files are relative to the working directory. */
function textValue(name: OptionName, raw: string, label: string, cwd: string): unknown {
  const kind = specOf(name).kind;
  if (kind === 'file') return { value: usage(() => fromText('name', raw, label)) as string, base: cwd } satisfies FileRef;
  if (kind === 'pipeline') return { file: { value: usage(() => fromText('name', raw, label)) as string, base: cwd } } satisfies PipelineSource;
  return usage(() => fromText(name, raw, label));
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

  const out: Record<string, unknown> = {};
  // The config file first, then the environment over it, then flags over both.
  const configPath = typeof values.config === 'string' ? values.config : env[CONFIG_ENV] || undefined;
  if (configPath !== undefined) Object.assign(out, readConfigFile(resolve(cwd, configPath), command));
  for (const name of DAEMON_OPTIONS) {
    if (!takes(name, command)) continue;
    const raw = env[envOf(name)];
    if (raw === undefined || raw === '') continue;
    out[name] = textValue(name, raw, envOf(name), cwd);
  }
  for (const name of DAEMON_OPTIONS) {
    const flag = flagOf(name);
    const raw = values[flag];
    if (raw === undefined) continue;
    if (!takes(name, command)) {
      throw new UsageError(`--${flag} does not apply to ${COMMAND_NAMES[command]} (it is for ${specOf(name).commands!.map((c) => COMMAND_NAMES[c]).join(', ')})`);
    }
    out[name] = typeof raw === 'boolean' ? raw : textValue(name, raw, `--${flag}`, cwd);
  }
  return { command, positionals: rest, help, version, settings: out as Settings };
}

/**
 * Reads a JSON config file: an object whose fields are settings, each the flag in camel
 * case. A field no command knows is an error; one that another command uses is ignored,
 * so that daemons may share a file.
 */
function readConfigFile(path: string, command: Command): Record<string, unknown> {
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
  const out: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(parsed)) {
    const name = DAEMON_OPTIONS.find((n) => fieldOf(n) === field);
    if (name === undefined) {
      const near = DAEMON_OPTIONS.find((n) => fieldOf(n).toLowerCase() === field.toLowerCase().replace(/[-_]/g, ''));
      throw new UsageError(`config ${path}: unknown field ${JSON.stringify(field)}${near === undefined ? '' : `; did you mean ${JSON.stringify(fieldOf(near))}?`}`);
    }
    if (!takes(name, command)) continue;
    const label = `config ${path}: ${field}`;
    const kind = specOf(name).kind;
    if (kind === 'file') {
      out[name] = { value: usage(() => fromJson(name, value, label)) as string, base } satisfies FileRef;
    } else if (kind === 'pipeline') {
      if (typeof value === 'string' && value !== '') out[name] = { file: { value, base } } satisfies PipelineSource;
      else out[name] = { inline: usage(() => fromJson('pipeline', value, label)), base, label } satisfies PipelineSource;
    } else {
      out[name] = usage(() => fromJson(name, value, label));
    }
  }
  return out;
}
