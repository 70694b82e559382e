/**
 * Operations: Prometheus metrics read from the pipeline at scrape time, the admin port
 * (`/metrics`, `/health`, `/ready`), the front end's request counts and access log, and
 * the stage reports that let one scrape of a split pipeline's server see every stage.
 */
export { LatencyHistogram, LATENCY_BOUNDS_MS, type HistogramSnapshot } from '../histogram.js';
export { HttpMetrics, OTHER_ROUTE, type HttpMetricsOptions, type RouteCounts } from './http.js';
export { createRegistry, type MetricsSources, type StageSample, type PoolSample, type RegistryOptions } from './collectors.js';
export { AdminServer, ADMIN_DEFAULTS, type AdminServerOptions, type Readiness, type StageReadiness } from './admin.js';
export { StageReporter, StageBoard, REPORTER_DEFAULTS, BOARD_DEFAULTS, type StageReporterOptions, type StageBoardOptions } from './report.js';
