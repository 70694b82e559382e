/** The HTTP front end, its two engines, and the pipeline client that owns the loopback. */
export { ButterflyServer, SERVER_DEFAULTS, type ServerOptions, type ServerCounters, type RequestObserver, type ObservedRequest } from './server.js';
export { PipelineClient, CLIENT_DEFAULTS, type PipelineClientOptions, type AnswerHandler } from './client.js';
export { UwsUnavailableError, type EngineName } from './engines/index.js';
