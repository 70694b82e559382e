import type { Registry } from 'prom-client';
import type { Logger } from './logger.js';
import { AdminServer, HttpMetrics, type Readiness, type StageReadiness, type StageSample, createRegistry } from './metrics/index.js';
import { ButterflyServer, DRAIN_IDLE_GRACE_MS, type PipelineClient, type ServerOptions } from './server/index.js';



/**
 * The front of a pipeline, the same in one process tree and in split mode: the pipeline
 * client, the HTTP server in front of it, the request metrics and the admin port, with
 * one readiness rule and one drain.
 */

/** What the front end needs to know of it. */
export interface FrontEndOptions {
  /** The pipeline client, started. */
  client: PipelineClient;
  /** Start the HTTP server (false: the client alone, for jobs without HTTP). */
  http: boolean;
  /** The HTTP server's options. */
  server: Partial<Omit<ServerOptions, 'client' | 'observer' | 'logger'>>;
  /** Admin port; undefined for none. */
  adminPort: number | undefined;
  adminHost: string;
  /** Count for a registry even without an admin port. */
  metrics: boolean;
  metricsRoutes: readonly string[];
  healthPath: string;
  accessLog: Logger | undefined;
  /** Every stage as last known, for the metrics. */
  stageSamples: () => StageSample[];
  /** Every stage's live workers, for `/ready`. */
  stageReadiness: () => readonly StageReadiness[];
  logger: Logger;
}

/** A started front end. */
export interface FrontEnd {
  readonly server: ButterflyServer | undefined;
  readonly admin: AdminServer | undefined;
  readonly registry: Registry | undefined;
  /** Serving, with a live worker in every stage known: what `/ready` answers. */
  ready(): Readiness;
  /**
   * Stops accepting connections and waits, up to `drainMs`, for every request in flight to
   * be answered; answers while draining close their connections. Resolves true when all were.
   */
  drain(drainMs: number): Promise<boolean>;
  /**
   * Closes the admin port, answers whatever is still in flight 503 and stops the client,
   * then waits for the HTTP connections to close: up to `lingerMs`, or for as long as
   * they take when undefined.
   */
  stop(lingerMs?: number): Promise<void>;
}

/**
 * Starts the HTTP server and the admin port in front of a started pipeline client.
 * On failure, what was started is stopped again.
 */
export async function startFrontEnd(o: FrontEndOptions): Promise<FrontEnd> {
  const { client, logger } = o;
  const withMetrics = o.metrics || o.adminPort !== undefined;
  const observer = o.http && (withMetrics || o.accessLog !== undefined) ? new HttpMetrics({ routes: o.metricsRoutes, healthPath: o.healthPath, accessLog: o.accessLog }) : undefined;
  const server = o.http ? new ButterflyServer({ ...o.server, healthPath: o.healthPath, client, observer, logger }) : undefined;
  const registry = withMetrics
    ? createRegistry({ stages: o.stageSamples, client, ...(observer === undefined ? {} : { http: observer }), ...(server === undefined ? {} : { server }) })
    : undefined;
  const ready = (): Readiness => {
    const stages = o.stageReadiness();
    const serving = client.state === 'running' && (server === undefined || server.state === 'running');
    return { ready: serving && stages.every((s) => s.workers !== undefined && s.workers > 0), stages };
  };
  const admin = o.adminPort !== undefined && registry !== undefined ? new AdminServer({ host: o.adminHost, port: o.adminPort, registry, ready, logger }) : undefined;
  try {
    await server?.listen();
    await admin?.listen();
  } catch (err) {
    await server?.close();
    await admin?.close();
    throw err;
  }
  let serverClosed: Promise<void> | undefined;
  /**
   * Every request answered, and none come for `DRAIN_IDLE_GRACE_MS` (the node engine's
   * grace for idle connections, the same wait): a client may have sent a
   * request on a kept-alive connection just before the drain began (it had no
   * `Connection: close` yet), and it is answered, not reset by the exit.
   */
  const settled = async (): Promise<true> => {
    for (;;) {
      await client.drain();
      // Without HTTP there is no connection a request could still be on its way over.
      if (server === undefined) return true;
      const seen = server.counters.requests;
      await new Promise((resolve) => setTimeout(resolve, DRAIN_IDLE_GRACE_MS).unref());
      if (client.inFlight === 0 && server.counters.requests === seen) return true;
    }
  };
  return {
    server,
    admin,
    registry,
    ready,
    async drain(drainMs: number): Promise<boolean> {
      logger.info({ inFlight: client.inFlight }, 'draining');
      // Stop accepting now; the listener closes only once its connections have, so the
      // drain time runs from here, not from then.
      serverClosed ??= server?.close();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), drainMs)));
      const drained = await Promise.race([settled(), timeout]);
      clearTimeout(timer);
      return drained;
    },
    async stop(lingerMs?: number): Promise<void> {
      serverClosed ??= server?.close();
      await admin?.close();
      // Anything still in flight is answered 503; each answer closes its connection.
      await client.destroy();
      if (lingerMs === undefined) return serverClosed;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([serverClosed, new Promise<void>((resolve) => (timer = setTimeout(resolve, lingerMs)))]);
      clearTimeout(timer);
    },
  };
}
