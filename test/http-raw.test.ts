import { STATUS_CODES } from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Butterfly } from '../dist/index.js';
import { fixture, start } from './helpers.js';

/**
 * The HTTP/1.x front end over raw sockets: every vector is written byte for byte and the
 * test checks the exact status line, that every final response carries Date, Content-Type
 * and Content-Length, and whether the server closed the connection. Both engines run the
 * same tests, except where uWS itself answers before our code sees the request (listed
 * where the vectors are chosen).
 */

const ECHO = { stages: [{ module: fixture('http-echo.js'), workers: 1 }] };

interface RawResponse {
  statusLine: string;
  status: number;
  /** Header names in lower case; repeated fields joined with `, `. */
  headers: Record<string, string>;
  body: string;
}

/** `HTTP/1.1 413 Payload Too Large`: the status line both engines send for `status`. */
function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}`;
}

/**
 * A raw client connection (node:net) that reads responses one at a time, so that a test
 * can check the exact status line, the order of pipelined answers, and whether the
 * server closed the connection. Every wait is bounded and ends early on the event it
 * waits for.
 */
class Conn {
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;
  private readonly wakers = new Set<() => void>();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = this.buffer.length === 0 ? d : Buffer.concat([this.buffer, d]);
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    // A reset counts as a close.
    socket.on('error', end);
  }

  /** Connects to 127.0.0.1:`port`. */
  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new Conn(socket));
      });
      socket.once('error', reject);
    });
  }

  /** True once the server closed (or reset) the connection. */
  get isClosed(): boolean {
    return this.ended;
  }

  /** Bytes received and not yet read as a response. */
  get unread(): string {
    return this.buffer.toString('latin1');
  }

  write(bytes: string | Buffer): void {
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  }

  /**
   * The next response. Final responses (2xx and up) are checked to carry Date, a
   * Content-Length that matches the body and, when there is content, Content-Type. `head`
   * says the request was HEAD: the response then has no body whatever its Content-Length.
   * @throws when no complete response arrives within `withinMs` or before the close.
   */
  async response(options: { head?: boolean; withinMs?: number } = {}): Promise<RawResponse> {
    const withinMs = options.withinMs ?? 3000;
    const res = await this.until(() => this.parse(options.head === true), withinMs);
    if (res === undefined) {
      throw new Error(`no complete response within ${withinMs} ms (closed: ${this.ended}); unread: ${JSON.stringify(this.unread.slice(0, 300))}`);
    }
    if (res.status >= 200) {
      expect(res.headers.date, `Date on ${res.statusLine}`).toMatch(/GMT$/);
      expect(res.headers['content-length'], `Content-Length on ${res.statusLine}`).toMatch(/^\d+$/);
      if (res.headers['content-length'] !== '0') expect(res.headers['content-type'], `Content-Type on ${res.statusLine}`).toBeDefined();
      if (options.head !== true) expect(Buffer.byteLength(res.body, 'utf8')).toBe(Number(res.headers['content-length']));
    }
    return res;
  }

  /** Resolves true once the server closes the connection, false if it is still open after `withinMs`. */
  async closed(withinMs = 1000): Promise<boolean> {
    return (await this.until(() => (this.ended ? true : undefined), withinMs)) === true;
  }

  /**
   * Waits for the server to close the connection (at most `withinMs`), then reads every
   * response that came before the close, in order.
   * @throws when bytes came that are not whole responses.
   */
  async responsesUntilClosed(withinMs = 3000): Promise<{ responses: RawResponse[]; closed: boolean }> {
    const closed = await this.closed(withinMs);
    const responses: RawResponse[] = [];
    while (this.buffer.length > 0) responses.push(await this.response({ withinMs: 0 }));
    return { responses, closed };
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const fn of [...this.wakers]) fn();
  }

  private until<T>(ready: () => T | undefined, withinMs: number): Promise<T | undefined> {
    return new Promise((resolve) => {
      const finish = (value: T | undefined): void => {
        clearTimeout(timer);
        this.wakers.delete(check);
        resolve(value);
      };
      const check = (): void => {
        const value = ready();
        if (value !== undefined) finish(value);
        else if (this.ended) finish(undefined);
      };
      const timer = setTimeout(() => finish(undefined), withinMs);
      this.wakers.add(check);
      check();
    });
  }

  private parse(head: boolean): RawResponse | undefined {
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end === -1) return undefined;
    const lines = this.buffer.toString('latin1', 0, end).split('\r\n');
    const statusLine = lines[0]!;
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    const length = status < 200 || head ? 0 : Number(headers['content-length'] ?? 0);
    if (this.buffer.length < end + 4 + length) return undefined;
    const body = this.buffer.toString('utf8', end + 4, end + 4 + length);
    this.buffer = this.buffer.subarray(end + 4 + length);
    return { statusLine, status, headers, body };
  }
}

/** A GET (or `method`) request with Host, and `extra` header lines (each ending in CRLF). */
function request(target: string, extra = '', method = 'GET'): string {
  return `${method} ${target} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`;
}

const H = 'Host: test\r\n';

/** A request the server must refuse with `status` and then close the connection. */
interface Vector {
  readonly name: string;
  readonly request: string | Buffer;
  readonly status: number;
  /** False where uWS answers, or fails to, before our code runs (see the list above `VECTORS`). */
  readonly uws: boolean;
}

const TLS_CLIENT_HELLO = Buffer.from(
  '16030100c4010000c00303' + '5b'.repeat(32) + '00' + '0004130113020100' + '0093' + '0000000e000c0000096c6f63616c686f7374' + '00'.repeat(125),
  'hex',
);

/**
 * The refusal vectors. uWS (20.30) decides these itself before a handler runs, so the
 * `uws` engine cannot give them our answer, and they are not run against it:
 * - HTTP/0.9, other versions, the HTTP/2 preface, TLS, garbage, bare LF line ends,
 *   obsolete line folding, whitespace before a colon, NUL or control characters in the
 *   request line or a header field, a control character in a chunk extension, and
 *   HTTP/1.1 without Host: no response, the connection hangs until uWS's ~10 s timeout;
 * - both Content-Length and Transfer-Encoding, a Content-Length list, a signed or
 *   non-digit Content-Length, a bad or overflowing chunk size, an unknown, lower-case or
 *   WebDAV method: uWS closes the connection without a response;
 * - chunk data not followed by CRLF, a chunk size with trailing whitespace: uWS accepts
 *   them (and answers 200); a chunk size with a leading space: uWS reads it as the last
 *   chunk (an empty body) and what follows as the next request; chunk data longer than its
 *   size: uWS reads the rest as the next chunk size and waits;
 * - a header line with an empty name: uWS drops it and every field after it (200);
 * - a target not starting with `/` (`*`), and CONNECT: no response, the connection hangs.
 */
const VECTORS: readonly Vector[] = [
  // Versions and what is not HTTP/1.x at all.
  { name: 'an HTTP/0.9 request line (no version)', request: 'GET /echo\r\n', status: 505, uws: false },
  { name: 'HTTP/0.9 as the version', request: 'GET /echo HTTP/0.9\r\n\r\n', status: 505, uws: false },
  { name: 'HTTP/1.2 as the version', request: `GET /echo HTTP/1.2\r\n${H}\r\n`, status: 505, uws: false },
  { name: 'HTTP/2.0 in an HTTP/1 request line', request: `GET /echo HTTP/2.0\r\n${H}\r\n`, status: 505, uws: false },
  { name: 'the HTTP/2 connection preface', request: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', status: 505, uws: false },
  { name: 'a TLS ClientHello', request: TLS_CLIENT_HELLO, status: 400, uws: false },
  { name: 'plain garbage', request: 'hello world\r\n\r\n', status: 400, uws: false },
  { name: 'an HTTP/1.1 request without Host', request: 'GET /echo HTTP/1.1\r\n\r\n', status: 400, uws: false },
  { name: 'two Host fields', request: `GET /echo HTTP/1.1\r\n${H}Host: other\r\n\r\n`, status: 400, uws: true },
  { name: 'an empty Host', request: 'GET /echo HTTP/1.1\r\nHost: \r\n\r\n', status: 400, uws: true },
  { name: 'an empty Host in an HTTP/1.0 request', request: 'GET /echo HTTP/1.0\r\nHost: \r\n\r\n', status: 400, uws: false },
  { name: 'a Host with a path (h:1/path)', request: 'GET /echo HTTP/1.1\r\nHost: h:1/path\r\n\r\n', status: 400, uws: true },
  { name: 'a Host with userinfo (user@h)', request: 'GET /echo HTTP/1.1\r\nHost: user@h\r\n\r\n', status: 400, uws: true },
  { name: 'a Host that lists two hosts (a, b)', request: 'GET /echo HTTP/1.1\r\nHost: a, b\r\n\r\n', status: 400, uws: true },
  { name: 'a Host with a port that is not digits (h:p)', request: 'GET /echo HTTP/1.1\r\nHost: h:p\r\n\r\n', status: 400, uws: true },
  { name: 'a Host with a port and no host (:80)', request: 'GET /echo HTTP/1.1\r\nHost: :80\r\n\r\n', status: 400, uws: true },
  { name: 'a Host with a bad percent-encoding (h%zz)', request: 'GET /echo HTTP/1.1\r\nHost: h%zz\r\n\r\n', status: 400, uws: true },
  { name: 'a Host in brackets that is not an IPv6 address ([1:2])', request: 'GET /echo HTTP/1.1\r\nHost: [1:2]\r\n\r\n', status: 400, uws: true },
  { name: 'a Host with an IPv6 address not in brackets (::1)', request: 'GET /echo HTTP/1.1\r\nHost: ::1\r\n\r\n', status: 400, uws: true },
  // The request target.
  { name: 'a fragment in the target', request: `GET /echo#frag HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { name: 'a fragment after the query', request: `GET /echo?a=1#frag HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { name: 'a raw non-ASCII byte in the target', request: `GET /caf\xe9 HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { name: 'raw UTF-8 in the target', request: `GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { name: 'an asterisk target with a method other than OPTIONS', request: `GET * HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  { name: 'an absolute path without its leading slash', request: `GET echo HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  // Framing: what could smuggle a second request.
  { name: 'Content-Length and Transfer-Encoding both', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'Transfer-Encoding and Content-Length both', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'two equal Content-Length fields', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc`, status: 400, uws: true },
  { name: 'two different Content-Length fields', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`, status: 400, uws: true },
  { name: 'a Content-Length list', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 3, 3\r\n\r\nabc`, status: 400, uws: false },
  { name: 'an empty Content-Length', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: \r\n\r\n`, status: 400, uws: true },
  { name: 'a Content-Length with a plus sign', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`, status: 400, uws: false },
  { name: 'a negative Content-Length', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: -3\r\n\r\nabc`, status: 400, uws: false },
  { name: 'a Content-Length with a non-digit', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 3x\r\n\r\nabc`, status: 400, uws: false },
  { name: 'Transfer-Encoding: gzip (chunked not last)', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\nabc`, status: 400, uws: true },
  { name: 'Transfer-Encoding: chunked, gzip', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, status: 400, uws: true },
  { name: 'chunked in two Transfer-Encoding fields', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400, uws: true },
  { name: 'a transfer coding not implemented (gzip, chunked)', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, status: 501, uws: true },
  { name: 'a chunk size that is not hex', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'a negative chunk size', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'a chunk size that overflows', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1${'0'.repeat(20)}\r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'a control character in a chunk extension', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;a=\x01\r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'chunk data not followed by CRLF', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'chunk data longer than its size', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'a chunk size with a leading space', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'a chunk size with a trailing space', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'a chunk size with a trailing tab', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\t\r\nabc\r\n0\r\n\r\n`, status: 400, uws: false },
  { name: 'obsolete line folding', request: `GET /echo HTTP/1.1\r\n${H}X-A: a\r\n b\r\n\r\n`, status: 400, uws: false },
  { name: 'whitespace before a colon', request: `GET /echo HTTP/1.1\r\n${H}X-A : a\r\n\r\n`, status: 400, uws: false },
  { name: 'a header line with an empty name', request: `GET /echo HTTP/1.1\r\n${H}: x\r\n\r\n`, status: 400, uws: false },
  { name: 'a tab before a colon', request: `GET /echo HTTP/1.1\r\n${H}X-A\t: a\r\n\r\n`, status: 400, uws: false },
  { name: 'NUL in a header name', request: `GET /echo HTTP/1.1\r\n${H}X\0A: a\r\n\r\n`, status: 400, uws: false },
  { name: 'NUL in a header value', request: `GET /echo HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, status: 400, uws: false },
  { name: 'a control character in a header value', request: `GET /echo HTTP/1.1\r\n${H}X-A: a\x01b\r\n\r\n`, status: 400, uws: false },
  { name: 'DEL in a header value', request: `GET /echo HTTP/1.1\r\n${H}X-A: a\x7fb\r\n\r\n`, status: 400, uws: true },
  { name: 'NUL in the request target', request: `GET /ec\0ho HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  { name: 'a control character in the request line', request: `GET /ec\x01ho HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  { name: 'NUL in the method', request: `G\0T /echo HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  { name: 'bare LF line ends', request: `GET /echo HTTP/1.1\n${H.replace('\r', '')}\n`, status: 400, uws: false },
  // Methods.
  { name: 'an unknown method', request: `FOO /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: false },
  { name: 'a lower-case method', request: `get /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: false },
  { name: 'PROPFIND', request: `PROPFIND /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: false },
  { name: 'TRACE', request: `TRACE /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: true },
  { name: 'CONNECT', request: `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`, status: 501, uws: false },
];

/** Small limits and timeouts, so that the limit and timing tests are quick. */
const TIGHT = {
  maxUrlBytes: 256,
  maxHeaderBytes: 1024,
  maxHeaderCount: 20,
  maxBodyBytes: 1024,
  headersTimeoutMs: 300,
  requestReadTimeoutMs: 600,
  keepAliveTimeoutMs: 300,
};

/** A request pipelined behind a refused one, in the same write: it must never be read, let alone answered. */
const SMUGGLED = `GET /echo?smuggled=1 HTTP/1.1\r\n${H}\r\n`;

/** A refusal of each class the engines make before a request reaches the pipeline, to send with `SMUGGLED` behind it. */
interface PipelinedRefusal {
  readonly name: string;
  readonly request: string;
  readonly status: number;
  /** False where uWS decides before our code runs (see `VECTORS`). */
  readonly uws: boolean;
  /** Sent to the server with `TIGHT` limits. */
  readonly tight?: boolean;
}

const PIPELINED_REFUSALS: readonly PipelinedRefusal[] = [
  { name: 'two Content-Length fields, the first framing a body shorter than the second', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd`, status: 400, uws: true },
  { name: 'two Host fields', request: `GET /echo HTTP/1.1\r\n${H}Host: other\r\n\r\n`, status: 400, uws: true },
  { name: 'DEL in a header value', request: `GET /echo HTTP/1.1\r\n${H}X-A: a\x7fb\r\n\r\n`, status: 400, uws: true },
  { name: 'Transfer-Encoding: gzip (chunked not last)', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\n`, status: 400, uws: true },
  { name: 'whitespace before a colon', request: `GET /echo HTTP/1.1\r\n${H}X-A : a\r\n\r\n`, status: 400, uws: false },
  { name: 'a Content-Length above maxBodyBytes', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: ${TIGHT.maxBodyBytes + 1}\r\n\r\n`, status: 413, uws: true, tight: true },
  { name: 'a chunked body that grows past maxBodyBytes', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${`258\r\n${'c'.repeat(600)}\r\n`.repeat(2)}0\r\n\r\n`, status: 413, uws: true, tight: true },
  { name: 'a target longer than maxUrlBytes', request: request(`/${'a'.repeat(TIGHT.maxUrlBytes)}`), status: 414, uws: true, tight: true },
  { name: 'a header block larger than maxHeaderBytes', request: request('/echo', `X-Big: ${'b'.repeat(TIGHT.maxHeaderBytes)}\r\n`), status: 431, uws: true, tight: true },
  { name: 'more header fields than maxHeaderCount', request: request('/echo', Array.from({ length: TIGHT.maxHeaderCount }, (_, i) => `X-F${i}: v\r\n`).join('')), status: 431, uws: true, tight: true },
  { name: 'TRACE', request: `TRACE /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: true },
  { name: 'a transfer coding not implemented (gzip, chunked)', request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, status: 501, uws: true },
  { name: 'an Expect other than 100-continue', request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nExpect: bogus\r\n\r\nabc`, status: 417, uws: true },
  { name: 'HTTP/1.2 as the version', request: `GET /echo HTTP/1.2\r\n${H}\r\n`, status: 505, uws: false },
  { name: 'a Host with a path', request: 'GET /echo HTTP/1.1\r\nHost: h:1/path\r\n\r\n', status: 400, uws: true },
  { name: 'a fragment in the target', request: `GET /echo#frag HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { name: 'a raw non-ASCII byte in the target', request: `GET /caf\xe9 HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
];

/** Parses the JSON error body every refusal carries. */
function errorCode(res: RawResponse): string {
  return (JSON.parse(res.body) as { error: { code: string } }).error.code;
}

/** What the echo stage saw. */
interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: string;
  remoteAddress: string;
}

for (const engine of ['node', 'uws'] as const) {
  describe(`HTTP/1.x over raw sockets, ${engine} engine`, () => {
    let bf: Butterfly;
    let tight: Butterfly;
    const opened: Conn[] = [];
    const open = async (port: number): Promise<Conn> => {
      const c = await Conn.open(port);
      opened.push(c);
      return c;
    };
    /** Writes `bytes` on a new connection and reads one response. */
    const send = async (port: number, bytes: string | Buffer, options: { head?: boolean } = {}): Promise<{ res: RawResponse; conn: Conn }> => {
      const conn = await open(port);
      conn.write(bytes);
      return { res: await conn.response(options), conn };
    };

    beforeAll(async () => {
      [bf, tight] = await Promise.all([start({ engine, pipeline: ECHO }), start({ engine, pipeline: ECHO, server: TIGHT })]);
    });
    afterAll(async () => {
      for (const c of opened) c.destroy();
      await Promise.all([bf?.close(), tight?.close()]);
    });

    describe('versions and connections', () => {
      it('keeps an HTTP/1.1 connection open by default and answers requests on it one after another', async () => {
        const c = await open(bf.port);
        for (let i = 0; i < 3; i++) {
          c.write(request(`/echo?i=${i}`));
          const res = await c.response();
          expect(res.statusLine).toBe(statusLine(200));
          expect((JSON.parse(res.body) as Seen).query).toEqual({ i: String(i) });
        }
        expect(c.isClosed).toBe(false);
      });

      it('closes after answering an HTTP/1.1 request with Connection: close, in any letter case', async () => {
        for (const value of ['close', 'Close', 'CLOSE']) {
          const { res, conn } = await send(bf.port, request('/echo', `Connection: ${value}\r\n`));
          expect(res.statusLine).toBe(statusLine(200));
          expect(await conn.closed(), value).toBe(true);
        }
      });

      if (engine === 'node') {
        // uWS drops HTTP/1.0 requests without a response.
        it('answers HTTP/1.0 without keep-alive, then closes', async () => {
          const { res, conn } = await send(bf.port, 'GET /echo HTTP/1.0\r\n\r\n');
          expect(res.statusLine).toBe(statusLine(200));
          expect((JSON.parse(res.body) as Seen).path).toBe('/echo');
          expect(await conn.closed()).toBe(true);
        });

        it('keeps HTTP/1.0 open with Connection: keep-alive, matched in any letter case', async () => {
          for (const value of ['keep-alive', 'Keep-Alive', 'KEEP-ALIVE']) {
            const c = await open(bf.port);
            for (let i = 0; i < 2; i++) {
              c.write(`GET /echo?i=${i} HTTP/1.0\r\nConnection: ${value}\r\n\r\n`);
              const res = await c.response();
              expect(res.statusLine, value).toBe(statusLine(200));
              expect(res.headers.connection?.toLowerCase(), value).toBe('keep-alive');
            }
            expect(c.isClosed, value).toBe(false);
          }
        });
      }
    });

    describe('refusals: the exact status, then the connection closed', () => {
      for (const v of VECTORS.filter((x) => engine === 'node' || x.uws)) {
        it(`answers ${v.status} to ${v.name}`, async () => {
          const { res, conn } = await send(bf.port, v.request);
          expect(res.statusLine).toBe(statusLine(v.status));
          expect(errorCode(res)).toMatch(/^BF_ERR_/);
          expect(await conn.closed()).toBe(true);
        });
      }
    });

    describe('Host and the request target', () => {
      it('serves a Host of each valid form: a name, with a port, an IPv4 or IPv6 address, percent-encoded, an empty port', async () => {
        const c = await open(bf.port);
        for (const host of ['example.com', 'Example.COM.', 'localhost:8080', '127.0.0.1:80', '[::1]:8080', '[::ffff:127.0.0.1]', '[v1.a:b]', 'ex%41mple_1.test', 'h:']) {
          c.write(`GET /echo HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
          const res = await c.response();
          expect(res.statusLine, host).toBe(statusLine(200));
          expect((JSON.parse(res.body) as Seen).headers.host, host).toBe(host);
        }
        expect(c.isClosed).toBe(false);
      });

      it('serves a target with every character origin-form allows', async () => {
        const { res } = await send(bf.port, request("/a-._~!$&'()*+,;=:@%20/b?c=/?d"));
        expect(res.statusLine).toBe(statusLine(200));
        expect((JSON.parse(res.body) as Seen).path).toBe("/a-._~!$&'()*+,;=:@ /b");
      });

      if (engine === 'node') {
        // uWS parses no target that does not start with `/`: `OPTIONS *` gets no response.
        it('answers OPTIONS * itself: 200, the methods it takes in Allow, no content, and the connection goes on', async () => {
          const c = await open(bf.port);
          c.write(`OPTIONS * HTTP/1.1\r\n${H}\r\n`);
          const res = await c.response();
          expect(res.statusLine).toBe(statusLine(200));
          expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH');
          expect(res.headers['content-length']).toBe('0');
          c.write(request('/echo'));
          expect((await c.response()).statusLine).toBe(statusLine(200));
        });

        it('answers OPTIONS * in HTTP/1.0 without Host, then closes', async () => {
          const { res, conn } = await send(bf.port, 'OPTIONS * HTTP/1.0\r\n\r\n');
          expect(res.statusLine).toBe(statusLine(200));
          expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH');
          expect(await conn.closed()).toBe(true);
        });
      }
    });

    describe('a refusal ends its connection: nothing pipelined behind it is read or answered', () => {
      // On the `uws` engine uWS has parsed the pipelined request before the refusal can go
      // out, and closes the connection there: the client sees the close, not the refusal.
      // With nothing pipelined the refusal comes (see the refusals above).
      for (const v of PIPELINED_REFUSALS.filter((x) => engine === 'node' || x.uws)) {
        it(`answers ${engine === 'node' ? v.status : `at most ${v.status}`} to ${v.name} sent with a request behind it, and closes`, async () => {
          const server = v.tight === true ? tight : bf;
          const before = server.server!.counters.requests;
          const c = await open(server.port);
          c.write(v.request + SMUGGLED);
          const { responses, closed } = await c.responsesUntilClosed();
          const statuses = responses.map((r) => r.status);
          if (engine === 'node') expect(statuses).toEqual([v.status]);
          else expect(statuses.length <= 1 && statuses.every((s) => s === v.status), JSON.stringify(statuses)).toBe(true);
          expect(closed).toBe(true);
          // Neither request reached the front end.
          expect(server.server!.counters.requests).toBe(before);
        });
      }

      // uWS reads a chunk size with a leading space as 0 and ignores every header field
      // after a line with an empty name: a request hidden where a front proxy sees a body
      // must not be answered, even behind one answered without the pipeline.
      const hidden = [
        { name: 'a chunk size with a leading space', request: `POST /health HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n ${(SMUGGLED.length + 2).toString(16)}\r\nab${SMUGGLED}\r\n0\r\n\r\n` },
        { name: 'a Content-Length after a header line with an empty name', request: `POST /health HTTP/1.1\r\n${H}: x\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}` },
      ];
      for (const v of hidden) {
        it(`never answers a request hidden in a body by ${v.name}`, async () => {
          const before = bf.server!.counters.requests;
          const c = await open(bf.port);
          c.write(v.request);
          const { responses, closed } = await c.responsesUntilClosed();
          expect(closed).toBe(true);
          if (engine === 'node') {
            // llhttp refuses the malformed request itself.
            expect(responses.map((r) => r.status)).toEqual([400]);
            expect(bf.server!.counters.requests).toBe(before);
          } else {
            // uWS takes the hidden request for a second one: the connection closes, unanswered;
            // only the health check reached the front end.
            expect(responses).toEqual([]);
            expect(bf.server!.counters.requests).toBe(before + 1);
          }
        });
      }
    });

    describe('pipelining', () => {
      if (engine === 'node') {
        // uWS closes the connection when a request arrives before the one before it is answered.
        it('answers requests sent in one write in order, even when a later one finishes first', async () => {
          const c = await open(bf.port);
          c.write(request('/echo?n=1&delay=300') + request('/echo?n=2') + request('/echo?n=3&delay=100') + request('/echo?n=4'));
          const order: string[] = [];
          for (let i = 0; i < 4; i++) {
            const res = await c.response();
            expect(res.statusLine).toBe(statusLine(200));
            order.push((JSON.parse(res.body) as Seen).query.n!);
          }
          expect(order).toEqual(['1', '2', '3', '4']);
          expect(c.isClosed).toBe(false);
        });

        it('answers the requests before a malformed pipelined one, then 400, then closes', async () => {
          const c = await open(bf.port);
          c.write(request('/echo?n=1&delay=200') + request('/echo?n=2') + `GET /echo HTTP/1.1\r\n${H}X-A : b\r\n\r\n`);
          const first = await c.response();
          const second = await c.response();
          expect([(JSON.parse(first.body) as Seen).query.n, (JSON.parse(second.body) as Seen).query.n]).toEqual(['1', '2']);
          expect((await c.response()).statusLine).toBe(statusLine(400));
          expect(await c.closed()).toBe(true);
        });
      } else {
        // uWS closes a connection on which a request arrives before the one before it is
        // answered, and the engine answers nothing while uWS parses what it read: so too
        // behind the health path, answered without the pipeline.
        it('closes the connection unanswered when requests come pipelined, even behind the health path', async () => {
          const before = bf.server!.counters.requests;
          const c = await open(bf.port);
          c.write(request('/health') + request('/health?again') + request('/echo?n=3'));
          expect(await c.closed()).toBe(true);
          expect(c.unread).toBe('');
          expect(bf.server!.counters.requests).toBe(before + 1);
        });
      }
    });

    describe('limits', () => {
      it('answers 414 to a target longer than maxUrlBytes (default 8192)', async () => {
        const { res, conn } = await send(bf.port, request(`/echo?${'a'.repeat(9000)}`));
        expect(res.statusLine).toBe(statusLine(414));
        expect(await conn.closed()).toBe(true);
      });

      it('answers 414 to a target just past a small maxUrlBytes, and to one past the whole head limit', async () => {
        for (const length of [TIGHT.maxUrlBytes, 64 * 1024]) {
          const { res, conn } = await send(tight.port, request(`/${'a'.repeat(length)}`));
          expect(res.statusLine, `${length} bytes`).toBe(statusLine(414));
          expect(await conn.closed()).toBe(true);
        }
        const { res } = await send(tight.port, request(`/${'a'.repeat(TIGHT.maxUrlBytes - 1)}`));
        expect(res.statusLine).toBe(statusLine(200));
      });

      it('answers 431 to a header block larger than maxHeaderBytes (default 16 KiB)', async () => {
        const { res, conn } = await send(bf.port, request('/echo', `X-Big: ${'b'.repeat(20_000)}\r\n`));
        expect(res.statusLine).toBe(statusLine(431));
        expect(await conn.closed()).toBe(true);
      });

      it('answers 431 to a header block past a small maxHeaderBytes, and to one past the whole head limit', async () => {
        for (const length of [2000, 64 * 1024]) {
          const { res, conn } = await send(tight.port, request('/echo', `X-Big: ${'b'.repeat(length)}\r\n`));
          expect(res.statusLine, `${length} bytes`).toBe(statusLine(431));
          expect(await conn.closed()).toBe(true);
        }
      });

      it('answers 431 to more header fields than maxHeaderCount, and serves exactly that many', async () => {
        const fields = (n: number): string => Array.from({ length: n }, (_, i) => `X-F${i}: v\r\n`).join('');
        const { res, conn } = await send(tight.port, request('/echo', fields(TIGHT.maxHeaderCount)));
        expect(res.statusLine).toBe(statusLine(431));
        expect(await conn.closed()).toBe(true);
        // Host and maxHeaderCount - 1 more.
        expect((await send(tight.port, request('/echo', fields(TIGHT.maxHeaderCount - 1)))).res.statusLine).toBe(statusLine(200));
      });

      if (engine === 'node') {
        // uWS drops a request with more than about 47 fields without a response, before our check.
        it('answers 431 to more header fields than the default maxHeaderCount (100)', async () => {
          const fields = Array.from({ length: 150 }, (_, i) => `X-F${i}: v\r\n`).join('');
          const { res, conn } = await send(bf.port, request('/echo', fields));
          expect(res.statusLine).toBe(statusLine(431));
          expect(await conn.closed()).toBe(true);
        });
      }

      it('answers 413 to a Content-Length above maxBodyBytes (default 10 MiB) without waiting for the body', async () => {
        const { res, conn } = await send(bf.port, request('/echo', 'Content-Length: 10485761\r\n', 'POST'));
        expect(res.statusLine).toBe(statusLine(413));
        expect(await conn.closed()).toBe(true);
      });

      it('answers 413 to a chunked body that grows past maxBodyBytes, and serves one just within it', async () => {
        const chunk = 'c'.repeat(600);
        const chunked = (n: number): string => `${`${chunk.length.toString(16)}\r\n${chunk}\r\n`.repeat(n)}0\r\n\r\n`;
        const { res, conn } = await send(tight.port, request('/echo', 'Transfer-Encoding: chunked\r\n', 'POST') + chunked(2));
        expect(res.statusLine).toBe(statusLine(413));
        expect(await conn.closed()).toBe(true);
        const ok = await send(tight.port, request('/echo', 'Transfer-Encoding: chunked\r\n', 'POST') + chunked(1));
        expect(ok.res.statusLine).toBe(statusLine(200));
        expect((JSON.parse(ok.res.body) as Seen).body).toBe(chunk);
      });
    });

    describe('Expect', () => {
      it('answers 100 Continue to Expect: 100-continue when the body will be accepted, then the request', async () => {
        const c = await open(tight.port);
        c.write(request('/echo', 'Content-Length: 5\r\nExpect: 100-continue\r\n', 'POST'));
        expect((await c.response()).statusLine).toBe(statusLine(100));
        c.write('hello');
        const res = await c.response();
        expect(res.statusLine).toBe(statusLine(200));
        expect((JSON.parse(res.body) as Seen).body).toBe('hello');
      });

      if (engine === 'node') {
        // uWS sends 100 Continue itself before the handler runs: the 413 comes after it.
        it('answers 413 instead of 100 Continue when the announced body is too large', async () => {
          const { res, conn } = await send(tight.port, request('/echo', `Content-Length: ${TIGHT.maxBodyBytes + 1}\r\nExpect: 100-continue\r\n`, 'POST'));
          expect(res.statusLine).toBe(statusLine(413));
          expect(await conn.closed()).toBe(true);
        });
      }

      it('answers 417 to any other expectation', async () => {
        const { res, conn } = await send(tight.port, request('/echo', 'Content-Length: 3\r\nExpect: something-else\r\n', 'POST') + 'abc');
        expect(res.statusLine).toBe(statusLine(417));
        expect(await conn.closed()).toBe(true);
      });
    });

    describe('slow and idle clients', () => {
      it('answers 408 and closes when a body trickles in slower than requestReadTimeoutMs allows', async () => {
        const c = await open(tight.port);
        c.write(request('/echo', 'Content-Length: 100\r\n', 'POST'));
        const trickle = setInterval(() => c.write('x'), 50);
        try {
          const res = await c.response({ withinMs: TIGHT.requestReadTimeoutMs + 2000 });
          expect(res.statusLine).toBe(statusLine(408));
          expect(await c.closed()).toBe(true);
        } finally {
          clearInterval(trickle);
        }
      });

      if (engine === 'node') {
        // uWS shows nothing of a connection before its head is complete; it closes slow
        // heads and idle connections itself after about 10 s, without a response.
        it('answers 408 and closes when header lines trickle in slower than headersTimeoutMs allows', async () => {
          const c = await open(tight.port);
          c.write('GET /echo HTTP/1.1\r\n');
          let i = 0;
          const trickle = setInterval(() => c.write(`X-Slow-${i++}: a\r\n`), 50);
          try {
            const res = await c.response({ withinMs: TIGHT.headersTimeoutMs + 2000 });
            expect(res.statusLine).toBe(statusLine(408));
            expect(await c.closed()).toBe(true);
          } finally {
            clearInterval(trickle);
          }
        });

        it('answers 408 and closes a connection that sends nothing within headersTimeoutMs', async () => {
          const c = await open(tight.port);
          const res = await c.response({ withinMs: TIGHT.headersTimeoutMs + 2000 });
          expect(res.statusLine).toBe(statusLine(408));
          expect(await c.closed()).toBe(true);
        });

        it('closes an idle keep-alive connection after keepAliveTimeoutMs (plus node:http\'s 1 s of grace)', async () => {
          const c = await open(tight.port);
          c.write(request('/echo'));
          expect((await c.response()).statusLine).toBe(statusLine(200));
          const idleSince = Date.now();
          expect(await c.closed(TIGHT.keepAliveTimeoutMs + 3000)).toBe(true);
          expect(Date.now() - idleSince).toBeGreaterThanOrEqual(TIGHT.keepAliveTimeoutMs - 50);
          expect(c.unread).toBe('');
        });
      }
    });

    if (engine === 'node') {
      // uWS cannot count connections: it has no hook on a connection before its first request.
      describe('maxConnections', () => {
        it('closes connections past maxConnections at once, unanswered, and still serves those open', async () => {
          await using capped = await start({ engine, pipeline: ECHO, server: { maxConnections: 3 } });
          const held: Conn[] = [];
          for (let i = 0; i < 3; i++) {
            const c = await open(capped.port);
            c.write(request(`/echo?i=${i}`));
            expect((await c.response()).statusLine).toBe(statusLine(200));
            held.push(c);
          }
          const refused = await open(capped.port);
          refused.write(request('/echo'));
          expect(await refused.closed()).toBe(true);
          expect(refused.unread).toBe('');
          for (const c of held) {
            c.write(request('/echo'));
            expect((await c.response()).statusLine).toBe(statusLine(200));
          }
          // Once one closes, a new connection is served (polled: the server sees the close a moment after the client).
          held[0]!.write(request('/echo', 'Connection: close\r\n'));
          await held[0]!.response();
          expect(await held[0]!.closed()).toBe(true);
          const deadline = Date.now() + 3000;
          let served = false;
          while (!served && Date.now() < deadline) {
            const c = await open(capped.port);
            c.write(request('/echo'));
            served = await c.response({ withinMs: 500 }).then(
              (res) => res.status === 200,
              () => false,
            );
          }
          expect(served).toBe(true);
        });
      });
    }

    describe('what a stage sees', () => {
      it('gives the stage the method, decoded path and query, headers and remote address', async () => {
        const { res } = await send(bf.port, request('/some%20where/%C3%A9t%C3%A9?a=1&b=x%20y&a=2&c=%26', 'X-Custom: Value\r\n', 'DELETE'));
        expect(res.statusLine).toBe(statusLine(200));
        const seen = JSON.parse(res.body) as Seen;
        expect(seen).toMatchObject({ method: 'DELETE', path: '/some where/été', query: { a: '1', b: 'x y', c: '&' }, body: '', remoteAddress: '127.0.0.1' });
        expect(seen.headers).toMatchObject({ host: 'test', 'x-custom': 'Value' });
      });

      it('gives the stage a Content-Length body as sent', async () => {
        const body = 'line one\r\nline two\0 and bytes \xff';
        const { res } = await send(bf.port, request('/echo', `Content-Length: ${body.length}\r\nContent-Type: application/octet-stream\r\n`, 'POST') + body);
        expect((JSON.parse(res.body) as Seen).body).toBe(body);
      });

      it('gives the stage a chunked body de-chunked', async () => {
        const { res } = await send(bf.port, request('/echo', 'Transfer-Encoding: chunked\r\n', 'PUT') + '5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n');
        expect(res.statusLine).toBe(statusLine(200));
        expect((JSON.parse(res.body) as Seen).body).toBe('hello, world');
      });

      if (engine === 'node') {
        // uWS leaves a chunk extension unanswered (the connection hangs) and closes on a trailer.
        it('gives the stage a chunked body without its chunk extensions and trailer fields', async () => {
          const { res } = await send(bf.port, request('/echo', 'Transfer-Encoding: chunked\r\n', 'PUT') + '5;ext=1\r\nhello\r\n7;a="b"\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n');
          expect(res.statusLine).toBe(statusLine(200));
          expect((JSON.parse(res.body) as Seen).body).toBe('hello, world');
        });
      }

      it('answers HEAD with the headers GET would get and no body, and the connection goes on', async () => {
        const c = await open(bf.port);
        c.write(request('/echo'));
        const get = await c.response();
        c.write(request('/echo', '', 'HEAD'));
        const head = await c.response({ head: true });
        expect(head.statusLine).toBe(statusLine(200));
        expect(head.body).toBe('');
        // The echo differs only in the method it saw: 'GET' and 'HEAD' differ by one byte.
        expect(Number(head.headers['content-length'])).toBe(Number(get.headers['content-length']) + 1);
        c.write(request('/echo?after=head'));
        const after = await c.response();
        expect((JSON.parse(after.body) as Seen).query).toEqual({ after: 'head' });
      });

      it('answers 400 to bad percent-encoding and keeps the connection', async () => {
        const c = await open(bf.port);
        c.write(request('/echo?x=%zz'));
        const res = await c.response();
        expect(res.statusLine).toBe(statusLine(400));
        expect(errorCode(res)).toBe('BF_ERR_BAD_REQUEST');
        c.write(request('/echo'));
        expect((await c.response()).statusLine).toBe(statusLine(200));
      });

      it("sends a stage's own status with Date, Content-Type and Content-Length", async () => {
        const { res } = await send(bf.port, request('/echo?status=404'));
        expect(res.statusLine).toBe(statusLine(404));
        expect(res.headers['content-type']).toBe('application/json');
      });
    });
  });
}

describe('server options for the HTTP front end', () => {
  it('refuses at start-up a requestReadTimeoutMs shorter than headersTimeoutMs, and a bad maxConnections', async () => {
    await expect(start({ pipeline: ECHO, server: { headersTimeoutMs: 5000, requestReadTimeoutMs: 1000 } })).rejects.toThrow(/requestReadTimeoutMs must be an integer >= 5000, got 1000/);
    await expect(start({ pipeline: ECHO, server: { maxConnections: 0 } })).rejects.toThrow(/maxConnections must be a positive integer, got 0/);
  });
});
