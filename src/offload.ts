/**
 * Automatic offload: a function that is timed on its first call and, when it proves slow,
 * runs from then on in a pool of worker threads instead of the caller's thread.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type Butterfly, startButterfly } from './embedded.js';
import { ButterflyError, InvalidOptionError } from './errors.js';
import type { Logger } from './logger.js';
import { check } from './options.js';
import { type OffloadJob, loadExport } from './stages/offload-stage.js';

/** Options of `offload`. */
export interface OffloadOptions {
  /** A first call taking at least this long, in ms, sends the later ones to the pool. Default 50. */
  readonly thresholdMs?: number;
  /** Worker threads in the pool. Default: the number of cores. */
  readonly workers?: number;
  /** Time to each answer from the pool, in ms; past it the call rejects with `BF_ERR_DEADLINE`. Default 30000. */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
}

/** Where an offloaded function runs: not known before its first call ends, then for good. */
export type OffloadMode = 'undecided' | 'local' | 'pool';

/** The function `offload` returns: call it as the original (it returns a promise), and close it to stop its pool. */
export interface Offloaded<Args extends unknown[], Result> {
  (...args: Args): Promise<Awaited<Result>>;
  /** Where calls run. */
  readonly mode: OffloadMode;
  /** Stops the pool, if one was started, once the calls in it are answered. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const OFFLOAD_STAGE = new URL('./stages/offload-stage.js', import.meta.url).href;
const DEFAULT_THRESHOLD_MS = 50;

/**
 * Wraps the export `exportName` of `moduleUrl`. Its first call runs in the caller's thread
 * and is timed: at or past `thresholdMs`, later calls go to a pool of worker threads that
 * import the module themselves (started on the second call, stopped by `close()`); below
 * it, every call stays in the caller's thread. Calls made before the first one ends wait
 * for its verdict. In the pool, arguments must be JSON values; a result comes back as
 * JSON, or as the string or Buffer it was; an error thrown as a `ButterflyError` keeps its
 * code and status, any other becomes `BF_ERR_STAGE_FAILED` (500) with its message.
 * @throws InvalidOptionError for a bad option, at once.
 */
export function offload<F extends (...args: never[]) => unknown>(moduleUrl: string | URL, exportName: string, options: OffloadOptions = {}): Offloaded<Parameters<F>, ReturnType<F>> {
  if (!(moduleUrl instanceof URL) && (typeof moduleUrl !== 'string' || moduleUrl === '')) throw new InvalidOptionError('moduleUrl', 'a module URL or path', moduleUrl);
  // A path is the caller's; the workers need a URL.
  const module = moduleUrl instanceof URL ? moduleUrl.href : /^[a-z][a-z0-9+.-]*:/i.test(moduleUrl) ? moduleUrl : pathToFileURL(resolve(moduleUrl)).href;
  if (typeof exportName !== 'string' || exportName === '') throw new InvalidOptionError('exportName', 'the name of an exported function', exportName);
  const thresholdMs = options.thresholdMs ?? DEFAULT_THRESHOLD_MS;
  if (!Number.isSafeInteger(thresholdMs) || thresholdMs < 0) throw new InvalidOptionError('thresholdMs', 'an integer >= 0', thresholdMs);
  const workers = check('workers', options.workers ?? availableParallelism(), 'workers');
  const timeoutMs = check('requestTimeoutMs', options.timeoutMs ?? 30_000, 'timeoutMs');
  type Result = Awaited<ReturnType<F>>;

  let mode: OffloadMode = 'undecided';
  let decided: Promise<void> | undefined;
  let pool: Promise<Butterfly> | undefined;
  let closed = false;

  const localFn = (): Promise<(...args: unknown[]) => unknown> => loadExport(module, exportName);

  const inPool = async (args: unknown[]): Promise<Result> => {
    // A pool that failed to start is tried again by the next call.
    pool ??= startButterfly({ http: false, workers, workerLogLevel: 'warn', requestTimeoutMs: timeoutMs, pipeline: { stages: [{ module: OFFLOAD_STAGE }] }, ...(options.logger === undefined ? {} : { logger: options.logger }) });
    const starting = pool;
    const bf = await starting.catch((err: unknown) => {
      if (pool === starting) pool = undefined;
      throw err;
    });
    const job: OffloadJob = { module, name: exportName, args };
    const answer = await bf.jobs.send(job as unknown as Record<string, unknown>);
    // A JSON result comes wrapped (see the offload stage); text and bytes as they are.
    return (answer !== null && typeof answer === 'object' && !Buffer.isBuffer(answer) && 'v' in answer ? (answer as { v: unknown }).v : answer) as Result;
  };

  const call = async (...args: unknown[]): Promise<Result> => {
    if (closed) throw new ButterflyError('BF_ERR_DRAINING', 'this offloaded function is closed');
    if (mode === 'pool') return inPool(args);
    if (mode === 'local') return (await (await localFn())(...args)) as Result;
    if (decided !== undefined) {
      await decided;
      return call(...args);
    }
    // The first call: run here and time it.
    let settle: () => void = () => {};
    decided = new Promise<void>((resolve) => (settle = resolve));
    try {
      const fn = await localFn();
      const started = performance.now();
      const result = (await fn(...args)) as Result;
      mode = performance.now() - started >= thresholdMs ? 'pool' : 'local';
      return result;
    } catch (err) {
      // A failed first call decides nothing: the next call is timed instead.
      decided = undefined;
      throw err;
    } finally {
      settle();
    }
  };

  const close = async (): Promise<void> => {
    closed = true;
    const started = pool;
    pool = undefined;
    // A pool that failed to start has nothing to close.
    const bf = await started?.catch(() => undefined);
    await bf?.close();
  };
  Object.defineProperty(call, 'mode', { get: () => mode, enumerable: true });
  Object.defineProperty(call, 'close', { value: close });
  Object.defineProperty(call, Symbol.asyncDispose, { value: close });
  return call as unknown as Offloaded<Parameters<F>, ReturnType<F>>;
}
