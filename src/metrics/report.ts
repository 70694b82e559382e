import * as zmq from 'zeromq';
import { type Logger, silentLogger } from '../logger.js';
import { defaultsOf, withDefaults } from '../options.js';
import type { ProxyStats } from '../proxy/index.js';
import { type LinkSecurity, configureSocket, receiveEach, secureClient, secureServer } from '../wire/index.js';
import type { StageReadiness } from './admin.js';
import type { StageSample } from './collectors.js';
import { LATENCY_BOUNDS_MS } from '../histogram.js';

/**
 * Stage reports, for split mode: each `butterflyd proxy` sends its stage's counts to the
 * server every `intervalMs` over a ZeroMQ PUSH socket, as one small JSON message, so that
 * one scrape of the server sees the whole pipeline and its `/ready` knows every stage.
 * The server binds the PULL end. Reports are not on the request path.
 */

/** Version of the report message. */
const REPORT_VERSION = 1;

/** Options of a proxy's reporter. */
export interface StageReporterOptions {
  /** The server's report address (it binds, the reporter connects). */
  address: string;
  /** 0-based index of the stage. */
  index: number;
  /** The stage's name. */
  name: string;
  /** Reads the counts to send. */
  stats: () => ProxyStats;
  /** Time between reports, in ms. Default 1000. */
  intervalMs: number;
  /** Largest ZeroMQ message, in bytes. Default 64 MiB. */
  maxMessageBytes: number;
  /** CURVE keys: the server is reached as a CURVE client. Default none (plaintext). */
  security: LinkSecurity | undefined;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const REPORTER_DEFAULTS = Object.freeze({
  intervalMs: 1000,
  maxMessageBytes: defaultsOf(['maxMessageBytes']).maxMessageBytes as number,
  security: undefined,
  logger: silentLogger,
});

/**
 * Sends one stage's counts to the server at a fixed interval. A report that cannot be
 * sent at once (no server yet, or one still queued) is skipped: the next one carries the
 * newer counts anyway.
 */
export class StageReporter {
  private currentState: 'starting' | 'running' | 'closed' = 'starting';

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'closed' {
    return this.currentState;
  }
  private readonly options: StageReporterOptions;
  private readonly socket = new zmq.Push();
  private timer: NodeJS.Timeout | undefined;
  private sending = false;

  constructor(options: Partial<StageReporterOptions> & Pick<StageReporterOptions, 'address' | 'index' | 'name' | 'stats'>) {
    const o = withDefaults<StageReporterOptions>(REPORTER_DEFAULTS as StageReporterOptions, options);
    this.options = o;
    configureSocket(this.socket, { maxMessageBytes: o.maxMessageBytes });
    this.socket.sendHighWaterMark = 1;
    this.socket.sendTimeout = 0;
    secureClient(this.socket, o.security);
  }

  /** Connects and starts reporting; the first report goes out at once. */
  start(): void {
    this.socket.connect(this.options.address);
    this.currentState = 'running';
    this.timer = setInterval(() => this.report(), this.options.intervalMs);
    this.timer.unref();
    this.report();
  }

  /** Stops reporting. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.currentState = 'closed';
    if (this.timer !== undefined) clearInterval(this.timer);
    this.socket.close();
  }

  /** Same as `close()`: a reporter holds nothing to finish. */
  destroy(): Promise<void> {
    return this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private report(): void {
    if (this.sending || this.state !== 'running') return;
    const o = this.options;
    const message = JSON.stringify({ v: REPORT_VERSION, index: o.index, name: o.name, stats: o.stats() });
    this.sending = true;
    this.socket.send(message).then(
      () => (this.sending = false),
      (err: unknown) => {
        this.sending = false;
        if ((err as { code?: string }).code !== 'EAGAIN' && !this.socket.closed) o.logger.debug({ err }, 'stage report not sent');
      },
    );
  }
}

/** Options of the server's board of stage reports. */
export interface StageBoardOptions {
  /** Address to bind for reports. */
  address: string;
  /** Stages in the pipeline; reports for other indexes are dropped. */
  stages: number;
  /** A stage whose last report is older than this counts as down, in ms. Default 3500. */
  staleAfterMs: number;
  /** Largest ZeroMQ message, in bytes. Default 64 MiB. */
  maxMessageBytes: number;
  /** CURVE keys: only the allowlist's keys may report. Default none (plaintext). */
  security: LinkSecurity | undefined;
  logger: Logger;
}

/** Defaults for the options that have them. */
export const BOARD_DEFAULTS = Object.freeze({
  staleAfterMs: 3500,
  maxMessageBytes: defaultsOf(['maxMessageBytes']).maxMessageBytes as number,
  security: undefined,
  logger: silentLogger,
});

interface Entry {
  name: string;
  stats: ProxyStats;
  receivedAt: number;
}

/** Keeps the last report of every stage, for the server's metrics and readiness. */
export class StageBoard {
  private currentState: 'starting' | 'running' | 'closed' = 'starting';

  /** Lifecycle state. */
  get state(): 'starting' | 'running' | 'closed' {
    return this.currentState;
  }
  private undecodableCount = 0;
  private readonly options: StageBoardOptions;
  private readonly socket = new zmq.Pull();
  private readonly entries: (Entry | undefined)[];
  private loop: Promise<void> | undefined;
  /** Releases the socket's hold on the ZAP handler (CURVE). */
  private releaseKeys: () => void = () => {};

  /** Reports that could not be decoded (or named a stage out of range), since start. */
  get undecodable(): number {
    return this.undecodableCount;
  }

  constructor(options: Partial<StageBoardOptions> & Pick<StageBoardOptions, 'address' | 'stages'>) {
    const o = withDefaults<StageBoardOptions>(BOARD_DEFAULTS as StageBoardOptions, options);
    this.options = o;
    this.entries = new Array<Entry | undefined>(o.stages).fill(undefined);
    configureSocket(this.socket, { maxMessageBytes: o.maxMessageBytes });
  }

  /** Binds the report address and starts receiving. */
  async start(): Promise<void> {
    this.releaseKeys = await secureServer(this.socket, this.options.security, this.options.logger);
    await this.socket.bind(this.options.address);
    this.currentState = 'running';
    this.loop = receiveEach(this.socket, (frames) => this.onReport(frames), this.options.logger, 'stage reports');
  }

  /** The stages as last reported; a stage never heard from has no stats. */
  samples(): StageSample[] {
    const now = Date.now();
    return this.entries.map((e, index) => ({
      index,
      name: e?.name ?? `stage-${index}`,
      up: e !== undefined && now - e.receivedAt <= this.options.staleAfterMs,
      stats: e?.stats,
      pool: undefined,
    }));
  }

  /** Each stage's live workers; undefined for a stage not heard from lately. */
  readiness(): StageReadiness[] {
    return this.samples().map((s, index) => ({ index, name: s.name, workers: s.up ? s.stats?.workers : undefined }));
  }

  /** Stops receiving. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.currentState = 'closed';
    this.socket.close();
    this.releaseKeys();
    await this.loop;
  }

  /** Same as `close()`: a board holds nothing to finish. */
  destroy(): Promise<void> {
    return this.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private onReport(frames: Buffer[]): void {
    const report = decodeReport(frames[0]);
    if (report === undefined || report.index >= this.entries.length) {
      this.undecodableCount++;
      this.options.logger.warn({ index: report?.index }, 'stage report dropped: undecodable, or for a stage this pipeline does not have');
      return;
    }
    this.entries[report.index] = { name: report.name, stats: report.stats, receivedAt: Date.now() };
  }
}

const COUNT_FIELDS = ['queued', 'inFlight', 'workers', 'readySlots', 'accepted', 'refused', 'undecodable', 'workersReady'] as const;

function count(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/** Parses and checks a report; undefined for anything malformed. */
function decodeReport(frame: Buffer | undefined): { index: number; name: string; stats: ProxyStats } | undefined {
  if (frame === undefined || frame.length > 64 * 1024) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(frame.toString('utf8'));
  } catch {
    return undefined;
  }
  if (parsed === null || typeof parsed !== 'object') return undefined;
  const r = parsed as { v?: unknown; index?: unknown; name?: unknown; stats?: unknown };
  if (r.v !== REPORT_VERSION || !Number.isInteger(r.index) || !count(r.index) || typeof r.name !== 'string' || r.name.length === 0 || r.name.length > 200) return undefined;
  const stats = r.stats as Record<string, unknown> | null | undefined;
  if (stats === null || typeof stats !== 'object') return undefined;
  for (const field of COUNT_FIELDS) if (!count(stats[field])) return undefined;
  const h = stats.stageTime as { counts?: unknown; sumMs?: unknown; count?: unknown } | null | undefined;
  if (h === null || typeof h !== 'object' || !count(h.sumMs) || !count(h.count)) return undefined;
  if (!Array.isArray(h.counts) || h.counts.length !== LATENCY_BOUNDS_MS.length + 1 || !h.counts.every(count)) return undefined;
  const s = stats as Record<(typeof COUNT_FIELDS)[number], number>;
  return {
    index: r.index,
    name: r.name,
    stats: {
      queued: s.queued,
      inFlight: s.inFlight,
      workers: s.workers,
      readySlots: s.readySlots,
      accepted: s.accepted,
      refused: s.refused,
      undecodable: s.undecodable,
      workersReady: s.workersReady,
      stageTime: { counts: h.counts as number[], sumMs: h.sumMs, count: h.count },
    },
  };
}
