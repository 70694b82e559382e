import { createReadStream } from 'node:fs';
import { ButterflyError, type ErrorCode, cancelledError } from './errors.js';
import { check } from './options.js';
import type { Logger } from './logger.js';
import { PipelineClient } from './server/index.js';
import type { ErrorData, LinkSecurity, ResponseData, Value } from './wire/index.js';

/**
 * Jobs without HTTP, on the same pipeline as the front end: `send` one job and await its
 * answer, `distribute` many with a bound on those in flight. Every failure is a
 * `ButterflyError` with the code and status a client of the HTTP front end would get.
 */

/** Options of one job. */
export interface SendOptions {
  /** Cancels the job: it leaves the queues, its handler's signal aborts, and `send` rejects with `BF_ERR_CANCELLED`. */
  readonly signal?: AbortSignal;
  /** Time to the answer, in ms; past it `send` rejects with `BF_ERR_DEADLINE` (504). Default: the pipeline's `requestTimeoutMs`. */
  readonly timeoutMs?: number;
  /**
   * Times to send the job again when it fails with 503 (refused before any stage ran it:
   * a full queue, no live worker) or, for a pipeline whose stages are all idempotent, 502
   * (its worker died), waiting 50 ms, then twice as long each time, at most 2 s. Default 0.
   */
  readonly retries?: number;
}

/** Options of `distribute`. */
export interface DistributeOptions {
  /** Jobs in flight at most. Default 16. */
  readonly concurrency?: number;
  /** Stops the batch: jobs in flight are cancelled and no more are sent; the iteration ends with `BF_ERR_CANCELLED`. */
  readonly signal?: AbortSignal;
  /** Time to each answer, in ms (see `SendOptions.timeoutMs`). */
  readonly timeoutMs?: number;
  /** Told after each answer: how many have come back, and how many items were sent so far. */
  readonly onProgress?: (done: number, sent: number) => void;
}

/** One item's outcome in `distribute`: its answer, or the error it failed with. */
export type Settled = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: ButterflyError };

const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 2000;
/** Refusals that happen before any stage ran the job: safe to send again. */
const REFUSED = new Set(['BF_ERR_OVERLOADED', 'BF_ERR_NO_WORKER']);

/** The jobs client of a running pipeline (`Butterfly.jobs`). */
export class Jobs {
  /**
   * @param client the pipeline client whose stage 1 takes the jobs
   * @param idempotent true when every stage of the pipeline is idempotent: a job whose worker died may be sent again
   */
  constructor(
    private readonly client: PipelineClient,
    private readonly idempotent: boolean,
  ) {}

  /**
   * Sends one job to stage 1 and resolves with the pipeline's answer: a value sent as JSON
   * comes back parsed, text as a string, bytes as a Buffer. An answer with an error status
   * rejects, as does every failure, with a `ButterflyError` carrying its code and status.
   * @throws InvalidOptionError for a bad `timeoutMs` or `retries`.
   */
  async send(payload: Value, options: SendOptions = {}): Promise<unknown> {
    const timeoutMs = options.timeoutMs === undefined ? undefined : check('requestTimeoutMs', options.timeoutMs, 'timeoutMs');
    const retries = check('retries', options.retries ?? 0);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(payload, options.signal, timeoutMs);
      } catch (err) {
        const code = (err as ButterflyError).code;
        const again = REFUSED.has(code) || (this.idempotent && code === 'BF_ERR_WORKER_DIED');
        if (!again || attempt >= retries) throw err;
        await pause(Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt), options.signal);
      }
    }
  }

  /**
   * Sends every item as a job, at most `concurrency` at once, and yields their outcomes in
   * the order of `items` as they come back: one failure does not sink the batch. A slot
   * freed by any answer is filled at once, not only when the oldest job is answered, so a
   * slow job does not leave workers idle; answers that arrive ahead of an older one wait
   * here, with at most 2 x `concurrency` jobs sent and not yet yielded. `items` may be an
   * array or any (async) iterable, read only as fast as jobs are sent, so a stream of chunks
   * never sits in memory whole; leaving the loop early closes it. `onProgress` is told of
   * each answer as it arrives, in any order; an error it throws ends the iteration.
   */
  async *distribute(items: Iterable<Value> | AsyncIterable<Value>, options: DistributeOptions = {}): AsyncGenerator<Settled, void, undefined> {
    const concurrency = check('concurrency', options.concurrency ?? 16, 'concurrency');
    const source = Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : (items as Iterable<Value>)[Symbol.iterator]();
    const sendOptions: SendOptions = { ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) };
    /** Outcomes answered and not yet yielded, by their item's index. */
    const answered = new Map<number, Settled>();
    let sent = 0;
    let done = 0;
    let yielded = 0;
    let running = 0;
    let exhausted = false;
    let stopped = false;
    let filling = false;
    let failure: { error: unknown } | undefined;
    let wake: (() => void) | undefined;
    const notify = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    const settle = (index: number, settled: Settled): void => {
      running--;
      done++;
      answered.set(index, settled);
      if (!stopped) {
        try {
          options.onProgress?.(done, sent);
        } catch (err) {
          failure ??= { error: err };
        }
      }
      notify();
      void fill();
    };
    // One filler at a time: it takes items while a slot is free and fewer than 2 x `concurrency` jobs are sent and not yielded.
    const fill = async (): Promise<void> => {
      if (filling) return;
      filling = true;
      try {
        while (!exhausted && !stopped && failure === undefined && running < concurrency && sent - yielded < 2 * concurrency) {
          if (options.signal?.aborted === true) throw cancelledError();
          const next = await source.next();
          if (next.done === true) {
            exhausted = true;
            break;
          }
          // The loop was left while the item was read: it is not sent.
          if (stopped) break;
          const index = sent++;
          running++;
          this.send(next.value, sendOptions).then(
            (value) => settle(index, { ok: true, value }),
            (error: unknown) => settle(index, { ok: false, error: error instanceof ButterflyError ? error : new ButterflyError('BF_ERR_INTERNAL', String(error)) }),
          );
        }
      } catch (err) {
        failure ??= { error: err };
      } finally {
        filling = false;
        notify();
      }
    };
    try {
      void fill();
      for (;;) {
        if (failure !== undefined) throw failure.error;
        const settled = answered.get(yielded);
        if (settled !== undefined) {
          answered.delete(yielded);
          yielded++;
          if (options.signal?.aborted === true) throw cancelledError();
          yield settled;
          void fill();
        } else if (exhausted && yielded === sent) {
          return;
        } else {
          await new Promise<void>((resolve) => (wake = resolve));
        }
      }
    } finally {
      stopped = true;
      // Left early (a break, an error): the source is closed, as a for-of loop would close it.
      if (!exhausted) {
        try {
          void Promise.resolve(source.return?.()).catch(() => {});
        } catch {
          // a source that fails to close has nothing more to give
        }
      }
    }
  }

  private once(payload: Value, signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<unknown> {
    if (signal?.aborted === true) return Promise.reject(cancelledError());
    return new Promise<unknown>((resolve, reject) => {
      let id = 0;
      const onAbort = (): void => {
        this.client.cancel(id);
        reject(cancelledError());
      };
      const onAnswer = (response: ResponseData | null, error: ErrorData | null): void => {
        signal?.removeEventListener('abort', onAbort);
        if (error !== null) reject(new ButterflyError(error.code as ErrorCode, error.message, error.status));
        else if (response!.status >= 400) reject(errorOf(response!));
        else resolve(valueOf(response!));
      };
      id = timeoutMs === undefined ? this.client.submit(payload, onAnswer) : this.client.submit(payload, onAnswer, timeoutMs);
      if (id !== 0) signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** The answer's body as the value it was sent as: JSON parsed, text as a string, anything else as bytes. */
function valueOf(response: ResponseData): unknown {
  const type = headerOf(response, 'content-type') ?? '';
  if (type.startsWith('application/json')) return JSON.parse(response.body.toString('utf8')) as unknown;
  if (type.startsWith('text/')) return response.body.toString('utf8');
  return response.body;
}

/** An answer with an error status as the error: its JSON error body when it has one. */
function errorOf(response: ResponseData): ButterflyError {
  try {
    const { error } = valueOf(response) as { error?: { code?: unknown; message?: unknown } };
    if (typeof error?.code === 'string' && typeof error.message === 'string') return new ButterflyError(error.code as ErrorCode, error.message, response.status);
  } catch {
    // not JSON: the status says it
  }
  return new ButterflyError('BF_ERR_STAGE_FAILED', `the pipeline answered ${response.status}`, response.status);
}

function headerOf(response: ResponseData, name: string): string | undefined {
  const h = response.headers;
  for (let i = 0; i + 1 < h.length; i += 2) if (h[i] === name) return h[i + 1];
  return undefined;
}

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(cancelledError());
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelledError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Bytes `chunks` reads from a file at a time, at least: one read serves many small chunks. */
const READ_BYTES = 1024 * 1024;

/**
 * Cuts a file (a path or a file URL) or any stream of bytes into chunks of `size` bytes
 * (the last one shorter), reading as the chunks are taken, never the whole input: feed it
 * to `distribute` and merge the partial results as they come back (scatter-gather). A file
 * is read 1 MiB (or `size`, if larger) at a time, and a chunk that lies within one read is
 * a view of it, not a copy.
 * @throws InvalidOptionError for a size outside 1 byte to 64 MiB.
 */
export async function* chunks(input: string | URL | Iterable<Buffer | string> | AsyncIterable<Buffer | string>, size: number): AsyncGenerator<Buffer, void, undefined> {
  check('chunkBytes', size, 'size');
  const source = typeof input === 'string' || input instanceof URL ? createReadStream(input, { highWaterMark: Math.max(size, READ_BYTES) }) : input;
  let parts: Buffer[] = [];
  let held = 0;
  for await (const piece of source) {
    let bytes = typeof piece === 'string' ? Buffer.from(piece) : piece;
    while (bytes.length > 0) {
      const take = Math.min(size - held, bytes.length);
      parts.push(bytes.subarray(0, take));
      held += take;
      bytes = bytes.subarray(take);
      if (held === size) {
        yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, size);
        parts = [];
        held = 0;
      }
    }
  }
  if (held > 0) yield Buffer.concat(parts, held);
}

/** Options of `connectPipeline`. */
export interface ConnectOptions {
  /** Frontend addresses of every stage's proxy, in order (the server's `--stages`). */
  readonly stages: string[];
  /** The answer hub of the client that binds the pipeline's loopback (the server's `--clients`). */
  readonly via: string;
  /** True when every stage is idempotent: `send` may then retry a job whose worker died. Default false. */
  readonly idempotent?: boolean;
  /** Time to each answer, in ms, unless a job says otherwise. Default 30000. */
  readonly requestTimeoutMs?: number;
  /** Jobs in flight at most. Default 10000. */
  readonly maxInFlight?: number;
  /** CURVE keys, when the pipeline's links have them. */
  readonly security?: LinkSecurity;
  readonly logger?: Logger;
}

/** A client of a pipeline that runs elsewhere (another process or host). */
export interface PipelineConnection {
  readonly client: PipelineClient;
  /** `send` and `distribute`, as `Butterfly.jobs`. */
  readonly jobs: Jobs;
  /** Waits for the jobs in flight, then closes. Idempotent. */
  close(): Promise<void>;
  /** Answers the jobs in flight 503 at once and closes. Idempotent. */
  destroy(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Joins a running pipeline as one more client beside its HTTP server: jobs go straight to
 * stage 1's proxy, and their answers come back through the server's answer hub (`via`,
 * the server's `--clients`), never anyone else's.
 * @throws InvalidOptionError for a bad option.
 */
export async function connectPipeline(options: ConnectOptions): Promise<PipelineConnection> {
  const client = new PipelineClient({
    stages: options.stages,
    via: options.via,
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
    ...(options.maxInFlight === undefined ? {} : { maxInFlight: options.maxInFlight }),
    ...(options.security === undefined ? {} : { security: options.security }),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  await client.start();
  return {
    client,
    jobs: new Jobs(client, options.idempotent === true),
    close: () => client.close(),
    destroy: () => client.destroy(),
    [Symbol.asyncDispose]: () => client.close(),
  };
}
