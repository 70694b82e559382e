import * as zmq from 'zeromq';
import { RecordWriter, splitFrame } from './format.js';

/** Logs what the socket helpers cannot hand to a caller (a pino logger fits). */
export interface LinkLogger {
  warn(obj: object, msg: string): void;
}

/** Socket options shared by every butterfly socket. */
export interface LinkOptions {
  /** Largest message accepted, in bytes; a larger one drops the connection that sent it. */
  readonly maxMessageBytes: number;
}

/** Applies the options every socket needs: no linger on close, a bound on message size. */
export function configureSocket(socket: zmq.Socket, options: LinkOptions): void {
  socket.linger = 0;
  socket.maxMessageSize = options.maxMessageBytes;
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
export class Outbox {
  /** Where records for the next message are written. */
  readonly writer = new RecordWriter();
  private scheduled = false;
  private sending = false;
  private readonly flushBound = (): void => void this.flush();

  constructor(
    private readonly socket: zmq.Writable & zmq.Socket,
    private readonly logger: LinkLogger,
    private readonly name: string,
  ) {}

  /** Sends what has been written, at the end of this event-loop turn. */
  schedule(): void {
    if (this.scheduled || this.sending) return;
    this.scheduled = true;
    setImmediate(this.flushBound);
  }

  /** True while nothing is written and nothing is being sent. */
  get idle(): boolean {
    return !this.sending && this.writer.length === 0;
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    while (this.writer.length > 0 && !this.socket.closed) {
      const records = this.writer.records;
      const frame = this.writer.take();
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

/**
 * Batches records per peer on a ROUTER socket: one message per peer and event-loop turn,
 * sent one at a time.
 */
export class RouterOutbox {
  private readonly peers = new Map<string, { readonly identity: Buffer; readonly writer: RecordWriter }>();
  private readonly dirty = new Set<string>();
  private readonly strangers = new Set<string>();
  private scheduled = false;
  private sending = false;
  private readonly flushBound = (): void => void this.flush();

  constructor(
    private readonly socket: zmq.Router,
    private readonly logger: LinkLogger,
    private readonly name: string,
  ) {}

  /** The writer for a peer; records written to it go out at the end of the turn. */
  writerFor(key: string, identity: Buffer): RecordWriter {
    let peer = this.peers.get(key);
    if (peer === undefined) {
      peer = { identity, writer: new RecordWriter(4096) };
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
          if (peer === undefined || peer.writer.length === 0) continue;
          const records = peer.writer.records;
          const frame = peer.writer.take();
          if (this.strangers.delete(key)) this.peers.delete(key);
          try {
            for (const piece of splitFrame(frame, maxMessage(this.socket))) await this.socket.send([peer.identity, piece]);
          } catch (err) {
            if (!this.socket.closed) this.logger.warn({ err, socket: this.name, peer: key, records }, 'send failed; records dropped');
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
