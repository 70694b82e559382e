import { randomBytes } from 'node:crypto';
import type { MessagePort } from 'node:worker_threads';
import { ButterflyError, ERROR_STATUS, InvalidOptionError, cancelledError, deadlineError, toErrorRecord } from '../errors.js';
import { Events, checkTopic, encodeEvent } from '../events.js';
import { Fifo } from '../fifo.js';
import { type Logger, silentLogger } from '../logger.js';
import { check, checkOptional, defaultsOf, withDefaults } from '../options.js';
import { HttpRequest, NextOutcome, Reply, type ReplyBody, type ReplyInit, type StageContext, type StageDefinition, type StageEvents, makeReply } from '../stages/index.js';
import {
  Flag,
  IDENTITY_TOKEN_BYTES,
  Kind,
  LARGE_RECORD_BYTES,
  RequestData,
  encodeInPlace,
  readValue,
  readWelcome,
  writeErrorRecord,
  writeEvent,
  writeHello,
  writeReturned,
  writeResponse,
  writeResponseHead,
  writeValue,
  writeValueHead,
  type KindValue,
  type LinkSecurity,
  type RecordSink,
  RecordWriter,
  type Value,
  type WelcomeConfig,
  type WireRecord,
} from '../wire/index.js';
import { ProxyConnection } from './connection.js';

/** Options of one stage worker. */
export interface StageWorkerOptions {
  /** The stage this worker runs. */
  stage: StageDefinition;
  /** The stage proxy's backend address (ZeroMQ); ignored when `port` is given. */
  connect: string;
  /**
   * A channel to a proxy of this process (`Proxy.attachPort`), for a worker thread: jobs,
   * answers and next-stage jobs all cross it, and the worker opens no socket.
   */
  port: MessagePort | undefined;
  /** Jobs run at once (default: the stage's `concurrency`, else 1). */
  concurrency: number | undefined;
  /**
   * Jobs kept waiting here beyond those running (default: the stage's `prefetch`, else 1):
   * the next job is at hand when one ends, instead of a round trip to the proxy away.
   */
  prefetch: number | undefined;
  /** Largest ZeroMQ message accepted, in bytes. Default 64 MiB. */
  maxMessageBytes: number;
  /** This stage's time budget per job, in ms (default: the stage's `timeoutMs`, else none): past it the job is answered 504. */
  timeoutMs: number | undefined;
  /** Time a handler may run past its deadline before the worker gives up on it, in ms. Default 1000. */
  graceMs: number;
  /** A name unique among the stage's workers, given by the supervisor; the proxy reports it when the worker is stuck. */
  label: string;
  /**
   * Heartbeat from a thread of its own (default false), so that a handler blocking the
   * event loop does not make the worker look dead. Only for a worker that is its process's
   * main thread: a worker thread must not own threads holding sockets.
   */
  pulse: boolean;
  /** CURVE keys: the proxy, the next stage and the loopback are reached as a CURVE client. Default none (plaintext). */
  security: LinkSecurity | undefined;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const WORKER_DEFAULTS = Object.freeze({
  port: undefined,
  concurrency: undefined,
  prefetch: undefined,
  maxMessageBytes: defaultsOf(['maxMessageBytes']).maxMessageBytes as number,
  timeoutMs: undefined,
  graceMs: defaultsOf(['graceMs']).graceMs as number,
  label: '',
  pulse: false,
  security: undefined,
  logger: silentLogger,
});

/** Jobs prefetched per worker when neither the options nor the stage say. */
export const DEFAULT_PREFETCH = 1;

/**
 * Time a worker runs jobs back to back before it sends their outcomes and DONEs, in ms.
 * Short, so that a finished job's outcome and its credit leave while the next job runs;
 * tiny jobs still go many to a message.
 */
const TURN_BUDGET_MS = 0.1;

/** How often running jobs' deadlines are checked, in ms. */
const SWEEP_MS = 50;

/**
 * Time past a job's deadline plus grace after which the watchdog takes a job still held
 * for a blocked event loop, in ms: a live event loop frees the slot at deadline plus grace,
 * and its next sweep clears the watch.
 */
const WATCHDOG_MARGIN_MS = 1000;

/** How long `close()` waits for running jobs before dropping them, in ms. */
const CLOSE_GRACE_MS = 5000;

/**
 * Runs one stage's handler for the jobs its proxy sends. Joins the proxy with HELLO (its
 * concurrency and prefetch window), learns the next stage and the loopback from WELCOME,
 * runs at most `concurrency` jobs at once with up to `prefetch` more waiting, and sends
 * each job's outcome on as soon as it ends: `ctx.next(...)` to the next stage's proxy, a
 * reply or an error to the loopback, then DONE (one credit back) to its proxy. This is
 * the protocol: jobs, outcomes, HELLO and BYE; its `ProxyConnection` is the transport
 * (sockets or a port, heartbeats, and rebuilding the link to a proxy that went silent).
 */
export class StageWorker {
  private currentState: 'starting' | 'running' | 'draining' | 'closed' = 'starting';
  private readonly options: StageWorkerOptions;
  private readonly stage: StageDefinition;
  private readonly concurrency: number;
  private readonly prefetch: number;
  private readonly budgetMs: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly logger: Logger;
  private readonly link: ProxyConnection;
  /** This worker's secret for its proxy (see `HelloData.token`): the same in every HELLO it sends, and in its pulse's heartbeats. */
  private readonly token = randomBytes(IDENTITY_TOKEN_BYTES);
  /** The watchdog slot the pulse reads: past this time a job still held means a blocked event loop (0: none). */
  private readonly watch = new Float64Array(new SharedArrayBuffer(8));
  private readonly running = new Map<number, Job>();
  /** Jobs received and not started; bounded by the credit the proxy is given. */
  private readonly inbox = new Fifo<WireRecord>(16);
  /** Messages of large jobs moved to this thread and not started: given back if the worker leaves. */
  private readonly movedIn = new Map<number, Buffer>();
  private pumpScheduled = false;
  private readonly pumpBound = (): void => this.pump();
  private welcomed: (() => void) | undefined;
  /** The pipeline's events, made when a WELCOME names where they go. */
  private events: Events | undefined;
  /** What `ctx.events` does in every job of this worker. */
  private readonly stageEvents: StageEvents = {
    publish: (topic, data) => {
      checkTopic(topic);
      if ((this.link.config?.events ?? null) === null) throw new InvalidOptionError('events', 'a pipeline started with events', 'none');
      if (this.events !== undefined) {
        this.events.publish(topic, data);
        return;
      }
      // A worker thread holds no socket: its proxy's thread publishes for it. Encoded first:
      // data JSON cannot carry throws here, before anything is written to the batch.
      const encoded = encodeEvent(data);
      const w = this.link.toProxy.writer;
      w.begin(Kind.EVENT, 0, this.stageIndex, 0, 0);
      writeEvent(w, topic, encoded);
      w.end();
      this.link.toProxy.schedule();
    },
  };
  private idle: (() => void) | undefined;
  private released: (() => void) | undefined;

  constructor(options: Partial<StageWorkerOptions> & Pick<StageWorkerOptions, 'stage' | 'connect'>) {
    const o = withDefaults<StageWorkerOptions>(WORKER_DEFAULTS as StageWorkerOptions, options);
    if (o.port === undefined) check('connect', o.connect);
    this.concurrency = check('concurrency', o.concurrency ?? o.stage.concurrency ?? 1);
    this.prefetch = check('prefetch', o.prefetch ?? o.stage.prefetch ?? DEFAULT_PREFETCH);
    this.budgetMs = checkOptional('timeoutMs', o.timeoutMs ?? o.stage.timeoutMs) ?? 0;
    check('graceMs', o.graceMs);
    this.options = o;
    this.stage = o.stage;
    this.logger = o.logger;
    this.link = new ProxyConnection(
      { connect: o.connect, port: o.port, maxMessageBytes: o.maxMessageBytes, pulse: o.pulse, watch: this.watch.buffer as SharedArrayBuffer, label: o.label, token: this.token, name: o.stage.name, security: o.security, logger: o.logger },
      {
        records: (records, moved) => this.onProxy(records, moved),
        active: () => this.currentState === 'running',
        rebuilt: () => {
          this.takeWaiting();
          this.join();
        },
      },
    );
  }

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'draining' | 'closed' {
    return this.currentState;
  }

  /** Runs the stage's setup, joins the proxy and resolves once the proxy has welcomed it. */
  async start(): Promise<void> {
    await this.stage.setup?.();
    const welcomed = new Promise<void>((resolve) => (this.welcomed = resolve));
    this.join();
    await welcomed;
    this.currentState = 'running';
  }

  /** Jobs held now: running, or received and not yet started. */
  get inFlight(): number {
    return this.running.size + this.inbox.size;
  }

  /**
   * Leaves gracefully: tells the proxy to send nothing more and hands back the jobs it has
   * not started (another worker runs them), finishes what it runs, returns whatever the
   * proxy sent before reading the BYE, until the proxy has let it go (up to 5 s), runs the
   * stage's teardown and closes the sockets. Idempotent.
   */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'draining') return;
    this.currentState = 'draining';
    this.bye(this.takeWaiting(true));
    if (this.link.config !== undefined) {
      // The proxy forgets a leaving worker once every job it gave it is done or returned,
      // and then sends BYE: that releases this worker. A worker idle after its last DONE
      // also asks (a heartbeat), in case that BYE was lost.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_GRACE_MS);
        this.released = () => {
          clearTimeout(timer);
          resolve();
        };
        this.idle = () => this.askReleased();
        if (this.inFlight === 0) this.askReleased();
      });
    }
    await this.link.flushed();
    try {
      await this.stage.teardown?.();
    } catch (err) {
      this.logger.warn({ err, stage: this.stage.name }, 'stage teardown failed');
    }
    await this.shut();
  }

  /** Closes at once: running jobs are dropped (their proxy answers for them). */
  async destroy(): Promise<void> {
    if (this.state === 'closed') return;
    for (const job of this.running.values()) job.abort(cancelledError());
    await this.shut();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The stage index records name: the proxy's, once welcomed. */
  private get stageIndex(): number {
    return this.link.config?.stage ?? 0;
  }

  /** Joins (or rejoins) the proxy; jobs still running here give their credit back as they end. */
  private join(): void {
    const w = this.link.toProxy.writer;
    w.begin(Kind.HELLO, this.options.pulse && this.options.label !== '' ? Flag.PULSE : 0, this.stageIndex, 0, 0);
    writeHello(w, { concurrency: this.concurrency, window: this.prefetch, held: this.running.size, token: this.token, label: this.options.label });
    w.end();
    this.link.toProxy.schedule();
  }

  /** Says BYE, handing back the ids of jobs never started. */
  private bye(returned: readonly number[]): void {
    const w = this.link.toProxy.writer;
    w.begin(Kind.BYE, 0, this.stageIndex, 0, 0);
    writeReturned(w, returned);
    w.end();
    this.link.toProxy.schedule();
  }

  /**
   * Empties the inbox, returning the ids of the jobs that were waiting there; with
   * `giveBack`, the bytes of moved jobs go back to the proxy first (it has no copy).
   */
  private takeWaiting(giveBack = false): number[] {
    const ids = this.inbox.takeAll().map((r) => r.id);
    if (giveBack) for (const id of ids) this.giveBack(id);
    this.movedIn.clear();
    return ids;
  }

  private giveBack(id: number): void {
    const frame = this.movedIn.get(id);
    if (frame === undefined) return;
    this.movedIn.delete(id);
    // Copied, not moved: see `PortOutbox.sendAlone`.
    this.link.toProxy.sendAlone(frame);
  }

  private async shut(): Promise<void> {
    this.currentState = 'closed';
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    // A worker thread must not end with a socket open.
    await this.events?.close();
    await this.link.close();
  }

  private onProxy(records: WireRecord[], moved: Buffer | undefined): void {
    let returned: number[] | undefined;
    for (const r of records) {
      switch (r.kind) {
        case Kind.JOB:
          if (moved !== undefined) this.movedIn.set(r.id, moved);
          // A job sent before the proxy read this worker's BYE goes back, unstarted.
          if (this.state === 'draining' || this.state === 'closed') {
            (returned ??= []).push(r.id);
            this.giveBack(r.id);
          } else {
            this.inbox.push(r);
          }
          break;
        case Kind.CANCEL:
          this.cancel(r.id, r.deadline);
          break;
        case Kind.WELCOME:
          this.welcome(r);
          break;
        case Kind.BYE:
          if (this.state === 'draining') {
            this.released?.();
          } else if (this.state === 'running') {
            // The proxy no longer knows this worker (it was expired, and what it held was
            // answered or sent elsewhere): drop what waits and join again.
            this.takeWaiting();
            this.join();
          }
          break;
        default:
          break;
      }
    }
    if (returned !== undefined) this.bye(returned);
    this.pump();
  }

  /**
   * Starts waiting jobs while fewer than `concurrency` run, for up to `TURN_BUDGET_MS`,
   * then sends the outcomes and DONEs written so far at once and yields, so that the
   * proxy tops the window up while the next job runs: tiny jobs are batched many to a
   * message, and a long job's outcome leaves the moment it ends.
   */
  private pump(): void {
    this.pumpScheduled = false;
    const start = performance.now();
    let long = false;
    while (this.inbox.size > 0 && this.running.size < this.concurrency) {
      this.run(this.inbox.shift()!);
      long = performance.now() - start >= TURN_BUDGET_MS;
      if (long) break;
    }
    // After long work, what it produced leaves now; after tiny jobs, at the end of the turn,
    // together with whatever else this turn brings.
    if (long) this.link.flush();
    else this.link.schedule();
    if (this.inbox.size > 0 && this.running.size < this.concurrency) this.schedulePump();
  }

  private welcome(r: WireRecord): void {
    let config: WelcomeConfig;
    try {
      config = readWelcome(r.payload);
      // What a proxy tells its workers is held to the rules of the options it came from.
      check('stageIndex', config.stage, 'WELCOME stage');
      check('heartbeatMs', config.heartbeatMs, 'WELCOME heartbeatMs');
      check('liveness', config.liveness, 'WELCOME liveness');
      check('loopback', config.loopback, 'WELCOME loopback');
      if (config.next !== null) check('next', config.next, 'WELCOME next');
      if (config.events !== undefined && config.events !== null) check('next', config.events, 'WELCOME events');
    } catch (err) {
      this.logger.error({ err, stage: this.stage.name }, 'malformed WELCOME from proxy');
      return;
    }
    const events = config.events ?? null;
    const eventsBefore = this.link.config?.events ?? null;
    this.link.configure(config);
    if (events !== eventsBefore) {
      void this.events?.close();
      // A worker thread (on a port) publishes through its proxy instead (see `stageEvents`).
      this.events = events === null || this.options.port !== undefined ? undefined : new Events({ publish: events, security: this.options.security });
      this.events?.connectPublisher();
    }
    this.logger.info({ stage: this.stage.name, index: config.stage, concurrency: this.concurrency, prefetch: this.prefetch }, 'worker joined its proxy');
    this.welcomed?.();
    this.welcomed = undefined;
  }

  private run(r: WireRecord): void {
    let moved: Buffer | undefined;
    if (this.movedIn.size > 0) {
      moved = this.movedIn.get(r.id);
      this.movedIn.delete(r.id);
    }
    const now = Date.now();
    if (r.deadline !== 0 && r.deadline <= now) {
      // The front end has answered 504 already.
      this.link.toProxy.writer.empty(Kind.DONE, r.stage, r.id);
      return;
    }
    const budget = this.budgetMs === 0 ? 0 : now + this.budgetMs;
    const job = new Job(r.id, r.stage, r.deadline, budget !== 0 && (r.deadline === 0 || budget < r.deadline) ? budget : r.deadline, r.flags & ~Flag.RETRIED, this.expireBound, this.stageEvents);
    job.moved = moved;
    this.running.set(job.id, job);
    if (job.deadline !== 0) {
      const stuckAfter = job.deadline + this.options.graceMs + WATCHDOG_MARGIN_MS;
      if (this.watch[0] === 0 || stuckAfter < this.watch[0]!) this.watch[0] = stuckAfter;
      if (this.sweepTimer === undefined) {
        this.sweepTimer = setInterval(() => this.sweep(), SWEEP_MS);
        this.sweepTimer.unref();
      }
    }
    let outcome: unknown;
    try {
      let payload = readValue(r.payload);
      if (payload instanceof RequestData) payload = new HttpRequest(payload);
      outcome = this.stage.handle(payload, job);
    } catch (err) {
      this.fail(job, err);
      return;
    }
    if (outcome instanceof Promise) {
      outcome.then(
        (value: unknown) => this.finishAsync(job, value, undefined, false),
        (err: unknown) => this.finishAsync(job, undefined, err, true),
      );
    } else {
      this.finish(job, outcome);
    }
  }

  private finishAsync(job: Job, value: unknown, err: unknown, failed: boolean): void {
    if (failed) this.fail(job, err);
    else this.finish(job, value);
    // With jobs waiting, `done` has scheduled the pump, which sends this outcome first.
    if (this.inbox.size === 0) this.link.schedule();
  }
  private finish(job: Job, outcome: unknown): void {
    if (job.cancelled) {
      this.done(job);
      return;
    }
    if (outcome instanceof NextOutcome) {
      const toNext = this.link.toNext;
      if (toNext === undefined) {
        this.fail(job, new ButterflyError('BF_ERR_NO_NEXT_STAGE', `stage ${this.stage.name} is the last stage and cannot pass a job on`));
        return;
      }
      if (toNext.full) {
        // The next stage takes nothing (stopped, or gone): refuse rather than buffer.
        this.fail(job, new ButterflyError('BF_ERR_OVERLOADED', `the stage after ${this.stage.name} is not taking jobs`));
        return;
      }
      const payload = outcome.payload;
      const value = (payload instanceof HttpRequest ? payload.data : payload) as Value;
      const tail = Buffer.isBuffer(value) ? value : value instanceof RequestData ? value.body : undefined;
      const head = (w: RecordWriter): void => void writeValueHead(w, value);
      if (this.emit(toNext, Kind.JOB, job.stage + 1, job, (w) => writeValue(w, value), tail, head)) this.done(job);
      return;
    }
    let reply: Reply;
    try {
      reply = outcome instanceof Reply ? outcome : makeReply(outcome as ReplyBody);
    } catch (err) {
      this.fail(job, err);
      return;
    }
    if (this.emit(this.link.toLoopback!, Kind.RESULT, job.stage, job, (w) => writeResponse(w, reply), reply.body, (w) => writeResponseHead(w, reply))) this.done(job);
  }

  /**
   * Writes one record for `job` whose payload `write` encodes. A payload that cannot be
   * encoded (a value JSON cannot carry, a header too long) fails the job instead; false then.
   * A record whose payload ends with `tail`, bytes of `LARGE_RECORD_BYTES` or more, goes in a
   * message of its own, never copied into a batch. When `tail` is still in the memory the
   * job came in, moved to this thread, the record's head (what `head` writes) goes in front
   * of it and that memory moves on, uncopied; otherwise the record is written in memory of
   * its own, which a thread of this process posts as a copy (see `PortOutbox.sendAlone`).
   */
  private emit(outbox: RecordSink, kind: KindValue, stage: number, job: Job, write: (w: RecordWriter) => void, tail?: Buffer, head?: (w: RecordWriter) => void): boolean {
    const size = tail?.length ?? 0;
    const alone = size >= LARGE_RECORD_BYTES;
    const flags = kind === Kind.JOB ? job.flags : 0;
    if (alone && job.moved !== undefined && tail !== undefined && head !== undefined) {
      let frame: Buffer | undefined;
      try {
        frame = encodeInPlace(job.moved, tail, kind, flags, stage, job.id, job.requestDeadline, head);
      } catch (err) {
        this.fail(job, err);
        return false;
      }
      if (frame !== undefined && frame.length <= this.options.maxMessageBytes) {
        job.moved = undefined;
        outbox.sendAlone(frame, true);
        return true;
      }
    }
    const w = alone ? new RecordWriter(size + 16 * 1024) : outbox.writer;
    const start = w.length;
    w.begin(kind, flags, stage, job.id, job.requestDeadline);
    try {
      write(w);
    } catch (err) {
      w.abort();
      this.fail(job, err);
      return false;
    }
    if (w.length - start > this.options.maxMessageBytes) {
      // A message over the limit would cost the whole connection, and every answer on it.
      w.abort();
      this.logger.warn({ stage: this.stage.name, id: job.id, bytes: w.length - start, limit: this.options.maxMessageBytes }, 'outcome larger than the message limit');
      this.fail(job, new ButterflyError('BF_ERR_INTERNAL', `stage ${this.stage.name} produced an outcome larger than the message limit`));
      return false;
    }
    w.end();
    if (alone) outbox.sendAlone(w.take());
    return true;
  }

  private fail(job: Job, err: unknown): void {
    if (!job.cancelled) {
      const record = toErrorRecord(err, this.stage.name);
      if (!(err instanceof ButterflyError) || record.code !== err.code) this.logger.warn({ err, stage: this.stage.name, id: job.id }, 'stage handler threw');
      writeErrorRecord(this.link.toLoopback!.writer, job.stage, job.id, job.requestDeadline, record);
    }
    this.done(job);
  }

  /**
   * Enforces deadlines on running jobs: at a job's deadline its signal aborts (and a stage
   * budget shorter than the request's deadline answers 504 at once); a handler still
   * running `graceMs` later is given up on, freeing its slot. A handler that blocks the
   * event loop cannot be stopped from here: its proxy reports the worker stuck.
   */
  private sweep(): void {
    if (this.running.size === 0) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
      this.watch[0] = 0;
      return;
    }
    const now = Date.now();
    let stuckAfter = 0;
    for (const job of this.running.values()) {
      if (job.deadline === 0) continue;
      const after = job.deadline + this.options.graceMs + WATCHDOG_MARGIN_MS;
      if (stuckAfter === 0 || after < stuckAfter) stuckAfter = after;
      if (now < job.deadline) continue;
      if (!job.expired) {
        this.expire(job);
      } else if (now >= job.deadline + this.options.graceMs) {
        this.logger.warn({ stage: this.stage.name, id: job.id }, 'handler ignored its deadline; slot freed');
        this.done(job);
      }
    }
    this.watch[0] = stuckAfter;
    this.link.toLoopback?.schedule();
    this.link.toProxy.schedule();
  }

  /** A job reached its deadline here: its signal aborts, and a stage budget answers 504 itself. */
  private expire(job: Job): void {
    if (job.expired) return;
    job.expired = true;
    const answered = job.cancelled;
    job.abort(deadlineError());
    // At the request's own deadline the front end answers 504; a shorter stage budget is ours to answer.
    if (!answered && (job.requestDeadline === 0 || job.deadline < job.requestDeadline)) {
      const late = { code: 'BF_ERR_DEADLINE', status: ERROR_STATUS.BF_ERR_DEADLINE, message: `stage ${this.stage.name} ran out of time` };
      writeErrorRecord(this.link.toLoopback!.writer, job.stage, job.id, job.requestDeadline, late);
      this.link.toLoopback!.schedule();
    }
  }

  private readonly expireBound = (job: Job): void => this.expire(job);

  private askReleased(): void {
    this.link.toProxy.writer.empty(Kind.HEARTBEAT, this.stageIndex, 0);
    this.link.toProxy.schedule();
  }

  private done(job: Job): void {
    job.finished();
    // A job given up on at its deadline may still finish later: it is done only once.
    if (!this.running.delete(job.id)) return;
    this.link.toProxy.writer.empty(Kind.DONE, job.stage, job.id);
    if (this.running.size === 0) this.watch[0] = 0;
    if (this.inbox.size > 0) this.schedulePump();
    else if (this.running.size === 0) this.idle?.();
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(this.pumpBound);
  }

  /** The client no longer waits for `id`: past its deadline when `deadline` is not 0 (see `Kind.CANCEL`). */
  private cancel(id: number, deadline: number): void {
    const running = this.running.get(id);
    if (running !== undefined) {
      running.abort(deadline === 0 ? cancelledError() : deadlineError());
      return;
    }
    const waiting = this.inbox.removeFirst((r) => r.id === id);
    if (waiting !== undefined) {
      // Not started: answer nothing (the client is gone), just free the slot.
      this.movedIn.delete(id);
      this.link.toProxy.writer.empty(Kind.DONE, waiting.stage, id);
    }
  }
}

/** One job's context: what `handle` gets as `ctx`. Its signal is made on first use. */
class Job implements StageContext {
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reason: ButterflyError | undefined;
  /** True once the client no longer waits for this job (cancelled, or past its deadline): its outcome is dropped. */
  cancelled = false;
  /** True once the worker has handled this job's deadline. */
  expired = false;
  /** The message this job came in, moved to this thread whole: a large outcome may be written into it. */
  moved: Buffer | undefined;

  /**
   * @param requestDeadline the request's deadline, carried on to later stages
   * @param deadline this job's deadline here: the request's, or the stage budget's if sooner
   */
  constructor(
    readonly id: number,
    readonly stage: number,
    readonly requestDeadline: number,
    readonly deadline: number,
    readonly flags: number,
    private readonly onDeadline: (job: Job) => void,
    readonly events: StageEvents,
  ) {}

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      if (this.reason !== undefined) {
        controller.abort(this.reason);
      } else if (this.deadline !== 0) {
        this.timer = setTimeout(() => this.onDeadline(this), Math.max(0, this.deadline - Date.now()));
        this.timer.unref();
      }
    }
    return this.controller.signal;
  }

  next(payload: Value): NextOutcome {
    return new NextOutcome(payload);
  }

  respond(body?: ReplyBody, init?: ReplyInit): Reply {
    return makeReply(body, init);
  }

  /** The client no longer waits: `ctx.signal` aborts with `reason` (`BF_ERR_DEADLINE` or `BF_ERR_CANCELLED`). */
  abort(reason: ButterflyError): void {
    this.cancelled = true;
    this.reason ??= reason;
    this.controller?.abort(this.reason);
  }

  finished(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
}
