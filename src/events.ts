/**
 * Events across the processes and hosts of a pipeline: publishers send to one forwarder
 * (a ZeroMQ XSUB socket), which hands each event to every subscriber of its topic (an XPUB
 * socket). Delivery is at most once: an event published while no one subscribes to its
 * topic, or that a slow subscriber has no room for, is dropped, never retried.
 */
import * as zmq from 'zeromq';
import { InvalidOptionError } from './errors.js';
import { type Logger, silentLogger } from './logger.js';
import { check } from './options.js';
import { type LinkSecurity, SEND_TIMEOUT_MS, receiveEach, secureClient, secureServer } from './wire/index.js';

/** Where a pipeline's events go: publishers connect to `publish`, subscribers to `subscribe`. */
export interface EventAddresses {
  /** The forwarder's XSUB socket, where events are published. */
  readonly publish: string;
  /** The forwarder's XPUB socket, where subscribers connect. */
  readonly subscribe: string;
}

/** A handler of one topic's events: the data as published (JSON values parsed, strings and Buffers as they were). */
export type EventHandler = (data: unknown, topic: string) => void;

/** Events a publisher queues while its socket is busy; past it, new ones are dropped. */
const PUBLISH_QUEUE = 1024;
/** Events a subscriber's socket holds for it, and the forwarder for each subscriber; past it, new ones are dropped. */
const EVENT_HIGH_WATER_MARK = 1000;
const TOPIC_MAX_BYTES = 255;

const enum Encoding {
  Json = 0x6a,
  Text = 0x73,
  Bytes = 0x62,
}

/** An event's data as it travels: a type byte, then JSON, UTF-8 text or the bytes. */
export function encodeEvent(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return Buffer.concat([Buffer.of(Encoding.Bytes), data]);
  if (typeof data === 'string') return Buffer.concat([Buffer.of(Encoding.Text), Buffer.from(data, 'utf8')]);
  return Buffer.concat([Buffer.of(Encoding.Json), Buffer.from(JSON.stringify(data ?? null), 'utf8')]);
}

function decode(frame: Buffer): unknown {
  const body = frame.subarray(1);
  if (frame[0] === Encoding.Bytes) return Buffer.from(body);
  if (frame[0] === Encoding.Text) return body.toString('utf8');
  return JSON.parse(body.toString('utf8')) as unknown;
}

/**
 * Checks an event topic: a non-empty string of at most 255 bytes.
 * @throws InvalidOptionError naming `topic`.
 */
export function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || topic === '' || Buffer.byteLength(topic) > TOPIC_MAX_BYTES) {
    throw new InvalidOptionError('topic', `a non-empty string of at most ${TOPIC_MAX_BYTES} bytes`, topic);
  }
}

/** Options of the forwarder. */
export interface EventBusOptions extends EventAddresses {
  /** CURVE keys: both sockets let in only the allowlist's keys. Default none (plaintext). */
  readonly security?: LinkSecurity | undefined;
  readonly logger?: Logger;
}

/**
 * The forwarder every event goes through: binds `publish` (XSUB) and `subscribe` (XPUB),
 * and passes events one way and subscriptions the other.
 */
export class EventBus {
  private currentState: 'starting' | 'running' | 'closed' = 'starting';
  private readonly inbound = new zmq.XSubscriber();
  private readonly outbound = new zmq.XPublisher();
  private readonly releases: (() => void)[] = [];
  private loops: Promise<void>[] = [];

  constructor(private readonly options: EventBusOptions) {
    check('loopback', options.publish, 'events.publish');
    check('loopback', options.subscribe, 'events.subscribe');
    for (const socket of [this.inbound, this.outbound]) socket.linger = 0;
    this.outbound.sendHighWaterMark = EVENT_HIGH_WATER_MARK;
    // A subscriber that takes nothing loses events; the forwarder never waits for it.
    this.outbound.noDrop = false;
  }

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'closed' {
    return this.currentState;
  }

  /** Binds both sockets and starts forwarding. */
  async start(): Promise<void> {
    const logger = this.options.logger ?? silentLogger;
    this.releases.push(await secureServer(this.inbound, this.options.security, logger), await secureServer(this.outbound, this.options.security, logger));
    await this.inbound.bind(this.options.publish);
    await this.outbound.bind(this.options.subscribe);
    this.currentState = 'running';
    this.loops = [this.forward(this.inbound, this.outbound), this.forward(this.outbound, this.inbound)];
  }

  /** Stops forwarding and closes both sockets. Idempotent. */
  async close(): Promise<void> {
    if (this.currentState === 'closed') return;
    this.currentState = 'closed';
    this.inbound.close();
    this.outbound.close();
    for (const release of this.releases.splice(0)) release();
    await Promise.all(this.loops);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async forward(from: zmq.XSubscriber | zmq.XPublisher, to: zmq.XSubscriber | zmq.XPublisher): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await from.receive();
      } catch {
        return;
      }
      try {
        await to.send(frames);
      } catch {
        if (to.closed) return;
        // No room for it (a subscriber full): at most once, so it is dropped.
      }
    }
  }
}

/** Options of an events client. */
export interface EventsOptions {
  /** The forwarder's `publish` address; needed to publish. */
  readonly publish?: string | undefined;
  /** The forwarder's `subscribe` address; needed to subscribe. */
  readonly subscribe?: string | undefined;
  /** CURVE keys, when the forwarder has them. */
  readonly security?: LinkSecurity | undefined;
}

/**
 * A process's end of the events of a pipeline: `publish(topic, data)` and
 * `subscribe(topic, handler)`. Its sockets are made on first use.
 */
export class Events {
  private publisher: zmq.Publisher | undefined;
  private subscriber: zmq.Subscriber | undefined;
  private readonly queue: Buffer[][] = [];
  private sending = false;
  private readonly handlers = new Map<string, Set<EventHandler>>();
  private loop: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly options: EventsOptions) {
    if (options.publish !== undefined) check('loopback', options.publish, 'events.publish');
    if (options.subscribe !== undefined) check('loopback', options.subscribe, 'events.subscribe');
  }

  /**
   * Publishes `data` (a JSON value, a string or a Buffer) under `topic`, at most once: it
   * reaches the subscribers of the topic connected at the time, and no one else.
   * @throws InvalidOptionError for a bad topic, or without a `publish` address; TypeError
   *   for data JSON cannot carry (a BigInt, a cycle).
   */
  publish(topic: string, data: unknown): void {
    checkTopic(topic);
    if (this.closed) return;
    this.connectPublisher();
    if (this.queue.length >= PUBLISH_QUEUE) return;
    this.queue.push([Buffer.from(topic, 'utf8'), encodeEvent(data)]);
    void this.flush();
  }

  /** Publishes an event whose data is already encoded (`encodeEvent`), as a worker thread's proxy does for it. */
  publishEncoded(topic: string, encoded: Buffer): void {
    checkTopic(topic);
    if (this.closed) return;
    this.connectPublisher();
    if (this.queue.length >= PUBLISH_QUEUE) return;
    this.queue.push([Buffer.from(topic, 'utf8'), Buffer.from(encoded)]);
    void this.flush();
  }

  /**
   * Calls `handler` with every event of `topic` published from now on (none from before:
   * a subscriber joining late misses what came earlier).
   * @returns a function that ends this subscription.
   * @throws InvalidOptionError for a bad topic, or without a `subscribe` address.
   */
  subscribe(topic: string, handler: EventHandler): () => void {
    checkTopic(topic);
    if (this.options.subscribe === undefined) throw new InvalidOptionError('events.subscribe', 'the address events are received from', undefined);
    if (this.closed) return () => {};
    if (this.subscriber === undefined) {
      this.subscriber = new zmq.Subscriber();
      this.subscriber.linger = 0;
      this.subscriber.receiveHighWaterMark = EVENT_HIGH_WATER_MARK;
      secureClient(this.subscriber, this.options.security);
      this.subscriber.connect(this.options.subscribe);
      this.loop = receiveEach(this.subscriber, (frames) => this.onEvent(frames), silentLogger, 'events');
    }
    let set = this.handlers.get(topic);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(topic, set);
      this.subscriber.subscribe(topic);
    }
    set.add(handler);
    return () => {
      const current = this.handlers.get(topic);
      if (current === undefined || !current.delete(handler) || current.size > 0) return;
      this.handlers.delete(topic);
      this.subscriber?.unsubscribe(topic);
    };
  }

  /**
   * Connects the publishing socket now rather than at the first `publish`: ZeroMQ drops
   * what a socket publishes before its connection is up.
   * @throws InvalidOptionError without a `publish` address.
   */
  connectPublisher(): void {
    if (this.options.publish === undefined) throw new InvalidOptionError('events.publish', 'the address events are published to', undefined);
    if (this.publisher !== undefined || this.closed) return;
    this.publisher = new zmq.Publisher();
    this.publisher.linger = 0;
    this.publisher.sendHighWaterMark = EVENT_HIGH_WATER_MARK;
    this.publisher.sendTimeout = SEND_TIMEOUT_MS;
    secureClient(this.publisher, this.options.security);
    this.publisher.connect(this.options.publish);
  }

  /** Closes the sockets; events still queued to publish are dropped. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    this.publisher?.close();
    this.subscriber?.close();
    await this.loop;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async flush(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.queue.length > 0 && this.publisher !== undefined && !this.publisher.closed) {
        try {
          await this.publisher.send(this.queue.shift()!);
        } catch {
          // Dropped: at most once.
        }
      }
    } finally {
      this.sending = false;
    }
  }

  private onEvent(frames: Buffer[]): void {
    const [topicFrame, dataFrame] = frames;
    if (topicFrame === undefined || dataFrame === undefined || dataFrame.length === 0) return;
    // ZeroMQ matches topics by prefix: only the exact topic's handlers are called.
    const topic = topicFrame.toString('utf8');
    const set = this.handlers.get(topic);
    if (set === undefined) return;
    let data: unknown;
    try {
      data = decode(dataFrame);
    } catch {
      return;
    }
    for (const handler of set) {
      try {
        handler(data, topic);
      } catch {
        // A handler's failure is its own; the others still get the event.
      }
    }
  }
}
