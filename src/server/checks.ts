import { STATUS_CODES } from 'node:http';
import { isIPv6 } from 'node:net';
import type { ErrorCode } from '../errors.js';
import { ERROR_STATUS } from '../errors.js';
import type { ErrorData, ResponseData } from '../wire/index.js';
import type { EngineLimits } from './engines/engine.js';

/**
 * Checks every engine applies to a request head before it reads a body, so that both
 * engines refuse the same requests with the same status: the version, the target's
 * length and form, the number and size of header fields, `Host`, `Expect`, and framing
 * headers that could smuggle a second request. The `uws` engine also runs `checkFields`,
 * for what llhttp already refuses in the `node` engine.
 */

const DIGITS = /^[0-9]+$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// A header value: visible ASCII, space, tab and obs-text; no other control character.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// An origin-form request target (RFC 9112 3.2.1): `/`, then visible ASCII but `#` (a
// fragment is not part of a target); no space, control character or byte past ASCII.
const ORIGIN_FORM = /^\/[\x21\x22\x24-\x7e]*$/;
// `Host` (RFC 9112 3.2, RFC 3986 3.2.2) is `uri-host [ ":" port ]`, port `*DIGIT`. A
// uri-host is a reg-name (which covers IPv4 addresses), never empty for an http URI, or an
// IP literal in brackets. The first pattern is the usual case, a name or address without
// percent-encoding.
const HOST_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=]+(?::[0-9]*)?$/;
const HOST_ENCODED = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+(?::[0-9]*)?$/;
// An IP literal: an IPv6 address (checked by `isIPv6`), or IPvFuture.
const HOST_IP_LITERAL = /^\[(?:([0-9A-Fa-f:.]+)|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\](?::[0-9]*)?$/;
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);

/** The methods the front end takes, as `OPTIONS *` answers them in `Allow`. */
export const ALLOWED_METHODS = [...KNOWN_METHODS].join(', ');

/** Whether `value` is a valid `Host` field value: `uri-host [ ":" port ]`, the host not empty. */
function isValidHost(value: string): boolean {
  if (HOST_NAME.test(value) || HOST_ENCODED.test(value)) return true;
  const literal = HOST_IP_LITERAL.exec(value);
  return literal !== null && (literal[1] === undefined || isIPv6(literal[1]));
}

/** An error as the front end answers it. */
export function refusal(code: ErrorCode, message: string): ErrorData {
  return { code, status: ERROR_STATUS[code], message };
}

/** 408: the request, or its head, did not arrive in time. */
export const REQUEST_TIMEOUT: ErrorData = Object.freeze(refusal('BF_ERR_REQUEST_TIMEOUT', 'request not received in time'));

/** 417 for an `Expect` other than `100-continue`. */
export function expectationFailed(expect: string): ErrorData {
  return refusal('BF_ERR_EXPECTATION', `expectation ${JSON.stringify(expect.slice(0, 64))} is not supported`);
}

/**
 * Returns the refusal for a bad request head, or null when it may proceed. `headers` is
 * the flat `[name, value, …]` list with lower-case names; `httpVersion` is `major.minor`.
 * Order matters where a request breaks several rules: version (505), method (400/501),
 * target (414/400), header count and size (431), then each header's own rules.
 */
export function checkHead(method: string, target: string, httpVersion: string, headers: readonly string[], limits: EngineLimits): ErrorData | null {
  if (httpVersion !== '1.1' && httpVersion !== '1.0') return refusal('BF_ERR_HTTP_VERSION', `HTTP/${httpVersion} is not supported, only HTTP/1.0 and HTTP/1.1`);
  if (!TOKEN.test(method)) return refusal('BF_ERR_BAD_REQUEST', 'malformed method');
  if (!KNOWN_METHODS.has(method)) return refusal('BF_ERR_NOT_IMPLEMENTED', `method ${method} is not implemented`);
  if (target.length > limits.maxUrlBytes) return refusal('BF_ERR_URL_TOO_LONG', `request target longer than ${limits.maxUrlBytes} bytes`);
  if (!ORIGIN_FORM.test(target)) {
    // `OPTIONS *` (asterisk-form) is the one other target taken; the front end answers it.
    if (target !== '*' || method !== 'OPTIONS') return badTarget(target);
  }
  const count = headers.length >> 1;
  if (count > limits.maxHeaderCount) return refusal('BF_ERR_HEADERS_TOO_LARGE', `more than ${limits.maxHeaderCount} header fields`);
  let bytes = 0;
  let hosts = 0;
  let host = '';
  let contentLength: string | undefined;
  let transferEncoding: string | undefined;
  let expect: string | undefined;
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    bytes += name.length + value.length + 4;
    // Only the framing fields need a look; the first letter rules out most names cheaply.
    switch (name.charCodeAt(0)) {
      case 0x63: // c
        if (name === 'content-length') {
          if (contentLength !== undefined) return refusal('BF_ERR_BAD_REQUEST', 'more than one Content-Length');
          contentLength = value;
        }
        break;
      case 0x74: // t
        if (name === 'transfer-encoding') transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
        break;
      case 0x68: // h
        if (name === 'host') {
          hosts++;
          host = value;
        }
        break;
      case 0x65: // e
        if (name === 'expect') expect = expect === undefined ? value : `${expect}, ${value}`;
        break;
    }
  }
  if (bytes > limits.maxHeaderBytes) return refusal('BF_ERR_HEADERS_TOO_LARGE', `header block larger than ${limits.maxHeaderBytes} bytes`);
  if (hosts > 1) return refusal('BF_ERR_BAD_REQUEST', 'more than one Host');
  if (hosts === 0 && httpVersion === '1.1') return refusal('BF_ERR_BAD_REQUEST', 'an HTTP/1.1 request needs a Host header');
  if (hosts === 1 && !isValidHost(host)) return refusal('BF_ERR_BAD_REQUEST', 'Host must be a host name or address and an optional port');
  if (contentLength !== undefined) {
    if (!DIGITS.test(contentLength)) return refusal('BF_ERR_BAD_REQUEST', 'Content-Length must be digits');
    if (transferEncoding !== undefined) return refusal('BF_ERR_BAD_REQUEST', 'both Content-Length and Transfer-Encoding');
  }
  if (transferEncoding !== undefined) {
    const codings = transferEncoding.split(',');
    const last = codings.length - 1;
    if (codings[last]!.trim().toLowerCase() !== 'chunked') return refusal('BF_ERR_BAD_REQUEST', 'Transfer-Encoding must end with chunked');
    if (last > 0) {
      const others = codings.slice(0, last).map((c) => c.trim().toLowerCase());
      if (others.includes('chunked')) return refusal('BF_ERR_BAD_REQUEST', 'chunked applied more than once');
      return refusal('BF_ERR_NOT_IMPLEMENTED', `transfer coding ${JSON.stringify(others[0]!.slice(0, 32))} is not implemented`);
    }
  }
  // Expect came with HTTP/1.1: in an HTTP/1.0 request it is ignored, as node:http does.
  if (expect !== undefined && httpVersion === '1.1' && expect.trim().toLowerCase() !== '100-continue') return expectationFailed(expect);
  if (contentLength !== undefined && Number(contentLength) > limits.maxBodyBytes) return refusal('BF_ERR_BODY_TOO_LARGE', `body larger than ${limits.maxBodyBytes} bytes`);
  return null;
}

/** The 400 for a target that is neither origin-form nor `OPTIONS *`, saying what is wrong with it. */
function badTarget(target: string): ErrorData {
  if (target === '*') return refusal('BF_ERR_BAD_REQUEST', 'request target * is for OPTIONS only');
  if (target.charCodeAt(0) !== 0x2f) return refusal('BF_ERR_BAD_REQUEST', 'request target must start with /');
  if (target.includes('#')) return refusal('BF_ERR_BAD_REQUEST', 'a fragment (#) is not part of a request target');
  return refusal('BF_ERR_BAD_REQUEST', 'control character, space or non-ASCII byte in the request target');
}

/**
 * The field syntax llhttp enforces in the `node` engine, for engines whose parser lets
 * more through (uWS passes DEL in values): field names that are tokens, values without
 * control characters. Returns the refusal (400) or null.
 */
export function checkFields(headers: readonly string[]): ErrorData | null {
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (!TOKEN.test(headers[i]!)) return refusal('BF_ERR_BAD_REQUEST', 'malformed header name');
    if (!FIELD_VALUE.test(headers[i + 1]!)) return refusal('BF_ERR_BAD_REQUEST', 'control character in a header value');
  }
  return null;
}

// A header value a stage may send: visible ASCII, space, tab and obs-text; no CR, LF, NUL or other control character.
const ANSWER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** 502 for an answer from the pipeline that HTTP cannot carry. */
export const BAD_ANSWER: ErrorData = Object.freeze(refusal('BF_ERR_BAD_ANSWER', 'the pipeline gave an answer HTTP cannot carry'));

/**
 * Whether an answer from the pipeline can be sent as an HTTP response: a final status
 * (200-599), header names that are tokens, values without CR, LF, NUL or other control
 * characters. Checked where answers enter the front end, whatever sent them.
 */
export function isSendable(status: number, headers: readonly string[]): boolean {
  if (!Number.isInteger(status) || status < 200 || status > 599) return false;
  if ((headers.length & 1) !== 0) return false;
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (!TOKEN.test(headers[i]!) || !ANSWER_VALUE.test(headers[i + 1]!)) return false;
  }
  return true;
}

const JSON_HEADERS: readonly string[] = Object.freeze(['content-type', 'application/json']);

/** What the client gets for a request, in the terms of HTTP. */
export interface FinalAnswer {
  readonly status: number;
  readonly headers: readonly string[];
  readonly body: Buffer;
  /** True when a response from the pipeline HTTP cannot carry was replaced by 502 `BF_ERR_BAD_ANSWER`. */
  readonly bad: boolean;
}

/**
 * The answer for a request from what the pipeline gave (a response or an error): a
 * response HTTP can carry goes as it is, an error as its JSON body, anything else as 502
 * `BF_ERR_BAD_ANSWER`. The one place that decides it, for the server and for testing.
 */
export function finalAnswer(response: ResponseData | null, error: ErrorData | null): FinalAnswer {
  if (response !== null && isSendable(response.status, response.headers)) return { status: response.status, headers: response.headers, body: response.body, bad: false };
  let err = error ?? BAD_ANSWER;
  const bad = response !== null || !isSendable(err.status, []);
  if (bad) err = BAD_ANSWER;
  const { headers, body } = errorBody(err);
  return { status: err.status, headers, body, bad };
}

/** The body and headers of an error response: `{"error":{"code":…,"message":…}}`. */
export function errorBody(err: ErrorData): { headers: readonly string[]; body: Buffer } {
  const body = Buffer.from(JSON.stringify({ error: { code: err.code, message: err.message } }));
  if (err.status === 503) return { headers: [...JSON_HEADERS, 'retry-after', '1'], body };
  return { headers: JSON_HEADERS, body };
}

const statusLines = new Map<number, string>();

/** `200 OK`, `504 Gateway Timeout`, …: the status line as uWS's writeStatus wants it. */
export function statusLine(status: number): string {
  let line = statusLines.get(status);
  if (line === undefined) {
    line = `${status} ${STATUS_CODES[status] ?? 'Unknown'}`;
    statusLines.set(status, line);
  }
  return line;
}
