import http from 'node:http';
import type { Registry } from 'prom-client';
import { type Logger, silentLogger } from '../logger.js';
import { check, withDefaults } from '../options.js';

/** Readiness of one stage: it is ready when at least one live worker has joined its proxy. */
export interface StageReadiness {
  readonly index: number;
  readonly name: string;
  /** Live workers joined; undefined when this process has not heard from the stage. */
  readonly workers: number | undefined;
}

/** What `/ready` reports. */
export interface Readiness {
  /** True when the process serves and every stage it knows of has a live worker. */
  readonly ready: boolean;
  readonly stages: readonly StageReadiness[];
}

/** Options of the admin HTTP server. */
export interface AdminServerOptions {
  /** Address to listen on. Default `127.0.0.1`: metrics are not for the public. */
  host: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** The metrics `/metrics` serves. */
  registry: Registry;
  /** What `/ready` answers: 200 when ready, else 503. */
  ready: () => Readiness;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const ADMIN_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  logger: silentLogger,
});

const JSON_TYPE = 'application/json';

/**
 * The admin port, apart from the public one: `GET /metrics` (Prometheus text format),
 * `GET /health` (200 while the process is up) and `GET /ready` (200 when every stage has
 * a live worker, else 503, with the stages in the body). Anything else is 404.
 */
export class AdminServer {
  private currentState: 'starting' | 'running' | 'closed' = 'starting';

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'closed' {
    return this.currentState;
  }
  /** The port listened on, once `listen()` resolved. */
  private listeningPort = 0;
  private readonly options: AdminServerOptions;
  private readonly server: http.Server;

  /** The port listened on, once `listen()` resolved (0 before). */
  get port(): number {
    return this.listeningPort;
  }

  constructor(options: Partial<AdminServerOptions> & Pick<AdminServerOptions, 'port' | 'registry' | 'ready'>) {
    const o = withDefaults<AdminServerOptions>(ADMIN_DEFAULTS as AdminServerOptions, options);
    check('adminHost', o.host, 'host');
    check('adminPort', o.port, 'port');
    this.options = o;
    this.server = http.createServer((req, res) => void this.onRequest(req, res));
    this.server.keepAliveTimeout = 5000;
  }

  /** Listens; resolves with the port. */
  async listen(): Promise<number> {
    const { host, port } = this.options;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address();
    this.listeningPort = typeof address === 'object' && address !== null ? address.port : port;
    this.currentState = 'running';
    this.options.logger.info({ host, port: this.port }, 'admin listening');
    return this.port;
  }

  /** Stops listening and closes open connections. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasListening = this.state === 'running';
    this.currentState = 'closed';
    if (!wasListening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** Same as `close()`, which closes open connections at once: the admin port holds no work to finish. */
  destroy(): Promise<void> {
    return this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, JSON_TYPE, '{"error":{"code":"BF_ERR_METHOD_NOT_ALLOWED","message":"use GET"}}', { allow: 'GET, HEAD' });
      return;
    }
    if (path === '/metrics') {
      try {
        const registry = this.options.registry;
        send(res, 200, registry.contentType, await registry.metrics());
      } catch (err) {
        this.options.logger.error({ err }, 'metrics collection failed');
        send(res, 500, JSON_TYPE, '{"error":{"code":"BF_ERR_INTERNAL","message":"metrics collection failed"}}');
      }
    } else if (path === '/health') {
      send(res, 200, JSON_TYPE, '{"status":"ok"}');
    } else if (path === '/ready') {
      const readiness = this.options.ready();
      send(res, readiness.ready ? 200 : 503, JSON_TYPE, JSON.stringify(readiness));
    } else {
      send(res, 404, JSON_TYPE, '{"error":{"code":"BF_ERR_NOT_FOUND","message":"try /metrics, /health or /ready"}}');
    }
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  const bytes = Buffer.from(body);
  res.writeHead(status, { 'content-type': type, 'content-length': bytes.length, ...extra });
  res.end(res.req.method === 'HEAD' ? undefined : bytes);
}
