import type { MessagePort } from 'node:worker_threads';
import * as zmq from 'zeromq';
import type { Logger } from '../logger.js';
import {
  Kind,
  LARGE_RECORD_BYTES,
  Outbox,
  PortOutbox,
  configureSocket,
  decodeRecords,
  receiveEach,
  receivePort,
  secureClient,
  type LinkSecurity,
  type RecordSink,
  type WelcomeConfig,
  type WireRecord,
} from '../wire/index.js';
import { type Pulse, startPulse } from './pulse.js';

/** Options of a worker's connection to its proxy. */
export interface ConnectionOptions {
  /** The proxy's backend address (ZeroMQ); unused with `port`. */
  connect: string;
  /** A channel to a proxy of this process, in place of sockets. */
  port: MessagePort | undefined;
  maxMessageBytes: number;
  /** Heartbeat from a thread of its own once joined (a worker process's main thread only). */
  pulse: boolean;
  /** The worker's watchdog slot, which its pulse reads (see `PulseLaunch.watch`). */
  watch: SharedArrayBuffer;
  /** The worker's label, which its pulse heartbeats name. */
  label: string;
  /** The worker's identity token, which its pulse heartbeats carry. */
  token: Uint8Array;
  /** The stage's name, for logs. */
  name: string;
  /** CURVE keys for every socket of the connection, the pulse's too; undefined for plaintext. */
  security: LinkSecurity | undefined;
  logger: Logger;
}

/** What the worker hears from its connection. */
export interface ConnectionEvents {
  /**
   * Records from the proxy. `moved` is the message they came in when it carried one large
   * job moved to this thread: no one else holds those bytes.
   */
  records(records: WireRecord[], moved: Buffer | undefined): void;
  /** True while the worker runs: only then does it heartbeat, and rejoin a silent proxy. */
  active(): boolean;
  /** The proxy went silent and the connection was rebuilt on a fresh socket: the worker joins again. */
  rebuilt(): void;
}

/**
 * A worker's transport: its link to the proxy (a ZeroMQ DEALER, or a port to a proxy of
 * the same process), and once welcomed, its sockets to the loopback and the next stage
 * (through a port, answers and next-stage jobs go to the proxy's process, which routes
 * them). It heartbeats, and over ZeroMQ rebuilds the link when the proxy goes silent for
 * its liveness window. It knows records and sockets, not jobs.
 */
export class ProxyConnection {
  private dealer: zmq.Dealer | undefined;
  private outbox: RecordSink;
  private nextSocket: zmq.Push | undefined;
  private nextOutbox: RecordSink | undefined;
  private loopbackSocket: zmq.Push | undefined;
  private loopbackOutbox: RecordSink | undefined;
  private joined: WelcomeConfig | undefined;
  private pulse: Pulse | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private lastHeard = Date.now();
  private readonly loops: Promise<void>[] = [];

  constructor(
    private readonly options: ConnectionOptions,
    private readonly events: ConnectionEvents,
  ) {
    const port = options.port;
    if (port !== undefined) {
      this.outbox = new PortOutbox(port);
      receivePort(port, (frame) => this.onFrame(frame), options.logger, 'proxy');
    } else {
      this.dealer = this.newDealer();
      this.outbox = new Outbox(this.dealer, options.logger, 'proxy');
    }
  }

  /** Where HELLO, DONE, heartbeats and BYE go. */
  get toProxy(): RecordSink {
    return this.outbox;
  }

  /** Where next-stage jobs go, once welcomed by a proxy with a next stage. */
  get toNext(): RecordSink | undefined {
    return this.nextOutbox;
  }

  /** Where answers go, once welcomed. */
  get toLoopback(): RecordSink | undefined {
    return this.loopbackOutbox;
  }

  /** The proxy's WELCOME, once joined. */
  get config(): WelcomeConfig | undefined {
    return this.joined;
  }

  /** Applies the proxy's WELCOME: the heartbeat interval, the loopback and next-stage links, the pulse. */
  configure(config: WelcomeConfig): void {
    const o = this.options;
    if (this.joined === undefined || this.joined.heartbeatMs !== config.heartbeatMs) {
      if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = setInterval(() => this.onHeartbeat(), config.heartbeatMs);
      this.heartbeatTimer.unref();
    }
    if (o.port !== undefined) {
      this.loopbackOutbox = this.outbox;
      this.nextOutbox = config.next === null ? undefined : this.outbox;
    } else {
      this.connectSockets(config);
      if (o.pulse && o.label !== '' && this.pulse === undefined) {
        this.pulse = startPulse({ connect: o.connect, security: o.security, label: o.label, token: o.token, stage: config.stage, heartbeatMs: config.heartbeatMs, watch: o.watch });
      }
    }
    this.joined = config;
    this.lastHeard = Date.now();
  }

  /** Sends what was written at the end of this event-loop turn. */
  schedule(): void {
    this.nextOutbox?.schedule();
    this.loopbackOutbox?.schedule();
    this.outbox.schedule();
  }

  /** Sends everything written now: outcomes first, then the DONEs that free credit for more. */
  flush(): void {
    this.nextOutbox?.flush();
    if (this.loopbackOutbox !== this.nextOutbox) this.loopbackOutbox?.flush();
    if (this.outbox !== this.loopbackOutbox) this.outbox.flush();
  }

  /** Flushes, and waits (up to a second) until the sockets have taken everything. */
  async flushed(): Promise<void> {
    this.flush();
    const outboxes = [this.outbox, this.nextOutbox, this.loopbackOutbox].filter((o): o is Outbox => o instanceof Outbox);
    const deadline = Date.now() + 1000;
    while (outboxes.some((o) => !o.idle) && Date.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Stops heart-beating and closes every socket (or the port). */
  async close(): Promise<void> {
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    await this.pulse?.stop();
    this.dealer?.close();
    this.nextSocket?.close();
    this.loopbackSocket?.close();
    this.options.port?.close();
    await Promise.all(this.loops);
  }

  private newDealer(): zmq.Dealer {
    const dealer = new zmq.Dealer();
    configureSocket(dealer, { maxMessageBytes: this.options.maxMessageBytes }, true);
    secureClient(dealer, this.options.security);
    dealer.connect(this.options.connect);
    this.loops.push(receiveEach(dealer, (f) => this.onFrame(f[0]), this.options.logger, 'proxy'));
    return dealer;
  }

  private onFrame(frame: Buffer | undefined): void {
    this.lastHeard = Date.now();
    let records: WireRecord[];
    try {
      records = decodeRecords(frame ?? Buffer.alloc(0));
    } catch (err) {
      this.options.logger.warn({ err, stage: this.options.name }, 'undecodable message from proxy dropped');
      return;
    }
    // A large job comes alone in its message, moved here from the proxy's thread.
    const moved = this.options.port !== undefined && records.length === 1 && frame !== undefined && frame.length >= LARGE_RECORD_BYTES ? frame : undefined;
    this.events.records(records, moved);
  }

  private connectSockets(config: WelcomeConfig): void {
    const link = { maxMessageBytes: this.options.maxMessageBytes };
    const logger = this.options.logger;
    if (this.joined === undefined || this.joined.loopback !== config.loopback) {
      this.loopbackSocket?.close();
      this.loopbackSocket = new zmq.Push();
      configureSocket(this.loopbackSocket, link);
      secureClient(this.loopbackSocket, this.options.security);
      this.loopbackSocket.connect(config.loopback);
      this.loopbackOutbox = new Outbox(this.loopbackSocket, logger, 'loopback');
    }
    if (config.next !== (this.joined?.next ?? null)) {
      this.nextSocket?.close();
      this.nextSocket = undefined;
      this.nextOutbox = undefined;
      if (config.next !== null) {
        this.nextSocket = new zmq.Push();
        configureSocket(this.nextSocket, link);
        secureClient(this.nextSocket, this.options.security);
        this.nextSocket.connect(config.next);
        this.nextOutbox = new Outbox(this.nextSocket, logger, 'next stage');
      }
    }
  }

  private onHeartbeat(): void {
    const config = this.joined;
    if (config === undefined || !this.events.active()) return;
    // A proxy in this process (a port) cannot go silent without this thread going too.
    if (this.dealer !== undefined && Date.now() - this.lastHeard > config.heartbeatMs * config.liveness) {
      this.options.logger.warn({ stage: this.options.name }, 'proxy silent; rejoining');
      this.dealer.close();
      this.dealer = this.newDealer();
      this.outbox = new Outbox(this.dealer, this.options.logger, 'proxy');
      this.lastHeard = Date.now();
      this.events.rebuilt();
      return;
    }
    this.outbox.writer.empty(Kind.HEARTBEAT, config.stage, 0);
    this.outbox.schedule();
  }
}
