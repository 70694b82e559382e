import { InvalidOptionError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ObservedRequest, RequestObserver } from '../server/index.js';
import { type HistogramSnapshot, LatencyHistogram } from '../histogram.js';

/** Options of the front end's request metrics. */
export interface HttpMetricsOptions {
  /**
   * Paths that get their own `route` label (the target's path, before any `?`, matched
   * exactly). Every other request counts under `other`, so that clients cannot grow the
   * label set. At most 32.
   */
  routes: readonly string[];
  /** The server's own health-check path, counted as its own route. */
  healthPath: string;
  /** Where one JSON line per answered request goes (an access log); undefined for none. */
  accessLog: Logger | undefined;
}

/** The `route` label of requests whose path is not listed. */
export const OTHER_ROUTE = 'other';

/** Statuses are counted in a flat array indexed by status; anything outside 100..599 counts as 0. */
const STATUS_SLOTS = 600;

/** One route's counts, for the metrics layer. */
export interface RouteCounts {
  readonly route: string;
  /** `[status, answers]` pairs with at least one answer. */
  readonly statuses: readonly (readonly [number, number])[];
  readonly duration: HistogramSnapshot;
}

/**
 * Counts what the front end answers: requests by route and status, the time from arrival
 * to answer per route, refusals (503 and 504) by error code, cancellations; and writes
 * the access log. Every counter is a slot in a preallocated array found without building
 * a string, so the cost per request is a route match, a few additions and two clock reads.
 */
export class HttpMetrics implements RequestObserver {
  private readonly routes: readonly string[];
  private readonly statusCounts: Float64Array[];
  private readonly durations: LatencyHistogram[];
  private readonly refusalsByCode = new Map<string, number>();
  private readonly accessLog: Logger | undefined;
  private cancels = 0;

  /** Requests whose client went away before the answer, since start. */
  get cancelledCount(): number {
    return this.cancels;
  }

  constructor(options: HttpMetricsOptions) {
    const { routes, healthPath } = options;
    if (!Array.isArray(routes) || routes.length > 32) throw new InvalidOptionError('metricsRoutes', 'a list of at most 32 paths', routes);
    routes.forEach((r, i) => {
      if (typeof r !== 'string' || !r.startsWith('/') || r.includes('?')) throw new InvalidOptionError(`metricsRoutes[${i}]`, 'a path starting with / and without ?', r);
    });
    const all = [...new Set([...routes, healthPath])];
    this.routes = all;
    // One more slot than routes: the last is `other`.
    this.statusCounts = Array.from({ length: all.length + 1 }, () => new Float64Array(STATUS_SLOTS));
    this.durations = Array.from({ length: all.length + 1 }, () => new LatencyHistogram());
    this.accessLog = options.accessLog;
  }

  answered(req: ObservedRequest, status: number, code: string | undefined, startedAt: number): void {
    const ms = performance.now() - startedAt;
    const route = this.routeOf(req.target);
    this.statusCounts[route]![status >= 100 && status < STATUS_SLOTS ? status : 0]!++;
    this.durations[route]!.observe(ms);
    if (code !== undefined && (status === 503 || status === 504)) this.refusalsByCode.set(code, (this.refusalsByCode.get(code) ?? 0) + 1);
    if (this.accessLog !== undefined) {
      this.accessLog.info({ method: req.method, url: req.target, status, ms: Math.round(ms * 1000) / 1000, remote: req.remoteAddress, ...(code === undefined ? {} : { code }) }, 'request');
    }
  }

  cancelled(req: ObservedRequest, startedAt: number): void {
    this.cancels++;
    if (this.accessLog !== undefined) {
      const ms = performance.now() - startedAt;
      this.accessLog.info({ method: req.method, url: req.target, status: 499, ms: Math.round(ms * 1000) / 1000, remote: req.remoteAddress }, 'request cancelled');
    }
  }

  refused(status: number, code: string): void {
    this.statusCounts[this.routes.length]![status >= 100 && status < STATUS_SLOTS ? status : 0]!++;
    this.accessLog?.info({ status, code }, 'request refused');
  }

  /** Counts per route, for a scrape. */
  routeCounts(): RouteCounts[] {
    const out: RouteCounts[] = [];
    for (let r = 0; r <= this.routes.length; r++) {
      const counts = this.statusCounts[r]!;
      const statuses: [number, number][] = [];
      for (let s = 0; s < STATUS_SLOTS; s++) if (counts[s]! > 0) statuses.push([s, counts[s]!]);
      out.push({ route: this.routes[r] ?? OTHER_ROUTE, statuses, duration: this.durations[r]!.snapshot() });
    }
    return out;
  }

  /** 503 and 504 error answers by error code, since start. */
  refusals(): ReadonlyMap<string, number> {
    return this.refusalsByCode;
  }

  /** The index of the route a target belongs to; `routes.length` for `other`. No allocation. */
  private routeOf(target: string): number {
    const routes = this.routes;
    for (let i = 0; i < routes.length; i++) {
      const route = routes[i]!;
      if (target.startsWith(route) && (target.length === route.length || target.charCodeAt(route.length) === 0x3f)) return i;
    }
    return routes.length;
  }
}
