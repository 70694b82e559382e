import * as zmq from 'zeromq';
import type { ErrorCode } from '../errors.js';
import { ERROR_STATUS } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import { check, defaultsOf, withDefaults } from '../options.js';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import {
  Flag,
  Kind,
  LARGE_RECORD_BYTES,
  LocalOutbox,
  Outbox,
  PortOutbox,
  RouterOutbox,
  configureSocket,
  decodeRecords,
  readHello,
  readEvent,
  readPulse,
  readReturned,
  receiveEach,
  receivePort,
  restamp,
  secureClient,
  secureServer,
  WireError,
  writeErrorRecord,
  writeWelcome,
  type RecordSink,
  type LinkSecurity,
  type RecordWriter,
  type WireRecord,
} from '../wire/index.js';
import { Events } from '../events.js';
import { Fifo } from '../fifo.js';
import { JobList, type Linked } from './job-list.js';
import { LatencyHistogram, type HistogramSnapshot } from '../histogram.js';

/** Options of one stage's load balancer. */
export interface ProxyOptions {
  /** 0-based index of the stage this proxy serves. */
  stage: number;
  /** The stage's name, for logs and metrics. */
  name: string;
  /** Where jobs for this stage arrive (bound, PULL). */
  frontend: string;
  /** Where this stage's workers connect (bound, ROUTER). */
  backend: string;
  /** The next stage's frontend, told to workers; null for the last stage. */
  next: string | null;
  /** The loopback of the front end: final answers, including this proxy's refusals. */
  loopback: string;
  /** Jobs waiting, at most, here or prefetched by workers; past it a job is refused with 503. Default 1024. */
  maxQueue: number;
  /** Bytes of the jobs waiting here, at most; past it a job is refused with 503 (one job is always taken). Default 64 MiB. */
  maxQueueBytes: number;
  /** Heartbeat interval in ms, both ways. Default 1000. */
  heartbeatMs: number;
  /** Heartbeats a worker may miss before it counts as dead. Default 3. */
  liveness: number;
  /** Whether a job whose worker died may be sent once more (otherwise it is answered 502). Default false. */
  idempotent: boolean;
  /** Largest ZeroMQ message accepted, in bytes. Default 64 MiB. */
  maxMessageBytes: number;
  /**
   * Time past a held job's deadline after which a silent worker counts as stuck, in ms.
   * Default 1000.
   */
  graceMs: number;
  /** Time `close()` lets jobs queued and held finish before closing anyway, in ms. Default 10000. */
  drainTimeoutMs: number;
  /** Told the label of a worker found stuck (silent while holding a job past its deadline plus grace), so its supervisor can kill it. */
  onStuck: ((label: string) => void) | undefined;
  /**
   * In-process delivery of final answers (embedded mode): refusals, and the answers of
   * workers attached by port, go to this function instead of the `loopback` socket.
   */
  localLoopback: ((records: WireRecord[]) => void) | undefined;
  /**
   * In-process delivery of the next-stage jobs of workers attached by port (embedded
   * mode); `frame` is the message the records came in when nothing else holds it.
   */
  localNext: ((records: WireRecord[], frame: Buffer | undefined) => void) | undefined;
  /**
   * CURVE keys: the frontend and backend let in only the allowlist's keys, and the
   * loopback is reached as a CURVE client. Undefined (the default): plaintext links.
   */
  security: LinkSecurity | undefined;
  /** Where the pipeline's events are published, told to workers for `ctx.events`; null (the default) for none. */
  events: string | null;
  logger: Logger;
}

/** Defaults for the options that have them, from the option schema. */
export const PROXY_DEFAULTS = Object.freeze({
  ...(defaultsOf(['maxQueue', 'maxQueueBytes', 'heartbeatMs', 'liveness', 'idempotent', 'maxMessageBytes', 'graceMs', 'drainTimeoutMs']) as Pick<
    ProxyOptions,
    'maxQueue' | 'maxQueueBytes' | 'heartbeatMs' | 'liveness' | 'idempotent' | 'maxMessageBytes' | 'graceMs' | 'drainTimeoutMs'
  >),
  onStuck: undefined,
  localLoopback: undefined,
  localNext: undefined,
  security: undefined,
  events: null,
  logger: silentLogger,
});

const EMPTY = Buffer.alloc(0);

/** How often a proxy with a worker in its own thread samples the thread's event loop, in ms. */
const IDLE_SAMPLE_MS = 100;
/** Share of that time the event loop may be busy for the thread to count as having time to spare: below the first to start, up to the second to go on. */
const IDLE_FROM = 0.5;
const IDLE_UNTIL = 0.7;

type Required = 'stage' | 'name' | 'frontend' | 'backend' | 'next' | 'loopback';

interface Job extends Linked<Job> {
  readonly id: number;
  flags: number;
  readonly deadline: number;
  payload: Buffer;
  /** The message holding this job alone, for a large job: passed on whole instead of copied. */
  frame: Buffer | undefined;
  /**
   * Its bytes were moved to a worker thread: only that worker has them, and gives them
   * back if it leaves without starting the job. Jobs of idempotent stages are never moved.
   */
  moved: boolean;
  /** `performance.now()` when last sent to a worker, for the stage-time histogram. */
  dispatchedAt: number;
}

/** How the proxy writes to one worker: a ZeroMQ peer of its backend, or a worker thread's port. */
interface WorkerLink {
  /** Its worker runs in this thread and takes jobs only while the thread has time to spare (see `attachPort`). */
  readonly whileIdle?: boolean;
  writer(): RecordWriter;
  /** Returns true when the bytes were moved to the worker's thread. */
  sendAlone(frame: Buffer, move: boolean): boolean;
  forget(): void;
}

interface WorkerEntry {
  readonly key: string;
  readonly link: WorkerLink;
  readonly label: string;
  /** Its identity token (`HelloData.token`): a rejoin or a pulse under its label must carry it. */
  readonly token: Buffer;
  /** Jobs it runs at once. */
  readonly concurrency: number;
  /** Jobs it holds prefetched beyond those it runs. */
  readonly window: number;
  /** Jobs it may still be sent: `concurrency + window` less what it holds. */
  credit: number;
  /** Credit to give back as it finishes jobs it held from before its HELLO (a rejoin). */
  owed: number;
  /** On the ready list now. */
  ready: boolean;
  /** Left off the ready list while silent; put back when it speaks. */
  parked: boolean;
  /** It heartbeats from a thread of its own: silence means gone even while it runs a long job. */
  readonly pulse: boolean;
  readonly jobs: Map<number, Job>;
  lastSeen: number;
  alive: boolean;
  leaving: boolean;
  /** See `WorkerLink.whileIdle`. */
  readonly whileIdle: boolean;
}

/** A point-in-time view of a proxy, for metrics and readiness. */
export interface ProxyStats {
  readonly queued: number;
  readonly inFlight: number;
  readonly workers: number;
  /** Jobs the live workers may still be sent: their credit, summed. */
  readonly readySlots: number;
  /** Jobs received since start. */
  readonly accepted: number;
  readonly refused: number;
  readonly undecodable: number;
  /** Live workers with credit for at least one more job. */
  readonly workersReady: number;
  /** Time from sending a job to a worker to its DONE, in ms, since start. */
  readonly stageTime: HistogramSnapshot;
}

/**
 * The load balancer of one stage, with credit-based flow control. A worker joins with
 * HELLO, saying how many jobs it runs at once (`concurrency`) and how many it keeps
 * prefetched beyond those (`window`); the proxy sends it at most that many, and each DONE
 * gives one credit back, so a worker always has its next job at hand while its outcomes
 * travel. Ready workers are served in least-recently-used order. Jobs wait in a queue
 * bounded by `maxQueue`, which counts prefetched jobs too; a job that finds it full, or no
 * live worker, is refused at once with 503 through the loopback. A cancelled job leaves
 * the queue at once. A leaving worker (BYE) returns the jobs it never started, and they
 * go to another worker. A worker silent for `liveness` heartbeats is dropped and the jobs
 * it held are answered 502 (or re-sent once, for an idempotent stage); while it holds
 * jobs, silence is taken for a long job until one of them is past its deadline plus
 * `graceMs`, and then the worker is reported stuck (`onStuck`) so that its supervisor can
 * kill it.
 */
export class Proxy {
  private lifecycle: 'starting' | 'running' | 'draining' | 'closed' = 'starting';
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private destroying: Promise<void> | undefined;
  private readonly options: ProxyOptions;
  private readonly logger: Logger;
  private readonly frontend = new zmq.Pull();
  private readonly backend = new zmq.Router();
  private readonly loopbackSocket: zmq.Push | undefined;
  private readonly toWorkers: RouterOutbox;
  private readonly toLoopback: RecordSink;
  private readonly workers = new Map<string, WorkerEntry>();
  private readonly byLabel = new Map<string, WorkerEntry>();
  private readonly readyWorkers = new Fifo<WorkerEntry>();
  private readonly queue = new JobList<Job>();
  private readonly queuedById = new Map<number, Job>();
  private queuedBytes = 0;
  private readonly assigned = new Map<number, WorkerEntry>();
  private readonly ports = new Map<string, MessagePort>();
  private portCount = 0;
  private liveCount = 0;
  /** Jobs sent to workers beyond their concurrency: they wait there and count against `maxQueue`. */
  private prefetched = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  /** The worker in this thread that takes jobs while the thread has time to spare, if any (see `attachPort`). */
  private idleWorker: WorkerEntry | undefined;
  /** Whether this thread's event loop had time to spare at the last sample (see `watchIdle`). */
  private spareTime = true;
  private idleTimer: NodeJS.Timeout | undefined;
  private loops: Promise<void>[] = [];
  /** Publishes the events of this proxy's worker threads (with `events`), connected at start: a publisher drops what it sends before. */
  private events: Events | undefined;
  /** Releases the bound sockets' holds on the ZAP handler (CURVE). */
  private readonly releaseKeys: (() => void)[] = [];
  private accepted = 0;
  private refused = 0;
  private undecodable = 0;
  /** HELLOs refused because a live worker held the identity they claimed. */
  private identityRefusals = 0;
  private readonly stageTime = new LatencyHistogram();
  private readonly flushBound = (): void => this.flushWorkers();
  private readonly dirtyPorts = new Set<PortOutbox>();

  constructor(options: Partial<ProxyOptions> & Pick<ProxyOptions, Required>) {
    const o = withDefaults<ProxyOptions>(PROXY_DEFAULTS as ProxyOptions, options);
    check('stageIndex', o.stage, 'stage');
    check('name', o.name);
    check('frontend', o.frontend);
    check('backend', o.backend);
    if (o.next !== null) check('next', o.next);
    check('loopback', o.loopback);
    check('maxQueue', o.maxQueue);
    check('maxQueueBytes', o.maxQueueBytes);
    check('heartbeatMs', o.heartbeatMs);
    check('liveness', o.liveness);
    check('graceMs', o.graceMs);
    check('drainTimeoutMs', o.drainTimeoutMs);
    this.options = o;
    this.logger = o.logger;
    const link = { maxMessageBytes: o.maxMessageBytes };
    configureSocket(this.frontend, link);
    configureSocket(this.backend, link, true);
    this.backend.mandatory = true;
    // Jobs that could not be sent to a worker are its to answer for: it is dropped like a dead one.
    this.toWorkers = new RouterOutbox(this.backend, this.logger, `stage ${o.name} backend`, (key, unsent) => this.unreachable(key, unsent));
    if (o.localLoopback !== undefined) {
      this.toLoopback = new LocalOutbox(o.localLoopback, o.maxMessageBytes);
    } else {
      this.loopbackSocket = new zmq.Push();
      configureSocket(this.loopbackSocket, link);
      secureClient(this.loopbackSocket, o.security);
      this.toLoopback = new Outbox(this.loopbackSocket, this.logger, `stage ${o.name} loopback`);
    }
  }

  /** Binds the frontend and backend and starts balancing. Resolves once both are bound. */
  async start(): Promise<void> {
    const o = this.options;
    this.releaseKeys.push(await secureServer(this.frontend, o.security, this.logger), await secureServer(this.backend, o.security, this.logger));
    await this.frontend.bind(o.frontend);
    await this.backend.bind(o.backend);
    this.loopbackSocket?.connect(o.loopback);
    if (o.events !== null) {
      this.events = new Events({ publish: o.events, security: o.security });
      this.events.connectPublisher();
    }
    this.lifecycle = 'running';
    const name = o.name;
    this.loops.push(receiveEach(this.frontend, (f) => this.onFrontend(f), this.logger, `stage ${name} frontend`));
    this.loops.push(receiveEach(this.backend, (f) => this.onBackend(f), this.logger, `stage ${name} backend`));
    this.heartbeatTimer = setInterval(() => this.onHeartbeat(), o.heartbeatMs);
    this.heartbeatTimer.unref();
    this.logger.info({ stage: name, frontend: o.frontend, backend: o.backend }, 'proxy started');
  }

  /** Where jobs for this stage arrive. */
  get frontendAddress(): string {
    return this.options.frontend;
  }

  /** Where this stage's workers connect. */
  get backendAddress(): string {
    return this.options.backend;
  }

  /**
   * Samples this thread's event-loop utilisation every `IDLE_SAMPLE_MS` for a worker that
   * takes jobs only while the thread has time to spare (see `attachPort`).
   */
  private watchIdle(): void {
    if (this.idleTimer !== undefined) return;
    let mark = performance.eventLoopUtilization();
    this.idleTimer = setInterval(() => {
      const now = performance.eventLoopUtilization();
      const busy = performance.eventLoopUtilization(now, mark).utilization;
      mark = now;
      const was = this.spareTime;
      this.spareTime = busy < (was ? IDLE_UNTIL : IDLE_FROM);
      if (this.spareTime && !was && this.queue.size > 0) {
        this.drainQueue();
        this.scheduleWorkers();
      }
    }, IDLE_SAMPLE_MS);
    this.idleTimer.unref();
  }

  /**
   * A channel for one worker thread of this process, in place of a ZeroMQ connection:
   * hand the returned port to the thread (`StageWorker`'s `port` option). Records cross it
   * without copies of large payloads and without ZeroMQ's I/O threads; the worker's
   * answers and next-stage jobs come back through it and go on through `localLoopback`
   * and `localNext`. The port is closed when its worker leaves or is dropped.
   * @param whileIdle for a worker in this thread (inline) beside worker threads: it is sent
   * every job it has room for while this thread's event loop is busy less than half the
   * time, and none while it is busy more than 70% of it, so that a light stage costs no
   * hop to another thread until the front end needs its thread for itself.
   */
  attachPort(whileIdle = false): MessagePort {
    const channel = new MessageChannel();
    const key = `port-${++this.portCount}`;
    const port = channel.port1;
    const outbox = new PortOutbox(port);
    if (whileIdle) this.watchIdle();
    const link: WorkerLink = {
      whileIdle,
      writer: () => {
        this.dirtyPorts.add(outbox);
        return outbox.writer;
      },
      sendAlone: (frame, move) => outbox.sendAlone(frame, move),
      // The port stays open until its thread ends: the BYE that releases a leaving worker must reach it.
      forget: () => {
        this.dirtyPorts.delete(outbox);
        outbox.flush();
      },
    };
    this.ports.set(key, port);
    port.once('close', () => this.ports.delete(key));
    receivePort(port, (frame) => this.onWorkerFrame(key, link, frame, true), this.logger, `stage ${this.options.name} worker port`);
    return channel.port2;
  }

  /** Counts for metrics and readiness. */
  stats(): ProxyStats {
    let workersReady = 0;
    let readySlots = 0;
    for (const w of this.workers.values()) {
      if (!w.alive || w.leaving) continue;
      readySlots += w.credit;
      if (w.credit > 0) workersReady++;
    }
    return {
      queued: this.queuedById.size,
      inFlight: this.assigned.size,
      workers: this.liveCount,
      readySlots,
      accepted: this.accepted,
      refused: this.refused,
      undecodable: this.undecodable,
      workersReady,
      stageTime: this.stageTime.snapshot(),
    };
  }

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'draining' | 'closed' {
    return this.lifecycle;
  }

  /**
   * Graceful: new jobs are refused 503 (`BF_ERR_DRAINING`), those queued and held by
   * workers finish (or are answered for, as when a worker dies) for up to
   * `drainTimeoutMs`, then the sockets close. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    if (this.lifecycle === 'running') this.lifecycle = 'draining';
    let timer: NodeJS.Timeout | undefined;
    const idle = this.idle()
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          this.drained = resolve;
          timer = setTimeout(resolve, this.options.drainTimeoutMs);
        });
    this.closing = idle.then(() => {
      clearTimeout(timer);
      return this.destroy();
    });
    return this.closing;
  }

  /** Immediate: stops balancing and closes the sockets; jobs queued or held are left to their deadlines. Idempotent. */
  destroy(): Promise<void> {
    this.destroying ??= this.stop();
    this.closing ??= this.destroying;
    return this.destroying;
  }

  private async stop(): Promise<void> {
    this.lifecycle = 'closed';
    this.drained?.();
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    if (this.idleTimer !== undefined) clearInterval(this.idleTimer);
    this.frontend.close();
    this.backend.close();
    this.loopbackSocket?.close();
    for (const release of this.releaseKeys.splice(0)) release();
    await this.events?.close();
    for (const port of this.ports.values()) port.close();
    this.ports.clear();
    await Promise.all(this.loops);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private idle(): boolean {
    return this.queuedById.size === 0 && this.assigned.size === 0;
  }

  /** While draining, resolves `close()` once no job is queued or held. */
  private checkDrained(): void {
    if (this.lifecycle === 'draining' && this.idle()) {
      this.drained?.();
      this.drained = undefined;
    }
  }

  /**
   * Takes jobs and cancels for this stage from a sender in this process, as if they had
   * come in on the frontend socket. `frame` is the message they came in, when nothing
   * else holds it: a large job alone in its message is then passed on without a copy.
   */
  acceptRecords(records: WireRecord[], frame?: Buffer): void {
    if (this.lifecycle === 'starting' || this.lifecycle === 'closed') return;
    const alone = records.length === 1 && frame !== undefined && frame.length >= LARGE_RECORD_BYTES ? frame : undefined;
    for (const r of records) {
      if (r.kind === Kind.JOB) this.accept(r, alone);
      else if (r.kind === Kind.CANCEL) this.cancel(r.id, r.deadline);
    }
    this.scheduleWorkers();
    this.toLoopback.schedule();
  }

  private onFrontend(frames: Buffer[]): void {
    const records = this.decode(frames[0], 'frontend');
    if (records !== undefined) this.acceptRecords(records, frames[0]);
  }

  private accept(r: WireRecord, frame: Buffer | undefined): void {
    this.accepted++;
    const job: Job = { id: r.id, flags: r.flags, deadline: r.deadline, payload: r.payload, frame, moved: false, dispatchedAt: 0, prev: undefined, next: undefined, listed: false };
    if (this.lifecycle === 'draining') {
      this.refuse(job, 'BF_ERR_DRAINING', `stage ${this.options.name} is shutting down`);
      return;
    }
    if (this.queue.size === 0 && this.dispatch(job)) return;
    if (this.liveCount === 0) {
      this.refuse(job, 'BF_ERR_NO_WORKER', `stage ${this.options.name} has no live worker`);
    } else if (this.queuedById.size + this.prefetched >= this.options.maxQueue || (this.queuedBytes > 0 && this.queuedBytes + job.payload.length > this.options.maxQueueBytes)) {
      this.refuse(job, 'BF_ERR_OVERLOADED', `stage ${this.options.name} queue is full`);
    } else {
      this.enqueue(job, false);
    }
  }

  /**
   * Sends a job to the least recently used worker with credit; false when none can take
   * it. A job that would wait in a worker's window counts against `maxQueue`. A worker
   * silent for more than one and a half heartbeats gets nothing new: it is parked until
   * heard from, so a stopped worker swallows as few jobs as possible.
   */
  private dispatch(job: Job): boolean {
    const silentAfter = Date.now() - this.options.heartbeatMs * 1.5;
    const windowFull = this.queuedById.size + this.prefetched >= this.options.maxQueue;
    // A worker in this thread goes first while the thread has time to spare (see `attachPort`).
    const idle = this.idleWorker;
    if (idle !== undefined && this.spareTime && idle.ready && idle.alive && !idle.leaving && idle.credit > 0 && !(windowFull && idle.jobs.size >= idle.concurrency)) {
      if (idle.lastSeen >= silentAfter) {
        this.assign(idle, job);
        return true;
      }
      idle.ready = false;
      idle.parked = true;
    }
    for (let tries = this.readyWorkers.size; tries > 0; tries--) {
      const worker = this.readyWorkers.shift()!;
      if (!worker.alive || worker.leaving || worker.credit <= 0) {
        worker.ready = false;
        continue;
      }
      if (worker.lastSeen < silentAfter) {
        worker.ready = false;
        worker.parked = true;
        continue;
      }
      const prefetch = worker.jobs.size >= worker.concurrency;
      if (prefetch && windowFull) {
        this.readyWorkers.push(worker);
        continue;
      }
      this.assign(worker, job);
      return true;
    }
    return false;
  }

  /** Sends `job` to `worker`, which has credit for it. */
  private assign(worker: WorkerEntry, job: Job): void {
    const prefetch = worker.jobs.size >= worker.concurrency;
    if (prefetch) this.prefetched++;
    worker.credit--;
    worker.jobs.set(job.id, job);
    job.dispatchedAt = performance.now();
    this.assigned.set(job.id, worker);
    if (job.frame !== undefined) {
      restamp(job.frame, job.flags, this.options.stage, job.deadline);
      // An idempotent stage may have to send the job again: it keeps the bytes.
      if (worker.link.sendAlone(job.frame, !this.options.idempotent)) {
        job.moved = true;
        job.frame = undefined;
        job.payload = EMPTY;
      }
    } else {
      const w = worker.link.writer();
      w.begin(Kind.JOB, job.flags, this.options.stage, job.id, job.deadline);
      w.bytes(job.payload);
      w.end();
    }
    if (worker.whileIdle) {
      // Never on the ready list: it is taken first, not in turn.
      if (worker.credit <= 0) worker.ready = false;
    } else if (worker.credit > 0) {
      this.readyWorkers.push(worker);
    } else {
      worker.ready = false;
    }
  }

  private makeReady(worker: WorkerEntry): void {
    if (worker.ready || worker.parked || !worker.alive || worker.leaving || worker.credit <= 0) return;
    worker.ready = true;
    if (!worker.whileIdle) this.readyWorkers.push(worker);
  }

  private drainQueue(): void {
    const now = Date.now();
    while (this.queue.size > 0 && this.readyWorkers.size > 0) {
      const job = this.queue.shift()!;
      this.dequeue(job);
      // The front end has already answered 504 for a job past its deadline.
      if (job.deadline !== 0 && job.deadline <= now) continue;
      if (!this.dispatch(job)) {
        this.enqueue(job, true);
        return;
      }
    }
  }

  private cancel(id: number, deadline: number): void {
    const queued = this.queuedById.get(id);
    if (queued !== undefined) {
      this.dequeue(queued);
      return;
    }
    const worker = this.assigned.get(id);
    if (worker !== undefined) worker.link.writer().empty(Kind.CANCEL, this.options.stage, id, deadline);
  }

  private refuse(job: Job, code: ErrorCode, message: string): void {
    this.refused++;
    writeErrorRecord(this.toLoopback.writer, this.options.stage, job.id, job.deadline, { code, status: ERROR_STATUS[code], message });
  }

  private onBackend(frames: Buffer[]): void {
    const identity = frames[0];
    if (identity === undefined) return;
    const key = identity.toString('hex');
    const frame = frames[1];
    if (frame === undefined) {
      this.undecodable++;
      return;
    }
    // A known worker's link is kept with it; one is made only for a peer met for the first time.
    const link = this.workers.get(key)?.link ?? this.routerLink(key, identity);
    this.onWorkerFrame(key, link, frame, false, identity);
  }

  /** How the proxy writes to a worker that is a peer of its ROUTER backend. */
  private routerLink(key: string, identity: Buffer): WorkerLink {
    return {
      writer: () => this.toWorkers.writerFor(key, identity),
      sendAlone: (frame) => {
        this.toWorkers.sendAlone(key, identity, frame);
        return false;
      },
      forget: () => this.toWorkers.release(key),
    };
  }

  /**
   * Handles what one worker sent. From a port, answers and next-stage jobs come this way
   * too, and go on to `localLoopback` and `localNext`.
   */
  private onWorkerFrame(key: string, link: WorkerLink, frame: Buffer, viaPort: boolean, identity?: Buffer): void {
    const records = this.decode(frame, viaPort ? 'port' : 'backend');
    if (records === undefined) return;
    let worker = this.workers.get(key);
    let answers: WireRecord[] | undefined;
    let jobs: WireRecord[] | undefined;
    for (const r of records) {
      if (r.kind === Kind.HELLO) {
        worker = this.join(key, link, r);
        continue;
      }
      if (viaPort && (r.kind === Kind.RESULT || r.kind === Kind.ERROR)) {
        (answers ??= []).push(r);
        continue;
      }
      if (viaPort && r.kind === Kind.JOB && r.stage === this.options.stage) {
        // A leaving worker gives back the bytes of a moved job it never started.
        this.restore(worker, r, records.length === 1 ? frame : undefined);
        continue;
      }
      if (viaPort && r.kind === Kind.JOB) {
        (jobs ??= []).push(r);
        continue;
      }
      if (viaPort && r.kind === Kind.EVENT) {
        this.publishFor(r);
        continue;
      }
      if (worker === undefined && r.kind === Kind.HEARTBEAT && r.payload.length > 0) {
        // A worker's pulse thread, on a socket of its own, names its worker and proves it is its own.
        let pulse;
        try {
          pulse = readPulse(r.payload);
        } catch {
          this.undecodable++;
          continue;
        }
        const pulsing = this.byLabel.get(pulse.label);
        if (pulsing !== undefined && pulsing.alive && pulsing.token.equals(pulse.token)) this.heard(pulsing);
        continue;
      }
      if (worker === undefined || !worker.alive) {
        // A worker we expired (or never met) is still talking: ask it to join again.
        if (identity !== undefined) this.toWorkers.writerForStranger(key, identity).empty(Kind.BYE, this.options.stage, 0);
        else link.writer().empty(Kind.BYE, this.options.stage, 0);
        break;
      }
      this.heard(worker);
      if (r.kind === Kind.DONE) this.done(worker, r.id);
      else if (r.kind === Kind.BYE) this.leave(worker, r);
    }
    if (answers !== undefined) this.options.localLoopback?.(answers);
    if (jobs !== undefined) this.options.localNext?.(jobs, records.length === 1 ? frame : undefined);
    this.drainQueue();
    this.scheduleWorkers();
    this.toLoopback.schedule();
    this.checkDrained();
  }

  private scheduleWorkers(): void {
    this.toWorkers.schedule();
    if (this.dirtyPorts.size > 0) setImmediate(this.flushBound);
  }

  private flushWorkers(): void {
    for (const outbox of this.dirtyPorts) outbox.flush();
    this.dirtyPorts.clear();
  }

  private heard(worker: WorkerEntry): void {
    worker.lastSeen = Date.now();
    if (worker.parked) {
      worker.parked = false;
      this.makeReady(worker);
    }
  }

  private join(key: string, link: WorkerLink, r: WireRecord): WorkerEntry | undefined {
    let hello;
    try {
      hello = readHello(r.payload);
    } catch (err) {
      this.undecodable++;
      this.logger.warn({ err, stage: this.options.name }, 'HELLO refused');
      return this.workers.get(key);
    }
    const { concurrency, window, held, label, token } = hello;
    const same = this.workers.get(key);
    const holder = label === '' ? undefined : this.byLabel.get(label);
    if (holder !== undefined && holder !== same && holder.alive && !holder.token.equals(token)) {
      // Another peer under a live worker's name: refused; the live worker stays as it is.
      this.identityRefusals++;
      if (this.identityRefusals <= 100) this.logger.warn({ stage: this.options.name, worker: label }, 'HELLO refused: a live worker holds this identity');
      return same;
    }
    const previous = same ?? holder;
    if (previous !== undefined) this.expire(previous, 'rejoined');
    const pulse = (r.flags & Flag.PULSE) !== 0 && label !== '';
    const slots = concurrency + window;
    const owed = Math.min(held, slots);
    const worker: WorkerEntry = {
      key,
      link,
      label,
      token: Buffer.from(token),
      concurrency,
      window,
      credit: slots - owed,
      owed,
      ready: false,
      parked: false,
      pulse,
      jobs: new Map(),
      lastSeen: Date.now(),
      alive: true,
      leaving: false,
      whileIdle: link.whileIdle === true,
    };
    this.workers.set(key, worker);
    if (worker.whileIdle) this.idleWorker = worker;
    this.liveCount++;
    if (label !== '') this.byLabel.set(label, worker);
    const o = this.options;
    const w = link.writer();
    w.begin(Kind.WELCOME, 0, o.stage, 0, 0);
    writeWelcome(w, { stage: o.stage, next: o.next, loopback: o.loopback, heartbeatMs: o.heartbeatMs, liveness: o.liveness, events: o.events });
    w.end();
    this.makeReady(worker);
    this.logger.info({ stage: o.name, worker: label || key, concurrency, window, held }, 'worker joined');
    return worker;
  }

  /** Publishes an event a worker thread handed over (it holds no socket of its own). */
  private publishFor(r: WireRecord): void {
    if (this.events === undefined) return;
    try {
      const { topic, data } = readEvent(r.payload);
      this.events.publishEncoded(topic, data);
    } catch (err) {
      this.undecodable++;
      this.logger.warn({ err, stage: this.options.name }, 'undecodable event from a worker dropped');
    }
  }

  private restore(worker: WorkerEntry | undefined, r: WireRecord, frame: Buffer | undefined): void {
    const job = worker?.jobs.get(r.id);
    if (job === undefined || !job.moved) return;
    job.moved = false;
    job.payload = r.payload;
    job.frame = frame !== undefined && frame.length >= LARGE_RECORD_BYTES ? frame : undefined;
  }

  /** Forgets a job a worker held, keeping the prefetch count right. */
  private release(worker: WorkerEntry, job: Job): void {
    if (worker.jobs.size > worker.concurrency) this.prefetched--;
    worker.jobs.delete(job.id);
    this.assigned.delete(job.id);
  }

  private done(worker: WorkerEntry, id: number): void {
    const job = worker.jobs.get(id);
    if (job === undefined) {
      // A job from before the worker's HELLO: its credit comes back now.
      if (worker.owed > 0) {
        worker.owed--;
        worker.credit++;
        this.makeReady(worker);
      }
      return;
    }
    this.stageTime.observe(performance.now() - job.dispatchedAt);
    this.release(worker, job);
    if (worker.leaving) {
      if (worker.jobs.size === 0) this.remove(worker);
      return;
    }
    worker.credit++;
    this.makeReady(worker);
  }

  /** A worker leaves; the jobs it lists were never started and go to the front of the queue. */
  private leave(worker: WorkerEntry, r: WireRecord): void {
    if (!worker.leaving) {
      worker.leaving = true;
      this.liveCount--;
    }
    let returned: number[] = [];
    try {
      returned = readReturned(r.payload);
    } catch (err) {
      this.undecodable++;
      this.logger.warn({ err, stage: this.options.name }, 'malformed BYE');
    }
    this.takeBack(worker, returned);
    this.logger.info({ stage: this.options.name, worker: worker.label || worker.key, holding: worker.jobs.size, returned: returned.length }, 'worker leaving');
    if (worker.jobs.size === 0) this.remove(worker);
    this.refuseQueueIfNoWorker();
  }

  /**
   * Puts the jobs `ids` of a worker that never started them back at the front of the queue,
   * in their order, for another worker; a job whose bytes were moved to the worker (and did
   * not come back) is answered 502 instead.
   */
  private takeBack(worker: WorkerEntry, ids: readonly number[]): void {
    for (let i = ids.length - 1; i >= 0; i--) {
      const job = worker.jobs.get(ids[i]!);
      if (job === undefined) continue;
      this.release(worker, job);
      if (job.moved) this.refuse(job, 'BF_ERR_WORKER_DIED', `a worker of stage ${this.options.name} left with a job`);
      else this.enqueue(job, true);
    }
  }

  /** Forgets a worker; `release` sends a leaving worker the BYE it waits for. */
  private remove(worker: WorkerEntry, release = worker.leaving): void {
    if (worker.alive && !worker.leaving) this.liveCount--;
    worker.alive = false;
    if (this.idleWorker === worker) this.idleWorker = undefined;
    this.workers.delete(worker.key);
    if (this.byLabel.get(worker.label) === worker) this.byLabel.delete(worker.label);
    if (release) worker.link.writer().empty(Kind.BYE, this.options.stage, 0);
    worker.link.forget();
  }

  /**
   * Drops the worker with this label at once (its supervisor saw it exit): what it held
   * is answered 502, or re-sent once for an idempotent stage. Unknown labels are ignored.
   */
  workerGone(label: string): void {
    const worker = this.byLabel.get(label);
    if (worker === undefined || !worker.alive) return;
    this.expire(worker, 'exited');
    this.refuseQueueIfNoWorker();
    this.scheduleWorkers();
    this.toLoopback.schedule();
    this.checkDrained();
  }

  private unreachable(key: string, unsent: readonly Buffer[]): void {
    const worker = this.workers.get(key);
    if (worker === undefined || !worker.alive) return;
    // Jobs in the messages the socket refused never reached the worker (it is gone): they
    // go to another worker, as the jobs a leaving worker hands back do; the rest it held die with it.
    const undelivered: number[] = [];
    for (const frame of unsent) {
      try {
        for (const r of decodeRecords(frame)) if (r.kind === Kind.JOB) undelivered.push(r.id);
      } catch {
        // Not ours to read: what it held dies with the worker.
      }
    }
    this.takeBack(worker, undelivered);
    this.expire(worker, 'unreachable');
    this.drainQueue();
    this.refuseQueueIfNoWorker();
    this.scheduleWorkers();
    this.toLoopback.schedule();
    this.checkDrained();
  }

  private onHeartbeat(): void {
    const o = this.options;
    const now = Date.now();
    const limit = o.heartbeatMs * o.liveness;
    for (const worker of this.workers.values()) {
      const verdict = this.check(worker, now, now - worker.lastSeen > limit);
      if (verdict === 'alive') {
        worker.link.writer().empty(Kind.HEARTBEAT, o.stage, 0);
        continue;
      }
      this.expire(worker, verdict);
      if (verdict === 'stuck' && worker.label !== '') o.onStuck?.(worker.label);
    }
    // Jobs past their deadline have been answered 504 by the front end: they leave now.
    for (const job of this.queue) {
      if (job.deadline === 0 || job.deadline > now) continue;
      this.dequeue(job);
    }
    this.refuseQueueIfNoWorker();
    this.scheduleWorkers();
    this.toLoopback.schedule();
    this.checkDrained();
  }

  /** Drops a worker; answers 502 for what it held, or re-queues it once for an idempotent stage. */
  private expire(worker: WorkerEntry, why: string): void {
    const held = [...worker.jobs.values()];
    for (const job of held) this.release(worker, job);
    this.remove(worker, false);
    this.logger.warn({ stage: this.options.name, worker: worker.label || worker.key, holding: held.length, why }, 'worker expired');
    for (const job of held) {
      if (this.options.idempotent && (job.flags & Flag.RETRIED) === 0) {
        job.flags |= Flag.RETRIED;
        if (!this.dispatch(job)) this.enqueue(job, true);
      } else {
        this.refuse(job, 'BF_ERR_WORKER_DIED', `a worker of stage ${this.options.name} died`);
      }
    }
  }

  /**
   * Whether a worker lives. A worker with a pulse heartbeats even while a handler blocks
   * its event loop, and its own sweep gives up on handlers that ignore their deadline:
   * silence means it is gone, and a job held well past its deadline plus grace means its
   * event loop is blocked (stuck). Without a pulse, a worker running a long job cannot
   * heartbeat: silence while it holds jobs is expected until one is past deadline plus grace.
   */
  private check(worker: WorkerEntry, now: number, silent: boolean): 'alive' | 'silent' | 'stuck' {
    if (worker.pulse) {
      if (silent) return 'silent';
      return this.pastGrace(worker, now - 2 * this.options.heartbeatMs) ? 'stuck' : 'alive';
    }
    if (!silent) return 'alive';
    if (worker.jobs.size === 0) return 'silent';
    return this.pastGrace(worker, now) ? 'stuck' : 'alive';
  }

  private pastGrace(worker: WorkerEntry, now: number): boolean {
    for (const job of worker.jobs.values()) {
      if (job.deadline !== 0 && now > job.deadline + this.options.graceMs) return true;
    }
    return false;
  }

  private refuseQueueIfNoWorker(): void {
    if (this.queuedById.size === 0 || this.liveCount > 0) return;
    for (const job of this.queue) {
      this.dequeue(job);
      this.refuse(job, 'BF_ERR_NO_WORKER', `stage ${this.options.name} has no live worker`);
    }
  }

  /** Puts a job on the queue, at the back or (for one handed back) at the front. */
  private enqueue(job: Job, front: boolean): void {
    if (front) this.queue.unshift(job);
    else this.queue.push(job);
    this.queuedById.set(job.id, job);
    this.queuedBytes += job.payload.length;
  }

  /** Takes a job off the queue wherever it is. */
  private dequeue(job: Job): void {
    this.queue.remove(job);
    this.queuedById.delete(job.id);
    this.queuedBytes -= job.payload.length;
  }

  private decode(frame: Buffer | undefined, socket: string): WireRecord[] | undefined {
    try {
      if (frame === undefined) throw new WireError('missing frame');
      return decodeRecords(frame);
    } catch (err) {
      this.undecodable++;
      this.logger.warn({ err, stage: this.options.name, socket }, 'undecodable message dropped');
      return undefined;
    }
  }
}
