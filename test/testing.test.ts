import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'butterfly/testing';
import type { Butterfly } from '../dist/index.js';
import { fixture, request, start } from './helpers.js';

const pipeline = { stages: [{ module: fixture('inject-first.js') }, { module: fixture('inject-second.js') }] };
const TIMEOUT_MS = 300;
/** What the connection, not the pipeline, says. */
const TRANSPORT = new Set(['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding']);

let bf: Butterfly;
beforeAll(async () => {
  bf = await start({ workers: 1, requestTimeoutMs: TIMEOUT_MS, pipeline });
});
afterAll(async () => {
  await bf.close();
});

function pipelineHeaders(headers: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !TRANSPORT.has(name)).map(([name, value]) => [name, String(value)]));
}

describe('butterfly/testing', () => {
  const cases: [string, number][] = [
    ['/double?n=21', 200],
    ['/made', 201],
    ['/bad', 400],
    ['/plain', 500],
    ['/slow', 504],
    ['/nowhere', 404],
  ];
  for (const [path, status] of cases) {
    it(`gives ${path} the status, headers and body the daemon gives over HTTP (${status})`, async () => {
      const headers = { 'x-who': 'tester' };
      const [injected, served] = await Promise.all([inject(pipeline, { path, headers }, { requestTimeoutMs: TIMEOUT_MS }), request(bf.port, path, { headers })]);
      expect(served.status).toBe(status);
      expect(injected.status).toBe(served.status);
      expect(injected.text()).toBe(served.body);
      expect(injected.headers).toEqual(pipelineHeaders(served.headers));
    });
  }

  it('runs one stage alone, aborts its signal at the deadline, and answers a stage budget with 504 of its own', async () => {
    const { default: first } = (await import(fixture('inject-first.js'))) as { default: Parameters<typeof inject>[0] & { name: string } };
    const ok = await inject(first, { path: '/made' });
    expect([ok.status, ok.text(), ok.headers['x-made']]).toEqual([201, 'made', 'yes']);
    const last = await inject(first, { path: '/double?n=1' });
    expect([last.status, (last.json() as { error: { code: string } }).error.code]).toEqual([500, 'BF_ERR_NO_NEXT_STAGE']);
    const budget = await inject({ stages: [{ module: fixture('inject-first.js'), timeoutMs: 100 }] }, { path: '/slow' }, { requestTimeoutMs: 5000 });
    expect(budget.status).toBe(504);
    expect(budget.json()).toEqual({ error: { code: 'BF_ERR_DEADLINE', message: 'stage fixture.inject-first ran out of time' } });
  });
});
