import { createRequire } from 'node:module';
import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { ButterflyError, UwsUnavailableError } from '../../errors.js';
import { recycleBody, type ErrorData } from '../../wire/index.js';
import { REQUEST_TIMEOUT, checkFields, checkHead, errorBody, refusal, statusLine } from '../checks.js';
import { BodyReader } from './body.js';
import type { EngineHandler, EngineLimits, EngineReply, HttpEngine, Refusal } from './engine.js';

type Uws = typeof import('uWebSockets.js');


/**
 * Loads uWebSockets.js and checks that its native addon, not the pure-JS fallback the
 * package silently switches to, is what loaded.
 * @throws UwsUnavailableError when the native addon did not load.
 */
export async function loadUws(): Promise<Uws> {
  const uws = (await import('uWebSockets.js')).default as unknown as Uws;
  const cache = createRequire(import.meta.url).cache;
  const native = Object.keys(cache).some((path) => path.includes('uWebSockets.js') && path.endsWith('.node'));
  if (!native) throw new UwsUnavailableError();
  return uws;
}

/**
 * The `uws` engine: uWebSockets.js, the fastest, for HTTP/1.1 clients that send `Host`.
 * The checks of `checkFields` and `checkHead` run before anything else, since uWS accepts
 * duplicate or empty Content-Length, very long targets and header blocks, DEL in values,
 * any `Host` value, and `#` or bytes past ASCII in the target; a body that does not arrive
 * within `requestReadTimeoutMs` of the head is answered 408.
 *
 * What uWS (this build, 20.30) does before a request reaches us, and we cannot change:
 * - HTTP/1.0 requests, HTTP/1.1 requests without `Host`, targets that do not start with
 *   `/` (`OPTIONS *` too), and most malformed heads (bad versions, control characters,
 *   obsolete line folding, whitespace before a colon, more than about 47 header fields)
 *   get no response: the connection hangs until uWS's idle timeout (about 10 s). An
 *   unknown method, a malformed `Content-Length`, both `Content-Length` and
 *   `Transfer-Encoding`, or a bad chunk size close it unanswered.
 * - A chunk whose data is not followed by CRLF is accepted, as are chunk sizes with
 *   trailing whitespace; a chunk size with a leading space is read as the last chunk, and
 *   chunk data longer than its size is read as the next chunk size (the connection waits).
 *   A chunk extension gets no response (the connection hangs); a trailer field closes the
 *   connection unanswered. A header line with an empty name hides itself and every field
 *   after it, framing ones included.
 * - `Expect: 100-continue` is answered `100 Continue` before the handler runs, so a body
 *   too large is refused with 413 after the 100, not instead of it.
 * - A request that arrives before the one before it is answered closes the connection,
 *   unanswered. uWS also takes what follows a finished response in the bytes it read for a
 *   new request, `Connection: close` or not; so this engine answers nothing while uWS
 *   parses (see `UwsReply.send`), and a request pipelined behind a refused one, or behind
 *   one answered without the pipeline, closes the connection before that answer goes out.
 * - Connections are closed by uWS after about 10 s idle or with an unfinished head, without
 *   408; they cannot be counted, so `maxConnections`, `keepAliveTimeoutMs` and
 *   `headersTimeoutMs` do not apply.
 */
export class UwsEngine implements HttpEngine {
  private readonly app: TemplatedApp;
  private listenSocket: us_listen_socket | undefined;
  /** uWS applies no write timeout of ours: a connection that does not read closes at its own idle timeout. */
  readonly writeTimeouts = 0;
  readonly connectionWaits = 0;
  readonly bodyRefusals = 0;
  /** What every reply of this engine looks at: whether it drains, whether uWS is parsing. */
  private readonly context: ReplyContext = { draining: false, parsing: false };

  constructor(
    private readonly uws: Uws,
    private readonly limits: EngineLimits,
    private readonly handler: EngineHandler,
    private readonly onRefusal: Refusal,
  ) {
    this.app = uws.App();
    this.app.any('/*', (res, req) => {
      this.context.parsing = true;
      try {
        this.onRequest(res, req);
      } finally {
        this.context.parsing = false;
      }
    });
  }

  private onRequest(res: HttpResponse, req: HttpRequest): void {
    // This uWS build reports every method in lower case, so the case a client sent is lost.
    const method = req.getMethod().toUpperCase();
    const reply = new UwsReply(res, method === 'HEAD', this.context);
    const path = req.getUrl();
    const query = req.getQuery();
    const target = query === undefined || query === '' ? path : `${path}?${query}`;
    const headers: string[] = [];
    req.forEach((name, value) => {
      headers.push(name, value);
    });
    const remoteAddress = Buffer.from(res.getRemoteAddressAsText()).toString('latin1');
    const bad = checkFields(headers) ?? checkHead(method, target, '1.1', headers, this.limits);
    if (bad !== null) {
      this.refuse(reply, bad);
      return;
    }
    const contentLength = req.getHeader('content-length');
    const chunked = req.getHeader('transfer-encoding') !== '';
    if (contentLength === '' || contentLength === '0') {
      if (!chunked) {
        this.handler({ method, target, httpVersion: '1.1', headers, body: EMPTY, remoteAddress }, reply);
        return;
      }
    }
    const body = new BodyReader(chunked ? 0 : Number(contentLength), this.limits.maxBodyBytes);
    const timer = setTimeout(() => {
      if (!reply.aborted && !reply.sent) this.refuse(reply, REQUEST_TIMEOUT);
    }, this.limits.requestReadTimeoutMs);
    reply.onAbort(() => clearTimeout(timer));
    const take = (chunk: ArrayBuffer, isLast: boolean): void => {
      if (reply.aborted || reply.sent) return;
      if (!body.fits(chunk.byteLength)) {
        clearTimeout(timer);
        this.refuse(reply, refusal('BF_ERR_BODY_TOO_LARGE', `body larger than ${this.limits.maxBodyBytes} bytes`));
        return;
      }
      // The chunk's memory is uWS's and is reused after this callback: it is copied.
      body.add(Buffer.from(chunk), false);
      if (isLast) {
        clearTimeout(timer);
        this.handler({ method, target, httpVersion: '1.1', headers, body: body.take(), remoteAddress }, reply);
      }
    };
    res.onData((chunk, isLast) => {
      this.context.parsing = true;
      try {
        take(chunk, isLast);
      } finally {
        this.context.parsing = false;
      }
    });
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.app.listen(host, port, (socket) => {
        if (socket === false) {
          reject(new ButterflyError('BF_ERR_LISTEN_FAILED', `uws engine could not listen on ${host}:${port}`));
          return;
        }
        this.listenSocket = socket;
        resolve(this.uws.us_socket_local_port(socket as unknown as Parameters<Uws['us_socket_local_port']>[0]));
      });
    });
  }

  close(): Promise<void> {
    // From now on every answer says `Connection: close` and ends its connection.
    this.context.draining = true;
    if (this.listenSocket !== undefined) {
      this.uws.us_listen_socket_close(this.listenSocket);
      this.listenSocket = undefined;
    }
    return Promise.resolve();
  }

  /** This uWS build cannot close an app's open sockets: they end with their next answer, as on `close()`. */
  destroy(): Promise<void> {
    return this.close();
  }

  private refuse(reply: UwsReply, err: ErrorData): void {
    this.onRefusal(err.status, err.code);
    const { headers, body } = errorBody(err);
    reply.send(err.status, headers, body, true);
  }
}

const EMPTY = Buffer.alloc(0);

/** What the replies of one engine share with it. */
interface ReplyContext {
  /** Set once the engine drains: every answer then closes its connection. */
  draining: boolean;
  /** True while uWS runs our code in the middle of parsing what it read from a connection. */
  parsing: boolean;
}

class UwsReply implements EngineReply {
  aborted = false;
  sent = false;
  private abortFn: (() => void) | undefined;
  private readonly writeBound: () => void;
  private status = 0;
  private headers: readonly string[] = [];
  private body: Buffer = EMPTY;
  private close = false;

  constructor(
    private readonly res: HttpResponse,
    private readonly head: boolean,
    private readonly context: ReplyContext,
  ) {
    // Must be registered before any asynchronous work: uWS requires it.
    res.onAborted(() => {
      this.aborted = true;
      this.abortFn?.();
    });
    this.writeBound = () => this.write();
  }

  onAbort(fn: () => void): void {
    this.abortFn = fn;
  }

  /**
   * Sends the response, at once or, when uWS is parsing (a refusal, the health path), once
   * it is done. uWS sends nothing written during its parse before the end of it, and it
   * takes whatever follows a finished response in what it read as a new request, even
   * after `Connection: close`: a refusal or answer written then would let a request
   * pipelined behind it through, smuggled past a front proxy that framed the bytes
   * otherwise. Held until the parse is over (`setImmediate`), the response is still
   * pending when uWS meets a pipelined request, and uWS closes the connection there and
   * then, unanswered; with nothing pipelined the response goes out in the same turn of
   * the event loop.
   */
  send(status: number, headers: readonly string[], body: Buffer, close: boolean): void {
    if (this.sent || this.aborted) return;
    this.sent = true;
    this.status = status;
    this.headers = headers;
    this.body = body;
    this.close = close || this.context.draining;
    if (this.context.parsing) setImmediate(() => this.writeLater());
    else this.res.cork(this.writeBound);
  }

  private writeLater(): void {
    if (!this.aborted) this.res.cork(this.writeBound);
  }

  private write(): void {
    const res = this.res;
    res.writeStatus(statusLine(this.status));
    const h = this.headers;
    for (let i = 0; i + 1 < h.length; i += 2) res.writeHeader(h[i]!, h[i + 1]!);
    if (this.head) {
      // endWithoutBody(length) leaves this uWS build expecting a body and it drops the
      // connection's next request: state the length ourselves and end with no arguments.
      res.writeHeader('content-length', String(this.body.length));
      if (this.close) res.writeHeader('connection', 'close');
      res.endWithoutBody();
    } else {
      res.end(this.body, this.close);
      // uWS copied what the socket did not take: a large body's memory may take the next large request's body.
      recycleBody(this.body);
    }
  }
}
