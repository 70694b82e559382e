import { randomBytes } from 'node:crypto';
import * as zmq from 'zeromq';
import { ERROR_STATUS, InvalidOptionError } from '../errors.js';
import { type Logger, silentLogger } from '../logger.js';
import { check, defaultsOf, withDefaults } from '../options.js';
import {
  Kind,
  LARGE_RECORD_BYTES,
  LocalOutbox,
  RecordWriter,
  RequestData,
  encodeRequestJob,
  requestId,
  MAX_ID_PREFIX,
  Outbox,
  configureSocket,
  decodeRecords,
  readError,
  readResponse,
  prefixOf,
  receiveEach,
  secureClient,
  secureServer,
  writeValue,
  type ErrorData,
  type LinkSecurity,
  type RecordSink,
  type ResponseData,
  type Value,
  type WireRecord,
} from '../wire/index.js';
import { AnswerHub } from './hub.js';

/** How often a client that gets its answers through a hub (`via`) registers again, in ms. */
const REGISTER_EVERY_MS = 1000;

/** Options of a pipeline client. */
export interface PipelineClientOptions {
  /** Where final answers arrive (bound, PULL). */
  loopback: string;
  /** Frontend addresses of every stage's proxy, in order; jobs go to the first, cancels to all. */
  stages: string[];
  /** Requests in flight at most; past it `submit` refuses at once with 503. Default 10000. */
  maxInFlight: number;
  /** Time from submit to the answer, at most, in ms; then 504. Default 30000. */
  requestTimeoutMs: number;
  /** Largest ZeroMQ message, in bytes. Default 64 MiB. */
  maxMessageBytes: number;
  /**
   * In-process delivery to the stages' proxies (embedded mode), one function per stage in
   * place of the `stages` sockets; answers then come in through `acceptAnswers` as well as
   * the loopback socket. Default none.
   */
  localStages: readonly ((records: WireRecord[], frame: Buffer) => void)[] | undefined;
  /**
   * CURVE keys: the loopback lets in only the allowlist's keys, and the stages are reached
   * as a CURVE client. Undefined (the default): plaintext links.
   */
  security: LinkSecurity | undefined;
  /**
   * An address to bind for the pipeline's other clients (see `via`): answers to their
   * requests reach this client's loopback, and it passes them on. Default none.
   */
  hub: string | undefined;
  /**
   * Another client's `hub`: this client binds no loopback and gets its answers through
   * that hub (the pipeline's loopback is the other client's), so that any number of
   * clients, here or on other hosts, share one pipeline, each with only its own answers.
   * `loopback` is then unused. Default none.
   */
  via: string | undefined;
  logger: Logger;
}

/** Defaults for the options that have them, from the option schema. */
export const CLIENT_DEFAULTS = Object.freeze({
  ...(defaultsOf(['maxInFlight', 'requestTimeoutMs', 'maxMessageBytes']) as Pick<PipelineClientOptions, 'maxInFlight' | 'requestTimeoutMs' | 'maxMessageBytes'>),
  localStages: undefined,
  security: undefined,
  hub: undefined,
  via: undefined,
  logger: silentLogger,
});


/**
 * Receives the one answer of a request: a response, or an error (exactly one of the two
 * is non-null). Called exactly once per accepted request.
 */
export type AnswerHandler = (response: ResponseData | null, error: ErrorData | null) => void;

interface Pending {
  readonly id: number;
  readonly deadline: number;
  readonly onAnswer: AnswerHandler;
}

/** What a request past its deadline is answered with, 504. */
export const DEADLINE_ERROR: ErrorData = Object.freeze({ code: 'BF_ERR_DEADLINE', status: ERROR_STATUS.BF_ERR_DEADLINE, message: 'deadline reached' });
const OVERLOAD_ERROR: ErrorData = Object.freeze({ code: 'BF_ERR_OVERLOADED', status: ERROR_STATUS.BF_ERR_OVERLOADED, message: 'too many requests in flight' });
const CLOSED_ERROR: ErrorData = Object.freeze({ code: 'BF_ERR_DRAINING', status: ERROR_STATUS.BF_ERR_DRAINING, message: 'the server is shutting down' });

/**
 * Submits jobs to a pipeline and matches every final answer that arrives on the loopback
 * to its request by id. It holds the contract's core: each accepted request gets exactly
 * one answer, by its deadline at the latest (504), and no answer reaches the wrong request
 * (answers for unknown or already answered ids are dropped). Free of HTTP: the HTTP front
 * end, the simulation and programmatic callers all use it.
 */
export class PipelineClient {
  private lifecycle: 'starting' | 'running' | 'draining' | 'closed' = 'starting';
  private readonly options: PipelineClientOptions;
  private readonly logger: Logger;
  /** Where answers come in: the pipeline's loopback (PULL, bound), or a DEALER to another client's hub (`via`). */
  private readonly loopback: zmq.Pull | zmq.Dealer;
  private readonly hub: AnswerHub | undefined;
  private registerTimer: NodeJS.Timeout | undefined;
  private readonly stageSockets: zmq.Push[];
  private readonly toStages: RecordSink[];
  /** This client's request ids are `idPrefix * 2^32 + counter`: other clients of the pipeline have other prefixes. */
  private idPrefix = 1 + Math.floor(Math.random() * MAX_ID_PREFIX);
  /** With `via`: resolves `start()` once the hub has taken this client's prefix. */
  private registered: (() => void) | undefined;
  private idCounter = 0;
  private readonly pending = new Map<number, Pending>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  private drained: (() => void) | undefined;
  private undecodableCount = 0;
  private unmatchedCount = 0;
  private closing: Promise<void> | undefined;
  /** Releases the loopback's hold on the ZAP handler (CURVE). */
  private releaseKeys: () => void = () => {};

  constructor(options: Partial<PipelineClientOptions> & Pick<PipelineClientOptions, 'stages'> & ({ loopback: string } | { via: string })) {
    const o = withDefaults<PipelineClientOptions>(CLIENT_DEFAULTS as PipelineClientOptions, options);
    if (o.via === undefined) check('loopback', o.loopback);
    else check('loopback', o.via, 'via');
    if (o.hub !== undefined) check('loopback', o.hub, 'hub');
    if (o.hub !== undefined && o.via !== undefined) throw new InvalidOptionError('hub', 'unset on a client that gets its answers through another hub (via)', o.hub);
    check('stages', o.stages);
    check('maxInFlight', o.maxInFlight);
    check('requestTimeoutMs', o.requestTimeoutMs);
    this.options = o;
    this.logger = o.logger;
    const link = { maxMessageBytes: o.maxMessageBytes };
    // A client of a hub keeps its identity when it reconnects, and so its registration.
    this.loopback = o.via === undefined ? new zmq.Pull() : new zmq.Dealer({ routingId: `client-${randomBytes(8).toString('hex')}` });
    configureSocket(this.loopback, link);
    this.hub = o.hub === undefined ? undefined : new AnswerHub({ address: o.hub, maxMessageBytes: o.maxMessageBytes, security: o.security, ownPrefix: this.idPrefix, logger: o.logger });
    const local = o.localStages;
    if (local !== undefined) {
      if (local.length !== o.stages.length) throw new InvalidOptionError('localStages', `one function per stage (${o.stages.length})`, local.length);
      this.stageSockets = [];
      this.toStages = local.map((receive) => new LocalOutbox(receive, o.maxMessageBytes));
    } else {
      this.stageSockets = o.stages.map(() => {
        const s = new zmq.Push();
        configureSocket(s, link);
        secureClient(s, o.security);
        return s;
      });
      this.toStages = this.stageSockets.map((s, i) => new Outbox(s, this.logger, `stage ${i}`));
    }
  }

  /** Binds the loopback and connects to the stages. */
  async start(): Promise<void> {
    if (this.options.via !== undefined) {
      secureClient(this.loopback, this.options.security);
      this.loopback.connect(this.options.via);
      // Answers to jobs sent before the hub knows this client would be lost: wait for it.
      const registered = new Promise<void>((resolve) => (this.registered = resolve));
      this.loop = receiveEach(this.loopback, (f) => this.onLoopback(f), this.logger, 'hub');
      this.register();
      this.registerTimer = setInterval(() => this.register(), REGISTER_EVERY_MS);
      this.registerTimer.unref();
      await registered;
    } else {
      this.releaseKeys = await secureServer(this.loopback, this.options.security, this.logger);
      await this.loopback.bind(this.options.loopback);
      this.loop = receiveEach(this.loopback, (f) => this.onLoopback(f), this.logger, 'loopback');
    }
    await this.hub?.start();
    this.stageSockets.forEach((s, i) => s.connect(this.options.stages[i]!));
    const every = Math.max(5, Math.min(100, Math.floor(this.options.requestTimeoutMs / 10)));
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
    this.lifecycle = 'running';
  }

  /** Where final answers arrive: the loopback, or for a client of another's hub (`via`), that hub. */
  get loopbackAddress(): string {
    return this.options.via ?? this.options.loopback;
  }

  /** Requests waiting for their answer. */
  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Sends `payload` to stage 1, to be answered within `timeoutMs` (default
   * `requestTimeoutMs`). Returns the request's id, or 0 when the request was refused at
   * once (too many in flight, or closing): `onAnswer` has then already been called with
   * the 503 error.
   */
  submit(payload: Value, onAnswer: AnswerHandler, timeoutMs: number = this.options.requestTimeoutMs): number {
    if (this.lifecycle !== 'running') {
      onAnswer(null, CLOSED_ERROR);
      return 0;
    }
    const outbox = this.toStages[0]!;
    // A stage that takes nothing (stopped, or gone) fills the outbox: refuse rather than buffer.
    if (this.pending.size >= this.options.maxInFlight || outbox.full) {
      onAnswer(null, OVERLOAD_ERROR);
      return 0;
    }
    // A counter under a per-client prefix: an id comes back only after 2^32 more requests,
    // long after every stage has let go of the old one; other clients have other prefixes.
    this.idCounter = (this.idCounter + 1) >>> 0;
    const id = requestId(this.idPrefix, this.idCounter);
    const deadline = Date.now() + timeoutMs;
    // A large request travels in a message of its own, which is passed on, not copied.
    const bodyBytes = payload instanceof RequestData ? payload.body.length : Buffer.isBuffer(payload) ? payload.length : 0;
    const large = bodyBytes >= LARGE_RECORD_BYTES;
    const inPlace = large && payload instanceof RequestData ? encodeRequestJob(id, deadline, payload) : undefined;
    if (inPlace !== undefined) {
      this.pending.set(id, { id, deadline, onAnswer });
      outbox.sendAlone(inPlace, true);
      return id;
    }
    const w = large ? new RecordWriter(bodyBytes + 16 * 1024) : outbox.writer;
    w.begin(Kind.JOB, 0, 0, id, deadline);
    try {
      writeValue(w, payload);
    } catch (err) {
      w.abort();
      throw err;
    }
    w.end();
    this.pending.set(id, { id, deadline, onAnswer });
    if (large) outbox.sendAlone(w.take());
    else outbox.schedule();
    return id;
  }

  /** Withdraws a request (its client went away): no answer is given, and every stage drops or aborts it. */
  cancel(id: number): void {
    if (!this.pending.delete(id)) return;
    this.broadcastCancel(id, 0);
    this.checkDrained();
  }

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'draining' | 'closed' {
    return this.lifecycle;
  }

  /** Messages on the loopback that could not be decoded, since start. */
  get undecodable(): number {
    return this.undecodableCount;
  }

  /** Answers for ids not in flight (late, duplicate or forged), dropped, since start. */
  get unmatched(): number {
    return this.unmatchedCount;
  }

  /** Stops taking requests and resolves once every one in flight is answered (or timed out). */
  async drain(): Promise<void> {
    if (this.lifecycle === 'running') this.lifecycle = 'draining';
    if (this.pending.size === 0) return;
    await new Promise<void>((resolve) => (this.drained = resolve));
  }

  /** Graceful: stops taking requests, waits for every one in flight to be answered (by its deadline at the latest), then closes the sockets. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.drain().then(() => this.stop(null));
    return this.closing;
  }

  /**
   * Immediate: every request in flight is answered at once with `err` (default 503
   * `BF_ERR_DRAINING`), then the sockets close. Idempotent.
   */
  destroy(err?: ErrorData): Promise<void> {
    const stopped = this.stop(err ?? CLOSED_ERROR);
    this.closing ??= stopped;
    return stopped;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async stop(err: ErrorData | null): Promise<void> {
    if (this.lifecycle === 'closed') return this.loop;
    this.lifecycle = 'closed';
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) this.deliver(p, null, err ?? CLOSED_ERROR);
    this.checkDrained();
    if (this.registerTimer !== undefined) clearInterval(this.registerTimer);
    // A start still waiting for its hub ends with the client.
    this.registered?.();
    this.registered = undefined;
    this.loopback.close();
    this.releaseKeys();
    await this.hub?.close();
    for (const s of this.stageSockets) s.close();
    await this.loop;
  }

  /** Tells every stage to drop or abort `id`; `deadline` is its deadline when that is why (see `Kind.CANCEL`), else 0. */
  private broadcastCancel(id: number, deadline: number): void {
    for (let i = 0; i < this.toStages.length; i++) {
      const outbox = this.toStages[i]!;
      outbox.writer.empty(Kind.CANCEL, i, id, deadline);
      outbox.schedule();
    }
  }

  /** Tells the hub (`via`) which answers are this client's; repeated, since a hub forgets a silent client. */
  private register(): void {
    const dealer = this.loopback as zmq.Dealer;
    const w = new RecordWriter(64);
    w.begin(Kind.CLIENT, 0, 0, 0, 0);
    w.u32(this.idPrefix);
    w.end();
    // A full queue (no hub yet) drops it: the next one goes a second later.
    dealer.send(w.take()).catch(() => {});
  }

  private onLoopback(frames: Buffer[]): void {
    let records;
    try {
      records = decodeRecords(frames[0] ?? Buffer.alloc(0));
    } catch (err) {
      this.undecodableCount++;
      this.logger.warn({ err }, 'undecodable message on the loopback dropped');
      return;
    }
    if (this.registered !== undefined) this.onRegistered(records);
    this.acceptAnswers(records);
  }

  /** The hub's answer to a registration: this prefix taken, or 0 (another client holds it: draw another). */
  private onRegistered(records: WireRecord[]): void {
    for (const r of records) {
      if (r.kind !== Kind.CLIENT || r.payload.length < 4) continue;
      const prefix = r.payload.readUInt32LE(0);
      if (prefix === this.idPrefix) {
        this.registered?.();
        this.registered = undefined;
        return;
      }
      if (prefix === 0) {
        this.idPrefix = 1 + Math.floor(Math.random() * MAX_ID_PREFIX);
        this.register();
      }
    }
  }

  /** Takes final answers from a sender in this process (a proxy), as if they had come in on the loopback. */
  acceptAnswers(records: WireRecord[]): void {
    for (const r of records) {
      if (r.kind !== Kind.RESULT && r.kind !== Kind.ERROR) continue;
      // Another client's answer goes on to it through the hub.
      if (this.hub !== undefined && prefixOf(r.id) !== this.idPrefix && this.hub.forward(r)) continue;
      const p = this.pending.get(r.id);
      if (p === undefined) {
        this.unmatchedCount++;
        continue;
      }
      let response: ResponseData | null = null;
      let error: ErrorData | null = null;
      try {
        if (r.kind === Kind.RESULT) response = readResponse(r.payload);
        else error = readError(r.payload);
      } catch (err) {
        this.undecodableCount++;
        this.logger.warn({ err, id: r.id }, 'undecodable answer on the loopback');
        error = { code: 'BF_ERR_INTERNAL', status: 500, message: 'undecodable answer' };
      }
      this.pending.delete(r.id);
      this.deliver(p, response, error);
    }
    this.checkDrained();
  }

  /** Hands an answer over; a throwing handler must not cost the other answers of the batch theirs. */
  private deliver(p: Pending, response: ResponseData | null, error: ErrorData | null): void {
    try {
      p.onAnswer(response, error);
    } catch (err) {
      this.logger.error({ err, id: p.id }, 'answer handler threw');
    }
  }

  private sweep(): void {
    const now = Date.now();
    // Deadlines are submit time plus one fixed timeout, so the map's order is deadline order.
    for (const p of this.pending.values()) {
      if (p.deadline > now) break;
      this.pending.delete(p.id);
      this.broadcastCancel(p.id, p.deadline);
      this.deliver(p, null, DEADLINE_ERROR);
    }
    this.checkDrained();
  }

  private checkDrained(): void {
    if (this.pending.size === 0 && this.drained !== undefined) {
      const done = this.drained;
      this.drained = undefined;
      done();
    }
  }
}
