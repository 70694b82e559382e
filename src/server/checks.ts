import { STATUS_CODES } from 'node:http';
import type { ErrorCode } from '../errors.js';
import { ERROR_STATUS } from '../errors.js';
import type { ErrorData } from '../wire/index.js';
import type { EngineLimits } from './engines/engine.js';

/**
 * Checks every engine applies to a request head before it reads a body, so that both
 * engines refuse the same requests with the same status: the target's length, the number
 * and size of header fields, and framing headers that could smuggle a second request.
 */

const DIGITS = /^[0-9]+$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);

/** An error as the front end answers it. */
export function refusal(code: ErrorCode, message: string): ErrorData {
  return { code, status: ERROR_STATUS[code], message };
}

/**
 * Returns the refusal for a bad request head, or null when it may proceed. `headers` is
 * the flat `[name, value, …]` list with lower-case names.
 */
export function checkHead(method: string, target: string, headers: readonly string[], limits: EngineLimits): ErrorData | null {
  if (!TOKEN.test(method)) return refusal('BF_ERR_BAD_REQUEST', 'malformed method');
  if (!KNOWN_METHODS.has(method)) return refusal('BF_ERR_NOT_IMPLEMENTED', `method ${method} is not implemented`);
  if (target.length > limits.maxUrlBytes) return refusal('BF_ERR_URL_TOO_LONG', `request target longer than ${limits.maxUrlBytes} bytes`);
  if (target.length === 0 || target.charCodeAt(0) !== 0x2f) return refusal('BF_ERR_BAD_REQUEST', 'request target must start with /');
  const count = headers.length >> 1;
  if (count > limits.maxHeaderCount) return refusal('BF_ERR_HEADERS_TOO_LARGE', `more than ${limits.maxHeaderCount} header fields`);
  let bytes = 0;
  let contentLength: string | undefined;
  let transferEncoding: string | undefined;
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    bytes += name.length + value.length + 4;
    if (name === 'content-length') {
      if (contentLength !== undefined) return refusal('BF_ERR_BAD_REQUEST', 'more than one Content-Length');
      contentLength = value;
    } else if (name === 'transfer-encoding') {
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
    }
  }
  if (bytes > limits.maxHeaderBytes) return refusal('BF_ERR_HEADERS_TOO_LARGE', `header block larger than ${limits.maxHeaderBytes} bytes`);
  if (contentLength !== undefined) {
    if (!DIGITS.test(contentLength)) return refusal('BF_ERR_BAD_REQUEST', 'Content-Length must be digits');
    if (transferEncoding !== undefined) return refusal('BF_ERR_BAD_REQUEST', 'both Content-Length and Transfer-Encoding');
    if (Number(contentLength) > limits.maxBodyBytes) return refusal('BF_ERR_BODY_TOO_LARGE', `body larger than ${limits.maxBodyBytes} bytes`);
  }
  if (transferEncoding !== undefined) {
    const codings = transferEncoding.split(',').map((c) => c.trim().toLowerCase());
    if (codings[codings.length - 1] !== 'chunked') return refusal('BF_ERR_BAD_REQUEST', 'Transfer-Encoding must end with chunked');
    if (codings.length > 1) return refusal('BF_ERR_NOT_IMPLEMENTED', `transfer coding ${codings[0]} is not implemented`);
  }
  return null;
}

const JSON_HEADERS: readonly string[] = Object.freeze(['content-type', 'application/json']);

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
