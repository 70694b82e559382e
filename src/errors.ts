/**
 * Every error butterfly reports carries a stable `code` (`BF_ERR_…`) and the HTTP
 * `status` a client sees for it. Code is matched by `code`, never by message text.
 * Errors cross process boundaries as `{ code, status, message }` only: no stack.
 */

/** The stable error codes and the status each one answers with. */
export const ERROR_STATUS = Object.freeze({
  BF_ERR_BAD_REQUEST: 400,
  BF_ERR_NOT_FOUND: 404,
  BF_ERR_METHOD_NOT_ALLOWED: 405,
  BF_ERR_REQUEST_TIMEOUT: 408,
  BF_ERR_BODY_TOO_LARGE: 413,
  BF_ERR_URL_TOO_LONG: 414,
  BF_ERR_EXPECTATION: 417,
  BF_ERR_HEADERS_TOO_LARGE: 431,
  BF_ERR_CANCELLED: 499,
  BF_ERR_STAGE_FAILED: 500,
  BF_ERR_NO_NEXT_STAGE: 500,
  BF_ERR_INTERNAL: 500,
  BF_ERR_INVALID_OPTION: 500,
  BF_ERR_STAGE_LOAD: 500,
  BF_ERR_WORKER_START: 500,
  BF_ERR_UWS_UNAVAILABLE: 500,
  BF_ERR_LISTEN_FAILED: 500,
  BF_ERR_NOT_IMPLEMENTED: 501,
  BF_ERR_WORKER_DIED: 502,
  BF_ERR_BAD_ANSWER: 502,
  BF_ERR_WIRE: 502,
  BF_ERR_OVERLOADED: 503,
  BF_ERR_NO_WORKER: 503,
  BF_ERR_DRAINING: 503,
  BF_ERR_TOO_MANY_CONNECTIONS: 503,
  BF_ERR_ACCEPT_FAILED: 503,
  BF_ERR_DEADLINE: 504,
  BF_ERR_HTTP_VERSION: 505,
} as const);

/** Marks a ButterflyError, whichever copy of this module made it (a registered symbol is the same in every copy). */
const BRAND = Symbol.for('butterfly.ButterflyError');

/** One of the stable error codes. */
export type ErrorCode = keyof typeof ERROR_STATUS;

/** The plain form of an error as it travels between processes and to clients. */
export interface ErrorRecord {
  readonly code: string;
  readonly status: number;
  readonly message: string;
}

/**
 * An error with a stable code and HTTP status. Throw it from a stage handler to
 * answer the client with that status and message (no stack trace is ever sent).
 */
export class ButterflyError extends Error implements ErrorRecord {
  readonly code: string;
  readonly status: number;

  constructor(code: ErrorCode, message: string, status: number = ERROR_STATUS[code]) {
    super(message);
    this.name = 'ButterflyError';
    this.code = code;
    this.status = status;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /**
   * `err instanceof ButterflyError` holds for a ButterflyError from any copy of this module:
   * a stage loaded through a loader (TypeScript) or bundled with its own copy of butterfly
   * throws instances of another class object, which must still answer with their status.
   * Subclasses keep the ordinary check.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== ButterflyError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true;
  }
}

/**
 * Thrown at construction (or by the daemon, naming a flag) when an option is invalid:
 * `workers must be an integer from 1 to 256, got 0`. `BF_ERR_INVALID_OPTION`.
 */
export class InvalidOptionError extends ButterflyError {
  /** The option as the message names it: a name, a field path, a flag or a variable. */
  readonly option: string;

  /** @param expected what the value must be (`an integer from 1 to 256`), or must do (`list ...`). */
  constructor(option: string, expected: string, got: unknown) {
    super('BF_ERR_INVALID_OPTION', `${option} must ${/^(list|start) /.test(expected) ? '' : 'be '}${expected}, got ${describe(got)}`);
    this.name = 'InvalidOptionError';
    this.option = option;
  }
}

/** A stage module that cannot be imported, or whose default export is not a stage. `BF_ERR_STAGE_LOAD`. */
export class StageLoadError extends ButterflyError {
  constructor(message: string) {
    super('BF_ERR_STAGE_LOAD', message);
    this.name = 'StageLoadError';
  }
}

/** A worker that failed to start: its stage's setup threw, it exited, or it did not join in time. `BF_ERR_WORKER_START`. */
export class WorkerStartError extends ButterflyError {
  constructor(message: string) {
    super('BF_ERR_WORKER_START', message);
    this.name = 'WorkerStartError';
  }
}

/** The uws engine was asked for, but uWebSockets.js's native addon did not load. `BF_ERR_UWS_UNAVAILABLE`. */
export class UwsUnavailableError extends ButterflyError {
  constructor() {
    super(
      'BF_ERR_UWS_UNAVAILABLE',
      `the uws engine needs uWebSockets.js's native addon, which did not load on this platform ` +
        `(${process.platform}-${process.arch}, Node ${process.versions.node}, ABI ${process.versions.modules}); use --engine node`,
    );
    this.name = 'UwsUnavailableError';
  }
}

/** A message that does not follow the wire format, or a value it cannot carry. `BF_ERR_WIRE`. */
export class WireError extends ButterflyError {
  constructor(message: string) {
    super('BF_ERR_WIRE', message);
    this.name = 'WireError';
  }
}

/** The reason a job's `ctx.signal` aborts with when its client went away or cancelled it. `BF_ERR_CANCELLED`. */
export function cancelledError(): ButterflyError {
  return new ButterflyError('BF_ERR_CANCELLED', 'the request was cancelled');
}

/** The reason a job's `ctx.signal` aborts with at its deadline. `BF_ERR_DEADLINE`. */
export function deadlineError(): ButterflyError {
  return new ButterflyError('BF_ERR_DEADLINE', 'deadline reached');
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === undefined || value === null || typeof value !== 'object') return String(value);
  try {
    return JSON.stringify(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** A code a client may see: upper-case letters, digits and underscores, at most 64 bytes. */
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/** Codes of butterfly's own faults in code or set-up: a stage that hits one failed, and says no more. */
const INTERNAL_CODES: ReadonlySet<string> = new Set(['BF_ERR_INVALID_OPTION', 'BF_ERR_WIRE', 'BF_ERR_UWS_UNAVAILABLE', 'BF_ERR_STAGE_LOAD', 'BF_ERR_WORKER_START']);

/** The longest error message sent on, in characters; a longer one is cut. */
const MAX_MESSAGE = 1024;

/**
 * Turns anything a stage threw into the record a client may see: a ButterflyError keeps
 * its code, status and message (cut to 1,024 characters) when its code is a plain code of
 * at most 64 bytes and its status 400-599; anything else becomes `BF_ERR_STAGE_FAILED`
 * (500) with a message naming only the stage, as does butterfly's own error from inside
 * a stage (a bad `ctx.respond`, a value the wire cannot carry). The record can always be encoded.
 */
export function toErrorRecord(err: unknown, stageName: string): ErrorRecord {
  if (err instanceof ButterflyError && !INTERNAL_CODES.has(err.code) && typeof err.code === 'string' && CODE.test(err.code) && Number.isInteger(err.status) && err.status >= 400 && err.status <= 599) {
    const message = typeof err.message === 'string' ? err.message.slice(0, MAX_MESSAGE) : '';
    return { code: err.code, status: err.status, message };
  }
  return { code: 'BF_ERR_STAGE_FAILED', status: 500, message: `stage ${stageName} failed` };
}
