import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { MessagePort } from 'node:worker_threads';
import { type Logger, silentLogger } from '../logger.js';
import { check, defaultsOf, withDefaults } from '../options.js';
import { InvalidOptionError, WorkerStartError } from '../errors.js';
import type { WorkerTransport } from '../stages/index.js';
import type { LinkSecurity } from '../wire/index.js';
import type { WorkerHandle } from './handle.js';
import type { WorkerLaunch } from './launch.js';
import { startProcessWorker } from './process.js';
import { startInlineWorker } from './inline.js';
import { startThreadWorker } from './thread.js';

/** Options of a stage's worker pool. */
export interface WorkerPoolOptions {
  /** The stage's name, for logs. */
  name: string;
  /** Module whose default export is the stage. */
  module: string;
  /** The stage proxy's backend address. */
  connect: string;
  /** Workers to keep running. Default 2. */
  workers: number;
  /**
   * Processes, threads, inline in the proxy's thread, or adaptive: threads and one inline
   * worker, which the proxy prefers while its thread has time to spare (inline and adaptive
   * need `attach`). Default `process` (see `kill`).
   */
  transport: WorkerTransport;
  /** Jobs one worker runs at once; undefined for the stage's own default. */
  concurrency: number | undefined;
  /** Jobs one worker keeps waiting beyond those it runs; undefined for the stage's own default. */
  prefetch: number | undefined;
  /**
   * For thread and inline workers whose proxy is in this process: gives each new worker its
   * channel to the proxy (`Proxy.attachPort`; `whileIdle` for an adaptive stage's inline worker).
   * Such threads open no socket, so a stuck one can be terminated and replaced like a
   * process (an inline worker can only be closed).
   */
  attach: ((whileIdle: boolean) => MessagePort) | undefined;
  /** Largest ZeroMQ message, in bytes. Default 64 MiB. */
  maxMessageBytes: number;
  /** How long a worker may take to start (import, setup, join), in ms. Default 10000. */
  startTimeoutMs: number;
  /** How long `close()` waits for a worker to finish before killing it, in ms. Default 10000. */
  closeTimeoutMs: number;
  /** The stage's time budget per job, in ms; undefined for the stage's own. */
  timeoutMs: number | undefined;
  /** Told each worker's label when it exits, expected or not (embedded mode tells the proxy). */
  onWorkerExit: ((label: string) => void) | undefined;
  /** pino level for the workers' own log lines. Default `info`. */
  logLevel: string;
  /** CURVE keys for the workers' sockets; undefined (the default) for plaintext. */
  security: LinkSecurity | undefined;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const POOL_DEFAULTS = Object.freeze({
  ...(defaultsOf(['workers', 'maxMessageBytes', 'startTimeoutMs', 'closeTimeoutMs']) as Pick<WorkerPoolOptions, 'workers' | 'maxMessageBytes' | 'startTimeoutMs' | 'closeTimeoutMs'>),
  transport: 'process' as WorkerTransport,
  concurrency: undefined,
  prefetch: undefined,
  attach: undefined,
  timeoutMs: undefined,
  onWorkerExit: undefined,
  logLevel: defaultsOf(['workerLogLevel']).workerLogLevel as string,
  security: undefined,
  logger: silentLogger,
});

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;
/** Quick failures in a row after which a slot's restarts are logged as a crash loop. */
const CRASH_LOOP_FAILURES = 5;
/** A worker that lived this long resets its slot's backoff. */
const STABLE_MS = 10_000;

interface Slot {
  handle: WorkerHandle | undefined;
  label: string;
  generation: number;
  startedAt: number;
  failures: number;
  timer: NodeJS.Timeout | undefined;
  /** Its worker runs in the proxy's thread. */
  readonly inline: boolean;
}

/**
 * Keeps `workers` workers of one stage running, as threads or processes. A worker that
 * exits unexpectedly is restarted after a backoff that doubles with each quick failure
 * (100 ms to 5 s), so a stage that crashes in a loop is slowed down and logged, not
 * restarted in a tight loop.
 */
export class WorkerPool {
  private currentState: 'starting' | 'running' | 'draining' | 'closed' = 'starting';

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'draining' | 'closed' {
    return this.currentState;
  }
  private restartCount = 0;
  private readonly options: WorkerPoolOptions;
  private readonly logger: Logger;
  private readonly slots: Slot[] = [];
  private readonly exits = new Map<WorkerHandle, Promise<void>>();
  /**
   * This pool among every pool of the stage, on any host: host name, process id and a
   * random part. Its workers' labels end with it, so that two pools of one stage (two
   * `butterflyd worker --workers N` started alike) never take each other's workers for
   * their own.
   */
  private readonly identity = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;

  constructor(options: Partial<WorkerPoolOptions> & Pick<WorkerPoolOptions, 'name' | 'module' | 'connect'>) {
    const o = withDefaults<WorkerPoolOptions>(POOL_DEFAULTS as WorkerPoolOptions, options);
    check('startTimeoutMs', o.startTimeoutMs);
    check('closeTimeoutMs', o.closeTimeoutMs);
    if ((o.transport === 'inline' || o.transport === 'adaptive') && o.attach === undefined) {
      throw new InvalidOptionError('transport', "thread or process where the stage's proxy runs in another process", o.transport);
    }
    this.options = o;
    this.logger = o.logger;
  }

  /** Workers restarted after an unexpected exit since start. */
  get restarts(): number {
    return this.restartCount;
  }

  /** Process ids of the pool's worker processes (empty for threads). */
  get pids(): number[] {
    const pids: number[] = [];
    for (const s of this.slots) if (s.handle?.pid !== undefined) pids.push(s.handle.pid);
    return pids;
  }

  /** Workers currently started. */
  get alive(): number {
    return this.slots.filter((s) => s.handle !== undefined).length;
  }

  /**
   * Starts every worker and resolves once all have joined their proxy.
   * @throws Error with the worker's own message when one fails to start (bad module,
   * setup threw) or does not join within `startTimeoutMs`.
   */
  async start(): Promise<void> {
    const starts: Promise<void>[] = [];
    // An adaptive stage has one inline worker beside its threads.
    const inline = this.options.transport === 'adaptive' ? 1 : 0;
    for (let i = 0; i < this.options.workers + inline; i++) {
      const slot: Slot = { handle: undefined, label: '', generation: 0, startedAt: 0, failures: 0, timer: undefined, inline: this.options.transport === 'inline' || i === this.options.workers };
      this.slots.push(slot);
      starts.push(this.spawn(slot));
    }
    const results = await Promise.allSettled(starts);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      await this.destroy();
      throw failed.reason;
    }
    this.currentState = 'running';
  }

  /** Asks every worker to finish what it holds and stop; kills those still running after `closeTimeoutMs`. Idempotent. */
  async close(): Promise<void> {
    await this.stopAll('close');
  }

  /** Stops every worker at once. */
  async destroy(): Promise<void> {
    await this.stopAll('destroy');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async stopAll(how: 'close' | 'destroy'): Promise<void> {
    if (this.state === 'closed') return;
    this.currentState = 'draining';
    for (const slot of this.slots) {
      if (slot.timer !== undefined) clearTimeout(slot.timer);
      const handle = slot.handle;
      if (handle === undefined) continue;
      if (how === 'close') {
        handle.command({ type: 'close' });
        const timer = setTimeout(() => handle.kill(), this.options.closeTimeoutMs);
        void this.exits.get(handle)?.then(() => clearTimeout(timer));
      } else {
        handle.kill();
      }
    }
    await Promise.all(this.exits.values());
    this.currentState = 'closed';
  }

  private launch(label: string): WorkerLaunch {
    const o = this.options;
    return {
      module: o.module,
      connect: o.connect,
      concurrency: o.concurrency,
      prefetch: o.prefetch,
      timeoutMs: o.timeoutMs,
      label,
      maxMessageBytes: o.maxMessageBytes,
      logLevel: o.logLevel,
      security: o.security,
    };
  }

  /**
   * Kills the worker with this label at once (its proxy found it stuck); its supervisor
   * starts a replacement. A worker thread cannot be killed while it holds ZeroMQ sockets
   * without aborting the whole process, so a stuck thread without a port is only reported.
   */
  kill(label: string): void {
    const slot = this.slots.find((s) => s.label === label && s.handle !== undefined);
    if (slot === undefined) return;
    if (this.options.transport === 'thread' && this.options.attach === undefined) {
      this.logger.error({ stage: this.options.name, worker: label }, 'worker thread stuck; it cannot be killed (use the process transport)');
      return;
    }
    this.logger.warn({ stage: this.options.name, worker: label }, 'killing stuck worker');
    slot.handle!.kill();
  }

  /**
   * Replaces every worker, one at a time: starts the new one, waits until it has joined,
   * then lets the old one finish what it holds and stop. Requests are not lost.
   */
  async rollingRestart(): Promise<void> {
    for (const slot of this.slots) {
      if (this.state !== 'running') return;
      const old = slot.handle;
      await this.spawn(slot);
      if (old !== undefined) {
        old.command({ type: 'close' });
        await this.exits.get(old);
      }
    }
  }

  private spawn(slot: Slot): Promise<void> {
    const o = this.options;
    slot.generation++;
    const label = `${o.name}#${this.slots.indexOf(slot)}.${slot.generation}@${this.identity}`;
    const launch = this.launch(label);
    const handle = slot.inline ? startInlineWorker(launch, o.attach!(o.transport === 'adaptive')) : o.transport === 'process' ? startProcessWorker(launch) : startThreadWorker(launch, o.attach?.(false));
    slot.handle = handle;
    slot.label = label;
    slot.startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settle(new WorkerStartError(`a worker of stage ${o.name} did not start within ${o.startTimeoutMs} ms`));
        handle.kill();
      }, o.startTimeoutMs);
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err === undefined) resolve();
        else reject(err);
      };
      handle.onReport((report) => {
        if (report.type === 'ready') settle();
        else settle(new WorkerStartError(`stage ${o.name} failed to start: ${report.message}`));
      });
      this.exits.set(
        handle,
        new Promise<void>((exited) =>
          handle.onExit((code, signal) => {
            this.exits.delete(handle);
            settle(new WorkerStartError(`a worker of stage ${o.name} exited while starting (code ${code}, signal ${signal})`));
            o.onWorkerExit?.(label);
            if (slot.handle === handle) {
              slot.handle = undefined;
              if (this.state === 'running') this.restart(slot, handle, code, signal);
            }
            exited();
          }),
        ),
      );
    });
  }

  private restart(slot: Slot, handle: WorkerHandle, code: number | null, signal: string | null): void {
    slot.failures = Date.now() - slot.startedAt > STABLE_MS ? 0 : slot.failures + 1;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.max(0, slot.failures - 1));
    this.restartCount++;
    const level = slot.failures >= CRASH_LOOP_FAILURES ? 'error' : 'warn';
    this.logger[level](
      { stage: this.options.name, worker: slot.label, pid: handle.pid, code, signal, restartInMs: delay, failures: slot.failures },
      slot.failures >= CRASH_LOOP_FAILURES ? 'worker crashing in a loop; restarting with backoff' : 'worker exited; restarting',
    );
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (this.state !== 'running') return;
      this.spawn(slot).catch((err: unknown) => this.logger.error({ err, stage: this.options.name }, 'worker restart failed'));
    }, delay);
    slot.timer.unref();
  }
}
