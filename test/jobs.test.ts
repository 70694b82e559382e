import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ButterflyError, chunks } from '../dist/index.js';
import { fixture, start, tempDirs } from './helpers.js';
import { pollUntil } from './split-helpers.js';

const JOBS = { stages: [{ module: fixture('job-stage.js') }] };
const tempDir = tempDirs('bf-jobs-');
function markFile(): string {
  return join(tempDir(), 'mark');
}
function markOf(path: string, unless: string): Promise<string> {
  return pollUntil(`${path} written`, async () => {
    try {
      // writeFileSync empties the file before it writes: an empty read is a write under way.
      const text = readFileSync(path, 'utf8');
      return text === unless || text === '' ? undefined : text;
    } catch {
      return undefined;
    }
  });
}
async function rejection(promise: Promise<unknown>): Promise<ButterflyError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ButterflyError);
  return err as ButterflyError;
}

describe('jobs from code: send', () => {
  it('resolves with the answer as it was sent, and rejects with the code and status a client would get', async () => {
    await using bf = await start({ http: false, workers: 1, pipeline: JOBS });
    expect(await bf.jobs.send({ op: 'double', n: 21 })).toEqual({ doubled: 42 });
    expect(await bf.jobs.send({ op: 'text' })).toBe('hi');
    expect(await rejection(bf.jobs.send({ op: 'fail' }))).toMatchObject({ code: 'BF_ERR_BAD_REQUEST', status: 400, message: 'no' });
  });

  it('rejects at its own timeout with BF_ERR_DEADLINE, and on abort with BF_ERR_CANCELLED while the handler sees the same', async () => {
    await using bf = await start({ http: false, workers: 2, pipeline: JOBS });
    const late = markFile();
    expect(await rejection(bf.jobs.send({ op: 'sleep', ms: 30_000, mark: late }, { timeoutMs: 300 }))).toMatchObject({ code: 'BF_ERR_DEADLINE', status: 504 });
    expect(await markOf(late, 'started')).toBe('BF_ERR_DEADLINE');
    const gone = markFile();
    const controller = new AbortController();
    const sent = bf.jobs.send({ op: 'sleep', ms: 30_000, mark: gone }, { signal: controller.signal });
    await markOf(gone, '');
    controller.abort();
    expect(await rejection(sent)).toMatchObject({ code: 'BF_ERR_CANCELLED' });
    expect(await markOf(gone, 'started')).toBe('BF_ERR_CANCELLED');
  });

  it('tells a handler that never armed its own deadline timer BF_ERR_DEADLINE, from the cancel its timed-out request sends', async () => {
    // The client checks deadlines every 5 ms here, the worker every 50 ms: the client's
    // cancel mostly reaches the handler first, and it must say why the request ended.
    await using bf = await start({ http: false, workers: 1, pipeline: JOBS, requestTimeoutMs: 50 });
    const mark = markFile();
    const sent = bf.jobs.send({ op: 'nap', ms: 400, mark }, { timeoutMs: 150 });
    expect(await rejection(sent)).toMatchObject({ code: 'BF_ERR_DEADLINE', status: 504 });
    expect(await markOf(mark, 'started')).toBe('BF_ERR_DEADLINE');
  });

  it('sends a job refused with 503 again when asked to, and not otherwise', async () => {
    // One worker running one job at a time, and no queue: a second job is refused while the first runs.
    await using bf = await start({ http: false, workers: 1, pipeline: { stages: [{ module: fixture('job-stage.js'), concurrency: 1, prefetch: 0, maxQueue: 0 }] } });
    const busy = markFile();
    const first = bf.jobs.send({ op: 'sleep', ms: 400, mark: busy });
    await markOf(busy, '');
    expect(await rejection(bf.jobs.send({ op: 'double', n: 1 }))).toMatchObject({ code: 'BF_ERR_OVERLOADED', status: 503 });
    // 50 + 100 + 200 + 400 ms of waits outlast the running job.
    expect(await bf.jobs.send({ op: 'double', n: 2 }, { retries: 5 })).toEqual({ doubled: 4 });
    expect(await first).toEqual({ slept: 400 });
  });
});

describe('jobs from code: distribute', () => {
  it('keeps at most `concurrency` jobs in flight and yields every outcome in input order, a failure among them', async () => {
    await using bf = await start({ http: false, workers: 2, pipeline: JOBS });
    let progress = 0;
    let mostInFlight = 0;
    const items = function* (): Generator<{ op: string; n: number }> {
      for (let n = 0; n < 1000; n++) {
        mostInFlight = Math.max(mostInFlight, bf.client.inFlight);
        yield { op: n === 500 ? 'fail' : 'double', n };
      }
    };
    const results = [];
    for await (const settled of bf.jobs.distribute(items(), { concurrency: 8, onProgress: (done) => (progress = done) })) results.push(settled);
    expect(results).toHaveLength(1000);
    expect(progress).toBe(1000);
    expect(mostInFlight).toBeLessThanOrEqual(8);
    results.forEach((r, n) => {
      if (n === 500) expect(r).toMatchObject({ ok: false, error: { code: 'BF_ERR_BAD_REQUEST', message: 'no 500' } });
      else expect(r).toEqual({ ok: true, value: { doubled: 2 * n } });
    });
  });
});

describe('jobs from code: distribute around a slow job', () => {
  it('fills a slot freed by any answer, with at most 2 x `concurrency` jobs sent and not yet yielded', async () => {
    await using bf = await start({ http: false, workers: 2, pipeline: JOBS });
    let mostInFlight = 0;
    const items = function* (): Generator<{ op: string; n?: number; ms?: number }> {
      for (let n = 0; n < 16; n++) {
        mostInFlight = Math.max(mostInFlight, bf.client.inFlight);
        // The first job holds one worker; the other worker answers the rest at once.
        yield n === 0 ? { op: 'sleep', ms: 1500 } : { op: 'double', n };
      }
    };
    let progress = 0;
    let answeredAtFirstYield = -1;
    const results = [];
    for await (const r of bf.jobs.distribute(items(), { concurrency: 4, onProgress: (done) => (progress = done) })) {
      if (answeredAtFirstYield === -1) answeredAtFirstYield = progress;
      results.push(r);
    }
    // Refilled only when the oldest job is answered, 3 jobs would have gone past it; refilled
    // on every answer, jobs go on past it until 8 (2 x concurrency) are sent and not yielded.
    expect(answeredAtFirstYield).toBe(8);
    expect(mostInFlight).toBeLessThanOrEqual(4);
    expect(results).toEqual([{ ok: true, value: { slept: 1500 } }, ...Array.from({ length: 15 }, (_, i) => ({ ok: true, value: { doubled: 2 * (i + 1) } }))]);
  });
});

describe('jobs from code: distribute left early', () => {
  it('closes its source when the loop over it ends early', async () => {
    await using bf = await start({ http: false, workers: 1, pipeline: JOBS });
    let closedSource = (): void => {};
    const closed = new Promise<void>((resolve) => (closedSource = resolve));
    const items = async function* (): AsyncGenerator<{ op: string; n: number }> {
      try {
        for (let n = 0; ; n++) yield { op: 'double', n };
      } finally {
        closedSource();
      }
    };
    for await (const r of bf.jobs.distribute(items(), { concurrency: 4 })) {
      expect(r).toEqual({ ok: true, value: { doubled: 0 } });
      break;
    }
    await closed;
  });

  it('ends the iteration with the error its progress callback throws', async () => {
    await using bf = await start({ http: false, workers: 1, pipeline: JOBS });
    const items = Array.from({ length: 20 }, (_, n) => ({ op: 'double', n }));
    const onProgress = (done: number): void => {
      if (done === 3) throw new Error('progress failed');
    };
    const seen: unknown[] = [];
    const err = await (async () => {
      for await (const r of bf.jobs.distribute(items, { concurrency: 2, onProgress })) seen.push(r);
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ message: 'progress failed' });
    expect(seen.length).toBeLessThan(20);
  });
});

describe('jobs from code: worker deaths', () => {
  const IDEMPOTENT = { stages: [{ module: fixture('job-stage-idempotent.js') }] };

  it('answers a job of an idempotent stage whose worker is killed under it, from another worker', async () => {
    await using bf = await start({ http: false, workers: 2, transport: 'process', pipeline: IDEMPOTENT });
    const mark = markFile();
    const sent = bf.jobs.send({ op: 'hold', ms: 800, mark });
    const victim = Number((await markOf(mark, '')).split(' ')[1]);
    process.kill(victim, 'SIGKILL');
    const answer = (await sent) as { pid: number };
    expect(answer.pid).not.toBe(victim);
  });

  it('distributes 10,000 items in order, reading them only as fast as it sends them, while a worker crashes among them', async () => {
    await using bf = await start({ http: false, workers: 2, transport: 'process', pipeline: IDEMPOTENT });
    const mark = markFile();
    let mostInFlight = 0;
    const items = function* (): Generator<{ op: string; n: number; mark?: string }> {
      for (let n = 0; n < 10_000; n++) {
        mostInFlight = Math.max(mostInFlight, bf.client.inFlight);
        yield n === 5000 ? { op: 'crash', n, mark } : { op: 'double', n };
      }
    };
    let n = 0;
    for await (const r of bf.jobs.distribute(items(), { concurrency: 16 })) {
      // The crashed worker's job is sent once more by its proxy (the stage is idempotent), to a live worker.
      expect(r).toEqual({ ok: true, value: { doubled: 2 * n } });
      n++;
    }
    expect(n).toBe(10_000);
    expect(readFileSync(mark, 'utf8')).toMatch(/^crashed \d+$/);
    // What the batch holds is bounded by what is in flight, not by its length.
    expect(mostInFlight).toBeLessThanOrEqual(16);
  });
});

describe('jobs from code: scatter-gather', () => {
  it('cuts a file into fixed-size chunks without reading it whole, sums each in the pipeline, and merges the parts to the plain sum', async () => {
    await using bf = await start({ http: false, workers: 2, pipeline: { stages: [{ module: fixture('digit-sum.js') }] } });
    // 3,000,007 seeded digits: 100 chunks of 30,000 bytes and a last one of 7.
    let seed = 42;
    const digits = Buffer.alloc(3_000_007);
    for (let i = 0; i < digits.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      digits[i] = 48 + (seed >>> 16) % 10;
    }
    const file = join(tempDir(), 'digits.txt');
    writeFileSync(file, digits);
    let plain = 0;
    for (const d of digits) plain += d - 48;
    let sum = 0;
    const sizes: number[] = [];
    const parts = async function* (): AsyncGenerator<Buffer> {
      for await (const chunk of chunks(file, 30_000)) {
        sizes.push(chunk.length);
        yield chunk;
      }
    };
    for await (const r of bf.jobs.distribute(parts(), { concurrency: 4 })) {
      expect(r.ok).toBe(true);
      if (r.ok) sum += (r.value as { sum: number }).sum;
    }
    expect(sum).toBe(plain);
    expect(sizes).toEqual([...new Array<number>(100).fill(30_000), 7]);
  });

  it('refuses a chunk size outside its bounds, naming it', async () => {
    const err = await chunks(['abc'], 0).next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).toBe('size must be an integer from 1 to 67108864, got 0');
  });
});
