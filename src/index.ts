/**
 * butterfly: pipelined worker-layer HTTP servers. An HTTP front end feeds ZeroMQ
 * load-balancing proxies and successive worker pools; any stage may answer early.
 *
 * The public surface: `startButterfly` for an embedder, `defineStage` and the request a
 * first stage gets (`HttpRequest`) for a stage author, `RequestData` for submitting jobs
 * through a running pipeline's client, and the errors with their codes. The built-in
 * is_prime demo is `butterfly/stages`.
 */
export { startButterfly, type Butterfly, type ButterflyOptions } from './embedded.js';
export { chunks, connectPipeline, type ConnectOptions, type PipelineConnection, type Jobs, type SendOptions, type DistributeOptions, type Settled } from './jobs.js';
export { offload, type Offloaded, type OffloadMode, type OffloadOptions } from './offload.js';
export { Events, EventBus, type EventAddresses, type EventHandler, type EventsOptions, type EventBusOptions } from './events.js';
export {
  defineStage,
  definePipeline,
  HttpRequest,
  type StageDefinition,
  type StageContext,
  type StageEvents,
  type StageOutcome,
  type ReplyBody,
  type ReplyInit,
  type PipelineDescription,
  type PipelineStage,
  type WorkerTransport,
  type TypedStage,
} from './stages/index.js';
export {
  ButterflyError,
  InvalidOptionError,
  StageLoadError,
  WorkerStartError,
  UwsUnavailableError,
  ERROR_STATUS,
  type ErrorCode,
  type ErrorRecord,
} from './errors.js';
export { RequestData, type ResponseData, type ErrorData, type Value } from './wire/index.js';
export type { AnswerHandler, EngineName, ServerOptions } from './server/index.js';
export type { Readiness, StageReadiness } from './metrics/index.js';
export type { Logger } from './logger.js';
