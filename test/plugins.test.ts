import { threadId } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { fixture, request, start } from './helpers.js';

describe('stages as plugins', () => {
  for (const transport of ['thread', 'process'] as const) {
    it(`runs a stage module from outside src/ in a worker ${transport}`, async () => {
      await using bf = await start({ transport, workers: 2, pipeline: { stages: [{ module: fixture('echo-stage.js') }] } });
      const res = await request(bf.port, '/some/where%20else?x=1&y=%C3%A9&x=2', { method: 'POST', body: 'payload' });
      expect(res.status).toBe(200);
      const seen = JSON.parse(res.body);
      expect(seen).toMatchObject({
        method: 'POST',
        path: '/some/where else',
        query: { x: '1', y: 'é' },
        body: 'payload',
        hasSignal: true,
        deadlineInFuture: true,
      });
      if (transport === 'process') {
        expect(seen.pid).not.toBe(process.pid);
        expect(bf.workerPids()).toContain(seen.pid);
      } else {
        expect(seen.pid).toBe(process.pid);
        expect(seen.threadId).not.toBe(threadId);
        expect(bf.workerPids()).toEqual([]);
      }
    });
  }

  it('passes a value from stage 1 to stage 2 of a plugin pipeline, across processes', async () => {
    await using bf = await start({
      transport: 'process',
      pipeline: { stages: [{ module: fixture('read-n.js'), workers: 1 }, { module: fixture('add-one.js'), workers: 1 }] },
    });
    const res = await request(bf.port, '/?n=41');
    expect(res.status).toBe(200);
    const body = JSON.parse(res.body);
    expect(body.result).toBe(42);
    expect(body.stage1).not.toBe(body.stage2);
    expect(bf.workerPids().sort()).toEqual([body.stage1, body.stage2].sort());
    const bad = await request(bf.port, '/?n=x');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({ error: { code: 'BF_ERR_BAD_REQUEST', message: 'n must be an integer' } });
  });

  it('answers 500 with a stable code and no stack trace or internal detail when a stage throws', async () => {
    await using bf = await start({ workers: 1, pipeline: { stages: [{ module: fixture('throwing-stage.js') }] } });
    const res = await request(bf.port, '/anything');
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body)).toEqual({ error: { code: 'BF_ERR_STAGE_FAILED', message: 'stage fixture.throws failed' } });
    expect(res.body).not.toMatch(/secret|\/srv|\bat\b|\.js/);
  });

  it('refuses to start, naming the module, when a stage module has no stage', async () => {
    await expect(start({ workers: 1, pipeline: { stages: [{ module: fixture('helpers-not-a-stage.js') }] } })).rejects.toThrow(/helpers-not-a-stage\.js/);
  });

  it('names the field of a bad pipeline description', async () => {
    await expect(start({ pipeline: { stages: [{ module: fixture('echo-stage.js'), workers: 0 }] } })).rejects.toThrow(
      'stages[0].workers must be an integer from 1 to 256, got 0',
    );
    await expect(start({ pipeline: { stages: [] } })).rejects.toThrow(/stages must be a list of 1 to 255 stages/);
  });
});
