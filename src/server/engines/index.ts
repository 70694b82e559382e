import type { EngineHandler, EngineLimits, HttpEngine, Refusal } from './engine.js';
import { NodeEngine } from './node.js';
export { DRAIN_IDLE_GRACE_MS } from './node.js';
import { UwsEngine, loadUws } from './uws.js';

export type { EngineHandler, EngineLimits, EngineReply, EngineRequest, HttpEngine, Refusal } from './engine.js';
export { UwsUnavailableError } from '../../errors.js';

/** The HTTP engines: `node` (node:http, every HTTP/1.x client) and `uws` (uWebSockets.js, HTTP/1.1 with Host). */
export type EngineName = 'node' | 'uws';

/** Builds an engine; the `uws` one is loaded only when asked for, and refuses to start without its native addon. */
export async function createEngine(name: EngineName, limits: EngineLimits, handler: EngineHandler, onRefusal: Refusal): Promise<HttpEngine> {
  if (name === 'uws') return new UwsEngine(await loadUws(), limits, handler, onRefusal);
  return new NodeEngine(limits, handler, onRefusal);
}
