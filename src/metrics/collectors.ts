import { createRequire } from 'node:module';
import type { Metric, Registry } from 'prom-client';
import type { ProxyStats } from '../proxy/index.js';
import type { ButterflyServer, PipelineClient } from '../server/index.js';
import { type HistogramSnapshot, LATENCY_BOUNDS_MS } from '../histogram.js';
import type { HttpMetrics } from './http.js';
import { linkRefusals } from '../wire/index.js';

/** What one scrape knows of one stage. */
export interface StageSample {
  /** 0-based position in the pipeline; undefined where unknown (a worker pool's own process). */
  readonly index: number | undefined;
  readonly name: string;
  /** False when the stage's proxy is closed, or (split mode) its reports stopped arriving. */
  readonly up: boolean;
  /** Its proxy's counts; undefined when never heard from. */
  readonly stats: ProxyStats | undefined;
  /** The worker pool this process runs for the stage, if any. */
  readonly pool: PoolSample | undefined;
}

/** A local worker pool's counts. */
export interface PoolSample {
  /** Workers started and not exited. */
  readonly running: number;
  /** Workers restarted after an unexpected exit, since start. */
  readonly restarts: number;
}

/** Where a scrape reads from; every part is optional. */
export interface MetricsSources {
  /** Every stage, in order. */
  stages?: () => readonly StageSample[];
  /** The pipeline client that owns the loopback. */
  client?: PipelineClient;
  /** The front end's request counts. */
  http?: HttpMetrics;
  /** The HTTP server, for what its own bounds turned away. */
  server?: Pick<ButterflyServer, 'counters' | 'writeTimeouts' | 'connectionWaits' | 'bodyRefusals'>;
}

type Labels = Readonly<Record<string, string>>;

interface Sample {
  readonly metricName?: string;
  readonly labels: Labels;
  readonly value: number;
}

type MetricKind = 'counter' | 'gauge' | 'histogram';

/**
 * A metric whose values are read from the pipeline at scrape time, so that nothing on the
 * hot path touches prom-client (whose `inc(labels)` hashes the labels on every call).
 * prom-client's registry asks a metric only for `name`, `help`, `type` and `get()`.
 */
class ReadAtScrape {
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: MetricKind,
    private readonly read: () => Sample[],
  ) {}

  get(): { name: string; help: string; type: MetricKind; aggregator: string; values: Sample[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.read() };
  }

  reset(): void {}
}

const BOUNDS_S = LATENCY_BOUNDS_MS.map((ms) => ms / 1000);

/** Prometheus histogram samples (cumulative `_bucket`s, `_sum` and `_count`, in seconds) of a snapshot. */
function histogramSamples(name: string, labels: Labels, h: HistogramSnapshot): Sample[] {
  const out: Sample[] = [];
  let cumulative = 0;
  for (let i = 0; i < BOUNDS_S.length; i++) {
    cumulative += h.counts[i] ?? 0;
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(BOUNDS_S[i]) }, value: cumulative });
  }
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count });
  out.push({ metricName: `${name}_sum`, labels, value: h.sumMs / 1000 });
  out.push({ metricName: `${name}_count`, labels, value: h.count });
  return out;
}

/**
 * prom-client, loaded when the first registry is made: a process that serves no metrics
 * never loads it. It is over a megabyte of the heap of the thread that loads it (the
 * front end's, which V8 starts marking early once its old generation passes 8 MiB; see
 * bench/README.md, "Where the 1 MiB echo spends its time now").
 */
const promClient = (): typeof import('prom-client') => createRequire(import.meta.url)('prom-client') as typeof import('prom-client');

/** Options of `createRegistry`. */
export interface RegistryOptions {
  /** Add prom-client's default process metrics (CPU, memory, event-loop lag, GC). Default true. */
  defaultMetrics?: boolean;
  /** Labels added to every sample, e.g. `{ role: 'proxy' }`. */
  labels?: Labels;
}

/**
 * A prom-client registry with butterfly's metrics, read from `sources` at each scrape:
 * per stage (queue depth, jobs in flight, workers alive and ready, jobs, refusals,
 * undecodable messages, time in the stage, pool restarts), per route and status, the
 * end-to-end latency, refusals by code, and the loopback's counts.
 */
export function createRegistry(sources: MetricsSources, options: RegistryOptions = {}): Registry {
  const { Registry, collectDefaultMetrics } = promClient();
  const registry = new Registry();
  if (options.labels !== undefined) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  const add = (name: string, help: string, type: MetricKind, read: () => Sample[]): void => {
    // A metric read at scrape time is not a prom-client class; the registry needs only what ReadAtScrape has.
    registry.registerMetric(new ReadAtScrape(name, help, type, read) as unknown as Metric);
  };

  add('butterfly_link_refusals_total', "Peers kept out of this process's CURVE sockets: a key not on the allowlist, or a failed handshake (plaintext, wrong server key).", 'counter', () =>
    Object.entries(linkRefusals).map(([reason, value]) => ({ labels: { reason }, value })),
  );

  const stages = sources.stages;
  if (stages !== undefined) {
    const label = (s: StageSample): Labels => (s.index === undefined ? { stage: s.name } : { index: String(s.index), stage: s.name });
    const perStage = (pick: (s: StageSample) => number | undefined): (() => Sample[]) => () => {
      const out: Sample[] = [];
      for (const s of stages()) {
        const value = pick(s);
        if (value !== undefined) out.push({ labels: label(s), value });
      }
      return out;
    };
    // Gauges only for a stage that is up; counters keep their last known values.
    const live = (pick: (stats: ProxyStats) => number) => (s: StageSample) => (s.up && s.stats !== undefined ? pick(s.stats) : undefined);
    const known = (pick: (stats: ProxyStats) => number) => (s: StageSample) => (s.stats !== undefined ? pick(s.stats) : undefined);
    add('butterfly_stage_up', 'Whether the stage proxy is running and (split mode) reporting: 1 or 0.', 'gauge', perStage((s) => (s.up ? 1 : 0)));
    add('butterfly_stage_queued', 'Jobs waiting for a free worker of the stage.', 'gauge', perStage(live((t) => t.queued)));
    add('butterfly_stage_in_flight', 'Jobs held by workers of the stage.', 'gauge', perStage(live((t) => t.inFlight)));
    add('butterfly_stage_workers_alive', 'Workers joined to the stage proxy and heart-beating, not leaving.', 'gauge', perStage(live((t) => t.workers)));
    add('butterfly_stage_workers_ready', 'Live workers of the stage with at least one free slot.', 'gauge', perStage(live((t) => t.workersReady)));
    add('butterfly_stage_free_slots', 'Free job slots of the stage (capacity not in use).', 'gauge', perStage(live((t) => t.readySlots)));
    add('butterfly_stage_jobs_total', 'Jobs received by the stage proxy.', 'counter', perStage(known((t) => t.accepted)));
    add('butterfly_stage_refused_total', 'Jobs the stage proxy refused (queue full, no live worker, worker died).', 'counter', perStage(known((t) => t.refused)));
    add('butterfly_stage_undecodable_messages_total', 'Messages the stage proxy could not decode and dropped.', 'counter', perStage(known((t) => t.undecodable)));
    add('butterfly_stage_duration_seconds', 'Time from sending a job to a worker of the stage to its DONE.', 'histogram', () =>
      stages().flatMap((s) => (s.stats === undefined ? [] : histogramSamples('butterfly_stage_duration_seconds', label(s), s.stats.stageTime))),
    );
    add('butterfly_stage_pool_workers', 'Workers this process runs for the stage (started, not exited).', 'gauge', perStage((s) => s.pool?.running));
    add('butterfly_stage_worker_restarts_total', 'Workers of the stage restarted after an unexpected exit.', 'counter', perStage((s) => s.pool?.restarts));
  }

  const http = sources.http;
  if (http !== undefined) {
    add('butterfly_http_requests_total', 'HTTP requests answered, by route and status.', 'counter', () =>
      http.routeCounts().flatMap((r) => r.statuses.map(([status, n]) => ({ labels: { route: r.route, status: String(status) }, value: n }))),
    );
    add('butterfly_http_request_duration_seconds', 'Time from a request arriving to its answer, by route.', 'histogram', () =>
      http.routeCounts().flatMap((r) => (r.duration.count === 0 ? [] : histogramSamples('butterfly_http_request_duration_seconds', { route: r.route }, r.duration))),
    );
    add('butterfly_http_cancelled_total', 'Requests whose client went away before the answer.', 'counter', () => [{ labels: {}, value: http.cancelledCount }]);
    add('butterfly_refusals_total', 'Requests answered 503 or 504 by the pipeline, by error code.', 'counter', () =>
      [...http.refusals()].map(([code, n]) => ({ labels: { code }, value: n })),
    );
  }

  const server = sources.server;
  if (server !== undefined) {
    add('butterfly_http_bad_answers_total', 'Answers from the pipeline that HTTP cannot carry, sent as 502 BF_ERR_BAD_ANSWER instead.', 'counter', () => [{ labels: {}, value: server.counters.badAnswers }]);
    add('butterfly_http_write_timeouts_total', 'Connections closed because their client did not read its answers within the write timeout.', 'counter', () => [{ labels: {}, value: server.writeTimeouts }]);
    add('butterfly_http_connection_waits_total', "Requests that waited behind their connection's others (max in flight per connection).", 'counter', () => [{ labels: {}, value: server.connectionWaits }]);
    add('butterfly_http_body_refusals_total', 'Requests refused 503 because their body did not fit the bytes allowed in flight.', 'counter', () => [{ labels: {}, value: server.bodyRefusals }]);
  }

  const client = sources.client;
  if (client !== undefined) {
    add('butterfly_requests_in_flight', 'Requests sent to the pipeline and not yet answered.', 'gauge', () => [{ labels: {}, value: client.inFlight }]);
    add('butterfly_loopback_undecodable_messages_total', 'Messages on the loopback that could not be decoded.', 'counter', () => [{ labels: {}, value: client.undecodable }]);
    add('butterfly_loopback_unmatched_total', 'Answers on the loopback for no request in flight (late or duplicate), dropped.', 'counter', () => [{ labels: {}, value: client.unmatched }]);
  }
  return registry;
}
