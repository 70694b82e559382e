/**
 * butterflyd: the daemon. Maps flags to options; the only place that reads argv.
 *
 *   butterflyd [options]                       the whole pipeline in one process tree
 *   butterflyd simulate COUNT [options]        check 1..COUNT through the pipeline, no HTTP
 *   butterflyd worker --stage F --connect A    one stage worker joining a proxy
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { type ButterflyOptions, startButterfly } from '../embedded.js';
import { InvalidOptionError } from '../errors.js';
import { RequestData, type ErrorData, type ResponseData } from '../wire/index.js';
import { importStage, loadPipelineFile } from '../stages/index.js';
import { StageWorker } from '../worker/index.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const HELP = `butterflyd ${VERSION}: pipelined worker-layer HTTP server

Usage:
  butterflyd [options]                      run the pipeline (default: is_prime) with its HTTP front end
  butterflyd simulate COUNT [options]       check every number from 1 to COUNT through the is_prime
                                            pipeline without HTTP; print the count of primes and the rate
  butterflyd worker --stage FILE --connect ADDRESS [--concurrency N]
                                            run one worker of a stage and join the proxy at ADDRESS

Options:
  --host HOST               address to listen on (default 127.0.0.1)
  --port PORT               port to listen on, 0 for any free one (default 8002)
  --engine node|uws         HTTP engine (default node): node serves HTTP/1.0 and 1.1, every client;
                            uws (uWebSockets.js) is faster but serves only HTTP/1.1 with Host
  --workers N               workers per stage (default: the number of cores, ${availableParallelism()})
  --transport thread|process  how workers run (default thread)
  --pipeline FILE           JSON pipeline description (default: the built-in is_prime)
  --request-timeout MS      time to answer a request before 504 (default 30000)
  --max-in-flight N         requests in flight before 503 (default 10000)
  --max-queue N             jobs queued per stage before 503 (default 1024)
  --max-body BYTES          largest request body before 413 (default 10485760)
  --health-path PATH        path answered 200 by the server itself (default /health)
  --drain-timeout MS        on SIGTERM, time to finish requests in flight (default 10000)
  --log-level LEVEL         fatal, error, warn, info, debug or silent (default info)
  --stage FILE              (worker) the stage module
  --connect ADDRESS         (worker) the stage proxy's worker address, ipc://PATH or tcp://HOST:PORT
  --concurrency N           (worker) jobs held at once (default: the stage's own)
  -h, --help                print this help
  -v, --version             print the version
`;

/** A usage error: printed with the option it names, exit code 2. */
class UsageError extends Error {}

const OPTIONS = {
  host: { type: 'string' },
  port: { type: 'string' },
  engine: { type: 'string' },
  workers: { type: 'string' },
  transport: { type: 'string' },
  pipeline: { type: 'string' },
  'request-timeout': { type: 'string' },
  'max-in-flight': { type: 'string' },
  'max-queue': { type: 'string' },
  'max-body': { type: 'string' },
  'health-path': { type: 'string' },
  'drain-timeout': { type: 'string' },
  'log-level': { type: 'string' },
  stage: { type: 'string' },
  connect: { type: 'string' },
  concurrency: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

type Flags = ReturnType<typeof parse>['values'];

function parse(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function integer(flags: Flags, name: keyof typeof OPTIONS, min: number, max: number): number | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !/^[0-9]+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

function choice<T extends string>(flags: Flags, name: keyof typeof OPTIONS, choices: readonly T[]): T | undefined {
  const raw = flags[name];
  if (raw === undefined) return undefined;
  if (!(choices as readonly unknown[]).includes(raw)) {
    throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got ${JSON.stringify(raw)}`);
  }
  return raw as T;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

async function pipelineOptions(flags: Flags): Promise<Partial<ButterflyOptions>> {
  const o: Partial<ButterflyOptions> = { workers: integer(flags, 'workers', 1, 256) ?? availableParallelism() };
  const set = <K extends keyof ButterflyOptions>(key: K, value: ButterflyOptions[K] | undefined): void => {
    if (value !== undefined) o[key] = value;
  };
  set('transport', choice(flags, 'transport', ['thread', 'process']));
  set('requestTimeoutMs', integer(flags, 'request-timeout', 1, 2 ** 31 - 1));
  set('maxInFlight', integer(flags, 'max-in-flight', 1, 10_000_000));
  set('maxQueue', integer(flags, 'max-queue', 0, 10_000_000));
  set('drainTimeoutMs', integer(flags, 'drain-timeout', 0, 2 ** 31 - 1));
  if (flags.pipeline !== undefined) {
    try {
      o.pipeline = await loadPipelineFile(flags.pipeline);
    } catch (err) {
      if (err instanceof InvalidOptionError) throw new UsageError(`--pipeline: ${err.message}`);
      throw err;
    }
  }
  return o;
}

function makeLogger(flags: Flags) {
  const level = choice(flags, 'log-level', LEVELS) ?? 'info';
  return { level, logger: pino({ level, base: { pid: process.pid } }) };
}

/** SIGTERM or SIGINT run `stop` once; a second signal exits at once. */
function onSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) process.exit(1);
    stopping = true;
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

async function serve(flags: Flags): Promise<void> {
  const { level, logger } = makeLogger(flags);
  const options = await pipelineOptions(flags);
  const maxBody = integer(flags, 'max-body', 0, 2 ** 31 - 1);
  const butterfly = await startButterfly({
    ...options,
    host: flags.host ?? '127.0.0.1',
    port: integer(flags, 'port', 0, 65535) ?? 8002,
    engine: choice(flags, 'engine', ['node', 'uws']) ?? 'node',
    healthPath: flags['health-path'] ?? '/health',
    server: maxBody === undefined ? {} : { maxBodyBytes: maxBody },
    workerLogLevel: level,
    logger,
  });
  onSignals(() => butterfly.close());
}

async function simulate(flags: Flags, countText: string | undefined): Promise<void> {
  if (countText === undefined || !/^[0-9]+$/.test(countText) || Number(countText) < 1 || Number(countText) > 1e9) {
    throw new UsageError(`simulate needs COUNT, an integer from 1 to 1000000000, got ${JSON.stringify(countText ?? '')}`);
  }
  const count = Number(countText);
  const { logger, level } = makeLogger({ ...flags, 'log-level': flags['log-level'] ?? 'warn' });
  const options = await pipelineOptions(flags);
  // Keep every request admissible: no more in flight than one stage's queue can hold.
  const window = Math.min(2048, options.maxInFlight ?? 2048);
  const maxQueue = Math.max(window, options.maxQueue ?? window);
  const butterfly = await startButterfly({ ...options, http: false, maxInFlight: window, maxQueue, workerLogLevel: level, logger });
  const client = butterfly.client;
  const started = process.hrtime.bigint();
  let nextNumber = 1;
  let answered = 0;
  let primes = 0;
  let failures = 0;
  const failureCodes = new Map<string, number>();
  await new Promise<void>((resolve) => {
    const onAnswer = (response: ResponseData | null, error: ErrorData | null): void => {
      answered++;
      if (error !== null) {
        failures++;
        failureCodes.set(error.code, (failureCodes.get(error.code) ?? 0) + 1);
      } else if (response === null || response.status !== 200) failures++;
      else if (response.body.includes('"is_prime":true')) primes++;
      if (nextNumber <= count) submit();
      if (answered === count) resolve();
    };
    const submit = (): void => {
      const n = nextNumber++;
      client.submit(new RequestData('GET', `/is_prime?possible_prime=${n}`, [], Buffer.alloc(0), 'simulation'), onAnswer);
    };
    while (nextNumber <= count && nextNumber <= window) submit();
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await butterfly.close();
  console.log(`checked ${count} numbers from 1 to ${count}: ${primes} primes, ${failures} failures`);
  if (failures > 0) console.log(`failures by code: ${[...failureCodes].map(([code, n]) => `${code} ${n}`).join(', ')}`);
  console.log(`${seconds.toFixed(2)} s, ${Math.round(count / seconds)} checks/s`);
  process.exitCode = failures === 0 ? 0 : 1;
}

async function worker(flags: Flags): Promise<void> {
  if (flags.stage === undefined) throw new UsageError('worker needs --stage FILE');
  if (flags.connect === undefined) throw new UsageError('worker needs --connect ADDRESS');
  const { logger } = makeLogger(flags);
  const { pathToFileURL } = await import('node:url');
  const { resolve } = await import('node:path');
  const stage = await importStage(pathToFileURL(resolve(flags.stage)).href);
  let w: StageWorker;
  try {
    w = new StageWorker({ stage, connect: flags.connect, concurrency: integer(flags, 'concurrency', 1, 65536), logger });
  } catch (err) {
    if (err instanceof InvalidOptionError) throw new UsageError(`--${err.option}: ${err.message}`);
    throw err;
  }
  onSignals(() => w.close());
  await w.start();
}

async function main(argv: string[]): Promise<void> {
  const { values: flags, positionals } = parse(argv);
  if (flags.help === true) {
    process.stdout.write(HELP);
    return;
  }
  if (flags.version === true) {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  const [command, ...rest] = positionals;
  if (command === undefined) return serve(flags);
  if (command === 'simulate') {
    if (rest.length > 1) throw new UsageError(`simulate takes one COUNT, got ${rest.join(' ')}`);
    return simulate(flags, rest[0]);
  }
  if (command === 'worker') {
    if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
    return worker(flags);
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}; see butterflyd --help`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`butterflyd: ${err.message}`);
    process.exit(2);
  }
  const message = err instanceof Error ? err.message : String(err);
  console.error(`butterflyd: ${message}`);
  process.exit(1);
});
