import { ButterflyError, InvalidOptionError } from '../errors.js';
import { check, checkOptional } from '../options.js';
import type { RequestData, Value } from '../wire/index.js';

/** What a stage's handler returns: built by `ctx.next(...)` or `ctx.respond(...)`. */
export type StageOutcome<Next = Value> = NextOutcome<Next> | Reply;

/** Pass the request on to the next stage with this payload. */
export class NextOutcome<Next = Value> {
  constructor(readonly payload: Next) {}
}

/** A final answer for the client. `headers` is a flat `[name, value, …]` list. */
export class Reply {
  constructor(
    readonly status: number,
    readonly headers: readonly string[],
    readonly body: Buffer,
  ) {}
}

/** A response body: text (text/plain), bytes (application/octet-stream), or a value sent as JSON. */
export type ReplyBody = string | Buffer | Uint8Array | object | number | boolean | null | undefined;

/** Options of `ctx.respond`. */
export interface ReplyInit {
  /** HTTP status, 100-599. Default 200. */
  status?: number;
  /** Response headers; `content-type` defaults from the body's type. */
  headers?: Readonly<Record<string, string>>;
}

/**
 * What a handler gets besides its payload. `Next` is the payload it hands to the next
 * stage: declare it (`defineStage<In, Next>`) and `definePipeline` checks that the next
 * stage takes it.
 */
export interface StageContext<Next = Value> {
  /** The request id, unique among requests in flight. */
  readonly id: number;
  /** 0-based index of this stage in the pipeline. */
  readonly stage: number;
  /** When the client stops waiting, in ms since the Unix epoch (0: no deadline). */
  readonly deadline: number;
  /** Aborts at the deadline or when the client goes away. */
  readonly signal: AbortSignal;
  /** Hands `payload` to the next stage; return what it returns. */
  next(payload: Next): NextOutcome<Next>;
  /** Answers the client; return what it returns. */
  respond(body?: ReplyBody, init?: ReplyInit): Reply;
  /** The pipeline's events (see `startButterfly`'s `events`): publish from a stage. */
  readonly events: StageEvents;
}

/** What a stage can do with the pipeline's events. */
export interface StageEvents {
  /**
   * Publishes `data` (a JSON value, a string or a Buffer) under `topic`, at most once.
   * @throws InvalidOptionError for a bad topic, or when the pipeline has no events;
   *   TypeError for data JSON cannot carry.
   */
  publish(topic: string, data: unknown): void;
}

/**
 * A stage: a module's default export, built with `defineStage`. `In` is the payload it
 * takes (`HttpRequest` for a first stage), `Next` the one it passes on.
 */
export interface StageDefinition<In = unknown, Next = Value> {
  /** Name in logs, metrics and error messages. */
  readonly name: string;
  /** Jobs one worker of this stage holds at once (default 1). More helps async or tiny handlers. */
  readonly concurrency?: number;
  /**
   * Jobs a worker keeps waiting beyond those it runs (default 1), so that its next job is
   * at hand when one ends. 0 for stages whose jobs vary widely in length, where a job
   * waiting behind a long one would be better off with another worker.
   */
  readonly prefetch?: number;
  /** True when running a request twice is harmless: a job whose worker died is then re-sent once. */
  readonly idempotent?: boolean;
  /** Time budget of this stage per job, in ms: past it (or the request's deadline, if sooner) the job is answered 504 and `ctx.signal` aborts. */
  readonly timeoutMs?: number;
  /** Runs once per worker before its first job. */
  setup?(): void | Promise<void>;
  /**
   * Handles one job. Return `ctx.next(payload)` or `ctx.respond(...)`; a returned value of
   * any other kind is sent as the response body. A thrown `ButterflyError` answers with its
   * status and message; anything else thrown answers 500 `BF_ERR_STAGE_FAILED`.
   */
  handle(payload: In, ctx: StageContext<Next>): StageOutcome<Next> | ReplyBody | Promise<StageOutcome<Next> | ReplyBody>;
  /** Runs once per worker when it stops. */
  teardown?(): void | Promise<void>;
}

/**
 * Marks a module's default export as a stage and checks its shape.
 * @throws InvalidOptionError naming the field at fault, e.g. `stage echo: concurrency must be an integer from 1 to 4096, got 0`.
 */
export function defineStage<In = unknown, Next = Value>(definition: StageDefinition<In, Next>): StageDefinition<In, Next> {
  return Object.freeze({ ...checkStage<In, Next>(definition) });
}

/**
 * Checks that `value` is a stage: an object with a name, a `handle` function, and
 * `concurrency`, `prefetch`, `timeoutMs` within the option schema's bounds.
 * @throws InvalidOptionError naming the field.
 */
export function checkStage<In = unknown, Next = Value>(value: unknown): StageDefinition<In, Next> {
  if (value === null || typeof value !== 'object') throw new InvalidOptionError('stage', 'an object (use defineStage)', value);
  const stage = value as StageDefinition<In, Next>;
  if (typeof stage.name !== 'string' || stage.name.length === 0) throw new InvalidOptionError('stage name', 'a non-empty string', stage.name);
  const at = `stage ${stage.name}: `;
  if (typeof stage.handle !== 'function') throw new InvalidOptionError(`${at}handle`, 'a function', stage.handle);
  checkOptional('concurrency', stage.concurrency, `${at}concurrency`);
  checkOptional('prefetch', stage.prefetch, `${at}prefetch`);
  checkOptional('timeoutMs', stage.timeoutMs, `${at}timeoutMs`);
  if (stage.idempotent !== undefined) check('idempotent', stage.idempotent, `${at}idempotent`);
  return stage;
}

const TEXT = 'text/plain; charset=utf-8';
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
// Visible ASCII, space and tab, and obs-text; no CR, LF or NUL.
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const JSON_TYPE = 'application/json';
const BYTES = 'application/octet-stream';

/** Builds a `Reply` from a body of any supported type and the options of `ctx.respond`. */
export function makeReply(body: ReplyBody, init?: ReplyInit): Reply {
  const status = init?.status ?? 200;
  if (!Number.isInteger(status) || status < 100 || status > 599) throw new InvalidOptionError('status', 'an integer from 100 to 599', status);
  let bytes: Buffer;
  let type: string;
  if (typeof body === 'string') {
    bytes = Buffer.from(body, 'utf8');
    type = TEXT;
  } else if (Buffer.isBuffer(body)) {
    bytes = body;
    type = BYTES;
  } else if (body instanceof Uint8Array) {
    bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    type = BYTES;
  } else if (body === undefined) {
    bytes = Buffer.alloc(0);
    type = TEXT;
  } else {
    bytes = Buffer.from(JSON.stringify(body), 'utf8');
    type = JSON_TYPE;
  }
  const headers: string[] = [];
  let hasType = false;
  if (init?.headers !== undefined) {
    for (const name of Object.keys(init.headers)) {
      const lower = name.toLowerCase();
      const value = String(init.headers[name]);
      if (!HEADER_NAME.test(lower)) throw new InvalidOptionError('response header name', 'a token', name);
      if (!HEADER_VALUE.test(value)) throw new InvalidOptionError(`response header ${lower}`, 'a value without CR, LF or NUL', value);
      if (lower === 'content-length' || lower === 'transfer-encoding' || lower === 'connection') continue;
      if (lower === 'content-type') hasType = true;
      headers.push(lower, value);
    }
  }
  if (!hasType) headers.push('content-type', type);
  return new Reply(status, headers, bytes);
}

/**
 * The request as stage 1 sees it. Path and query are decoded on first use; bad
 * percent-encoding throws a `ButterflyError` (400), which answers the client.
 */
export class HttpRequest {
  private decodedPath: string | undefined;
  private decodedQuery: Record<string, string> | undefined;
  private headerMap: Record<string, string> | undefined;

  constructor(readonly data: RequestData) {}

  /** The method as sent, e.g. `GET`. */
  get method(): string {
    return this.data.method;
  }

  /** The request target exactly as sent (path and query, undecoded). */
  get target(): string {
    return this.data.target;
  }

  /** The client's address. */
  get remoteAddress(): string {
    return this.data.remoteAddress;
  }

  /** The body, de-chunked (empty when there is none). */
  get body(): Buffer {
    return this.data.body;
  }

  /** The decoded path, e.g. `/is_prime`. */
  get path(): string {
    if (this.decodedPath === undefined) {
      const t = this.data.target;
      const q = t.indexOf('?');
      this.decodedPath = decodeComponent(q === -1 ? t : t.slice(0, q), false);
    }
    return this.decodedPath;
  }

  /** The decoded query parameters; for a repeated name, the first value. */
  get query(): Readonly<Record<string, string>> {
    if (this.decodedQuery === undefined) this.decodedQuery = parseQuery(this.data.target);
    return this.decodedQuery;
  }

  /** The headers by lower-case name; repeated headers are joined with `, `. */
  get headers(): Readonly<Record<string, string>> {
    if (this.headerMap === undefined) {
      const map: Record<string, string> = Object.create(null) as Record<string, string>;
      const h = this.data.headers;
      for (let i = 0; i + 1 < h.length; i += 2) {
        const name = h[i]!;
        const prior = map[name];
        map[name] = prior === undefined ? h[i + 1]! : `${prior}, ${h[i + 1]!}`;
      }
      this.headerMap = map;
    }
    return this.headerMap;
  }

  /** One header by name (any case), or undefined. */
  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()];
  }
}

function parseQuery(target: string): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const q = target.indexOf('?');
  if (q === -1) return out;
  const query = target.slice(q + 1);
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end === -1) end = query.length;
    if (end > start) {
      const eq = query.indexOf('=', start);
      const hasValue = eq !== -1 && eq < end;
      const name = decodeComponent(query.slice(start, hasValue ? eq : end), true);
      const value = hasValue ? decodeComponent(query.slice(eq + 1, end), true) : '';
      if (!(name in out)) out[name] = value;
    }
    start = end + 1;
  }
  return out;
}

function decodeComponent(text: string, plusIsSpace: boolean): string {
  const s = plusIsSpace && text.includes('+') ? text.replaceAll('+', ' ') : text;
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    throw new ButterflyError('BF_ERR_BAD_REQUEST', 'malformed percent-encoding in the request target');
  }
}
