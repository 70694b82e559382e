/**
 * Bucket upper bounds of every latency histogram, in ms: from a quarter of a millisecond
 * (a request answered by stage 1 on an idle machine) to 30 s (the default deadline).
 */
export const LATENCY_BOUNDS_MS: readonly number[] = Object.freeze([0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000]);

/** A histogram's counts at one moment; plain data, so it can travel as JSON. */
export interface HistogramSnapshot {
  /** Observations per bucket, not cumulative: `counts[i]` for `bounds[i - 1] < ms <= bounds[i]`, the last for `ms > bounds[bounds.length - 1]`. */
  readonly counts: readonly number[];
  /** Sum of every observation, in ms. */
  readonly sumMs: number;
  /** Observations since start. */
  readonly count: number;
}

/**
 * A fixed-bucket latency histogram cheap enough for the hot path: `observe` is a short
 * scan over `LATENCY_BOUNDS_MS` and three additions, with no allocation and no labels.
 * The metrics layer turns snapshots into Prometheus histograms at scrape time.
 */
export class LatencyHistogram {
  private readonly counts = new Float64Array(LATENCY_BOUNDS_MS.length + 1);
  private sumMs = 0;
  private count = 0;

  /** Counts one observation of `ms` milliseconds (negative values count as 0). */
  observe(ms: number): void {
    const bounds = LATENCY_BOUNDS_MS;
    let i = 0;
    while (i < bounds.length && ms > bounds[i]!) i++;
    this.counts[i]!++;
    this.sumMs += ms > 0 ? ms : 0;
    this.count++;
  }

  /** The counts so far. */
  snapshot(): HistogramSnapshot {
    return { counts: Array.from(this.counts), sumMs: this.sumMs, count: this.count };
  }
}
