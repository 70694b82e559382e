import { type Logger, silentLogger } from '../logger.js';
import { type OptionName, check, defaultsOf, withDefaults } from '../options.js';
import { RequestData, type ErrorData, type ResponseData } from '../wire/index.js';
import { ALLOWED_METHODS, finalAnswer, isSendable } from './checks.js';
import type { PipelineClient } from './client.js';
import { type EngineLimits, type EngineName, type EngineReply, type EngineRequest, type HttpEngine, createEngine } from './engines/index.js';

/** Options of the HTTP front end. */
export interface ServerOptions {
  /** The pipeline the requests go to. */
  client: PipelineClient;
  /** Address to listen on. Default `127.0.0.1`. */
  host: string;
  /** Port to listen on; 0 picks a free one. Default 8002. */
  port: number;
  /** HTTP engine: `node` (every HTTP/1.x client) or `uws` (HTTP/1.1 with Host, fastest). Default `node`. */
  engine: EngineName;
  /** Path answered 200 by the server itself, without the pipeline. Default `/health`. */
  healthPath: string;
  /** Longest request target, in bytes (414). Default 8192. */
  maxUrlBytes: number;
  /** Largest header block, in bytes (431). Default 16384. */
  maxHeaderBytes: number;
  /** Most header fields (431). Default 100. */
  maxHeaderCount: number;
  /** Largest body, in bytes (413). Default 10 MiB. */
  maxBodyBytes: number;
  /** Idle keep-alive connections close after this, in ms (node engine). Default 5000. */
  keepAliveTimeoutMs: number;
  /** Time to send the request head, in ms (408; node engine). Default 10000. */
  headersTimeoutMs: number;
  /** Time to send the whole request, in ms (408; node engine; uws counts from the end of the head). At least `headersTimeoutMs`. Default 30000. */
  requestReadTimeoutMs: number;
  /** Most connections open at once; past it new ones are closed unanswered (node engine). Keep it below the process's file-descriptor limit. Default 20000. */
  maxConnections: number;
  /**
   * Requests of one connection in the pipeline at once; its further pipelined requests wait
   * unread (node engine), so that one connection cannot take every slot. Default 32.
   */
  maxInFlightPerConnection: number;
  /**
   * Time an answer may wait unsent because its client does not read, in ms; then the
   * connection is closed and its requests are cancelled (node engine). Default 30000.
   */
  writeTimeoutMs: number;
  /**
   * Bytes of request bodies held at once across the server (each counted from its
   * `Content-Length`, or as it arrives, until its request is answered); a body that does not
   * fit is refused 503 (node engine). At least `maxBodyBytes`. Default 256 MiB.
   */
  maxBodyBytesInFlight: number;
  /** Told of every answer, cancellation and engine refusal, for metrics and access logs. Default none. */
  observer: RequestObserver | undefined;
  /** Add a `Server-Timing: pipeline;dur=MS` header to answers from the pipeline. Default false. */
  serverTiming: boolean;
  logger: Logger;
}

/** The front end's options that are in the option schema (`OPTIONS`), checked by `startButterfly`. */
export const SERVER_OPTION_NAMES = Object.freeze([
  'host',
  'port',
  'engine',
  'healthPath',
  'maxUrlBytes',
  'maxHeaderBytes',
  'maxHeaderCount',
  'maxBodyBytes',
  'keepAliveTimeoutMs',
  'headersTimeoutMs',
  'requestReadTimeoutMs',
  'maxConnections',
  'maxInFlightPerConnection',
  'writeTimeoutMs',
  'maxBodyBytesInFlight',
  'serverTiming',
] as const satisfies readonly (keyof ServerOptions & OptionName)[]);

/** Defaults for the options that have them, from the option schema. */
export const SERVER_DEFAULTS = Object.freeze({
  ...(defaultsOf(SERVER_OPTION_NAMES) as Omit<ServerOptions, 'client' | 'observer' | 'logger'>),
  observer: undefined,
  logger: silentLogger,
});

/**
 * Checks the front end's options against the schema, and the bounds that depend on
 * another option: the read timeout covers the headers timeout, the bytes in flight the
 * largest body.
 * @throws InvalidOptionError naming the option, `prefix` first.
 */
export function checkServerOptions(o: Pick<ServerOptions, (typeof SERVER_OPTION_NAMES)[number]>, prefix = ''): void {
  for (const name of SERVER_OPTION_NAMES) check(name, o[name], `${prefix}${name}`);
  check('requestReadTimeoutMs', o.requestReadTimeoutMs, `${prefix}requestReadTimeoutMs`, o.headersTimeoutMs);
  check('maxBodyBytesInFlight', o.maxBodyBytesInFlight, `${prefix}maxBodyBytesInFlight`, o.maxBodyBytes);
}

/** What an observer sees of a request: no body, nothing to copy. */
export interface ObservedRequest {
  readonly method: string;
  /** The request target as sent: path and query, undecoded. */
  readonly target: string;
  readonly remoteAddress: string;
}

/**
 * Told of what the front end answers, on the hot path: keep each call cheap (no
 * allocation, no label strings). `startedAt` is `performance.now()` when the request
 * arrived. Exactly one of `answered` and `cancelled` is called per request that reached
 * the front end; `refused` for each one its engine turned away before that.
 */
export interface RequestObserver {
  /** The request was answered with `status`; `code` is the error code for an error answer, else undefined. */
  answered(req: ObservedRequest, status: number, code: string | undefined, startedAt: number): void;
  /** The client went away before its answer; the request was cancelled. */
  cancelled(req: ObservedRequest, startedAt: number): void;
  /** The engine refused a request (malformed, too large, unsupported) with `status` and `code`. */
  refused(status: number, code: string): void;
}

const HEALTH_HEADERS: readonly string[] = Object.freeze(['content-type', 'application/json']);
const HEALTH_BODY = Buffer.from('{"status":"ok"}');
/** The answer to `OPTIONS *`: the methods the server takes, and no content. */
const OPTIONS_HEADERS: readonly string[] = Object.freeze(['allow', ALLOWED_METHODS]);
const EMPTY = Buffer.alloc(0);

/** Counts of what the front end answered, since start. */
export interface ServerCounters {
  requests: number;
  refused: number;
  /** Answers from the pipeline that HTTP cannot carry, sent as 502 instead. */
  badAnswers: number;
}

/**
 * The HTTP front end: reads requests through its engine, answers health checks, `OPTIONS *`
 * and bad requests itself, and sends everything else to the pipeline, writing back the one
 * answer the pipeline client gives for it. A client that goes away cancels its request.
 */
export class ButterflyServer {
  private currentState: 'starting' | 'running' | 'draining' | 'closed' = 'starting';

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'draining' | 'closed' {
    return this.currentState;
  }
  /** The port listened on, once `listen()` resolved. */
  private listeningPort = 0;
  private readonly counts: ServerCounters = { requests: 0, refused: 0, badAnswers: 0 };
  private readonly options: ServerOptions;
  private readonly client: PipelineClient;
  private readonly logger: Logger;
  private engine: HttpEngine | undefined;
  private readonly observer: RequestObserver | undefined;

  constructor(options: Partial<ServerOptions> & Pick<ServerOptions, 'client'>) {
    const o = withDefaults<ServerOptions>(SERVER_DEFAULTS as ServerOptions, options);
    checkServerOptions(o);
    this.options = o;
    this.client = o.client;
    this.logger = o.logger;
    this.observer = o.observer;
  }

  /**
   * Starts the engine and listens. Resolves with the port.
   * @throws UwsUnavailableError for `engine: 'uws'` without its native addon.
   */
  async listen(): Promise<number> {
    const o = this.options;
    const limits: EngineLimits = {
      maxUrlBytes: o.maxUrlBytes,
      maxHeaderBytes: o.maxHeaderBytes,
      maxHeaderCount: o.maxHeaderCount,
      maxBodyBytes: o.maxBodyBytes,
      keepAliveTimeoutMs: o.keepAliveTimeoutMs,
      headersTimeoutMs: o.headersTimeoutMs,
      requestReadTimeoutMs: o.requestReadTimeoutMs,
      maxConnections: o.maxConnections,
      maxInFlightPerConnection: o.maxInFlightPerConnection,
      writeTimeoutMs: o.writeTimeoutMs,
      maxBodyBytesInFlight: o.maxBodyBytesInFlight,
    };
    this.engine = await createEngine(
      o.engine,
      limits,
      (req, reply) => this.onRequest(req, reply),
      (status, code) => {
        this.counts.refused++;
        this.observer?.refused(status, code);
      },
    );
    this.listeningPort = await this.engine.listen(o.host, o.port);
    this.currentState = 'running';
    this.logger.info({ host: o.host, port: this.port, engine: o.engine }, 'listening');
    return this.port;
  }

  /** The port listened on, once `listen()` resolved (0 before). */
  get port(): number {
    return this.listeningPort;
  }

  /** Counts of what the front end answered, since start: a snapshot. */
  get counters(): Readonly<ServerCounters> {
    return Object.freeze({ ...this.counts });
  }

  /** Connections closed because their client did not read its answers within `writeTimeoutMs`, since start. */
  get writeTimeouts(): number {
    return this.engine?.writeTimeouts ?? 0;
  }

  /** Requests that waited behind their connection's others (`maxInFlightPerConnection`), since start. */
  get connectionWaits(): number {
    return this.engine?.connectionWaits ?? 0;
  }

  /** Requests refused 503 because their body did not fit `maxBodyBytesInFlight`, since start. */
  get bodyRefusals(): number {
    return this.engine?.bodyRefusals ?? 0;
  }

  /** Stops accepting connections; open ones finish their requests. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'draining') return;
    this.currentState = 'draining';
    await this.engine?.close();
    this.currentState = 'closed';
  }

  /** Stops accepting connections and closes every open one at once; their requests are cancelled. Idempotent. */
  async destroy(): Promise<void> {
    if (this.state === 'closed') return;
    this.currentState = 'draining';
    await this.engine?.destroy();
    this.currentState = 'closed';
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private onRequest(req: EngineRequest, reply: EngineReply): void {
    this.counts.requests++;
    const target = req.target;
    const health = this.options.healthPath;
    const observer = this.observer;
    const timed = observer !== undefined || this.options.serverTiming;
    const startedAt = timed ? performance.now() : 0;
    if (target.startsWith(health) && (target.length === health.length || target.charCodeAt(health.length) === 0x3f)) {
      reply.send(200, HEALTH_HEADERS, HEALTH_BODY, false);
      observer?.answered(req, 200, undefined, startedAt);
      return;
    }
    // `OPTIONS *`: the engines let no other request have this target.
    if (target === '*') {
      reply.send(200, OPTIONS_HEADERS, EMPTY, false);
      observer?.answered(req, 200, undefined, startedAt);
      return;
    }
    const data = new RequestData(req.method, target, req.headers, req.body, req.remoteAddress);
    const onAnswer = timed
      ? (response: ResponseData | null, error: ErrorData | null) => this.answerTimed(req, reply, response, error, startedAt)
      : (response: ResponseData | null, error: ErrorData | null) => answer(reply, response, error, undefined, this.counts);
    const id = this.client.submit(data, onAnswer);
    if (id !== 0) {
      reply.onAbort(() => {
        this.client.cancel(id);
        observer?.cancelled(req, startedAt);
      });
    }
  }

  private answerTimed(req: EngineRequest, reply: EngineReply, response: ResponseData | null, error: ErrorData | null, startedAt: number): void {
    const timing = this.options.serverTiming ? `pipeline;dur=${(performance.now() - startedAt).toFixed(3)}` : undefined;
    answer(reply, response, error, timing, this.counts);
    this.observer?.answered(req, response !== null ? response.status : error!.status, response !== null ? undefined : error!.code, startedAt);
  }
}

function answer(reply: EngineReply, response: ResponseData | null, error: ErrorData | null, timing: string | undefined, counters: ServerCounters): void {
  if (response !== null && isSendable(response.status, response.headers)) {
    // The common case, without building an answer object.
    reply.send(response.status, timing === undefined ? response.headers : [...response.headers, 'server-timing', timing], response.body, false);
    return;
  }
  const { status, headers, body, bad } = finalAnswer(response, error);
  if (bad) counters.badAnswers++;
  reply.send(status, timing === undefined ? headers : [...headers, 'server-timing', timing], body, false);
}
