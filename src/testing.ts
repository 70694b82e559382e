/**
 * `butterfly/testing`: run a stage, or a whole pipeline, in the calling process, without
 * sockets or workers, from a request to the answer the daemon would give, in the spirit
 * of fastify's `inject`. Payloads cross between stages through the wire's own codec, and
 * answers are shaped by the server's own code, so a test sees the statuses, headers and
 * bodies a client of the daemon sees.
 */
import { ButterflyError, cancelledError, deadlineError, toErrorRecord } from './errors.js';
import { checkTopic } from './events.js';
import { check } from './options.js';
import { DEADLINE_ERROR, finalAnswer } from './server/index.js';
import {
  HttpRequest,
  NextOutcome,
  Reply,
  type PipelineDescription,
  type ReplyBody,
  type ReplyInit,
  type StageContext,
  type StageDefinition,
  type StageEvents,
  importStage,
  makeReply,
  validatePipeline,
} from './stages/index.js';
import { Kind, RecordWriter, RequestData, decodeRecords, readResponse, readValue, writeResponse, writeValue, type ErrorData, type ResponseData, type Value } from './wire/index.js';

/** A request to inject. */
export interface InjectRequest {
  /** Default `GET`. */
  readonly method?: string;
  /** The request target: path and query, as a client sends it (`/resize?width=10`). */
  readonly path: string;
  /** Header names in any case. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string | Buffer;
  /** Default `127.0.0.1`. */
  readonly remoteAddress?: string;
}

/** Options of `inject`. */
export interface InjectOptions {
  /** The request's deadline, in ms from now, as the daemon's `requestTimeoutMs`. Default 30000. */
  readonly requestTimeoutMs?: number;
  /** Told each event a stage publishes through `ctx.events` (otherwise they are dropped, as with no subscriber). */
  readonly onEvent?: (topic: string, data: unknown) => void;
}

/** The answer, as a client of the daemon would read it. */
export interface InjectResponse {
  readonly status: number;
  /** Response headers by lower-case name, as the stage and the server set them (no transport headers such as `content-length`). */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** The body as UTF-8 text. */
  text(): string;
  /** The body parsed as JSON. */
  json(): unknown;
}

/** A stage, stages in order, or a pipeline description whose modules are imported. */
export type Injectable = StageDefinition | readonly StageDefinition[] | PipelineDescription;

interface Step {
  readonly stage: StageDefinition;
  /** This stage's time budget per job, in ms; 0 for none. */
  readonly budgetMs: number;
}

type Outcome = { readonly response: ResponseData; readonly error: null } | { readonly response: null; readonly error: ErrorData };

/**
 * Runs `request` through `target`, following `ctx.next` from stage to stage, and resolves
 * with the answer the daemon would give: a stage's reply, a thrown `ButterflyError`'s
 * status and JSON body, 500 `BF_ERR_STAGE_FAILED` for anything else thrown, 504 past the
 * request's deadline or a stage's budget (aborting `ctx.signal` with `BF_ERR_DEADLINE`).
 * Each stage's `setup` runs before and `teardown` after.
 * @throws InvalidOptionError for a bad pipeline or option; StageLoadError for a module that is not a stage.
 */
export async function inject(target: Injectable, request: InjectRequest, options: InjectOptions = {}): Promise<InjectResponse> {
  const steps = await stepsOf(target);
  const timeoutMs = check('requestTimeoutMs', options.requestTimeoutMs ?? 30_000);
  const data = new RequestData(request.method ?? 'GET', request.path, headerList(request.headers), bodyOf(request.body), request.remoteAddress ?? '127.0.0.1');
  for (const { stage } of steps) await stage.setup?.();
  const running = new Set<Context>();
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = new Promise<Outcome>((resolve) => (timer = setTimeout(() => resolve({ response: null, error: DEADLINE_ERROR }), timeoutMs)));
    const outcome = await Promise.race([run(steps, data, Date.now() + timeoutMs, running, options.onEvent), late]);
    const answer = finalAnswer(outcome.response, outcome.error);
    return response(answer.status, answer.headers, answer.body);
  } finally {
    clearTimeout(timer);
    // The client has its answer: whatever still runs is cancelled, as the daemon does.
    for (const ctx of running) ctx.stop(cancelledError());
    for (const { stage } of steps) await stage.teardown?.();
  }
}

async function stepsOf(target: Injectable): Promise<Step[]> {
  if ('handle' in target) return [{ stage: target, budgetMs: target.timeoutMs ?? 0 }];
  if (Array.isArray(target)) return (target as readonly StageDefinition[]).map((stage) => ({ stage, budgetMs: stage.timeoutMs ?? 0 }));
  const pipeline = validatePipeline(target, process.cwd());
  const stages = await Promise.all(pipeline.stages.map((s) => importStage(s.module)));
  return stages.map((stage, i) => ({ stage, budgetMs: pipeline.stages[i]!.timeoutMs ?? stage.timeoutMs ?? 0 }));
}

async function run(steps: readonly Step[], data: RequestData, requestDeadline: number, running: Set<Context>, onEvent: InjectOptions['onEvent']): Promise<Outcome> {
  let payload: Value = data;
  for (let i = 0; i < steps.length; i++) {
    const { stage, budgetMs } = steps[i]!;
    const now = Date.now();
    const budget = budgetMs === 0 ? 0 : now + budgetMs;
    const deadline = budget !== 0 && budget < requestDeadline ? budget : requestDeadline;
    const ctx = new Context(i, deadline, onEvent);
    running.add(ctx);
    let outcome: unknown;
    try {
      outcome = await ctx.race(stage, payload, deadline < requestDeadline);
    } catch (err) {
      return failed(err, stage);
    } finally {
      running.delete(ctx);
      ctx.finished();
    }
    if (outcome instanceof NextOutcome) {
      if (i === steps.length - 1) return failed(new ButterflyError('BF_ERR_NO_NEXT_STAGE', `stage ${stage.name} is the last stage and cannot pass a job on`), stage);
      const value = (outcome.payload instanceof HttpRequest ? outcome.payload.data : outcome.payload) as Value;
      try {
        payload = throughWire((w) => writeValue(w, value), readValue) as Value;
      } catch (err) {
        return failed(err, stage);
      }
      continue;
    }
    try {
      const reply = outcome instanceof Reply ? outcome : makeReply(outcome as ReplyBody);
      return { response: throughWire((w) => writeResponse(w, reply), readResponse), error: null };
    } catch (err) {
      return failed(err, stage);
    }
  }
  throw new ButterflyError('BF_ERR_INTERNAL', 'no stage answered');
}

function failed(err: unknown, stage: StageDefinition): Outcome {
  return { response: null, error: toErrorRecord(err, stage.name) };
}

/** Encodes a payload as a worker would, and decodes it as the next one would: what cannot travel fails here too. */
function throughWire<T>(write: (w: RecordWriter) => void, read: (payload: Buffer) => T): T {
  const w = new RecordWriter();
  w.begin(Kind.JOB, 0, 0, 1, 0);
  write(w);
  w.end();
  return read(decodeRecords(w.take())[0]!.payload);
}

/** One job's `ctx`: its signal aborts at its deadline or when the request is over. */
class Context implements StageContext {
  readonly id = 1;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  readonly events: StageEvents;

  constructor(
    readonly stage: number,
    readonly deadline: number,
    onEvent: InjectOptions['onEvent'],
  ) {
    this.events = {
      publish: (topic, data) => {
        checkTopic(topic);
        onEvent?.(topic, data);
      },
    };
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  next(payload: Value): NextOutcome {
    return new NextOutcome(payload);
  }

  respond(body?: ReplyBody, init?: ReplyInit): Reply {
    return makeReply(body, init);
  }

  /**
   * Runs the handler with the job's input. At the deadline the signal aborts and the job
   * ends with 504: its stage's own for a budget shorter than the request's deadline, the
   * front end's at the request's deadline.
   */
  race(stage: StageDefinition, payload: Value, ownBudget: boolean): Promise<unknown> {
    const input = payload instanceof RequestData ? new HttpRequest(payload) : payload;
    return new Promise<unknown>((resolve, reject) => {
      this.timer = setTimeout(() => {
        this.stop(deadlineError());
        // Past its deadline the job's own outcome no longer counts, as in a worker: a stage
        // budget answers 504 itself, the request's deadline gives the front end's 504.
        reject(ownBudget ? new ButterflyError('BF_ERR_DEADLINE', `stage ${stage.name} ran out of time`) : new ButterflyError('BF_ERR_DEADLINE', DEADLINE_ERROR.message));
      }, Math.max(0, this.deadline - Date.now()));
      try {
        Promise.resolve(stage.handle(input, this)).then(resolve, reject);
      } catch (err) {
        reject(err);
      }
    });
  }

  stop(reason: ButterflyError): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
  }

  finished(): void {
    clearTimeout(this.timer);
  }
}

function headerList(headers: Readonly<Record<string, string>> | undefined): string[] {
  const list: string[] = [];
  if (headers !== undefined) for (const [name, value] of Object.entries(headers)) list.push(name.toLowerCase(), value);
  return list;
}

function bodyOf(body: string | Buffer | undefined): Buffer {
  if (body === undefined) return Buffer.alloc(0);
  return typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
}

function response(status: number, flat: readonly string[], body: Buffer): InjectResponse {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i]!;
    headers[name] = headers[name] === undefined ? flat[i + 1]! : `${headers[name]}, ${flat[i + 1]!}`;
  }
  return {
    status,
    headers,
    body,
    text: () => body.toString('utf8'),
    json: () => JSON.parse(body.toString('utf8')) as unknown,
  };
}
