/** The HTTP front end, its two engines, and the pipeline client that owns the loopback. */
export { ButterflyServer, SERVER_DEFAULTS, SERVER_OPTION_NAMES, checkServerOptions, type ServerOptions, type ServerCounters, type RequestObserver, type ObservedRequest } from './server.js';
export { PipelineClient, CLIENT_DEFAULTS, DEADLINE_ERROR, type PipelineClientOptions, type AnswerHandler } from './client.js';
export { finalAnswer, type FinalAnswer } from './checks.js';
export { type EngineName, DRAIN_IDLE_GRACE_MS } from './engines/index.js';
