import type { MessagePort } from 'node:worker_threads';
import * as zmq from 'zeromq';
import { LARGE_RECORD_BYTES, RecordWriter, decodeRecords, splitFrame, type WireRecord } from './format.js';
import { receivedWhole } from './payloads.js';

/** Logs what the socket helpers cannot hand to a caller (a pino logger fits). */
export interface LinkLogger {
  warn(obj: object, msg: string): void;
}

/** Socket options shared by every butterfly socket. */
export interface LinkOptions {
  /** Largest message accepted, in bytes; a larger one drops the connection that sent it. */
  readonly maxMessageBytes: number;
}

/**
 * Messages a socket queues for one peer, in each direction, before it stops taking more
 * (ZeroMQ's high-water marks). With batching a message holds one event-loop turn's records,
 * so this bounds a stopped peer's backlog at this many messages of at most `maxMessageBytes`.
 */
export const SOCKET_HIGH_WATER_MARK = 16;

/**
 * Unsent bytes an outbox holds before it reports itself full, so that its users refuse new
 * work: with a peer that takes nothing, a socket holds at most this plus
 * `SOCKET_HIGH_WATER_MARK` messages.
 */
export const OUTBOX_BYTES = 16 * 1024 * 1024;

/** How long a send may wait for a peer that takes nothing (stopped, or at its high-water mark), in ms; then its records are dropped. */
export const SEND_TIMEOUT_MS = 1000;

/**
 * Applies the options every socket needs: no linger on close, bounded queues and sends, a
 * bound on message size. `creditBound` is for the link between a proxy and its workers,
 * where credit already bounds what is in flight (a worker is sent at most its window of
 * jobs): there ZeroMQ's own queue is left unbounded, since a message it refused would be
 * a job lost without a word.
 */
export function configureSocket(socket: zmq.Socket, options: LinkOptions, creditBound = false): void {
  socket.linger = 0;
  socket.maxMessageSize = options.maxMessageBytes;
  const mark = creditBound ? 0 : SOCKET_HIGH_WATER_MARK;
  // Each socket class has the options of the directions it sends and receives in.
  const sides = socket as zmq.Socket & Partial<zmq.Writable> & Partial<zmq.Readable>;
  if ('sendHighWaterMark' in sides) {
    sides.sendHighWaterMark = mark;
    sides.sendTimeout = SEND_TIMEOUT_MS;
  }
  if ('receiveHighWaterMark' in sides) sides.receiveHighWaterMark = mark;
}

/**
 * Where records for one peer are written and sent from: a ZeroMQ socket (`Outbox`), a
 * worker thread's port (`PortOutbox`) or a receiver in this thread (`LocalOutbox`).
 */
export interface RecordSink {
  /** Where records for the next message are written. */
  readonly writer: RecordWriter;
  /** Sends what has been written, at the end of this event-loop turn. */
  schedule(): void;
  /** Sends what has been written now (a ZeroMQ socket busy with a send takes it when that ends). */
  flush(): void;
  /**
   * Sends a message built elsewhere (one large record, see `LARGE_RECORD_BYTES`) as a
   * message of its own, after everything written before, without copying it into the
   * batch. With `move`, a port hands the bytes to the other thread (they are gone from
   * this one) instead of copying them.
   */
  sendAlone(frame: Buffer, move?: boolean): boolean | void;
  /** True while the unsent bytes are over the sink's bound: refuse new work instead of writing more. */
  readonly full: boolean;
}

/** The largest message the peers accept: every butterfly socket is given the same limit. */
function maxMessage(socket: zmq.Socket): number {
  const max = socket.maxMessageSize;
  return max > 0 ? max : Number.MAX_SAFE_INTEGER;
}

/**
 * Batches the records written during one event-loop turn into one message on a socket
 * that sends to one peer set (PUSH, DEALER). zeromq.js allows one pending send per
 * socket: records written while a send waits go out in the next message.
 *
 * Write records into `writer`, then call `schedule()`.
 */
export class Outbox implements RecordSink {
  /** Where records for the next message are written. */
  readonly writer = new RecordWriter();
  /** Messages waiting to be sent before what the writer holds: earlier batches and `sendAlone`'s. */
  private readonly queued: Buffer[] = [];
  private queuedBytes = 0;
  private scheduled = false;
  private sending = false;
  private readonly flushBound = (): void => void this.send();
  private readonly maxBytes: number;

  /** @param maxBytes unsent bytes past which `full` is true; default `OUTBOX_BYTES` or the socket's message limit, whichever is smaller. */
  constructor(
    private readonly socket: zmq.Writable & zmq.Socket,
    private readonly logger: LinkLogger,
    private readonly name: string,
    maxBytes?: number,
  ) {
    this.maxBytes = maxBytes ?? Math.min(OUTBOX_BYTES, maxMessage(socket));
  }

  /** Sends what has been written, at the end of this event-loop turn. */
  schedule(): void {
    if (this.scheduled || this.sending) return;
    this.scheduled = true;
    setImmediate(this.flushBound);
  }

  flush(): void {
    if (this.sending) return;
    void this.send();
  }

  sendAlone(frame: Buffer): void {
    if (this.writer.length > 0) this.enqueue(this.writer.take());
    this.enqueue(frame);
    this.schedule();
  }

  private enqueue(frame: Buffer): void {
    this.queued.push(frame);
    this.queuedBytes += frame.length;
  }

  get full(): boolean {
    return this.writer.length + this.queuedBytes >= this.maxBytes;
  }

  /** True while nothing is written and nothing is being sent. */
  get idle(): boolean {
    return !this.sending && this.writer.length === 0 && this.queued.length === 0;
  }

  private async send(): Promise<void> {
    this.scheduled = false;
    if (this.sending) return;
    while ((this.queued.length > 0 || this.writer.length > 0) && !this.socket.closed) {
      let frame = this.queued.shift();
      let records = 1;
      if (frame !== undefined) {
        this.queuedBytes -= frame.length;
      } else {
        records = this.writer.records;
        frame = this.writer.take();
      }
      this.sending = true;
      try {
        for (const piece of splitFrame(frame, maxMessage(this.socket))) await this.socket.send(piece);
      } catch (err) {
        if (!this.socket.closed) this.logger.warn({ err, socket: this.name, records }, 'send failed; records dropped');
      } finally {
        this.sending = false;
      }
    }
  }
}

/** End-of-turn batching for the sinks within one process: subclasses say how a batch is delivered. */
abstract class TurnBatcher {
  readonly writer = new RecordWriter();
  private scheduled = false;
  private readonly flushBound = (): void => this.flush();

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushBound);
  }

  flush(): void {
    this.scheduled = false;
    if (this.writer.length > 0) this.deliver();
  }

  protected abstract deliver(): void;
}

/**
 * Batches records for a worker thread (or its proxy, from inside the thread) and posts
 * them through a `MessagePort` as copies (see `sendAlone` for why nothing is moved but a
 * large record from the front end's thread).
 * A port has no bound of its own: what is written to it is bounded by its caller (the
 * proxy's credits, the worker's jobs).
 */
export class PortOutbox extends TurnBatcher implements RecordSink {
  constructor(private readonly port: MessagePort) {
    super();
  }

  protected deliver(): void {
    // A small batch goes as a string; a larger one is copied out (the writer keeps its
    // buffer), and a large one leaves with its buffer.
    if (this.writer.length <= STRING_BATCH_BYTES) this.port.postMessage(this.writer.takeString());
    else postFrame(this.port, this.writer.takeOwned());
  }

  /**
   * Posts `frame` after everything written before. With `move`, its memory is handed to the
   * other thread (gone from this one), else the bytes are copied. Moving detaches memory in
   * the sending thread, and a thread with one detached buffer runs every typed-array access
   * checked from then on (a stage's loops over bytes about a third slower), so a worker
   * moves only the memory a job came in, passed on with the record written in front of its
   * body (see `StageWorker.emit`); the front end's thread moves its large jobs.
   * @returns true when the bytes were moved.
   */
  sendAlone(frame: Buffer, move = false): boolean {
    this.flush();
    if (move) {
      try {
        this.port.postMessage(frame, [frame.buffer as ArrayBuffer]);
        return true;
      } catch {
        // Memory owned by a native library (a received ZeroMQ message) cannot be moved: copy it.
      }
    }
    postFrame(this.port, frame);
    return false;
  }

  get full(): boolean {
    return false;
  }
}

/**
 * Posts a copy of a message's bytes to another thread, without a transfer list (see
 * `PortOutbox.sendAlone`). The clone copies a view's whole backing buffer: a view on a
 * buffer much larger than itself is first copied out alone. (Shared memory would spare
 * the copy, but a SharedArrayBuffer's memory is not weighed by the collector of the
 * threads that hold it: under a storm of large requests it grows without bound.)
 */
function postFrame(port: MessagePort, frame: Uint8Array): void {
  port.postMessage(frame.buffer.byteLength - frame.byteLength <= COPY_SLACK_BYTES ? frame : new Uint8Array(frame));
}

/** Bytes of a backing buffer beyond its view that `postFrame` lets the clone copy along. */
const COPY_SLACK_BYTES = 64 * 1024;

/**
 * Batches up to this size cross a port as strings (one char per byte): a posted string is
 * copied into the other thread's heap, and read back into Node's shared pool of small
 * buffers, so that neither thread allocates an `ArrayBuffer` for it (each one is memory
 * outside the heap that the collector has to track and free).
 */
const STRING_BATCH_BYTES = 4 * 1024 - 1;

/** Hands every batch posted by a `PortOutbox` on the other side of `port` to `onFrame`. */
export function receivePort(port: MessagePort, onFrame: (frame: Buffer) => void, logger: LinkLogger, name: string): void {
  port.on('message', (bytes: Uint8Array | string) => {
    try {
      if (typeof bytes === 'string') {
        onFrame(Buffer.from(bytes, 'latin1'));
        return;
      }
      const frame = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (frame.length >= LARGE_RECORD_BYTES) receivedWhole(frame);
      onFrame(frame);
    } catch (err) {
      logger.warn({ err, port: name }, 'message handler failed');
    }
  });
}

/**
 * Hands records to a receiver in this thread at the end of the turn (or at `flush`), in
 * the same batches and bytes a socket would carry, so in-process links and sockets share
 * one path. Bounded like an `Outbox`: `full` past `maxBytes` unsent.
 */
export class LocalOutbox extends TurnBatcher implements RecordSink {
  /** @param receive gets each message's records, and the message itself (no other holds it). */
  constructor(
    private readonly receive: (records: WireRecord[], frame: Buffer) => void,
    private readonly maxBytes: number,
  ) {
    super();
  }

  protected deliver(): void {
    const frame = this.writer.take();
    this.receive(decodeRecords(frame), frame);
  }

  sendAlone(frame: Buffer): void {
    this.flush();
    this.receive(decodeRecords(frame), frame);
  }

  get full(): boolean {
    return this.writer.length >= this.maxBytes;
  }
}

/**
 * Batches records per peer on a ROUTER socket: one message per peer and event-loop turn,
 * sent one at a time.
 */
export class RouterOutbox {
  private readonly peers = new Map<string, { readonly identity: Buffer; readonly writer: RecordWriter; readonly queued: Buffer[] }>();
  private readonly dirty = new Set<string>();
  private readonly strangers = new Set<string>();
  private scheduled = false;
  private sending = false;
  private readonly flushBound = (): void => void this.flush();

  /**
   * @param onFailed told the key of a peer whose records could not be sent (it is gone or
   *   takes nothing), with the messages that did not leave: their records never reached it.
   */
  constructor(
    private readonly socket: zmq.Router,
    private readonly logger: LinkLogger,
    private readonly name: string,
    private readonly onFailed?: (key: string, unsent: readonly Buffer[]) => void,
  ) {}

  /** The writer for a peer; records written to it go out at the end of the turn. */
  writerFor(key: string, identity: Buffer): RecordWriter {
    let peer = this.peers.get(key);
    if (peer === undefined) {
      peer = { identity, writer: new RecordWriter(4096), queued: [] };
      this.peers.set(key, peer);
    }
    this.dirty.add(key);
    return peer.writer;
  }

  /**
   * The writer for a peer that is not kept: after its records are sent, the peer is
   * forgotten (a reply to a stranger must not leave a buffer behind).
   */
  writerForStranger(key: string, identity: Buffer): RecordWriter {
    if (!this.peers.has(key)) this.strangers.add(key);
    return this.writerFor(key, identity);
  }

  /** Sends a message built elsewhere to a peer, on its own, after what is written to it so far. */
  sendAlone(key: string, identity: Buffer, frame: Buffer): void {
    const writer = this.writerFor(key, identity);
    const peer = this.peers.get(key)!;
    if (writer.length > 0) peer.queued.push(writer.take());
    peer.queued.push(frame);
  }

  /** Forgets a peer once what is written to it has been sent. */
  release(key: string): void {
    const peer = this.peers.get(key);
    if (peer !== undefined && (peer.writer.length > 0 || peer.queued.length > 0)) this.strangers.add(key);
    else this.forget(key);
  }

  /** Forgets a peer and anything still unsent to it. */
  forget(key: string): void {
    this.peers.delete(key);
    this.strangers.delete(key);
    this.dirty.delete(key);
  }

  /** Sends what has been written, at the end of this event-loop turn. */
  schedule(): void {
    if (this.scheduled || this.sending) return;
    this.scheduled = true;
    setImmediate(this.flushBound);
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    this.sending = true;
    try {
      while (this.dirty.size > 0 && !this.socket.closed) {
        for (const key of this.dirty) {
          this.dirty.delete(key);
          const peer = this.peers.get(key);
          if (peer === undefined || (peer.writer.length === 0 && peer.queued.length === 0)) continue;
          const records = peer.writer.records + peer.queued.length;
          if (peer.writer.length > 0) peer.queued.push(peer.writer.take());
          const frames = peer.queued.splice(0);
          if (this.strangers.delete(key)) this.peers.delete(key);
          let f = 0;
          let pieces: Buffer[] = [];
          let p = 0;
          try {
            for (; f < frames.length; f++) {
              pieces = splitFrame(frames[f]!, maxMessage(this.socket));
              for (p = 0; p < pieces.length; p++) await this.socket.send([peer.identity, pieces[p]!]);
            }
          } catch (err) {
            if (!this.socket.closed) {
              this.logger.warn({ err, socket: this.name, peer: key, records }, 'send failed; records dropped');
              // What did not leave: the rest of this frame's pieces and every frame after it.
              this.onFailed?.(key, [...pieces.slice(p), ...frames.slice(f + 1)]);
            }
          }
        }
      }
    } finally {
      this.sending = false;
    }
  }
}

/**
 * Reads every message of a socket and hands it to `onMessage` until the socket closes.
 * An exception thrown by `onMessage` is logged and the loop goes on.
 */
export async function receiveEach(
  socket: zmq.Readable & zmq.Socket,
  onMessage: (frames: Buffer[]) => void,
  logger: LinkLogger,
  name: string,
): Promise<void> {
  for (;;) {
    let frames: Buffer[];
    try {
      frames = await socket.receive();
    } catch (err) {
      if (socket.closed) return;
      const code = (err as { code?: string }).code;
      if (code === 'EAGAIN') continue;
      logger.warn({ err, socket: name }, 'receive failed');
      return;
    }
    try {
      onMessage(frames);
    } catch (err) {
      logger.warn({ err, socket: name }, 'message handler failed');
    }
  }
}
