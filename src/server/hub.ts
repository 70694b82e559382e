import * as zmq from 'zeromq';
import { type Logger, silentLogger } from '../logger.js';
import { Kind, MAX_ID_PREFIX, RouterOutbox, type LinkSecurity, type WireRecord, configureSocket, decodeRecords, prefixOf, receiveEach, secureServer } from '../wire/index.js';

/** Options of an answer hub. */
export interface AnswerHubOptions {
  /** Where other clients of the pipeline connect (bound, ROUTER). */
  readonly address: string;
  readonly maxMessageBytes: number;
  /** Clients registered at once, at most; past it new ones are refused. Default 10000. */
  readonly maxClients?: number;
  readonly security?: LinkSecurity | undefined;
  /** The prefix of the client that owns the hub: never given to another. */
  readonly ownPrefix: number;
  readonly logger?: Logger;
}

/** A registered client forgets after this long without a CLIENT record, in ms. */
const CLIENT_SILENCE_MS = 5000;

interface Registered {
  readonly key: string;
  readonly identity: Buffer;
  lastSeen: number;
}

/**
 * Where the other clients of a pipeline get their answers: the pipeline has one loopback,
 * bound by one client (the HTTP server's); every answer reaches it, and this hub passes
 * on those whose request id carries another registered client's prefix. A client
 * registers its prefix with a CLIENT record (see `PipelineClient`'s `via`); a prefix
 * held by another live client is refused, never taken over.
 */
export class AnswerHub {
  private readonly socket = new zmq.Router();
  private readonly outbox: RouterOutbox;
  private readonly clients = new Map<number, Registered>();
  private readonly logger: Logger;
  private releaseKeys: () => void = () => {};
  private loop: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refusals = 0;

  constructor(private readonly options: AnswerHubOptions) {
    this.logger = options.logger ?? silentLogger;
    configureSocket(this.socket, { maxMessageBytes: options.maxMessageBytes });
    // A send to a client that is gone fails, and the client is forgotten at once.
    this.socket.mandatory = true;
    // A client gone between its answers and their sending loses them: nothing else could.
    this.outbox = new RouterOutbox(this.socket, this.logger, 'answer hub', (key) => this.forget(key));
  }

  /** Binds the hub's address. */
  async start(): Promise<void> {
    this.releaseKeys = await secureServer(this.socket, this.options.security, this.logger);
    await this.socket.bind(this.options.address);
    this.loop = receiveEach(this.socket, (frames) => this.onClient(frames), this.logger, 'answer hub');
    this.timer = setInterval(() => this.expire(), 1000);
    this.timer.unref();
  }

  /**
   * Passes an answer on to the client whose prefix its id carries.
   * @returns false when no registered client has that prefix.
   */
  forward(r: WireRecord): boolean {
    const client = this.clients.get(prefixOf(r.id));
    if (client === undefined) return false;
    this.outbox.writerFor(client.key, client.identity).forward(r, r.stage);
    this.outbox.schedule();
    return true;
  }

  /** Closes the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.socket.close();
    this.releaseKeys();
    await this.loop;
  }

  private onClient(frames: Buffer[]): void {
    const [identity, frame] = frames;
    if (identity === undefined || frame === undefined) return;
    let records: WireRecord[];
    try {
      records = decodeRecords(frame);
    } catch {
      return;
    }
    const key = identity.toString('hex');
    for (const r of records) {
      if (r.kind !== Kind.CLIENT || r.payload.length < 4) continue;
      const prefix = r.payload.readUInt32LE(0);
      if (prefix < 1 || prefix > MAX_ID_PREFIX) continue;
      const held = this.clients.get(prefix);
      if (prefix === this.options.ownPrefix || (held !== undefined && held.key !== key)) {
        if (++this.refusals <= 100) this.logger.warn({ prefix }, 'client refused: another live client holds its id prefix; it draws another');
        this.reply(key, identity, 0);
        continue;
      }
      if (held !== undefined) {
        held.lastSeen = Date.now();
        continue;
      }
      if (this.clients.size >= (this.options.maxClients ?? 10_000)) {
        if (++this.refusals <= 100) this.logger.warn({ prefix, clients: this.clients.size }, 'client refused: too many clients');
        continue;
      }
      this.clients.set(prefix, { key, identity: Buffer.from(identity), lastSeen: Date.now() });
      this.reply(key, identity, prefix);
      this.logger.info({ prefix }, 'client joined');
    }
  }

  /** Answers a registration: the prefix taken, or 0 for one refused. */
  private reply(key: string, identity: Buffer, prefix: number): void {
    const w = this.outbox.writerFor(key, Buffer.from(identity));
    w.begin(Kind.CLIENT, 0, 0, 0, 0);
    w.u32(prefix);
    w.end();
    this.outbox.schedule();
  }

  private forget(key: string): void {
    for (const [prefix, c] of this.clients) if (c.key === key) this.clients.delete(prefix);
    this.outbox.forget(key);
  }

  private expire(): void {
    const now = Date.now();
    for (const [prefix, c] of this.clients) {
      if (now - c.lastSeen <= CLIENT_SILENCE_MS) continue;
      this.clients.delete(prefix);
      this.outbox.forget(c.key);
      this.logger.info({ prefix }, 'client gone');
    }
  }
}
