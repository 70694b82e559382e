import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidOptionError, StageLoadError } from '../errors.js';
import { check } from '../options.js';
import { type HttpRequest, type StageDefinition, checkStage } from './stage.js';
import { TYPESCRIPT, compileTypeScript } from './typescript.js';

/**
 * How a stage's workers run: threads of this process, separate processes, inline, in the
 * thread that holds the stage's proxy (the front end's, in one process): no hop to another
 * thread, for light stages whose handlers never block; or adaptive: threads, and an inline
 * worker that takes the stage's jobs while that thread has time to spare.
 */
export type WorkerTransport = 'thread' | 'process' | 'inline' | 'adaptive';

/** One stage of a pipeline description. */
export interface PipelineStage {
  /** Path or file URL of the module whose default export is the stage (`defineStage`). */
  readonly module: string;
  /** Workers of this stage (default: the pipeline's `workers`). */
  readonly workers?: number;
  /** Jobs one worker holds at once (default: the stage's own `concurrency`, else 1). */
  readonly concurrency?: number;
  /** Jobs one worker keeps waiting beyond those it runs (default: the stage's own `prefetch`, else 1). */
  readonly prefetch?: number;
  /** Jobs waiting for a worker of this stage, at most, counting those prefetched by workers (default 1024). */
  readonly maxQueue?: number;
  /** Threads, processes, inline or adaptive (default: the pipeline's `transport`). */
  readonly transport?: WorkerTransport;
  /** Time budget per job in this stage, in ms (default: the stage's own `timeoutMs`, else none). */
  readonly timeoutMs?: number;
}

/** The stages of a pipeline, in order. */
export interface PipelineDescription {
  readonly stages: readonly PipelineStage[];
  /** Paths the pipeline serves, each its own `route` label in the metrics unless `metricsRoutes` says otherwise. */
  readonly routes?: readonly string[];
}

/** A pipeline stage's fields besides `module`: options of the schema, checked by its rules. */
const STAGE_OPTIONS = ['workers', 'concurrency', 'prefetch', 'maxQueue', 'transport', 'timeoutMs'] as const;
const STAGE_FIELDS: readonly string[] = ['module', ...STAGE_OPTIONS];

/**
 * Checks a pipeline description and resolves relative module paths against `baseDir`.
 * @throws InvalidOptionError naming the field, e.g. `stages[1].workers`.
 */
export function validatePipeline(description: unknown, baseDir: string): PipelineDescription {
  if (description === null || typeof description !== 'object') throw new InvalidOptionError('pipeline', 'an object', description);
  const { stages, routes, ...rest } = description as { stages?: unknown; routes?: unknown };
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new InvalidOptionError(unknown, 'one of stages, routes', unknown);
  if (!Array.isArray(stages) || stages.length === 0 || stages.length > 255) {
    throw new InvalidOptionError('stages', 'a list of 1 to 255 stages', stages);
  }
  return {
    ...(routes === undefined ? {} : { routes: check('metricsRoutes', routes as readonly string[], 'routes') }),
    stages: stages.map((raw: unknown, i): PipelineStage => {
      const at = `stages[${i}]`;
      if (raw === null || typeof raw !== 'object') throw new InvalidOptionError(at, 'an object', raw);
      const s = raw as Record<string, unknown>;
      for (const key of Object.keys(s)) {
        if (!STAGE_FIELDS.includes(key)) {
          throw new InvalidOptionError(`${at}.${key}`, `one of ${STAGE_FIELDS.join(', ')}`, key);
        }
      }
      if (typeof s.module !== 'string' || s.module.length === 0) throw new InvalidOptionError(`${at}.module`, 'a module path or a built-in stage name', s.module);
      const out: { -readonly [K in keyof PipelineStage]: PipelineStage[K] } = { module: resolveModule(s.module, baseDir) };
      for (const field of STAGE_OPTIONS) {
        if (s[field] !== undefined) (out as Record<string, unknown>)[field] = check(field, s[field], `${at}.${field}`);
      }
      return out;
    }),
  };
}

/** A stage of a typed pipeline: the module workers import, and its definition, for the types. */
export interface TypedStage<In, Next> extends Omit<PipelineStage, 'module'> {
  /** The module whose default export is `stage`: a path, or a URL such as `new URL('./parse.ts', import.meta.url)`. */
  readonly module: string | URL;
  readonly stage: StageDefinition<In, Next>;
}

type InOf<S> = S extends TypedStage<infer I, unknown> ? I : never;
type NextOf<S> = S extends TypedStage<never, infer N> ? N : never;

/** Each stage as given when it takes what the one before passes on; otherwise a type naming both. */
type Chained<T extends readonly unknown[], Given> = T extends readonly [infer Head, ...infer Rest]
  ? [
      [Given] extends [InOf<Head>] ? Head : { readonly error: 'this stage does not take what the stage before it passes on'; readonly takes: InOf<Head>; readonly given: Given },
      ...Chained<Rest, NextOf<Head>>,
    ]
  : [];

/**
 * A pipeline declared in TypeScript: the compiler checks that each stage takes the payload
 * the stage before passes with `ctx.next` (the first one takes the request, `HttpRequest`).
 * Returns the same description a pipeline file gives, for `startButterfly` and `inject`.
 * @throws InvalidOptionError as `validatePipeline` does.
 */
export function definePipeline<const T extends readonly TypedStage<never, unknown>[]>(stages: T & Chained<T, HttpRequest>, options: { readonly routes?: readonly string[] } = {}): PipelineDescription {
  const description = {
    ...options,
    stages: (stages as readonly TypedStage<never, unknown>[]).map(({ module, stage: _stage, ...rest }) => ({ module: module instanceof URL ? module.href : module, ...rest })),
  };
  return validatePipeline(description, process.cwd());
}

/**
 * The built-in stages, by name: a pipeline file's `module` or `butterflyd worker --stage`
 * may name one of these instead of giving a path.
 */
export const BUILTIN_STAGES: Readonly<Record<string, string>> = Object.freeze({
  'is_prime.parse': new URL('./is-prime/parse.js', import.meta.url).href,
  'is_prime.check': new URL('./is-prime/check.js', import.meta.url).href,
});

/**
 * Where a stage module is: a built-in stage's name, a `file:` URL, a path (relative to
 * `baseDir`), or a package name left to `import()`. Returns something `importStage` takes.
 */
export function resolveModule(module: string, baseDir: string): string {
  const builtin = BUILTIN_STAGES[module];
  if (builtin !== undefined) return builtin;
  if (module.startsWith('file:')) return module;
  if (module.startsWith('.') || isAbsolute(module)) return pathToFileURL(resolve(baseDir, module)).href;
  return module; // a package name, resolved by import()
}

/** Reads a JSON pipeline file; relative module paths are relative to the file. */
export async function loadPipelineFile(path: string): Promise<PipelineDescription> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new InvalidOptionError('pipeline', 'a readable file', `${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InvalidOptionError('pipeline', 'a JSON file', `${path} (${(err as Error).message})`);
  }
  return validatePipeline(parsed, dirname(resolve(path)));
}

/** A stage module ready to run: its definition, and the module workers import (for TypeScript, its compiled JavaScript). */
export interface PreparedStage {
  readonly stage: StageDefinition;
  readonly module: string;
}

/**
 * Imports a stage module, compiling it first when it is TypeScript, and returns its
 * default export, checked as `defineStage` checks it, with the module workers should
 * import: hand that to the workers, and they neither compile nor load a loader.
 * @throws StageLoadError when the module cannot be compiled or imported, or has no valid stage as its default export.
 */
export async function prepareStage(module: string): Promise<PreparedStage> {
  const runnable = TYPESCRIPT.test(module) ? await compileTypeScript(module) : module;
  let mod: { default?: unknown };
  try {
    mod = (await import(runnable)) as { default?: unknown };
  } catch (err) {
    throw new StageLoadError(`cannot import ${module}: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    return { stage: checkStage(mod.default), module: runnable };
  } catch (err) {
    throw new StageLoadError(`${module} has no stage as its default export (use defineStage): ${(err as Error).message}`);
  }
}

/**
 * Imports a stage module (see `prepareStage`) and returns its default export.
 * @throws StageLoadError as `prepareStage` does.
 */
export async function importStage(module: string): Promise<StageDefinition> {
  return (await prepareStage(module)).stage;
}

/**
 * The built-in is_prime pipeline: stage 1 parses and answers the cheap cases, stage 2 does
 * trial division. With worker threads (`transport` 'thread', the default), stage 1 is
 * adaptive: its few microseconds of work run in the front end's thread while that thread
 * has time to spare, and in worker threads when it is busy.
 */
export function isPrimePipeline(transport?: WorkerTransport): PipelineDescription {
  return {
    routes: ['/is_prime'],
    stages: [
      { module: new URL('./is-prime/parse.js', import.meta.url).href, transport: transport === undefined || transport === 'thread' ? 'adaptive' : transport },
      { module: new URL('./is-prime/check.js', import.meta.url).href },
    ],
  };
}
