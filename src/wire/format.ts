/**
 * The record format. One message (a ZeroMQ frame, or a batch posted to a worker thread)
 * carries one or more records back to back (batching); each record is a fixed 24-byte
 * header followed by its payload:
 *
 * | offset | size | field                                             |
 * |--------|------|---------------------------------------------------|
 * | 0      | 1    | version (`WIRE_VERSION`)                          |
 * | 1      | 1    | kind (`Kind`)                                     |
 * | 2      | 1    | flags (`Flag` bits)                               |
 * | 3      | 1    | stage index the record concerns (0-based)         |
 * | 4      | 8    | request id, u64 LE: low 32 bits a counter, high 32 bits the issuing client's prefix |
 * | 12     | 8    | deadline, as ms left when written, f64 LE; 0 none, negative past |
 * | 20     | 4    | payload length in bytes, u32 LE                   |
 *
 * A deadline travels as the time left, not as a clock reading, so that hosts whose clocks
 * disagree agree on it: `RecordWriter.begin` takes the deadline in this process's clock
 * (ms since the epoch) and writes what is left of it, and `decodeRecords` gives it back in
 * the receiver's clock. The time a record spends between the two counts as not spent.
 *
 * Request ids are JavaScript numbers: a client's prefix stays below 2^21 so that every id
 * is a safe integer (`MAX_ID_PREFIX`); a record whose id is beyond that is rejected.
 */

import { WireError } from '../errors.js';

/** Raised by the decoders for anything that is not a well-formed record or payload. */
export { WireError };

/** The version byte every record starts with; a record of another version is rejected. */
export const WIRE_VERSION = 4;

/** Bytes in a record header. */
export const HEADER_BYTES = 24;

/** The largest prefix (high 32 bits) a request id may carry, so that ids stay safe integers. */
export const MAX_ID_PREFIX = 0x1fffff;

const TWO_32 = 0x100000000;

/** The client prefix of a request id (see `requestId`). */
export function prefixOf(id: number): number {
  return Math.floor(id / TWO_32);
}

/** The request id of a client's `prefix` (1 to `MAX_ID_PREFIX`) and `counter` (a u32). */
export function requestId(prefix: number, counter: number): number {
  return prefix * TWO_32 + counter;
}

/** Largest batch size a `RecordWriter` carries over as the size of its next buffer. */
const SIZE_HINT_LIMIT = 256 * 1024;

/** Batches below this size are copied out by `takeOwned`; larger ones are handed over. */
const OWNED_COPY_LIMIT = 64 * 1024;

/**
 * A record with a payload this large (bytes) travels in a message of its own, so that its
 * bytes are never copied into a batch (and from the front end to a worker thread, moved).
 */
export const LARGE_RECORD_BYTES = 64 * 1024;

/** What a record is. */
export const Kind = Object.freeze({
  /** A request on its way to a stage: payload is a value (see `writeValue`). */
  JOB: 1,
  /** A final answer for the loopback: payload is a response (see `writeResponse`). */
  RESULT: 2,
  /** A final error for the loopback: payload is an error record (see `writeError`). */
  ERROR: 3,
  /** Worker to proxy: a worker joins; payload is its concurrency, prefetch window and the jobs it still holds (see `writeHello`). */
  HELLO: 4,
  /** Proxy to worker: the stage's configuration, payload is JSON (`WelcomeConfig`). */
  WELCOME: 5,
  /** Worker to proxy: the job with this id is finished here; gives the proxy back one credit. */
  DONE: 6,
  /** Either direction: I am alive. No payload. */
  HEARTBEAT: 7,
  /**
   * Client to proxy, proxy to worker: drop or abort the job with this id. No payload; the
   * deadline field is the request's deadline when the client gave up on it for that
   * reason (its handler's signal then aborts with `BF_ERR_DEADLINE`), 0 when it was
   * cancelled (`BF_ERR_CANCELLED`).
   */
  CANCEL: 8,
  /**
   * Worker to proxy: I am leaving, send me nothing more; the payload lists the ids of jobs
   * it was sent and never started (u64 LE each), which the proxy gives to another worker.
   * Proxy to worker: I do not know you (join again) or, to a leaving worker, you are released.
   */
  BYE: 9,
  /**
   * Worker thread to its proxy: an event to publish (see `ctx.events`); payload is a u8
   * topic length, the topic, then the event's data as the events client encodes it. A
   * worker thread holds no socket: its proxy's thread publishes for it.
   */
  EVENT: 10,
  /**
   * Pipeline client to the answer hub of the pipeline's loopback (see `PipelineClient`'s
   * `hub` and `via`): send me the answers to the ids of my prefix. Payload: u32 prefix. A
   * client repeats it every second; the hub forgets one silent for five.
   */
  CLIENT: 11,
} as const);

/** The numeric kind of a record. */
export type KindValue = (typeof Kind)[keyof typeof Kind];

const MAX_KIND = 11;

/** Bits of the flags byte. */
export const Flag = Object.freeze({
  /** The job was re-sent once after its worker died (idempotent stages only). */
  RETRIED: 1,
  /** On HELLO: the worker heartbeats from a thread of its own, so silence means it is gone. */
  PULSE: 2,
} as const);

/**
 * One decoded record; `payload` is a view into the received message (every message arrives
 * in memory of its own, so the view stays valid, and keeps the message alive while held).
 */
export interface WireRecord {
  kind: KindValue;
  flags: number;
  stage: number;
  id: number;
  deadline: number;
  payload: Buffer;
}

/**
 * Splits one message frame into its records. The whole frame is checked before any
 * record is returned, so a frame with one bad record yields none.
 * @throws WireError when the frame is truncated, has an unknown version or kind, or a
 * payload length that runs past its end.
 */
export function decodeRecords(frame: Buffer): WireRecord[] {
  const records: WireRecord[] = [];
  let now = 0;
  let offset = 0;
  const end = frame.length;
  if (end === 0) throw new WireError('empty frame');
  while (offset < end) {
    if (end - offset < HEADER_BYTES) throw new WireError(`truncated header at byte ${offset}`);
    const version = frame[offset]!;
    if (version !== WIRE_VERSION) throw new WireError(`unsupported wire version ${version}`);
    const kind = frame[offset + 1]!;
    if (kind < 1 || kind > MAX_KIND) throw new WireError(`unknown record kind ${kind}`);
    const length = frame.readUInt32LE(offset + 20);
    const prefix = frame.readUInt32LE(offset + 8);
    if (prefix > MAX_ID_PREFIX) throw new WireError(`request id prefix ${prefix} out of range`);
    const payloadStart = offset + HEADER_BYTES;
    if (length > end - payloadStart) throw new WireError(`payload of ${length} bytes runs past the frame`);
    records.push({
      kind: kind as KindValue,
      flags: frame[offset + 2]!,
      stage: frame[offset + 3]!,
      id: prefix * TWO_32 + frame.readUInt32LE(offset + 4),
      deadline: deadlineAt(frame.readDoubleLE(offset + 12), now === 0 ? (now = Date.now()) : now),
      payload: frame.subarray(payloadStart, payloadStart + length),
    });
    offset = payloadStart + length;
  }
  return records;
}

/**
 * Cuts a batch written by `RecordWriter` into pieces of at most `maxBytes`, at record
 * boundaries, so that no message exceeds what the receiving socket accepts. A single
 * record larger than `maxBytes` becomes a piece of its own (the receiver will refuse it).
 */
export function splitFrame(frame: Buffer, maxBytes: number): Buffer[] {
  if (frame.length <= maxBytes) return [frame];
  const pieces: Buffer[] = [];
  let start = 0;
  let offset = 0;
  while (offset + HEADER_BYTES <= frame.length) {
    const end = offset + HEADER_BYTES + frame.readUInt32LE(offset + 20);
    if (end - start > maxBytes && offset > start) {
      pieces.push(frame.subarray(start, offset));
      start = offset;
    }
    offset = end;
  }
  if (start < frame.length) pieces.push(frame.subarray(start));
  return pieces;
}

const EMPTY = Buffer.alloc(0);

/**
 * Builds one batch of records in a growing buffer. `take()` hands the bytes over and
 * starts a fresh buffer, so a batch that is being sent is never written again.
 */
export class RecordWriter {
  private buf: Buffer = EMPTY;
  private len = 0;
  private recordStart = -1;
  private readonly initialSize: number;
  /** Size of the batch taken last (at most `SIZE_HINT_LIMIT`): the next buffer starts that large. */
  private lastTaken = 0;

  /**
   * @param initialSize first buffer size in bytes (allocated on the first write); the
   * buffer doubles as needed.
   */
  constructor(initialSize = 16 * 1024) {
    this.initialSize = initialSize;
  }

  /** Bytes written so far in this batch. */
  get length(): number {
    return this.len;
  }

  /** Number of records in this batch. */
  records = 0;

  /** Starts a record; write its payload, then call `end()`. `id` is a non-negative safe integer (see `MAX_ID_PREFIX`). */
  begin(kind: KindValue, flags: number, stage: number, id: number, deadline: number): void {
    this.ensure(HEADER_BYTES);
    const b = this.buf;
    const o = this.len;
    b[o] = WIRE_VERSION;
    b[o + 1] = kind;
    b[o + 2] = flags;
    b[o + 3] = stage;
    b.writeUInt32LE(id >>> 0, o + 4);
    b.writeUInt32LE(Math.floor(id / TWO_32), o + 8);
    b.writeDoubleLE(timeLeft(deadline), o + 12);
    this.recordStart = o;
    this.len = o + HEADER_BYTES;
  }

  /** Ends the current record, fixing its payload length. */
  end(): void {
    const start = this.recordStart;
    this.buf.writeUInt32LE(this.len - start - HEADER_BYTES, start + 20);
    this.recordStart = -1;
    this.records++;
  }

  /** Drops the record begun and not yet ended (when encoding its payload failed). */
  abort(): void {
    if (this.recordStart === -1) return;
    this.len = this.recordStart;
    this.recordStart = -1;
  }

  /** Writes a whole record with an empty payload. */
  empty(kind: KindValue, stage: number, id: number, deadline = 0): void {
    this.begin(kind, 0, stage, id, deadline);
    this.end();
  }

  /** Copies a record received elsewhere, header and payload, unchanged but for the given fields. */
  forward(record: WireRecord, stage: number): void {
    this.begin(record.kind, record.flags, stage, record.id, record.deadline);
    this.bytes(record.payload);
    this.end();
  }

  u8(value: number): void {
    this.ensure(1);
    this.buf[this.len++] = value;
  }

  u16(value: number): void {
    this.ensure(2);
    this.buf.writeUInt16LE(value, this.len);
    this.len += 2;
  }

  u32(value: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(value >>> 0, this.len);
    this.len += 4;
  }

  f64(value: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(value, this.len);
    this.len += 8;
  }

  /** Writes a request id as u64 LE, the way record headers carry it. */
  id(value: number): void {
    this.ensure(8);
    this.buf.writeUInt32LE(value >>> 0, this.len);
    this.buf.writeUInt32LE(Math.floor(value / TWO_32), this.len + 4);
    this.len += 8;
  }

  bytes(value: Uint8Array): void {
    this.ensure(value.length);
    this.buf.set(value, this.len);
    this.len += value.length;
  }

  /** Writes a string as UTF-8 with no length prefix; returns the byte count. */
  utf8(value: string): number {
    this.ensure(value.length * 3);
    const n = this.buf.write(value, this.len, 'utf8');
    this.len += n;
    return n;
  }

  /** Writes a string as UTF-8 behind a length prefix of `prefixBytes` (1, 2 or 4). */
  prefixedUtf8(value: string, prefixBytes: 1 | 2 | 4): void {
    this.ensure(prefixBytes + value.length * 3);
    const at = this.len;
    this.len += prefixBytes;
    const n = this.buf.write(value, this.len, 'utf8');
    const max = prefixBytes === 1 ? 0xff : prefixBytes === 2 ? 0xffff : 0xffffffff;
    if (n > max) throw new WireError(`string of ${n} bytes does not fit a ${prefixBytes}-byte length`);
    if (prefixBytes === 1) this.buf[at] = n;
    else if (prefixBytes === 2) this.buf.writeUInt16LE(n, at);
    else this.buf.writeUInt32LE(n, at);
    this.len += n;
  }

  /**
   * Returns the batch written so far in an ArrayBuffer of its own (to post to another
   * thread) and starts an empty one: a small batch is copied out and the buffer reused, a
   * large one is handed over whole.
   */
  takeOwned(): Uint8Array {
    if (this.len >= OWNED_COPY_LIMIT) return this.take();
    const out = new Uint8Array(this.len);
    out.set(this.buf.subarray(0, this.len));
    this.restart();
    return out;
  }

  /**
   * Returns the batch written so far as a string of one char per byte (latin1) and starts
   * an empty one in the same buffer: a small batch crosses to another thread as a string,
   * which costs neither side an `ArrayBuffer` (see `PortOutbox`).
   */
  takeString(): string {
    const out = this.buf.toString('latin1', 0, this.len);
    this.restart();
    return out;
  }

  /** Starts an empty batch in the same buffer, unless that buffer grew for a large batch: it is not kept for small ones. */
  private restart(): void {
    if (this.buf.length > OWNED_COPY_LIMIT) {
      this.buf = EMPTY;
      this.lastTaken = this.len;
    }
    this.len = 0;
    this.records = 0;
  }

  /** Returns the batch written so far and starts an empty one. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.len);
    // The next buffer is made on the next write, at the initial size: a large record gets a
    // buffer of its own size when it comes (fresh memory is costly: each page of it faults
    // in when first written).
    this.buf = EMPTY;
    this.lastTaken = Math.min(this.len, SIZE_HINT_LIMIT);
    this.len = 0;
    this.records = 0;
    return out;
  }

  private ensure(extra: number): void {
    const need = this.len + extra;
    if (need <= this.buf.length) return;
    // A fresh buffer starts as large as the batch taken last, so that a turn like the last
    // one is written without growing (each growth allocates and copies what is written).
    let size = Math.max(this.initialSize, this.buf.length * 2, this.buf === EMPTY ? this.lastTaken : 0);
    while (size < need) size *= 2;
    // Past the large-record size, grow to what is needed and a little room, not to the next power of two.
    if (size > LARGE_RECORD_BYTES) size = (Math.max(need, this.buf === EMPTY ? this.lastTaken : 0) + this.initialSize + 4095) & ~4095;
    const next = Buffer.allocUnsafeSlow(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
}

/**
 * Lengthens the payload of the record a message holds alone by `extra` bytes that follow
 * it in memory (a body written in place behind the record's head, see `encodeRequestJob`).
 */
export function extendPayload(frame: Buffer, extra: number): void {
  frame.writeUInt32LE(frame.readUInt32LE(20) + extra, 20);
}

/**
 * Rewrites the flags, stage and deadline (as the time left now) of the record that a
 * message holds alone, in place: a proxy passing on a large job's message uses it instead
 * of copying the job.
 */
export function restamp(frame: Buffer, flags: number, stage: number, deadline: number): void {
  frame[2] = flags;
  frame[3] = stage;
  frame.writeDoubleLE(timeLeft(deadline), 12);
}

/** A deadline in this process's clock as the time left now; 0 (none) stays 0, one just reached is a tiny negative. */
function timeLeft(deadline: number): number {
  if (deadline === 0) return 0;
  return deadline - Date.now() || -Number.MIN_VALUE;
}

/** The time left read from a record as a deadline in this process's clock. */
function deadlineAt(left: number, now: number): number {
  return left === 0 ? 0 : now + left;
}

/** Reads a payload field by field; every read is bounds-checked and throws `WireError`. */
export class PayloadReader {
  offset = 0;
  constructor(readonly buf: Buffer) {}

  private need(n: number): number {
    const at = this.offset;
    if (at + n > this.buf.length) throw new WireError('truncated payload');
    this.offset = at + n;
    return at;
  }

  get remaining(): number {
    return this.buf.length - this.offset;
  }

  u8(): number {
    return this.buf[this.need(1)]!;
  }

  u16(): number {
    return this.buf.readUInt16LE(this.need(2));
  }

  u32(): number {
    return this.buf.readUInt32LE(this.need(4));
  }

  f64(): number {
    return this.buf.readDoubleLE(this.need(8));
  }

  /** Reads a request id written by `RecordWriter.id`. */
  id(): number {
    const at = this.need(8);
    const prefix = this.buf.readUInt32LE(at + 4);
    if (prefix > MAX_ID_PREFIX) throw new WireError(`request id prefix ${prefix} out of range`);
    return prefix * TWO_32 + this.buf.readUInt32LE(at);
  }

  bytes(n: number): Buffer {
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }

  rest(): Buffer {
    const at = this.offset;
    this.offset = this.buf.length;
    return this.buf.subarray(at);
  }

  utf8(n: number): string {
    const at = this.need(n);
    return this.buf.toString('utf8', at, at + n);
  }

  latin1(n: number): string {
    const at = this.need(n);
    return this.buf.toString('latin1', at, at + n);
  }
}
