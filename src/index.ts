/**
 * butterfly: pipelined worker-layer HTTP servers. An HTTP front end feeds ZeroMQ
 * load-balancing proxies and successive worker pools; any stage may answer early.
 */
export { startButterfly, BUTTERFLY_DEFAULTS, type Butterfly, type ButterflyOptions } from './embedded.js';
export * from './stages/index.js';
export { ButterflyError, InvalidOptionError, ERROR_STATUS, type ErrorCode, type ErrorRecord } from './errors.js';
export { ButterflyServer, PipelineClient, UwsUnavailableError, type ServerOptions, type PipelineClientOptions, type AnswerHandler, type EngineName, type RequestObserver, type ObservedRequest } from './server/index.js';
export { Proxy, type ProxyOptions, type ProxyStats } from './proxy/index.js';
export { StageWorker, WorkerPool, type StageWorkerOptions, type WorkerPoolOptions } from './worker/index.js';
export { RequestData, type ResponseData, type ErrorData, type Value } from './wire/index.js';
export { type Logger, silentLogger } from './logger.js';
export {
  AdminServer,
  HttpMetrics,
  StageBoard,
  StageReporter,
  createRegistry,
  type AdminServerOptions,
  type HttpMetricsOptions,
  type MetricsSources,
  type Readiness,
  type StageReadiness,
  type StageSample,
  type StageBoardOptions,
  type StageReporterOptions,
} from './metrics/index.js';
