/**
 * The wire format: the only place that knows bytes. Records (jobs, results, errors,
 * worker hello/done/heartbeat/bye, cancel) travel several to a ZeroMQ message.
 */
export {
  WIRE_VERSION,
  HEADER_BYTES,
  Kind,
  Flag,
  WireError,
  RecordWriter,
  decodeRecords,
  splitFrame,
  type KindValue,
  type WireRecord,
} from './format.js';
export {
  RequestData,
  writeValue,
  readValue,
  writeResponse,
  readResponse,
  writeError,
  readError,
  writeHello,
  readHello,
  writeWelcome,
  readWelcome,
  type Value,
  type ResponseData,
  type ErrorData,
  type WelcomeConfig,
  type HelloData,
} from './payloads.js';
export { Outbox, RouterOutbox, receiveEach, configureSocket, type LinkLogger, type LinkOptions } from './link.js';
