/**
 * The stage behind `offload`: each job names a module, one of its exports and the
 * arguments to call it with; the worker imports the module once and answers with what the
 * call returns. A string comes back as text, a Buffer as bytes, anything else as JSON
 * wrapped in `{ "v": … }` (so that `undefined` and `null` survive). A `ButterflyError` the
 * function throws keeps its code and status.
 */
import { InvalidOptionError } from '../errors.js';
import { defineStage } from './stage.js';

/** What `offload` sends for one call. */
export interface OffloadJob {
  readonly module: string;
  readonly name: string;
  readonly args: readonly unknown[];
}

const loaded = new Map<string, Promise<(...args: unknown[]) => unknown>>();

/**
 * The function `name` exported by `module`, imported once per thread.
 * @throws InvalidOptionError (as a rejection) when it is not a function.
 */
export function loadExport(module: string, name: string): Promise<(...args: unknown[]) => unknown> {
  const key = `${module}#${name}`;
  let fn = loaded.get(key);
  if (fn === undefined) {
    fn = import(module).then((m: Record<string, unknown>) => {
      const value = m[name];
      if (typeof value !== 'function') throw new InvalidOptionError('exportName', `a function exported by ${module}`, name);
      return value as (...args: unknown[]) => unknown;
    });
    loaded.set(key, fn);
  }
  return fn;
}

export default defineStage<OffloadJob>({
  name: 'offload',
  async handle(job, ctx) {
    const fn = await loadExport(job.module, job.name);
    const result = await fn(...job.args);
    if (typeof result === 'string' || Buffer.isBuffer(result)) return ctx.respond(result);
    return ctx.respond({ v: result === undefined ? null : result });
  },
});
