import http from 'node:http';
import net, { type Socket } from 'node:net';
import { ButterflyError } from '../../errors.js';
import { LARGE_RECORD_BYTES, recycleBody, type ErrorData } from '../../wire/index.js';
import { REQUEST_TIMEOUT, checkHead, errorBody, refusal } from '../checks.js';
import { BodyReader } from './body.js';
import type { EngineHandler, EngineLimits, EngineReply, EngineRequest, HttpEngine, Refusal } from './engine.js';

/**
 * Time idle keep-alive connections stay open once the engine drains, in ms: a request a
 * client sent on one just as the drain began is answered (with `Connection: close`)
 * instead of reset.
 */
export const DRAIN_IDLE_GRACE_MS = 200;

/** Room in llhttp's header limit for the request line around the target: method, spaces, version, CRLF. */
const REQUEST_LINE_BYTES = 64;
/** How long a refused connection keeps reading (and dropping) what the client still sends before it is destroyed, in ms. */
const LINGER_MS = 1000;
const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
/** A request line with a path and no version: HTTP/0.9. */
const HTTP09_LINE = new RegExp(`^${TOKEN} /[^ ]*$`);
/** A well-formed request line with a method llhttp does not know (501, not 400). */
const UNKNOWN_METHOD_LINE = new RegExp(`^${TOKEN} /\\S* HTTP/1\\.[01]$`);
/** A well-formed request line with a version other than 1.0 and 1.1 (505, not 400). */
const OTHER_VERSION_LINE = new RegExp(`^${TOKEN} \\S+ HTTP/\\d\\.\\d$`);
/** The start of a request line still inside its target when the header limit was passed (414, not 431). */
const LONG_TARGET_LINE = new RegExp(`^${TOKEN} [^ \\r\\n]*$`);

/**
 * The `node` engine: node:http and its llhttp parser. Serves HTTP/1.0 and HTTP/1.1 (so
 * `ab`, nginx's default upstream, curl and browsers), answers pipelined requests in order,
 * and applies every limit of `EngineLimits`, the connection-level ones included.
 *
 * Each connection's first bytes are looked at before node:http takes the connection over,
 * for one thing llhttp does not refuse: an HTTP/0.9 request line (`GET /path` and no
 * version), on which llhttp waits for header lines that never come. That first read goes
 * through JavaScript instead of straight into llhttp: about 18 µs of CPU per new
 * connection on the 2-core test machine (17% of a bare node:http hello answered over a
 * new connection each time), nothing per request on a kept-alive one.
 */
export class NodeEngine implements HttpEngine {
  private readonly server: http.Server;
  /** node:http's own handler of a new connection, called once its first bytes were looked at. */
  private readonly takeOver: (socket: Socket) => void;
  /** Connections closed because their client did not read its answers within `writeTimeoutMs`. */
  writeTimeouts = 0;
  connectionWaits = 0;
  bodyRefusals = 0;
  /**
   * What every reply of this engine reports to: whether the engine drains, when a reply of
   * a connection's lane is done (its slot goes to the next waiting request), and when an
   * answer could not all be written at once: until it is, the connection must make
   * progress (an answer of it finishing) within `writeTimeoutMs`, or the sweep closes it,
   * which cancels its requests. A client that stops reading cannot hold a connection, its
   * answers and their memory for ever.
   */
  private readonly owner: ReplyOwner = {
    draining: false,
    releaseBody: (bytes) => {
      this.bodyBytes -= bytes;
    },
    release: (socket, lane) => this.release(socket, lane),
    written: (socket, lane, res) => {
      // Written, or about to be (node:http uncorks at the next tick), with the socket not
      // backed up: nothing to watch (the usual case, and no cost). An answer queued behind an
      // earlier one, or a socket past its high-water mark, is watched.
      if (res.socket === socket && !socket.writableNeedDrain) return;
      if (socket.destroyed) return;
      if (lane.unsent++ === 0) {
        lane.lastWritten = Date.now();
        this.writing.set(socket, lane);
      }
      res.once('finish', () => {
        lane.lastWritten = Date.now();
        if (--lane.unsent === 0) this.writing.delete(socket);
      });
    },
  };

  /** Bytes of request bodies held now, declared or read, until their requests are answered. */
  private bodyBytes = 0;

  /** Counts `bytes` more of a request's body as held by `reply` until it is done; false when they do not fit. */
  private holdBody(reply: NodeReply, bytes: number): boolean {
    if (bytes === 0) return true;
    if (this.bodyBytes + bytes > this.limits.maxBodyBytesInFlight) return false;
    this.bodyBytes += bytes;
    reply.heldBytes += bytes;
    return true;
  }

  /** Connections with answers not yet all written; the sweep closes those that made no progress for `writeTimeoutMs`. */
  private readonly writing = new Map<Socket, Lane>();

  /** Requests in the pipeline, and waiting their turn, per connection. */
  private readonly lanes = new WeakMap<Socket, Lane>();
  /** Connections whose first bytes have not arrived yet (node:http does not know them yet), with when they came, in ms. */
  private readonly fresh = new Map<Socket, number>();
  /**
   * Connections already given their one error response: requests node:http still parses
   * on them (pipelined behind the refused one) and later parse errors are ignored.
   */
  private readonly refused = new WeakSet<Socket>();
  /**
   * Requests node:http parsed behind a chunked body still being read, per connection: a
   * chunked body can be refused (413, 503) only as it arrives, after node:http has handed
   * over what follows it. They go on once the body has been read (within the same read of
   * the connection, so at most what one read holds wait), and are dropped with the
   * connection if it is refused.
   */
  private readonly behindBody = new WeakMap<Socket, (() => void)[]>();
  private readonly checkInterval: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Set at `close()`: when idle connections are closed. */
  private idleTimer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  // One listener of each kind for every fresh connection (`this` is the socket): no closure per connection.
  private readonly onFirstData: (this: Socket, chunk: Buffer) => void;
  private readonly onFreshError: (this: Socket) => void;
  private readonly onFreshClose: (this: Socket) => void;

  constructor(
    private readonly limits: EngineLimits,
    private readonly handler: EngineHandler,
    private readonly onRefusal: Refusal,
  ) {
    this.checkInterval = checkInterval(limits);
    this.server = http.createServer({
      // llhttp counts the request line in its header limit: leave room for the longest
      // target, so that `checkHead` can tell a long target (414) from large headers (431).
      maxHeaderSize: limits.maxHeaderBytes + limits.maxUrlBytes + REQUEST_LINE_BYTES,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestReadTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // node:http checks both timeouts on this interval (30 s unless told): a quarter of the
      // shorter one keeps a 408 within 25% of its limit.
      connectionsCheckingInterval: this.checkInterval,
      // `checkHead` refuses a missing Host with the same 400 as every other refusal.
      requireHostHeader: false,
      insecureHTTPParser: false,
      joinDuplicateHeaders: false,
    });
    this.server.maxConnections = limits.maxConnections;
    // One more than allowed, so that too many fields can be told from exactly enough.
    this.server.maxHeadersCount = limits.maxHeaderCount + 1;
    this.server.on('request', (req, res) => this.onRequest(req, res));
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res, true));
    // `checkHead` answers any other expectation with 417.
    this.server.on('checkExpectation', (req, res) => this.onRequest(req, res));
    this.server.on('connect', (_req: http.IncomingMessage, socket: Socket) => {
      this.endWith(socket, refusal('BF_ERR_NOT_IMPLEMENTED', 'method CONNECT is not implemented'));
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    this.server.on('drop', () => this.onRefusal(503, 'BF_ERR_TOO_MANY_CONNECTIONS'));
    const listeners = this.server.listeners('connection');
    if (listeners.length !== 1) throw new ButterflyError('BF_ERR_INTERNAL', `node:http registered ${listeners.length} connection handlers, expected 1`);
    this.takeOver = listeners[0] as (socket: Socket) => void;
    this.server.removeListener('connection', this.takeOver);
    const firstBytes = (socket: Socket, chunk: Buffer): void => this.onFirstBytes(socket, chunk);
    const forget = (socket: Socket): void => this.forget(socket);
    this.onFirstData = function (this: Socket, chunk: Buffer) {
      firstBytes(this, chunk);
    };
    this.onFreshError = function (this: Socket) {
      forget(this);
      this.destroy();
    };
    this.onFreshClose = function (this: Socket) {
      forget(this);
    };
    this.server.on('connection', (socket: Socket) => {
      this.fresh.set(socket, Date.now());
      socket.on('data', this.onFirstData);
      socket.on('error', this.onFreshError);
      socket.on('close', this.onFreshClose);
    });
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        // Once listening, errors are failed accepts (out of file descriptors, say): the
        // connection is lost, the server goes on.
        this.server.on('error', () => this.onRefusal(503, 'BF_ERR_ACCEPT_FAILED'));
        this.sweepTimer = setInterval(() => this.sweep(), this.checkInterval);
        this.sweepTimer.unref();
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  close(): Promise<void> {
    // From now on every answer says `Connection: close` and ends its connection once
    // written, so that no client sends another request on a connection about to go.
    this.owner.draining = true;
    if (this.closing !== undefined) return this.closing;
    this.closing = new Promise((resolve) => {
      // Stop listening, but leave idle connections a moment: a client may be sending its
      // next request on one right now, and closing under it would reset that request. What
      // comes meanwhile is answered, with `Connection: close`; then the idle ones close.
      net.Server.prototype.close.call(this.server, () => resolve());
      clearInterval(this.sweepTimer);
      this.idleTimer = setTimeout(() => {
        // http.Server's own close: closes the connections without a request, stops its checks.
        this.server.close();
        for (const socket of this.fresh.keys()) socket.destroy();
        this.fresh.clear();
      }, DRAIN_IDLE_GRACE_MS);
      this.idleTimer.unref();
    });
    return this.closing;
  }

  destroy(): Promise<void> {
    const closed = this.close();
    clearTimeout(this.idleTimer);
    this.server.close();
    this.server.closeAllConnections();
    for (const socket of this.fresh.keys()) socket.destroy();
    this.fresh.clear();
    return closed;
  }

  /**
   * The first bytes of a new connection: an HTTP/0.9 request line is refused with 505,
   * anything else goes, these bytes first, to node:http.
   */
  private onFirstBytes(socket: Socket, chunk: Buffer): void {
    this.forget(socket);
    if (isHttp09(chunk, this.limits.maxUrlBytes + REQUEST_LINE_BYTES)) {
      this.endWith(socket, refusal('BF_ERR_HTTP_VERSION', 'HTTP/0.9 is not supported, only HTTP/1.0 and HTTP/1.1'));
      return;
    }
    this.takeOver.call(this.server, socket);
    // node:http also listens for 'data' on the socket (its path for bytes llhttp did not read
    // itself): the bytes read here go that way, so they reach llhttp before any read later.
    if (socket.listenerCount('data') > 0) {
      socket.emit('data', chunk);
    } else {
      socket.pause();
      socket.unshift(chunk);
      socket.resume();
    }
  }

  /** Stops watching a fresh connection. */
  private forget(socket: Socket): void {
    this.fresh.delete(socket);
    socket.off('data', this.onFirstData);
    socket.off('error', this.onFreshError);
    socket.off('close', this.onFreshClose);
  }

  /** 408 for connections that sent nothing within the head's time limit, as node:http does once it has them. */
  private sweep(): void {
    const now = Date.now();
    const since = now - this.limits.headersTimeoutMs;
    for (const [socket, came] of this.fresh) {
      // In arrival order: the first one young enough ends the sweep.
      if (came > since) break;
      this.forget(socket);
      this.endWith(socket, REQUEST_TIMEOUT);
    }
    const stalledSince = now - this.limits.writeTimeoutMs;
    for (const [socket, lane] of this.writing) {
      if (lane.lastWritten > stalledSince) continue;
      // Its client has not taken an answer for the whole write timeout: closing it cancels its requests.
      this.writing.delete(socket);
      this.writeTimeouts++;
      socket.destroy();
    }
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue = false): void {
    // node:http hands over every request it parsed, those behind a refused one too (their
    // answers would never be written, as the connection closes after the refusal): none
    // of them may reach the pipeline.
    if (this.refused.has(req.socket)) return;
    const behind = this.behindBody.get(req.socket);
    if (behind !== undefined) {
      behind.push(() => this.onRequest(req, res, expectsContinue));
      return;
    }
    const raw = req.rawHeaders;
    const headers = new Array<string>(raw.length);
    for (let i = 0; i < raw.length; i += 2) {
      headers[i] = raw[i]!.toLowerCase();
      headers[i + 1] = raw[i + 1]!;
    }
    const method = req.method ?? 'GET';
    const target = req.url ?? '/';
    const bad = checkHead(method, target, req.httpVersion, headers, this.limits);
    if (bad !== null) {
      this.refuse(req.socket, res, bad);
      return;
    }
    if (expectsContinue) res.writeContinue();
    const reply = new NodeReply(res, this.owner, req.socket);
    const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
    if (!hasBody) {
      this.dispatch(req.socket, makeRequest(req, method, target, headers, EMPTY), reply);
      return;
    }
    let refused = false;
    const length = Number(req.headers['content-length']);
    // Bodies held across the server are bounded in bytes: one that does not fit is refused
    // before it is read (by its declared length) or as it arrives (chunked).
    const declared = Number.isSafeInteger(length) && length > 0 ? length : 0;
    if (!this.holdBody(reply, declared)) {
      this.bodyRefusals++;
      this.refuse(req.socket, res, BODIES_FULL);
      return;
    }
    const body = new BodyReader(declared, this.limits.maxBodyBytes);
    if (declared === 0) this.behindBody.set(req.socket, []);
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      if (!body.fits(chunk.length)) {
        refused = true;
        this.refuse(req.socket, res, refusal('BF_ERR_BODY_TOO_LARGE', `body larger than ${this.limits.maxBodyBytes} bytes`));
        return;
      }
      if (declared === 0 && !this.holdBody(reply, chunk.length)) {
        refused = true;
        this.bodyRefusals++;
        this.refuse(req.socket, res, BODIES_FULL);
        return;
      }
      body.add(chunk, true);
    });
    req.on('end', () => {
      if (refused) return;
      this.dispatch(req.socket, makeRequest(req, method, target, headers, body.take()), reply);
      if (declared === 0) this.goOnBehind(req.socket);
    });
  }

  /** The requests that waited behind a chunked body just read go on, in order. */
  private goOnBehind(socket: Socket): void {
    const behind = this.behindBody.get(socket);
    if (behind === undefined) return;
    this.behindBody.delete(socket);
    // One of them may read a chunked body in turn: those after it wait again, in order.
    for (const next of behind) next();
  }

  /**
   * Hands a request to the front end, at most `maxInFlightPerConnection` of one connection
   * at a time: past that, the request waits its turn and the connection is not read until
   * one of its requests is answered (what node:http parsed already waits here, in order).
   */
  private dispatch(socket: Socket, request: EngineRequest, reply: NodeReply): void {
    let lane = this.lanes.get(socket);
    if (lane === undefined) {
      lane = { inFlight: 0, waiting: [], unsent: 0, lastWritten: 0 };
      this.lanes.set(socket, lane);
      socket.once('close', () => this.writing.delete(socket));
    }
    reply.lane = lane;
    if (lane.inFlight >= this.limits.maxInFlightPerConnection) {
      this.connectionWaits++;
      lane.waiting.push({ request, reply });
      if (!socket.isPaused()) socket.pause();
      return;
    }
    lane.inFlight++;
    this.handler(request, reply);
  }

  private release(socket: Socket, lane: Lane): void {
    lane.inFlight--;
    while (lane.waiting.length > 0 && lane.inFlight < this.limits.maxInFlightPerConnection) {
      const next = lane.waiting.shift()!;
      if (next.reply.aborted) continue;
      lane.inFlight++;
      this.handler(next.request, next.reply);
    }
    if (lane.waiting.length === 0 && socket.isPaused() && !socket.destroyed) socket.resume();
  }

  /**
   * Answers a refused request through node:http (so after the answers before it) and
   * closes the connection; requests after it on the connection are ignored.
   */
  private refuse(socket: Socket, res: http.ServerResponse, err: ErrorData): void {
    this.refused.add(socket);
    this.behindBody.delete(socket);
    this.onRefusal(err.status, err.code);
    const { headers, body } = errorBody(err);
    writeResponse(res, err.status, headers, body, true);
  }

  /** llhttp could not parse the request, or it did not arrive in time. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    // llhttp stays in its error state and reports again on every later packet.
    if (this.refused.has(socket)) return;
    this.refused.add(socket);
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const { rawPacket, bytesParsed } = err as { rawPacket?: Buffer; bytesParsed?: number };
    this.answerInTurn(socket, clientErrorFor(err.code, rawPacket, bytesParsed));
  }

  /**
   * Sends `err` once the answers to the requests before the faulty one have gone out, so
   * that pipelined answers stay in order. A request still being read (its body timed out)
   * never gets another answer: then `err` goes at once.
   */
  private answerInTurn(socket: Socket, err: ErrorData): void {
    const pending = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (pending != null && (pending.writableEnded || pending.req.complete)) {
      pending.once('finish', () => this.answerInTurn(socket, err));
      return;
    }
    this.endWith(socket, err);
  }

  /**
   * Writes `err` as a whole response straight to the socket and closes it: for requests
   * node:http never turned into a request object. The connection keeps dropping what the
   * client still sends for a moment, so that the close does not become a reset that
   * could destroy the response before the client read it.
   */
  private endWith(socket: Socket, err: ErrorData): void {
    this.refused.add(socket);
    if (!socket.writable) {
      // Already ending after a response of its own (a refusal node:http sent first): let it flush.
      if (!socket.writableEnded) socket.destroy();
      return;
    }
    this.onRefusal(err.status, err.code);
    socket.on('error', () => socket.destroy());
    socket.end(rawResponse(err));
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    socket.once('close', () => clearTimeout(timer));
    socket.resume();
  }
}

const EMPTY = Buffer.alloc(0);

/** 503 for a body that does not fit the server's bound on body bytes held at once. */
const BODIES_FULL: ErrorData = Object.freeze(refusal('BF_ERR_OVERLOADED', 'too many request bytes in flight; try again'));

/** How often timeouts are checked, in ms: a quarter of the shortest one, from 10 ms to 1 s. */
function checkInterval(limits: EngineLimits): number {
  return Math.max(10, Math.min(1000, Math.floor(Math.min(limits.headersTimeoutMs, limits.requestReadTimeoutMs, limits.writeTimeoutMs) / 4)));
}

function makeRequest(req: http.IncomingMessage, method: string, target: string, headers: string[], body: Buffer): EngineRequest {
  return { method, target, httpVersion: req.httpVersion, headers, body, remoteAddress: req.socket.remoteAddress ?? '' };
}

/** True when the first line of `chunk` (after any empty lines) is a request line without an HTTP version. */
function isHttp09(chunk: Buffer, maxLine: number): boolean {
  let start = 0;
  while (start < chunk.length && (chunk[start] === 0x0d || chunk[start] === 0x0a)) start++;
  const end = chunk.subarray(0, start + maxLine).indexOf(0x0a, start);
  if (end === -1) return false;
  return HTTP09_LINE.test(chunk.toString('latin1', start, chunk[end - 1] === 0x0d ? end - 1 : end));
}

/** The line of `packet` in which llhttp stopped at `offset`, from its start to its end or the packet's, without CR LF. */
function lineAt(packet: Buffer | undefined, offset: number | undefined): string {
  if (packet === undefined) return '';
  const at = Math.min(offset ?? 0, packet.length);
  const start = at === 0 ? 0 : packet.lastIndexOf(0x0a, at - 1) + 1;
  let end = packet.indexOf(0x0a, at);
  if (end === -1) end = packet.length;
  return packet.toString('latin1', start, Math.min(end, start + 16_384)).replace(/\r$/, '');
}

/**
 * Maps llhttp's parse errors to the status the contract gives them. Where one llhttp code
 * covers two answers, the line llhttp stopped in tells them apart.
 */
function clientErrorFor(code: string | undefined, packet: Buffer | undefined, offset: number | undefined): ErrorData {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return REQUEST_TIMEOUT;
    case 'HPE_HEADER_OVERFLOW':
      if (LONG_TARGET_LINE.test(lineAt(packet, offset))) return refusal('BF_ERR_URL_TOO_LONG', 'request target too long');
      return refusal('BF_ERR_HEADERS_TOO_LARGE', 'header block too large');
    case 'HPE_INVALID_VERSION':
      if (OTHER_VERSION_LINE.test(lineAt(packet, offset))) return refusal('BF_ERR_HTTP_VERSION', 'only HTTP/1.0 and HTTP/1.1 are supported');
      return refusal('BF_ERR_BAD_REQUEST', 'malformed request line');
    case 'HPE_PAUSED_H2_UPGRADE':
      // The HTTP/2 connection preface, `PRI * HTTP/2.0`.
      return refusal('BF_ERR_HTTP_VERSION', 'HTTP/2 is not supported, only HTTP/1.0 and HTTP/1.1');
    case 'HPE_INVALID_METHOD':
      if (UNKNOWN_METHOD_LINE.test(lineAt(packet, offset))) return refusal('BF_ERR_NOT_IMPLEMENTED', 'method not implemented');
      return refusal('BF_ERR_BAD_REQUEST', 'malformed request line');
    case 'HPE_INVALID_TRANSFER_ENCODING':
      // llhttp raises it for framing faults only (with Content-Length, chunked not last or
      // twice); a coding it merely does not know reaches `checkHead`, which answers 501.
      return refusal('BF_ERR_BAD_REQUEST', 'malformed Transfer-Encoding');
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return refusal('BF_ERR_BAD_REQUEST', 'malformed Content-Length');
    case 'HPE_INVALID_CHUNK_SIZE':
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return refusal('BF_ERR_BAD_REQUEST', 'malformed chunked body');
    default:
      return refusal('BF_ERR_BAD_REQUEST', 'malformed request');
  }
}

/** A whole response with Date, Content-Type, Content-Length and `Connection: close`. */
function rawResponse(err: ErrorData): Buffer {
  const { headers, body } = errorBody(err);
  let head = `HTTP/1.1 ${err.status} ${http.STATUS_CODES[err.status] ?? 'Error'}\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  head += `date: ${new Date().toUTCString()}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

function writeResponse(res: http.ServerResponse, status: number, headers: readonly string[], body: Buffer, close: boolean): void {
  const all = headers.slice();
  all.push('content-length', String(body.length));
  if (close) all.push('connection', 'close');
  res.writeHead(status, all);
  // Once written, a large body's memory may take the next large request's body.
  if (body.length >= LARGE_RECORD_BYTES) res.once('finish', () => recycleBody(body));
  res.end(body);
}

/** One connection's requests in the pipeline, and those waiting their turn, in order. */
interface Lane {
  inFlight: number;
  readonly waiting: { readonly request: EngineRequest; readonly reply: NodeReply }[];
  /** Answers handed to node:http and not yet all written. */
  unsent: number;
  /** When an answer of it last finished (or the first unsent one was handed over), ms since the epoch. */
  lastWritten: number;
}

/** What a reply reports to its engine (see `NodeEngine.owner`). */
interface ReplyOwner {
  /** Set once the engine drains: every answer then closes its connection. */
  draining: boolean;
  release(socket: Socket, lane: Lane): void;
  releaseBody(bytes: number): void;
  written(socket: Socket, lane: Lane, res: http.ServerResponse): void;
}

class NodeReply implements EngineReply {
  private abortFn: (() => void) | undefined;
  private sent = false;
  aborted = false;
  /** The lane of its connection, once it was handed to the front end (see `dispatch`). */
  lane: Lane | undefined;
  /** Bytes of its request's body counted against the server's bound until it is done. */
  heldBytes = 0;

  constructor(
    private readonly res: http.ServerResponse,
    private readonly owner: ReplyOwner,
    private readonly socket: Socket,
  ) {
    res.once('close', () => {
      if (this.sent) return;
      this.aborted = true;
      this.abortFn?.();
      this.done();
    });
  }

  onAbort(fn: () => void): void {
    this.abortFn = fn;
  }

  /** Gives its lane slot back, once: it has been sent or its client has gone. */
  private done(): void {
    if (this.heldBytes > 0) {
      this.owner.releaseBody(this.heldBytes);
      this.heldBytes = 0;
    }
    const lane = this.lane;
    this.lane = undefined;
    if (lane !== undefined) this.owner.release(this.socket, lane);
  }

  send(status: number, headers: readonly string[], body: Buffer, close: boolean): void {
    if (this.sent || this.aborted) return;
    this.sent = true;
    writeResponse(this.res, status, headers, body, close || this.owner.draining);
    if (this.lane !== undefined) this.owner.written(this.socket, this.lane, this.res);
    this.done();
  }
}
