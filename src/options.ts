import { availableParallelism } from 'node:os';
import { InvalidOptionError } from './errors.js';
import { MAX_WORKER_SLOTS } from './wire/index.js';

/**
 * The option schema: every option butterfly takes, from code or from the daemon, defined
 * once: its type, bounds, default and doc line, and, for the daemon, its flag, the
 * commands that take it, its environment variable and its config-file field. The CLI
 * parser, `--help`, the config-file checks, the README's option table and every
 * constructor's validation are derived from it, so each option is checked in one place,
 * with one message format: `workers must be an integer from 1 to 256, got 0`.
 */

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

/** The kinds of value an option takes. */
export type OptionKind = 'integer' | 'string' | 'choice' | 'boolean' | 'endpoint' | 'endpoints' | 'paths' | 'path' | 'file' | 'pipeline';

/** One option. */
export interface OptionSpec {
  readonly kind: OptionKind;
  /** Integers: the smallest value allowed. */
  readonly min?: number;
  /** Integers: the largest value allowed; none for an open range. */
  readonly max?: number;
  /** Choices: the values allowed. */
  readonly choices?: readonly string[];
  /** The default from code; undefined when the option has none (or its default depends on something else, see `defaultText`). */
  readonly default?: string | number | boolean | readonly string[];
  /** How the default reads in `--help` and the README when it is not the value itself. */
  readonly defaultText?: string;
  /** Per command, a default other than the one from code. */
  readonly commandDefault?: Partial<Readonly<Record<Command, string | number | boolean | readonly string[]>>>;
  /** For the daemon's commands without a `commandDefault`: the number of cores this machine has. */
  readonly coresByDefault?: boolean;
  /** One line on what it does. */
  readonly doc: string;
  /** The daemon flag without `--` (default: the name in kebab case); the config field is the flag in camel case. */
  readonly flag?: string;
  /** The value's placeholder in `--help`. */
  readonly arg?: string;
  /** The daemon commands that take it; none for an option of code only. */
  readonly commands?: readonly Command[];
  /** The `--help` section the flag is listed in. */
  readonly section?: Section;
  /** What a value must be, as messages say it, when the kind's own words do not fit. */
  readonly expect?: string;
}

/** The sections of `--help`, in order. */
export const SECTIONS = ['General (every command)', 'Admin port', 'HTTP front end', 'Pipeline', 'Split mode, server and proxy', 'Worker', 'Link security (split mode)'] as const;
type Section = (typeof SECTIONS)[number];

/** Largest signed 32-bit integer: timers and byte counts on one message stay below it. */
const I32 = 2 ** 31 - 1;
const ALL: readonly Command[] = ['serve', 'simulate', 'server', 'proxy', 'worker'];
const DAEMONS: readonly Command[] = ['serve', 'server', 'proxy', 'worker'];
const FRONT: readonly Command[] = ['serve', 'server'];
const FRONT_AND_SIM: readonly Command[] = ['serve', 'simulate', 'server'];
const PIPELINE: readonly Command[] = ['serve', 'simulate'];
const SPLIT: readonly Command[] = ['server', 'proxy', 'worker'];

/** Room a request needs in a message beyond its body: target, headers, record header. */
export const MESSAGE_HEADROOM_BYTES = 64 * 1024;

/** Every option, by the name code uses. */
export const OPTIONS = Object.freeze({
  logLevel: { kind: 'choice', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', commandDefault: { simulate: 'warn' }, doc: 'log level of the daemon and its workers', arg: 'LEVEL', commands: ALL, section: 'General (every command)' },
  maxMessageBytes: {
    kind: 'integer', min: 1024, max: I32, default: 64 * 1024 * 1024, arg: 'N', commands: ALL, section: 'General (every command)',
    doc: 'largest ZeroMQ message on every socket; a peer sending more is disconnected; at least the largest body + 65536',
  },
  adminPort: { kind: 'integer', min: 0, max: 65535, defaultText: 'none', doc: 'serve /metrics (Prometheus), /health and /ready on this port, 0 for any free one', arg: 'PORT', commands: DAEMONS, section: 'Admin port' },
  adminHost: { kind: 'string', default: '127.0.0.1', doc: 'address of the admin port', arg: 'HOST', commands: DAEMONS, section: 'Admin port' },
  metrics: { kind: 'boolean', default: false, doc: 'count requests and stages for the registry even without an admin port' },

  events: { kind: 'boolean', default: false, doc: "start the pipeline's event forwarder: `ctx.events.publish` in stages, `events` to publish and subscribe from code" },
  http: { kind: 'boolean', default: true, doc: 'start the HTTP front end (off for simulation and jobs without HTTP)' },
  host: { kind: 'string', default: '127.0.0.1', doc: 'address to listen on', arg: 'HOST', commands: FRONT, section: 'HTTP front end' },
  port: { kind: 'integer', min: 0, max: 65535, default: 8002, doc: 'port to listen on, 0 for any free one', arg: 'PORT', commands: FRONT, section: 'HTTP front end' },
  engine: {
    kind: 'choice', choices: ['node', 'uws'], default: 'node', arg: 'node|uws', commands: FRONT, section: 'HTTP front end',
    doc: 'HTTP engine: node serves HTTP/1.0 and 1.1, every client; uws (uWebSockets.js) is faster but serves only HTTP/1.1 with Host',
  },
  healthPath: { kind: 'path', default: '/health', doc: 'path answered 200 by the server itself', arg: 'PATH', commands: FRONT, section: 'HTTP front end' },
  maxBodyBytes: { kind: 'integer', min: 0, max: I32, default: 10 * 1024 * 1024, flag: 'max-body', doc: 'largest request body before 413', arg: 'BYTES', commands: FRONT, section: 'HTTP front end' },
  maxUrlBytes: { kind: 'integer', min: 16, max: 1024 * 1024, default: 8192, doc: 'longest request target before 414', arg: 'BYTES', commands: FRONT, section: 'HTTP front end' },
  maxHeaderBytes: { kind: 'integer', min: 256, max: 1024 * 1024, default: 16 * 1024, doc: 'largest header block before 431', arg: 'BYTES', commands: FRONT, section: 'HTTP front end' },
  maxHeaderCount: { kind: 'integer', min: 1, max: 10_000, default: 100, doc: 'most header lines before 431', arg: 'N', commands: FRONT, section: 'HTTP front end' },
  keepAliveTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 5000, flag: 'keep-alive-timeout', doc: 'idle time before a kept-alive connection is closed', arg: 'MS', commands: FRONT, section: 'HTTP front end' },
  headersTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 10_000, flag: 'headers-timeout', doc: 'time to receive a request head before 408', arg: 'MS', commands: FRONT, section: 'HTTP front end' },
  requestReadTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 30_000, flag: 'request-read-timeout', doc: 'time to receive a whole request before 408; at least the headers timeout', arg: 'MS', commands: FRONT, section: 'HTTP front end' },
  maxConnections: { kind: 'integer', min: 1, default: 20_000, doc: 'open connections at most; past it new ones are closed at once (node engine)', arg: 'N', commands: FRONT, section: 'HTTP front end' },
  maxInFlightPerConnection: { kind: 'integer', min: 1, max: 10_000, default: 32, doc: 'pipelined requests of one connection in flight at once; the rest wait', arg: 'N', commands: FRONT, section: 'HTTP front end' },
  writeTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 30_000, flag: 'write-timeout', doc: 'time a client may take to read an answer before its connection is closed', arg: 'MS', commands: FRONT, section: 'HTTP front end' },
  maxBodyBytesInFlight: { kind: 'integer', min: 0, default: 256 * 1024 * 1024, doc: 'request body bytes held across the server at once; past it 503; at least the largest body', arg: 'BYTES', commands: FRONT, section: 'HTTP front end' },
  drainTimeoutMs: {
    kind: 'integer', min: 0, max: I32, default: 10_000, flag: 'drain-timeout', arg: 'MS', commands: ['serve', 'server', 'proxy'], section: 'HTTP front end',
    doc: 'on SIGTERM or close(), time to finish requests in flight (the rest are answered 503), or for a proxy the jobs it holds',
  },
  accessLog: { kind: 'boolean', default: false, doc: 'log one JSON line per request (method, url, status, ms, remote)', commands: FRONT, section: 'HTTP front end' },
  serverTiming: { kind: 'boolean', default: false, doc: 'add a Server-Timing header with the time spent in the pipeline', commands: FRONT, section: 'HTTP front end' },
  metricsRoutes: { kind: 'paths', default: [], defaultText: "the pipeline's routes, else none", doc: 'paths with their own route label in the metrics, comma-separated; others count as "other"', arg: 'PATHS', commands: FRONT, section: 'HTTP front end' },
  requestTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 30_000, flag: 'request-timeout', doc: 'time to answer a request before 504', arg: 'MS', commands: FRONT_AND_SIM, section: 'HTTP front end' },
  maxInFlight: { kind: 'integer', min: 1, max: 10_000_000, default: 10_000, doc: 'requests in flight before 503', arg: 'N', commands: FRONT_AND_SIM, section: 'HTTP front end' },

  pipeline: { kind: 'pipeline', defaultText: 'the built-in is_prime', doc: 'JSON pipeline description', arg: 'FILE', commands: PIPELINE, section: 'Pipeline' },
  target: {
    kind: 'string', default: '/is_prime?possible_prime={n}', arg: 'TARGET', commands: ['simulate'], section: 'Pipeline',
    doc: 'request target simulate sends, {n} replaced by each number',
  },
  workers: {
    kind: 'integer', min: 1, max: 256, default: 2, commandDefault: { worker: 1 }, coresByDefault: true, defaultText: 'the number of cores; 1 for worker', arg: 'N', commands: ['serve', 'simulate', 'worker'], section: 'Pipeline',
    doc: 'workers per stage (worker: workers this process runs, more than 1 as a supervised pool)',
  },
  transport: {
    kind: 'choice', choices: ['thread', 'process', 'inline', 'adaptive'], default: 'thread', commandDefault: { worker: 'process' }, defaultText: 'thread; process for worker', arg: 'thread|process|inline|adaptive', commands: ['serve', 'simulate', 'worker'], section: 'Pipeline',
    doc: "how workers run: threads talk to their proxy through ports; a process can be killed when stuck; inline runs them in the proxy's thread, for light stages that never block; adaptive adds an inline worker to the threads, sent the jobs while the proxy's thread has time to spare (inline and adaptive not for worker)",
  },
  maxQueue: { kind: 'integer', min: 0, max: 10_000_000, default: 1024, doc: 'jobs waiting per stage, at its proxy or prefetched by its workers, before 503', arg: 'N', commands: ['serve', 'simulate', 'proxy'], section: 'Pipeline' },
  maxQueueBytes: { kind: 'integer', min: 0, default: 64 * 1024 * 1024, doc: 'bytes of jobs waiting per stage before 503', arg: 'BYTES', commands: ['serve', 'simulate', 'proxy'], section: 'Pipeline' },
  heartbeatMs: { kind: 'integer', min: 10, max: 60_000, default: 1000, flag: 'heartbeat', doc: 'heartbeat interval between proxies and workers', arg: 'MS', commands: ['serve', 'simulate', 'proxy'], section: 'Pipeline' },
  liveness: { kind: 'integer', min: 1, max: 100, default: 3, doc: 'heartbeats missed before a worker counts as dead', arg: 'N', commands: ['serve', 'simulate', 'proxy'], section: 'Pipeline' },
  concurrency: { kind: 'integer', min: 1, max: MAX_WORKER_SLOTS, defaultText: "the stage's own, else 1", doc: 'jobs one worker runs at once', arg: 'N', commands: ['worker'], section: 'Worker' },
  prefetch: { kind: 'integer', min: 0, max: MAX_WORKER_SLOTS, defaultText: "the stage's own, else 1", doc: 'jobs one worker keeps waiting beyond those it runs', arg: 'N', commands: ['worker'], section: 'Worker' },
  timeoutMs: { kind: 'integer', min: 1, max: I32, defaultText: "the stage's own, else none", doc: "a stage's time budget per job, past which the job is answered 504" },
  workerLogLevel: { kind: 'choice', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info', doc: 'log level of worker threads and processes' },
  startTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 10_000, doc: 'time a worker may take to start (import, setup, join)' },
  closeTimeoutMs: { kind: 'integer', min: 1, max: I32, default: 10_000, doc: 'time a closing worker may take to finish before it is killed' },
  chunkBytes: { kind: 'integer', min: 1, max: 64 * 1024 * 1024, doc: 'bytes in each chunk `chunks` cuts an input into' },
  retries: { kind: 'integer', min: 0, max: 100, default: 0, doc: 'times a job sent from code is sent again after a refusal (503), or a dead worker (502) when every stage is idempotent' },
  graceMs: { kind: 'integer', min: 0, max: I32, default: 1000, doc: 'time past a job\'s deadline before its silent worker is reported stuck' },

  loopback: { kind: 'endpoint', doc: 'where final answers go: the server binds it, proxies connect to it', arg: 'ADDR', commands: ['server', 'proxy'], section: 'Split mode, server and proxy' },
  stages: { kind: 'endpoints', doc: "(server) every stage proxy's --frontend, in order, comma-separated", arg: 'ADDR,ADDR,...', commands: ['server'], section: 'Split mode, server and proxy' },
  stats: { kind: 'endpoint', doc: "stage reports: the server binds it and each proxy sends its stage's counts there every second", arg: 'ADDR', commands: ['server', 'proxy'], section: 'Split mode, server and proxy' },
  stageIndex: { kind: 'integer', min: 0, max: 254, doc: "(proxy) the stage's position, 0 for the first", arg: 'I', commands: ['proxy'], section: 'Split mode, server and proxy' },
  frontend: { kind: 'endpoint', doc: '(proxy) where its jobs arrive (bound)', arg: 'ADDR', commands: ['proxy'], section: 'Split mode, server and proxy' },
  backend: { kind: 'endpoint', doc: '(proxy) where its workers connect (bound)', arg: 'ADDR', commands: ['proxy'], section: 'Split mode, server and proxy' },
  next: { kind: 'endpoint', defaultText: 'none: the last stage', doc: "(proxy) the next stage's --frontend", arg: 'ADDR', commands: ['proxy'], section: 'Split mode, server and proxy' },
  name: { kind: 'string', defaultText: 'stage-I', doc: "(proxy) the stage's name in logs and metrics", arg: 'NAME', commands: ['proxy'], section: 'Split mode, server and proxy' },
  eventsPublish: {
    kind: 'endpoint', defaultText: 'none: no events', arg: 'ADDR', commands: ['server', 'proxy'], section: 'Split mode, server and proxy',
    doc: "events: the server binds it, and publishers (the proxies' workers, any Events client) send there; a proxy tells its workers to",
  },
  clients: {
    kind: 'endpoint', defaultText: 'none', arg: 'ADDR', commands: ['server'], section: 'Split mode, server and proxy',
    doc: '(server) other clients of the pipeline (connectPipeline) get their answers here; the server passes them on from its loopback',
  },
  eventsSubscribe: { kind: 'endpoint', defaultText: 'none', doc: '(server) events: subscribers (Events clients) connect here', arg: 'ADDR', commands: ['server'], section: 'Split mode, server and proxy' },
  idempotent: { kind: 'boolean', default: false, doc: '(proxy) re-send once a job whose worker died, instead of 502', commands: ['proxy'], section: 'Split mode, server and proxy' },
  stage: { kind: 'file', expect: 'a module path or a built-in stage name', doc: 'the stage: a built-in name or a module whose default export is the stage', arg: 'NAME|FILE', commands: ['worker'], section: 'Worker' },
  connect: { kind: 'endpoint', doc: "the stage proxy's --backend", arg: 'ADDR', commands: ['worker'], section: 'Worker' },

  curveKey: {
    kind: 'file', defaultText: 'none: plaintext links', arg: 'FILE', commands: SPLIT, section: 'Link security (split mode)',
    doc: "this daemon's secret key file (butterflyd keygen): every ZeroMQ link it binds or connects is CURVE-encrypted and authenticated",
  },
  curveServerKey: {
    kind: 'file', defaultText: 'the public half of --curve-key', arg: 'FILE', commands: SPLIT, section: 'Link security (split mode)',
    doc: 'public key file of the daemons this one connects to (the proxies and the server share that key pair)',
  },
  curveAllow: {
    kind: 'file', arg: 'FILE|DIR', commands: ['server', 'proxy'], section: 'Link security (split mode)',
    doc: '(server, proxy) public key file, or a directory of them, of the peers let in on the sockets it binds; needed with --curve-key',
  },
  insecure: {
    kind: 'boolean', default: false, commands: ['server', 'proxy'], section: 'Link security (split mode)',
    doc: '(server, proxy) bind tcp:// on an address other than loopback without --curve-key: plaintext, open to anyone who can reach it',
  },
} as const satisfies Readonly<Record<string, OptionSpec>>);

/** An option's name. */
export type OptionName = keyof typeof OPTIONS;

/** The spec of one option, widened for lookups. */
export function specOf(name: OptionName): OptionSpec {
  return OPTIONS[name];
}

/** Every option's name, in schema order. */
export const OPTION_NAMES = Object.freeze(Object.keys(OPTIONS) as OptionName[]);

/** An option's daemon flag, without `--`. */
export function flagOf(name: OptionName): string {
  return specOf(name).flag ?? name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** An option's config-file field: the flag in camel case. */
export function fieldOf(name: OptionName): string {
  return flagOf(name).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** An option's environment variable: `BUTTERFLY_` and the flag in upper snake case. */
export function envOf(name: OptionName): string {
  return `BUTTERFLY_${flagOf(name).replace(/-/g, '_').toUpperCase()}`;
}

/** The default an option has for a command (or from code when no command is given). */
export function defaultOf(name: OptionName, command?: Command): unknown {
  const spec = specOf(name);
  if (command !== undefined && spec.commandDefault?.[command] !== undefined) return spec.commandDefault[command];
  if (spec.coresByDefault === true && command !== undefined) return availableParallelism();
  return spec.default;
}

const ENDPOINT = /^(ipc:\/\/.+|inproc:\/\/.+|tcp:\/\/[^:]+:(\d+|\*))$/;

/** What an integer option must be, as the message says it. */
function integerText(min: number, max: number | undefined): string {
  if (max === undefined) return min === 1 ? 'a positive integer' : `an integer >= ${min}`;
  return `an integer from ${min} to ${max}`;
}

/** What a value of the option's kind must be, as the message says it. */
export function expectation(name: OptionName): string {
  const spec = specOf(name);
  if (spec.expect !== undefined) return spec.expect;
  switch (spec.kind) {
    case 'integer':
      return integerText(spec.min!, spec.max);
    case 'boolean':
      return 'true or false';
    case 'choice':
      return `one of ${spec.choices!.join(', ')}`;
    case 'endpoint':
      return 'a ZeroMQ endpoint (ipc://PATH or tcp://HOST:PORT)';
    case 'endpoints':
      return 'a list of 1 to 255 ZeroMQ endpoints (ipc://PATH or tcp://HOST:PORT)';
    case 'paths':
      return 'a list of at most 32 paths starting with /';
    case 'path':
      return 'a path starting with /';
    case 'file':
      return 'a file path';
    case 'pipeline':
      return 'a pipeline file path or a pipeline object';
    default:
      return 'a non-empty string';
  }
}

/**
 * Checks one option's value and returns it.
 * @param label how the message names the option (default its name): a flag, a variable, a field path.
 * @param min for an integer whose lower bound depends on another option, that bound (the
 *   message then says `an integer >= MIN`).
 * @throws InvalidOptionError `LABEL must be EXPECTED, got VALUE`.
 */
export function check<T>(name: OptionName, value: T, label: string = name, min?: number): T {
  const spec = specOf(name);
  if (valid(spec, value, undefined) && min !== undefined && (value as number) < min) throw new InvalidOptionError(label, `an integer >= ${min}`, value);
  if (!valid(spec, value, min)) throw new InvalidOptionError(label, expectation(name), value);
  return value;
}

/** Checks an option that may be left out: undefined passes. */
export function checkOptional<T>(name: OptionName, value: T | undefined, label: string = name): T | undefined {
  return value === undefined ? undefined : check(name, value, label);
}

function valid(spec: OptionSpec, value: unknown, min: number | undefined): boolean {
  switch (spec.kind) {
    case 'integer':
      return typeof value === 'number' && Number.isSafeInteger(value) && value >= Math.max(spec.min!, min ?? spec.min!) && (spec.max === undefined || value <= spec.max);
    case 'boolean':
      return typeof value === 'boolean';
    case 'choice':
      return typeof value === 'string' && spec.choices!.includes(value);
    case 'endpoint':
      return typeof value === 'string' && ENDPOINT.test(value);
    case 'endpoints':
      return Array.isArray(value) && value.length >= 1 && value.length <= 255 && value.every((v) => typeof v === 'string' && ENDPOINT.test(v));
    case 'paths':
      return Array.isArray(value) && value.length <= 32 && value.every((v) => typeof v === 'string' && v.startsWith('/') && !v.includes('?'));
    case 'path':
      return typeof value === 'string' && value.startsWith('/');
    case 'pipeline':
      return value !== null && typeof value === 'object';
    default:
      return typeof value === 'string' && value.length > 0;
  }
}

/**
 * A message must hold the largest request: its body plus room for target and headers.
 * @throws InvalidOptionError naming both options by their labels.
 */
export function checkMessageRoom(maxMessageBytes: number, maxBodyBytes: number, label = 'maxMessageBytes', bodyLabel = 'maxBodyBytes'): void {
  const least = maxBodyBytes + MESSAGE_HEADROOM_BYTES;
  if (maxMessageBytes < least) throw new InvalidOptionError(label, `at least ${bodyLabel} + ${MESSAGE_HEADROOM_BYTES} (${least})`, maxMessageBytes);
}

/**
 * Converts a flag's or a variable's text to the option's type and checks it. A boolean
 * as text is 1, true, yes or on (or 0, false, no, off).
 * @throws InvalidOptionError naming `label` and the text as given.
 */
export function fromText(name: OptionName, text: string, label: string): unknown {
  const spec = specOf(name);
  switch (spec.kind) {
    case 'integer': {
      const n = /^[0-9]{1,16}$/.test(text) ? Number(text) : NaN;
      if (!valid(spec, n, undefined)) throw new InvalidOptionError(label, expectation(name), text);
      return n;
    }
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(text)) return true;
      if (/^(0|false|no|off)$/i.test(text)) return false;
      throw new InvalidOptionError(label, 'true or false (or 1 or 0)', text);
    case 'endpoints':
    case 'paths': {
      const items = text.split(',').map((s) => s.trim());
      const list = spec.kind === 'paths' ? items.filter((s) => s !== '') : items;
      if (!valid(spec, list, undefined)) throw new InvalidOptionError(label, `${expectation(name).replace(/^a list of/, 'list')}, comma-separated`, text);
      return list;
    }
    default:
      return check(name, text, label);
  }
}

/**
 * Checks a config-file field: JSON types, no text conversions.
 * @throws InvalidOptionError naming `label`.
 */
export function fromJson(name: OptionName, value: unknown, label: string): unknown {
  const spec = specOf(name);
  if ((spec.kind === 'endpoints' || spec.kind === 'paths') && !(Array.isArray(value) && value.every((v) => typeof v === 'string'))) {
    throw new InvalidOptionError(label, 'a list of strings', value);
  }
  if ((spec.kind === 'string' || spec.kind === 'path' || spec.kind === 'endpoint' || spec.kind === 'choice') && typeof value !== 'string') {
    throw new InvalidOptionError(label, 'a string', value);
  }
  return check(name, value, label);
}

/** Fills in defaults: every key of `defaults` missing (or undefined) in `given`. */
export function withDefaults<T extends object>(defaults: Readonly<T>, given: Partial<T> | undefined): T {
  const out = { ...defaults } as T;
  if (given === undefined) return out;
  for (const key of Object.keys(given) as (keyof T)[]) {
    const v = given[key];
    if (v !== undefined) out[key] = v as T[keyof T];
  }
  return out;
}

/** The defaults from code of the named options, as an object. */
export function defaultsOf<const K extends OptionName>(names: readonly K[]): { readonly [P in K]: unknown } {
  const out: Record<string, unknown> = {};
  for (const name of names) out[name] = specOf(name).default;
  return Object.freeze(out) as { readonly [P in K]: unknown };
}
