import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Kind, type KindValue, LARGE_RECORD_BYTES, PayloadReader, RecordWriter, WireError, extendPayload } from './format.js';

/** Bytes kept free in front of a body from `allocateBody`, for the head of its record. */
const BODY_HEADROOM = 16 * 1024;

/** Bodies with free room in front of them, which `encodeRequestJob` may write its head into. */
const roomy = new WeakSet<Buffer>();

/**
 * A buffer for a request body of `size` bytes, with room in front of it for the rest of
 * the job's record: a large body then becomes a job's message without being copied.
 */
export function allocateBody(size: number): Buffer {
  const need = BODY_HEADROOM + size;
  let memory: ArrayBuffer | undefined;
  for (let i = spare.length - 1; i >= 0; i--) {
    const candidate = spare[i]!;
    if (candidate.byteLength >= need && candidate.byteLength <= 2 * need) {
      memory = candidate;
      spare.splice(i, 1);
      spareBytes -= candidate.byteLength;
      break;
    }
  }
  const body = memory === undefined ? Buffer.allocUnsafeSlow(need).subarray(BODY_HEADROOM) : Buffer.from(memory, BODY_HEADROOM, size);
  roomy.add(body);
  return body;
}

/**
 * Memory of large messages this thread received whole from another thread (moved or
 * copied to it, see `receivePort`): nothing outside this thread holds it.
 */
const whole = new WeakSet<ArrayBuffer>();

/** Memory given back by `recycleBody`, for `allocateBody` to read the next bodies into. */
const spare: ArrayBuffer[] = [];
let spareBytes = 0;
/** Buffers kept in `spare`, and bytes, at most. */
const SPARE_BUFFERS = 8;
const SPARE_BYTES = 16 * 1024 * 1024;

/** Marks `frame`, a large message received from another thread, as memory this thread holds whole. */
export function receivedWhole(frame: Buffer): void {
  if (frame.buffer instanceof ArrayBuffer) whole.add(frame.buffer);
}

/**
 * Keeps the memory of an answer's body, once written and never to be read again, to read a
 * later request's body into: a large body then costs no fresh memory (each page of fresh
 * memory faults in when first written, and the collector has to find and free it). Only
 * memory from `receivedWhole` is kept, at most `SPARE_BUFFERS` buffers and `SPARE_BYTES`.
 */
export function recycleBody(body: Buffer): void {
  const memory = body.buffer;
  if (body.length < LARGE_RECORD_BYTES || !(memory instanceof ArrayBuffer) || !whole.has(memory)) return;
  if (spare.length >= SPARE_BUFFERS || spareBytes + memory.byteLength > SPARE_BYTES) return;
  whole.delete(memory);
  spare.push(memory);
  spareBytes += memory.byteLength;
}

/** Pieces of memory given to `freePiece` in this turn, freed together at its end. */
const released: ArrayBuffer[] = [];
let releaseScheduled = false;
/** A port whose other end is closed: what is moved into it is freed at once. */
let drain: MessagePort | undefined;
/** Pieces smaller than this are left to the collector. */
const RELEASE_MIN_BYTES = 16 * 1024;

/**
 * Frees the memory of `piece` (a buffer alone on its memory, which nothing will read
 * again) at the end of this turn, instead of when the collector next finds it: the pieces
 * node:http reads a large body in are 1 MiB of fresh memory per MiB of body, and the
 * collector frees them only every 32 MiB or so. Memory that swings by that much starts
 * V8's marking of the whole heap of a thread whose heap is over 8 MiB, many times a second
 * (bench/README.md, "Where the 1 MiB echo spends its time now"). Anything else is left
 * alone. The memory is freed by moving it into a port whose other end is closed.
 */
export function freePiece(piece: Buffer): void {
  const memory = piece.buffer;
  if (!(memory instanceof ArrayBuffer) || piece.byteOffset !== 0 || memory.byteLength !== piece.length || piece.length < RELEASE_MIN_BYTES) return;
  released.push(memory);
  if (releaseScheduled) return;
  releaseScheduled = true;
  setImmediate(freeReleased);
}

function freeReleased(): void {
  releaseScheduled = false;
  if (drain === undefined) {
    const channel = new MessageChannel();
    channel.port2.close();
    drain = channel.port1;
    drain.unref();
  }
  // Memory moved elsewhere since (detached: no bytes left) cannot be moved again.
  const pieces = released.filter((memory) => memory.byteLength > 0);
  released.length = 0;
  try {
    drain.postMessage(null, pieces);
  } catch {
    // Not movable after all: the collector frees it, as it would have.
  }
}

/**
 * Encodes a request as a JOB record alone in its message, writing the record's head into
 * the room in front of a body from `allocateBody`, so that the body is not copied; the
 * message shares the body's memory. Undefined when the body has no such room (or too
 * little): encode it the usual way then.
 */
export function encodeRequestJob(id: number, deadline: number, req: RequestData): Buffer | undefined {
  const body = req.body;
  if (!roomy.has(body)) return undefined;
  const frame = encodeInPlace(body, body, Kind.JOB, 0, 0, id, deadline, (w) => void writeValueHead(w, req));
  if (frame !== undefined) roomy.delete(body);
  return frame;
}

/**
 * Encodes a record alone in its message, its payload ending with `body`, by writing the
 * record's head (from `kind` to what `writeHead` writes) into the memory in front of the
 * body, so that the body is not copied. Only for a body in `own`'s memory, a message this
 * thread holds whole (it came moved here), whose bytes in front of the body are no longer
 * needed. Undefined when the body is elsewhere or the room in front is too small.
 */
export function encodeInPlace(own: Buffer, body: Buffer, kind: KindValue, flags: number, stage: number, id: number, deadline: number, writeHead: (w: RecordWriter) => void): Buffer | undefined {
  if (body.buffer !== own.buffer) return undefined;
  const w = new RecordWriter(1024);
  w.begin(kind, flags, stage, id, deadline);
  writeHead(w);
  w.end();
  const head = w.take();
  const start = body.byteOffset - head.length;
  if (start < 0) return undefined;
  const frame = Buffer.from(body.buffer, start, head.length + body.length);
  head.copy(frame, 0);
  extendPayload(frame, body.length);
  return frame;
}

/**
 * Payload codecs. Each `write*` appends to the current record of a `RecordWriter`; each
 * `read*` decodes a record's payload and throws `WireError` on anything malformed.
 */

const ValueTag = Object.freeze({ NONE: 0, BYTES: 1, STRING: 2, JSON: 3, NUMBER: 4, REQUEST: 5 } as const);

/** What a job carries from one stage to the next. */
export type Value = RequestData | Buffer | string | number | boolean | null | undefined | object;

/**
 * An HTTP request as the front end hands it to stage 1: the request target exactly as
 * received (path and query undecoded) and the headers as a flat `[name, value, …]` list
 * with lower-case names.
 */
export class RequestData {
  constructor(
    readonly method: string,
    readonly target: string,
    readonly headers: readonly string[],
    readonly body: Buffer,
    readonly remoteAddress: string,
  ) {}
}

/** A final answer: status, headers as a flat `[name, value, …]` list, and body bytes. */
export interface ResponseData {
  readonly status: number;
  readonly headers: readonly string[];
  readonly body: Buffer;
}

/** Appends a value: Buffers travel as raw bytes, strings as UTF-8, numbers as f64, the rest as JSON. */
export function writeValue(w: RecordWriter, value: Value): void {
  if (value === undefined || value === null) {
    w.u8(ValueTag.NONE);
  } else if (typeof value === 'number') {
    w.u8(ValueTag.NUMBER);
    w.f64(value);
  } else if (typeof value === 'string') {
    w.u8(ValueTag.STRING);
    w.utf8(value);
  } else {
    // Bytes, or a request and its body: a head, then the bytes to the end of the payload.
    const tail = writeValueHead(w, value);
    if (tail !== undefined) {
      w.bytes(tail);
      return;
    }
    const json = JSON.stringify(value);
    if (json === undefined) throw new WireError(`cannot encode a value of type ${typeof value}`);
    w.u8(ValueTag.JSON);
    w.utf8(json);
  }
}

/**
 * Writes the head of a value that ends with bytes (a Buffer, or a request and its body) and
 * returns those bytes, for `encodeInPlace`; undefined (nothing written) for any other value.
 */
export function writeValueHead(w: RecordWriter, value: Value): Buffer | undefined {
  if (Buffer.isBuffer(value)) {
    w.u8(ValueTag.BYTES);
    return value;
  }
  if (value instanceof RequestData) {
    w.u8(ValueTag.REQUEST);
    writeRequestHead(w, value);
    return value.body;
  }
  return undefined;
}

/** Decodes a value written by `writeValue`; bytes (and a request's body) are views into `payload`, not copies. */
export function readValue(payload: Buffer): Value {
  const r = new PayloadReader(payload);
  const tag = r.u8();
  switch (tag) {
    case ValueTag.NONE:
      return null;
    case ValueTag.NUMBER:
      return r.f64();
    case ValueTag.STRING:
      return r.utf8(r.remaining);
    case ValueTag.BYTES:
      return r.rest();
    case ValueTag.REQUEST:
      return readRequest(r);
    case ValueTag.JSON:
      try {
        return JSON.parse(r.utf8(r.remaining)) as Value;
      } catch {
        throw new WireError('malformed JSON value');
      }
    default:
      throw new WireError(`unknown value tag ${tag}`);
  }
}

/** Everything of a request but its body, which follows it to the end of the payload. */
function writeRequestHead(w: RecordWriter, req: RequestData): void {
  w.prefixedUtf8(req.method, 1);
  w.prefixedUtf8(req.target, 4);
  w.prefixedUtf8(req.remoteAddress, 1);
  const h = req.headers;
  w.u16(h.length >> 1);
  for (let i = 0; i + 1 < h.length; i += 2) {
    w.prefixedUtf8(h[i]!, 2);
    w.prefixedUtf8(h[i + 1]!, 4);
  }
}

function readRequest(r: PayloadReader): RequestData {
  const method = r.utf8(r.u8());
  const target = r.utf8(r.u32());
  const remoteAddress = r.utf8(r.u8());
  const count = r.u16();
  const headers = new Array<string>(count * 2);
  for (let i = 0; i < count * 2; i += 2) {
    headers[i] = r.utf8(r.u16());
    headers[i + 1] = r.utf8(r.u32());
  }
  return new RequestData(method, target, headers, r.rest(), remoteAddress);
}

/** Appends a response: u16 status, u8 header count, each header u8-prefixed name and u16-prefixed value, then the body. */
export function writeResponse(w: RecordWriter, res: ResponseData): void {
  writeResponseHead(w, res);
  w.bytes(res.body);
}

/** Everything of a response but its body, which follows it to the end of the payload. */
export function writeResponseHead(w: RecordWriter, res: ResponseData): void {
  w.u16(res.status);
  const h = res.headers;
  if (h.length > 0x1fe) throw new WireError(`too many response headers (${h.length >> 1})`);
  w.u8(h.length >> 1);
  for (let i = 0; i + 1 < h.length; i += 2) {
    w.prefixedUtf8(h[i]!, 1);
    w.prefixedUtf8(h[i + 1]!, 2);
  }
}

/** Decodes a response written by `writeResponse`; the body is a view into the payload. */
export function readResponse(payload: Buffer): ResponseData {
  const r = new PayloadReader(payload);
  const status = r.u16();
  if (status < 100 || status > 999) throw new WireError(`invalid status ${status}`);
  const count = r.u8();
  const headers = new Array<string>(count * 2);
  for (let i = 0; i < count * 2; i += 2) {
    headers[i] = r.latin1(r.u8());
    headers[i + 1] = r.utf8(r.u16());
  }
  return { status, headers, body: r.rest() };
}

/** The plain form of an error on the wire. */
export interface ErrorData {
  readonly code: string;
  readonly status: number;
  readonly message: string;
}

/** Appends an error: u16 status, u8-prefixed code, then the message as UTF-8. */
export function writeError(w: RecordWriter, err: ErrorData): void {
  w.u16(err.status);
  w.prefixedUtf8(err.code, 1);
  w.utf8(err.message);
}

/** Appends a whole ERROR record: its header for request `id` at `stage`, then the error. */
export function writeErrorRecord(w: RecordWriter, stage: number, id: number, deadline: number, err: ErrorData): void {
  w.begin(Kind.ERROR, 0, stage, id, deadline);
  writeError(w, err);
  w.end();
}

/** Decodes an error written by `writeError`. */
export function readError(payload: Buffer): ErrorData {
  const r = new PayloadReader(payload);
  const status = r.u16();
  if (status < 100 || status > 999) throw new WireError(`invalid status ${status}`);
  const code = r.latin1(r.u8());
  return { status, code, message: r.utf8(r.remaining) };
}

/** The most jobs a worker may run at once, or hold prefetched, as it announces in HELLO. */
export const MAX_WORKER_SLOTS = 4096;

/** What a worker says when it joins its proxy. */
export interface HelloData {
  /** Jobs it runs at once, 1 to `MAX_WORKER_SLOTS`. */
  readonly concurrency: number;
  /** Jobs it keeps prefetched beyond those it runs, 0 to `MAX_WORKER_SLOTS`. */
  readonly window: number;
  /**
   * Jobs it still runs from before this HELLO (it rejoined while working): their DONEs give
   * the proxy back credit it has not given out, so the worker returns to its full capacity.
   */
  readonly held: number;
  /**
   * The worker's secret, `IDENTITY_TOKEN_BYTES` random bytes drawn when it starts and sent
   * only to its proxy: a HELLO or a pulse heartbeat under a live worker's label counts as
   * that worker only with its token, so no other peer can take over or keep alive its identity.
   */
  readonly token: Buffer;
  /** A name unique among the stage's workers, given by its supervisor (may be empty). */
  readonly label: string;
}

/** Length of a worker's identity token, in bytes. */
export const IDENTITY_TOKEN_BYTES = 16;

/** Appends a worker's HELLO payload: u32 concurrency, u32 window, u32 held, its token, then its label as UTF-8. */
export function writeHello(w: RecordWriter, hello: HelloData): void {
  if (hello.token.length !== IDENTITY_TOKEN_BYTES) throw new WireError(`identity token must be ${IDENTITY_TOKEN_BYTES} bytes, got ${hello.token.length}`);
  w.u32(hello.concurrency);
  w.u32(hello.window);
  w.u32(hello.held);
  w.bytes(hello.token);
  w.utf8(hello.label);
}

/** Appends an EVENT payload: the topic behind a one-byte length, then the event's data, already encoded. */
export function writeEvent(w: RecordWriter, topic: string, data: Uint8Array): void {
  w.prefixedUtf8(topic, 1);
  w.bytes(data);
}

/**
 * Decodes an EVENT payload.
 * @throws WireError when the topic runs past the payload.
 */
export function readEvent(payload: Buffer): { topic: string; data: Buffer } {
  const r = new PayloadReader(payload);
  const topic = r.utf8(r.u8());
  return { topic, data: r.rest() };
}

/** Appends a pulse heartbeat's payload: the worker's token, then its label as UTF-8. */
export function writePulse(w: RecordWriter, token: Uint8Array, label: string): void {
  w.bytes(token);
  w.utf8(label);
}

/**
 * Decodes a pulse heartbeat's payload.
 * @throws WireError when it is shorter than a token.
 */
export function readPulse(payload: Buffer): { token: Buffer; label: string } {
  const r = new PayloadReader(payload);
  const token = r.bytes(IDENTITY_TOKEN_BYTES);
  return { token, label: r.utf8(r.remaining) };
}

/**
 * Decodes a HELLO payload.
 * @throws WireError when concurrency is outside 1..MAX_WORKER_SLOTS, the window or the
 * held count above MAX_WORKER_SLOTS: a worker cannot make its proxy allocate without bound.
 */
export function readHello(payload: Buffer): HelloData {
  const r = new PayloadReader(payload);
  const concurrency = r.u32();
  const window = r.u32();
  const held = r.u32();
  if (concurrency < 1 || concurrency > MAX_WORKER_SLOTS) throw new WireError(`worker concurrency must be 1 to ${MAX_WORKER_SLOTS}, got ${concurrency}`);
  if (window > MAX_WORKER_SLOTS) throw new WireError(`worker window must be 0 to ${MAX_WORKER_SLOTS}, got ${window}`);
  if (held > MAX_WORKER_SLOTS * 2) throw new WireError(`worker held count must be at most ${MAX_WORKER_SLOTS * 2}, got ${held}`);
  const token = r.bytes(IDENTITY_TOKEN_BYTES);
  return { concurrency, window, held, token, label: r.utf8(r.remaining) };
}

/** Appends a BYE payload: the ids of the jobs returned unstarted. */
export function writeReturned(w: RecordWriter, ids: readonly number[]): void {
  for (const id of ids) w.id(id);
}

/** Decodes a BYE payload into the ids of the jobs returned unstarted. */
export function readReturned(payload: Buffer): number[] {
  if (payload.length % 8 !== 0) throw new WireError(`BYE payload of ${payload.length} bytes is not a list of ids`);
  const r = new PayloadReader(payload);
  const ids: number[] = [];
  while (r.remaining > 0) ids.push(r.id());
  return ids;
}

/** What a proxy tells a worker that joins its stage. */
export interface WelcomeConfig {
  /** 0-based index of the stage. */
  readonly stage: number;
  /** Address of the next stage's proxy, or null for the last stage. */
  readonly next: string | null;
  /** Address of the loopback socket that takes final answers. */
  readonly loopback: string;
  /** Heartbeat interval in ms. */
  readonly heartbeatMs: number;
  /** Missed heartbeats after which the peer counts as dead. */
  readonly liveness: number;
  /** Where the pipeline's events are published (`ctx.events`), or null when it has none. */
  readonly events?: string | null;
}

/** Appends a WELCOME payload. */
export function writeWelcome(w: RecordWriter, config: WelcomeConfig): void {
  w.utf8(JSON.stringify(config));
}

/** Decodes a WELCOME payload and checks its fields. */
export function readWelcome(payload: Buffer): WelcomeConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new WireError('malformed WELCOME');
  }
  const c = parsed as Partial<WelcomeConfig> | null;
  if (
    c === null ||
    typeof c !== 'object' ||
    typeof c.stage !== 'number' ||
    (c.next !== null && typeof c.next !== 'string') ||
    typeof c.loopback !== 'string' ||
    typeof c.heartbeatMs !== 'number' ||
    typeof c.liveness !== 'number' ||
    (c.events !== undefined && c.events !== null && typeof c.events !== 'string')
  ) {
    throw new WireError('malformed WELCOME');
  }
  return c as WelcomeConfig;
}
