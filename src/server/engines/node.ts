import http from 'node:http';
import type { Socket } from 'node:net';
import type { ErrorData } from '../../wire/index.js';
import { checkHead, errorBody, refusal } from '../checks.js';
import type { EngineHandler, EngineLimits, EngineReply, EngineRequest, HttpEngine, Refusal } from './engine.js';

/**
 * The `node` engine: node:http and its llhttp parser. Serves HTTP/1.0 and HTTP/1.1 (so
 * `ab`, nginx's default upstream, curl and browsers), answers pipelined requests in order.
 */
export class NodeEngine implements HttpEngine {
  private readonly server: http.Server;

  constructor(
    private readonly limits: EngineLimits,
    private readonly handler: EngineHandler,
    private readonly onRefusal: Refusal,
  ) {
    this.server = http.createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestReadTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      insecureHTTPParser: false,
      joinDuplicateHeaders: false,
    });
    // One more than allowed, so that too many fields can be told from exactly enough.
    this.server.maxHeadersCount = limits.maxHeaderCount + 1;
    this.server.on('request', (req, res) => this.onRequest(req, res));
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res, true));
    this.server.on('checkExpectation', (req, res) => {
      this.refuse(res, { code: 'BF_ERR_EXPECTATION', status: 417, message: `expectation ${String(req.headers.expect)} not supported` }, true);
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue = false): void {
    const raw = req.rawHeaders;
    const headers = new Array<string>(raw.length);
    for (let i = 0; i < raw.length; i += 2) {
      headers[i] = raw[i]!.toLowerCase();
      headers[i + 1] = raw[i + 1]!;
    }
    const method = req.method ?? 'GET';
    const target = req.url ?? '/';
    const bad = checkHead(method, target, headers, this.limits);
    if (bad !== null) {
      this.refuse(res, bad, true);
      return;
    }
    if (expectsContinue) res.writeContinue();
    const reply = new NodeReply(req, res);
    const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
    if (!hasBody) {
      this.handler(makeRequest(req, method, target, headers, EMPTY), reply);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > this.limits.maxBodyBytes) {
        refused = true;
        this.refuse(res, refusal('BF_ERR_BODY_TOO_LARGE', `body larger than ${this.limits.maxBodyBytes} bytes`), true);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (refused) return;
      this.handler(makeRequest(req, method, target, headers, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)), reply);
    });
  }

  private refuse(res: http.ServerResponse, err: ErrorData, close: boolean): void {
    this.onRefusal(err.status, err.code);
    const { headers, body } = errorBody(err);
    writeResponse(res, err.status, headers, body, close);
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (!socket.writable || (err as { code?: string }).code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const e = clientErrorFor(err.code, (err as { rawPacket?: Buffer }).rawPacket);
    this.onRefusal(e.status, e.code);
    const { headers, body } = errorBody(e);
    let head = `HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? 'Error'}\r\n`;
    for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    head += `date: ${new Date().toUTCString()}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`;
    socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  }
}

const EMPTY = Buffer.alloc(0);

function makeRequest(req: http.IncomingMessage, method: string, target: string, headers: string[], body: Buffer): EngineRequest {
  return { method, target, httpVersion: req.httpVersion, headers, body, remoteAddress: req.socket.remoteAddress ?? '' };
}

/** Maps llhttp's parse errors to the status the contract gives them. */
function clientErrorFor(code: string | undefined, rawPacket: Buffer | undefined): ErrorData {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return refusal('BF_ERR_HEADERS_TOO_LARGE', 'header block too large');
    case 'HPE_INVALID_VERSION':
      return refusal('BF_ERR_HTTP_VERSION', 'only HTTP/1.0 and HTTP/1.1 are supported');
    case 'HPE_INVALID_METHOD': {
      // A well-formed request line with a method llhttp does not know is 501; garbage is 400.
      const line = rawPacket?.subarray(0, 8192).toString('latin1').split('\n', 1)[0] ?? '';
      if (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ \/\S* HTTP\/1\.[01]\r?$/.test(line)) return refusal('BF_ERR_NOT_IMPLEMENTED', 'method not implemented');
      return refusal('BF_ERR_BAD_REQUEST', 'malformed request line');
    }
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return refusal('BF_ERR_NOT_IMPLEMENTED', 'transfer coding not implemented');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { code: 'BF_ERR_REQUEST_TIMEOUT', status: 408, message: 'request not received in time' };
    default:
      return refusal('BF_ERR_BAD_REQUEST', 'malformed request');
  }
}

function writeResponse(res: http.ServerResponse, status: number, headers: readonly string[], body: Buffer, close: boolean): void {
  const all = headers.slice();
  all.push('content-length', String(body.length));
  if (close) all.push('connection', 'close');
  res.writeHead(status, all);
  res.end(body);
}

class NodeReply implements EngineReply {
  private abortFn: (() => void) | undefined;
  private sent = false;
  aborted = false;

  constructor(
    req: http.IncomingMessage,
    private readonly res: http.ServerResponse,
  ) {
    res.once('close', () => {
      if (this.sent) return;
      this.aborted = true;
      this.abortFn?.();
    });
    void req;
  }

  onAbort(fn: () => void): void {
    this.abortFn = fn;
  }

  send(status: number, headers: readonly string[], body: Buffer, close: boolean): void {
    if (this.sent || this.aborted) return;
    this.sent = true;
    writeResponse(this.res, status, headers, body, close);
  }
}
