import { type Logger, silentLogger } from '../logger.js';
import { integerIn, nonEmptyString, oneOf, withDefaults } from '../options.js';
import { RequestData, type ErrorData, type ResponseData } from '../wire/index.js';
import { errorBody } from './checks.js';
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
  /** Time to send the whole request, in ms (408; node engine). Default 30000. */
  requestReadTimeoutMs: number;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const SERVER_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  port: 8002,
  engine: 'node' as EngineName,
  healthPath: '/health',
  maxUrlBytes: 8192,
  maxHeaderBytes: 16 * 1024,
  maxHeaderCount: 100,
  maxBodyBytes: 10 * 1024 * 1024,
  keepAliveTimeoutMs: 5000,
  headersTimeoutMs: 10_000,
  requestReadTimeoutMs: 30_000,
  logger: silentLogger,
});

const HEALTH_HEADERS: readonly string[] = Object.freeze(['content-type', 'application/json']);
const HEALTH_BODY = Buffer.from('{"status":"ok"}');

/** Counts of what the front end answered, since start. */
export interface ServerCounters {
  requests: number;
  refused: number;
}

/**
 * The HTTP front end: reads requests through its engine, answers health checks and bad
 * requests itself, and sends everything else to the pipeline, writing back the one
 * answer the pipeline client gives for it. A client that goes away cancels its request.
 */
export class ButterflyServer {
  /** Lifecycle state. */
  state: 'starting' | 'running' | 'draining' | 'closed' = 'starting';
  /** The port listened on, once `listen()` resolved. */
  port = 0;
  readonly counters: ServerCounters = { requests: 0, refused: 0 };
  private readonly options: ServerOptions;
  private readonly client: PipelineClient;
  private readonly logger: Logger;
  private engine: HttpEngine | undefined;

  constructor(options: Partial<ServerOptions> & Pick<ServerOptions, 'client'>) {
    const o = withDefaults<ServerOptions>(SERVER_DEFAULTS as ServerOptions, options);
    nonEmptyString('host', o.host);
    integerIn('port', o.port, 0, 65535);
    oneOf('engine', o.engine, ['node', 'uws']);
    if (typeof o.healthPath !== 'string' || !o.healthPath.startsWith('/')) throw new TypeError(`healthPath must start with /, got ${JSON.stringify(o.healthPath)}`);
    integerIn('maxUrlBytes', o.maxUrlBytes, 16);
    integerIn('maxHeaderBytes', o.maxHeaderBytes, 256);
    integerIn('maxHeaderCount', o.maxHeaderCount, 1);
    integerIn('maxBodyBytes', o.maxBodyBytes, 0);
    integerIn('keepAliveTimeoutMs', o.keepAliveTimeoutMs, 1);
    integerIn('headersTimeoutMs', o.headersTimeoutMs, 1);
    integerIn('requestReadTimeoutMs', o.requestReadTimeoutMs, 1);
    this.options = o;
    this.client = o.client;
    this.logger = o.logger;
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
    };
    this.engine = await createEngine(
      o.engine,
      limits,
      (req, reply) => this.onRequest(req, reply),
      () => this.counters.refused++,
    );
    this.port = await this.engine.listen(o.host, o.port);
    this.state = 'running';
    this.logger.info({ host: o.host, port: this.port, engine: o.engine }, 'listening');
    return this.port;
  }

  /** Stops accepting connections; open ones finish their requests. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed' || this.state === 'draining') return;
    this.state = 'draining';
    await this.engine?.close();
    this.state = 'closed';
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private onRequest(req: EngineRequest, reply: EngineReply): void {
    this.counters.requests++;
    const target = req.target;
    const health = this.options.healthPath;
    if (target.startsWith(health) && (target.length === health.length || target.charCodeAt(health.length) === 0x3f)) {
      reply.send(200, HEALTH_HEADERS, HEALTH_BODY, false);
      return;
    }
    const data = new RequestData(req.method, target, req.headers, req.body, req.remoteAddress);
    const id = this.client.submit(data, (response, error) => answer(reply, response, error));
    if (id !== 0) reply.onAbort(() => this.client.cancel(id));
  }
}

function answer(reply: EngineReply, response: ResponseData | null, error: ErrorData | null): void {
  if (response !== null) {
    reply.send(response.status, response.headers, response.body, false);
    return;
  }
  const err = error!;
  const { headers, body } = errorBody(err);
  reply.send(err.status, headers, body, false);
}
