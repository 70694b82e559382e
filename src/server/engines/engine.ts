/**
 * The one small interface between the front end and an HTTP engine. A request comes in
 * with everything copied out of the engine's own objects; one reply goes out. Engines
 * keep responses in order per connection.
 */

/** One HTTP request, fully read (the body is de-chunked and within the body limit). */
export interface EngineRequest {
  readonly method: string;
  /** The request target as sent: path and query, undecoded. */
  readonly target: string;
  /** `1.0` or `1.1`. */
  readonly httpVersion: string;
  /** Flat `[name, value, …]` list, names lower-case, in the order received. */
  readonly headers: string[];
  readonly body: Buffer;
  readonly remoteAddress: string;
}

/** The one response to a request. */
export interface EngineReply {
  /** True once the client has gone away; a reply sent then is dropped. */
  readonly aborted: boolean;
  /** Called once if the client goes away before the reply is sent. */
  onAbort(fn: () => void): void;
  /**
   * Sends the response. `headers` is a flat `[name, value, …]` list without
   * `content-length` (the engine adds it); `close` ends the connection after it.
   */
  send(status: number, headers: readonly string[], body: Buffer, close: boolean): void;
}

/** A request that needs no reading of a body was refused by the engine before it got here. */
export type EngineHandler = (req: EngineRequest, reply: EngineReply) => void;

/**
 * Limits every engine applies before a request reaches the handler. The connection-level
 * ones (`maxConnections`, `keepAliveTimeoutMs`, `headersTimeoutMs`) need a hook on the
 * connection itself, which only the `node` engine has: uWS closes idle and slow
 * connections by itself after about 10 s, without a response, and cannot count them.
 */
export interface EngineLimits {
  /** Longest request target, in bytes (414 past it). */
  readonly maxUrlBytes: number;
  /** Largest header block, in bytes (431 past it). */
  readonly maxHeaderBytes: number;
  /** Most header fields (431 past it). */
  readonly maxHeaderCount: number;
  /** Largest body, in bytes (413 past it). */
  readonly maxBodyBytes: number;
  /**
   * Idle time after which a keep-alive connection is closed, in ms. node:http advertises it
   * in `Keep-Alive: timeout=` and closes one second later, so that a client reusing the
   * connection right at the advertised limit does not meet the close.
   */
  readonly keepAliveTimeoutMs: number;
  /** Time a client has to send the whole request head, in ms (408 past it). */
  readonly headersTimeoutMs: number;
  /**
   * Time a client has to send the whole request, head and body, in ms (408 past it). The
   * `uws` engine counts it from the end of the head, since uWS shows nothing before that.
   */
  readonly requestReadTimeoutMs: number;
  /** Most connections open at once; past it new connections are closed at once, unanswered. */
  readonly maxConnections: number;
  /**
   * Requests of one connection handed to the pipeline at once; further pipelined requests
   * wait, and the connection is not read until one is answered (node engine; uWS itself
   * closes a connection that pipelines before its answer).
   */
  readonly maxInFlightPerConnection: number;
  /**
   * Time an answer may sit unsent because its client does not read, in ms; then the
   * connection is closed and its requests are cancelled (node engine).
   */
  readonly writeTimeoutMs: number;
  /** Bytes of request bodies held at once across the server, read or declared; a body that does not fit is refused 503 (node engine). */
  readonly maxBodyBytesInFlight: number;
}

/** Refusals an engine answers itself, reported to the front end for counting and logging. */
export type Refusal = (status: number, code: string) => void;

/** An HTTP engine: `node` (node:http) or `uws` (uWebSockets.js). */
export interface HttpEngine {
  /** Starts listening; resolves with the port bound (useful with port 0). */
  listen(host: string, port: number): Promise<number>;
  /** Connections closed because their client did not read its answers in time, since start. */
  readonly writeTimeouts: number;
  /** Requests that waited their turn behind their connection's others (`maxInFlightPerConnection`), since start. */
  readonly connectionWaits: number;
  /** Requests refused 503 because their body did not fit `maxBodyBytesInFlight`, since start. */
  readonly bodyRefusals: number;
  /** Stops accepting connections; connections already open finish their requests. */
  close(): Promise<void>;
  /** Stops accepting connections and closes every open one at once. */
  destroy(): Promise<void>;
}
