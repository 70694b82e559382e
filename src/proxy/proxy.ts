import * as zmq from 'zeromq';
import type { ErrorCode } from '../errors.js';
import { ERROR_STATUS } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import { endpoint, integerIn, nonEmptyString, withDefaults } from '../options.js';
import {
  Flag,
  Kind,
  Outbox,
  RouterOutbox,
  configureSocket,
  decodeRecords,
  readHello,
  receiveEach,
  writeError,
  writeWelcome,
  type WireRecord,
} from '../wire/index.js';
import { Fifo } from './fifo.js';
import { LatencyHistogram, type HistogramSnapshot } from '../metrics/index.js';

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
  /** Jobs waiting for a free worker, at most; past it a job is refused with 503. Default 1024. */
  maxQueue: number;
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
  /** Told the label of a worker found stuck (silent while holding a job past its deadline plus grace), so its supervisor can kill it. */
  onStuck: ((label: string) => void) | undefined;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const PROXY_DEFAULTS = Object.freeze({
  maxQueue: 1024,
  heartbeatMs: 1000,
  liveness: 3,
  idempotent: false,
  maxMessageBytes: 64 * 1024 * 1024,
  graceMs: 1000,
  onStuck: undefined,
  logger: silentLogger,
});

type Required = 'stage' | 'name' | 'frontend' | 'backend' | 'next' | 'loopback';

interface Job {
  readonly id: number;
  flags: number;
  readonly deadline: number;
  readonly payload: Buffer;
  cancelled: boolean;
  /** `performance.now()` when last sent to a worker, for the stage-time histogram. */
  dispatchedAt: number;
}

interface WorkerEntry {
  readonly key: string;
  readonly identity: Buffer;
  readonly label: string;
  readonly capacity: number;
  /** Free slots taken out of the ready list while the worker was silent; given back when it speaks. */
  parked: number;
  /** It heartbeats from a thread of its own: silence means gone even while it runs a long job. */
  readonly pulse: boolean;
  readonly jobs: Map<number, Job>;
  lastSeen: number;
  alive: boolean;
  leaving: boolean;
}

/** A point-in-time view of a proxy, for metrics and readiness. */
export interface ProxyStats {
  readonly queued: number;
  readonly inFlight: number;
  readonly workers: number;
  readonly readySlots: number;
  /** Jobs received since start. */
  readonly accepted: number;
  readonly refused: number;
  readonly undecodable: number;
  /** Live workers with at least one free slot. */
  readonly workersReady: number;
  /** Time from sending a job to a worker to its DONE, in ms, since start. */
  readonly stageTime: HistogramSnapshot;
}

/**
 * The load balancer of one stage. Workers join with HELLO and their capacity; each unit
 * of free capacity is a slot in a least-recently-used list, so jobs go to the worker
 * that has waited longest. Jobs wait in a queue of at most `maxQueue`; a job that finds
 * the queue full, or no live worker, is refused at once with 503 through the loopback.
 * A worker silent for `liveness` heartbeats is dropped and the jobs it held are answered
 * 502 (or re-sent once, for an idempotent stage); while it holds jobs, silence is taken
 * for a long job until one of them is past its deadline plus `graceMs`, and then the
 * worker is reported stuck (`onStuck`) so that its supervisor can kill it.
 */
export class Proxy {
  /** Lifecycle state. */
  state: 'starting' | 'running' | 'closed' = 'starting';
  private readonly options: ProxyOptions;
  private readonly logger: Logger;
  private readonly frontend = new zmq.Pull();
  private readonly backend = new zmq.Router();
  private readonly loopbackSocket = new zmq.Push();
  private readonly toWorkers: RouterOutbox;
  private readonly toLoopback: Outbox;
  private readonly workers = new Map<string, WorkerEntry>();
  private readonly byLabel = new Map<string, WorkerEntry>();
  private readonly slots = new Fifo<WorkerEntry>();
  private readonly queue = new Fifo<Job>();
  private readonly queuedById = new Map<number, Job>();
  private readonly assigned = new Map<number, WorkerEntry>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private loops: Promise<void>[] = [];
  private accepted = 0;
  private refused = 0;
  private undecodable = 0;
  private readonly stageTime = new LatencyHistogram();

  constructor(options: Partial<ProxyOptions> & Pick<ProxyOptions, Required>) {
    const o = withDefaults<ProxyOptions>(PROXY_DEFAULTS as ProxyOptions, options);
    integerIn('stage', o.stage, 0, 255);
    nonEmptyString('name', o.name);
    endpoint('frontend', o.frontend);
    endpoint('backend', o.backend);
    if (o.next !== null) endpoint('next', o.next);
    endpoint('loopback', o.loopback);
    integerIn('maxQueue', o.maxQueue, 0);
    integerIn('heartbeatMs', o.heartbeatMs, 10);
    integerIn('liveness', o.liveness, 1);
    integerIn('maxMessageBytes', o.maxMessageBytes, 1024);
    integerIn('graceMs', o.graceMs, 0);
    this.options = o;
    this.logger = o.logger;
    const link = { maxMessageBytes: o.maxMessageBytes };
    configureSocket(this.frontend, link);
    configureSocket(this.backend, link);
    configureSocket(this.loopbackSocket, link);
    this.backend.mandatory = true;
    this.backend.sendTimeout = 1000;
    this.toWorkers = new RouterOutbox(this.backend, this.logger, `stage ${o.name} backend`);
    this.toLoopback = new Outbox(this.loopbackSocket, this.logger, `stage ${o.name} loopback`);
  }

  /** Binds the frontend and backend and starts balancing. Resolves once both are bound. */
  async start(): Promise<void> {
    const o = this.options;
    await this.frontend.bind(o.frontend);
    await this.backend.bind(o.backend);
    this.loopbackSocket.connect(o.loopback);
    this.state = 'running';
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

  /** Counts for metrics and readiness. */
  stats(): ProxyStats {
    let workers = 0;
    let workersReady = 0;
    for (const w of this.workers.values()) {
      if (!w.alive || w.leaving) continue;
      workers++;
      if (w.jobs.size < w.capacity) workersReady++;
    }
    return {
      queued: this.queuedById.size,
      inFlight: this.assigned.size,
      workers,
      readySlots: this.slots.size,
      accepted: this.accepted,
      refused: this.refused,
      undecodable: this.undecodable,
      workersReady,
      stageTime: this.stageTime.snapshot(),
    };
  }

  /** Stops balancing and closes the sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    this.frontend.close();
    this.backend.close();
    this.loopbackSocket.close();
    await Promise.all(this.loops);
  }

  /** Same as `close()`: a proxy holds no work of its own to finish. */
  destroy(): Promise<void> {
    return this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private onFrontend(frames: Buffer[]): void {
    const records = this.decode(frames[0], 'frontend');
    if (records === undefined) return;
    for (const r of records) {
      if (r.kind === Kind.JOB) this.accept(r);
      else if (r.kind === Kind.CANCEL) this.cancel(r.id);
    }
    this.toWorkers.schedule();
    this.toLoopback.schedule();
  }

  private accept(r: WireRecord): void {
    this.accepted++;
    const job: Job = { id: r.id, flags: r.flags, deadline: r.deadline, payload: r.payload, cancelled: false, dispatchedAt: 0 };
    if (this.dispatch(job)) return;
    if (this.liveWorkers() === 0) {
      this.refuse(job, 'BF_ERR_NO_WORKER', `stage ${this.options.name} has no live worker`);
    } else if (this.queuedById.size >= this.options.maxQueue) {
      this.refuse(job, 'BF_ERR_OVERLOADED', `stage ${this.options.name} queue is full`);
    } else {
      this.queue.push(job);
      this.queuedById.set(job.id, job);
    }
  }

  /**
   * Sends a job to the least recently used free worker; false when none is free. A worker
   * silent for more than one and a half heartbeats gets nothing new: its slot is parked
   * until it is heard from, so a stopped worker swallows as few jobs as possible.
   */
  private dispatch(job: Job): boolean {
    const silentAfter = Date.now() - this.options.heartbeatMs * 1.5;
    for (;;) {
      const worker = this.slots.shift();
      if (worker === undefined) return false;
      if (!worker.alive || worker.leaving) continue;
      if (worker.lastSeen < silentAfter) {
        worker.parked++;
        continue;
      }
      worker.jobs.set(job.id, job);
      job.dispatchedAt = performance.now();
      this.assigned.set(job.id, worker);
      const w = this.toWorkers.writerFor(worker.key, worker.identity);
      w.begin(Kind.JOB, job.flags, this.options.stage, job.id, job.deadline);
      w.bytes(job.payload);
      w.end();
      return true;
    }
  }

  private drainQueue(): void {
    const now = Date.now();
    while (this.queue.size > 0 && this.slots.size > 0) {
      const job = this.queue.shift()!;
      if (job.cancelled) continue;
      this.queuedById.delete(job.id);
      // The front end has already answered 504 for a job past its deadline.
      if (job.deadline !== 0 && job.deadline <= now) continue;
      if (!this.dispatch(job)) {
        this.queue.unshift(job);
        this.queuedById.set(job.id, job);
        return;
      }
    }
  }

  private cancel(id: number): void {
    const queued = this.queuedById.get(id);
    if (queued !== undefined) {
      queued.cancelled = true;
      this.queuedById.delete(id);
      return;
    }
    const worker = this.assigned.get(id);
    if (worker !== undefined) this.toWorkers.writerFor(worker.key, worker.identity).empty(Kind.CANCEL, this.options.stage, id);
  }

  private refuse(job: Job, code: ErrorCode, message: string): void {
    this.refused++;
    const w = this.toLoopback.writer;
    w.begin(Kind.ERROR, 0, this.options.stage, job.id, job.deadline);
    writeError(w, { code, status: ERROR_STATUS[code], message });
    w.end();
  }

  private onBackend(frames: Buffer[]): void {
    const identity = frames[0];
    if (identity === undefined) return;
    const records = this.decode(frames[1], 'backend');
    if (records === undefined) return;
    const key = identity.toString('hex');
    let worker = this.workers.get(key);
    for (const r of records) {
      if (r.kind === Kind.HELLO) {
        worker = this.join(key, identity, r);
        continue;
      }
      if (worker === undefined && r.kind === Kind.HEARTBEAT && r.payload.length > 0) {
        // A worker's pulse thread, on a socket of its own, names its worker.
        const pulsing = this.byLabel.get(r.payload.toString('utf8'));
        if (pulsing !== undefined && pulsing.alive) this.heard(pulsing);
        continue;
      }
      if (worker === undefined || !worker.alive) {
        // A worker we expired (or never met) is still talking: ask it to join again.
        this.toWorkers.writerForStranger(key, identity).empty(Kind.BYE, this.options.stage, 0);
        break;
      }
      this.heard(worker);
      if (r.kind === Kind.DONE) this.done(worker, r.id);
      else if (r.kind === Kind.BYE) this.leave(worker);
    }
    this.drainQueue();
    this.toWorkers.schedule();
    this.toLoopback.schedule();
  }

  private heard(worker: WorkerEntry): void {
    worker.lastSeen = Date.now();
    if (worker.parked > 0) {
      for (; worker.parked > 0; worker.parked--) this.slots.push(worker);
    }
  }

  private join(key: string, identity: Buffer, r: WireRecord): WorkerEntry | undefined {
    let capacity: number;
    let label: string;
    try {
      ({ capacity, label } = readHello(r.payload));
    } catch (err) {
      this.undecodable++;
      this.logger.warn({ err, stage: this.options.name }, 'malformed HELLO dropped');
      return this.workers.get(key);
    }
    const previous = this.workers.get(key) ?? (label === '' ? undefined : this.byLabel.get(label));
    if (previous !== undefined) this.expire(previous, 'rejoined');
    const pulse = (r.flags & Flag.PULSE) !== 0 && label !== '';
    const worker: WorkerEntry = { key, identity, label, capacity, parked: 0, pulse, jobs: new Map(), lastSeen: Date.now(), alive: true, leaving: false };
    this.workers.set(key, worker);
    if (label !== '') this.byLabel.set(label, worker);
    const o = this.options;
    const w = this.toWorkers.writerFor(key, identity);
    w.begin(Kind.WELCOME, 0, o.stage, 0, 0);
    writeWelcome(w, { stage: o.stage, next: o.next, loopback: o.loopback, heartbeatMs: o.heartbeatMs, liveness: o.liveness });
    w.end();
    for (let i = 0; i < capacity; i++) this.slots.push(worker);
    this.logger.info({ stage: o.name, worker: label || key, capacity }, 'worker joined');
    return worker;
  }

  private done(worker: WorkerEntry, id: number): void {
    const job = worker.jobs.get(id);
    if (job === undefined || !worker.jobs.delete(id)) return;
    this.stageTime.observe(performance.now() - job.dispatchedAt);
    this.assigned.delete(id);
    if (worker.leaving) {
      if (worker.jobs.size === 0) this.remove(worker);
      return;
    }
    this.slots.push(worker);
  }

  private leave(worker: WorkerEntry): void {
    worker.leaving = true;
    this.logger.info({ stage: this.options.name, worker: worker.key, holding: worker.jobs.size }, 'worker leaving');
    if (worker.jobs.size === 0) this.remove(worker);
    this.refuseQueueIfNoWorker();
  }

  private remove(worker: WorkerEntry): void {
    worker.alive = false;
    this.workers.delete(worker.key);
    if (this.byLabel.get(worker.label) === worker) this.byLabel.delete(worker.label);
    this.toWorkers.forget(worker.key);
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
    this.toWorkers.schedule();
    this.toLoopback.schedule();
  }

  private onHeartbeat(): void {
    const o = this.options;
    const now = Date.now();
    const limit = o.heartbeatMs * o.liveness;
    for (const worker of this.workers.values()) {
      const verdict = this.check(worker, now, now - worker.lastSeen > limit);
      if (verdict === 'alive') {
        this.toWorkers.writerFor(worker.key, worker.identity).empty(Kind.HEARTBEAT, o.stage, 0);
        continue;
      }
      this.expire(worker, verdict);
      if (verdict === 'stuck' && worker.label !== '') o.onStuck?.(worker.label);
    }
    this.refuseQueueIfNoWorker();
    this.toWorkers.schedule();
    this.toLoopback.schedule();
  }

  /** Drops a worker; answers 502 for what it held, or re-queues it once for an idempotent stage. */
  private expire(worker: WorkerEntry, why: string): void {
    this.remove(worker);
    this.logger.warn({ stage: this.options.name, worker: worker.label || worker.key, holding: worker.jobs.size, why }, 'worker expired');
    for (const job of worker.jobs.values()) {
      this.assigned.delete(job.id);
      if (this.options.idempotent && (job.flags & Flag.RETRIED) === 0) {
        job.flags |= Flag.RETRIED;
        if (!this.dispatch(job)) {
          this.queue.unshift(job);
          this.queuedById.set(job.id, job);
        }
      } else {
        this.refuse(job, 'BF_ERR_WORKER_DIED', `a worker of stage ${this.options.name} died`);
      }
    }
    worker.jobs.clear();
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
    if (this.queuedById.size === 0 || this.liveWorkers() > 0) return;
    for (const job of this.queuedById.values()) {
      job.cancelled = true;
      this.refuse(job, 'BF_ERR_NO_WORKER', `stage ${this.options.name} has no live worker`);
    }
    this.queuedById.clear();
    this.queue.clear();
  }

  private liveWorkers(): number {
    let n = 0;
    for (const w of this.workers.values()) if (w.alive && !w.leaving) n++;
    return n;
  }

  private decode(frame: Buffer | undefined, socket: string): WireRecord[] | undefined {
    try {
      if (frame === undefined) throw new Error('missing frame');
      return decodeRecords(frame);
    } catch (err) {
      this.undecodable++;
      this.logger.warn({ err, stage: this.options.name, socket }, 'undecodable message dropped');
      return undefined;
    }
  }
}
