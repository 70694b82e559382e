import { fileURLToPath } from 'node:url';
import { threadId } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { isPrimePipeline } from '../dist/stages/index.js';
import { fixture, request, run, start } from './helpers.js';

const STAGE = fixture('thread-of.js');

describe('inline stages', () => {
  it("runs an inline stage in the front end's thread and the next stage in a worker thread, answers and errors alike", async () => {
    await using bf = await start({ pipeline: { stages: [{ module: STAGE, transport: 'inline', workers: 1, timeoutMs: 300 }, { module: STAGE }] } });
    const answers = await Promise.all(Array.from({ length: 20 }, () => request(bf.port, '/')));
    for (const a of answers) {
      expect(a.status).toBe(200);
      const body = JSON.parse(a.body) as { stage1: number; stage2: number };
      expect(body.stage1).toBe(threadId);
      expect(body.stage2).not.toBe(threadId);
    }
    const failed = await request(bf.port, '/fail');
    expect(failed.status).toBe(400);
    expect(failed.body).toContain('failed inline');
    // An inline job past its stage's time budget is answered 504 and the stage goes on serving.
    const late = await request(bf.port, '/wait?ms=5000');
    expect(late.status).toBe(504);
    expect((await request(bf.port, '/')).status).toBe(200);
  });

  it('runs a whole pipeline inline with --transport inline', async () => {
    await using bf = await start({ transport: 'inline', workers: 1, pipeline: { stages: [{ module: STAGE }, { module: STAGE }] } });
    const body = JSON.parse((await request(bf.port, '/')).body) as { stage1: number; stage2: number };
    expect(body).toEqual({ stage1: threadId, stage2: threadId });
  });

  for (const transport of ['inline', 'adaptive']) {
    it(`refuses ${transport} for butterflyd worker, whose proxy is another process, naming the option`, async () => {
      const out = await run(process.execPath, [fileURLToPath(new URL('../bin/butterflyd.js', import.meta.url)), 'worker', '--stage', 'is_prime.parse', '--connect', 'ipc:///tmp/bf-inline-none', '--transport', transport]);
      expect(out.code).toBe(2);
      expect(out.stderr).toContain(`--transport must be thread or process for worker, whose proxy runs in another process, got "${transport}"`);
    });
  }
});

describe('adaptive stages', () => {
  async function stageOneThreads(port: number, count: number): Promise<Set<number>> {
    const threads = new Set<number>();
    for (let i = 0; i < count; i++) {
      const a = await request(port, '/');
      expect(a.status).toBe(200);
      threads.add((JSON.parse(a.body) as { stage1: number }).stage1);
    }
    return threads;
  }

  it("runs an adaptive stage in the front end's thread while that thread has time to spare, and in its worker threads while the thread is busy", async () => {
    await using bf = await start({ workers: 2, pipeline: { stages: [{ module: STAGE, transport: 'adaptive' }, { module: STAGE }] } });
    expect(await stageOneThreads(bf.port, 10)).toEqual(new Set([threadId]));
    // Keep this thread (the front end's) busy 9 ms of every 10 for a few of the proxy's 100 ms samples.
    const spin = setInterval(() => {
      const until = performance.now() + 9;
      while (performance.now() < until);
    }, 10);
    try {
      await sleep(400);
      const busy = await stageOneThreads(bf.port, 10);
      expect(busy.has(threadId)).toBe(false);
      expect(busy.size).toBeGreaterThan(0);
    } finally {
      clearInterval(spin);
    }
    // Quiet again for a few samples: back in this thread.
    await sleep(400);
    expect(await stageOneThreads(bf.port, 10)).toEqual(new Set([threadId]));
  });

  it("makes the built-in pipeline's parse stage adaptive with worker threads, and leaves it to any other transport", () => {
    expect(isPrimePipeline().stages.map((s) => s.transport)).toEqual(['adaptive', undefined]);
    expect(isPrimePipeline('thread').stages.map((s) => s.transport)).toEqual(['adaptive', undefined]);
    for (const transport of ['process', 'inline', 'adaptive'] as const) expect(isPrimePipeline(transport).stages.map((s) => s.transport)).toEqual([transport, undefined]);
  });
});
