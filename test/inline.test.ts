import { fileURLToPath } from 'node:url';
import { threadId } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
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

  it('refuses inline for butterflyd worker, whose proxy is another process, naming the option', async () => {
    const out = await run(process.execPath, [fileURLToPath(new URL('../bin/butterflyd.js', import.meta.url)), 'worker', '--stage', 'is_prime.parse', '--connect', 'ipc:///tmp/bf-inline-none', '--transport', 'inline']);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain('--transport must be thread or process for worker, whose proxy runs in another process, got "inline"');
  });
});
