import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import type { Butterfly } from '../dist/index.js';
import { request, start } from './helpers.js';
import { Procs, get, parseMetrics, pollUntil, portOf, sample, stageTwoNumbers } from './split-helpers.js';

const execFileP = promisify(execFile);
const procs = new Procs();
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  await procs.killAll();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function embedded(options: Parameters<typeof start>[0]): Promise<Butterfly> {
  const b = await start(options);
  cleanups.push(() => b.close());
  return b;
}

async function scrape(adminPort: number): Promise<ReturnType<typeof parseMetrics>> {
  const res = await get(adminPort, '/metrics');
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(res.body);
}

describe('metrics and health on the admin port', () => {
  it('counts requests by route and status, and every stage, in one scrape that matches what was sent', async () => {
    const b = await embedded({ adminPort: 0, metricsRoutes: ['/is_prime'] });
    expect(b.adminPort).toBeGreaterThan(0);
    expect(b.adminPort).not.toBe(b.port);
    const heavy = stageTwoNumbers(1_000_000_000, 10);
    const sends: [string, number][] = [
      ...Array.from({ length: 20 }, (): [string, number] => ['/is_prime?possible_prime=7', 200]),
      ...heavy.map((n): [string, number] => [`/is_prime?possible_prime=${n}`, 200]),
      ...Array.from({ length: 5 }, (): [string, number] => ['/is_prime?possible_prime=abc', 400]),
      ...Array.from({ length: 3 }, (_, i): [string, number] => [`/nope/${i}`, 404]),
      ['/health', 200],
      ['/health?probe=1', 200],
    ];
    await Promise.all(
      sends.map(async ([path, status]) => {
        const res = await request(b.port, path);
        expect(res.status, path).toBe(status);
      }),
    );

    // A worker's DONE may reach its proxy just after the answer reached the client.
    const s = await pollUntil('every DONE counted', async () => {
      const m = await scrape(b.adminPort);
      return sample(m, 'butterfly_stage_duration_seconds_count', { stage: 'is_prime.parse' }) === 38 &&
        sample(m, 'butterfly_stage_duration_seconds_count', { stage: 'is_prime.check' }) === 10
        ? m
        : undefined;
    });
    expect(sample(s, 'butterfly_http_requests_total', { route: '/is_prime', status: '200' })).toBe(30);
    expect(sample(s, 'butterfly_http_requests_total', { route: '/is_prime', status: '400' })).toBe(5);
    expect(sample(s, 'butterfly_http_requests_total', { route: 'other', status: '404' })).toBe(3);
    expect(sample(s, 'butterfly_http_requests_total', { route: '/health', status: '200' })).toBe(2);
    expect(s.filter((x) => x.name === 'butterfly_http_requests_total').reduce((sum, x) => sum + x.value, 0)).toBe(sends.length);
    expect(sample(s, 'butterfly_http_request_duration_seconds_count', { route: '/is_prime' })).toBe(35);
    expect(sample(s, 'butterfly_http_request_duration_seconds_bucket', { route: '/is_prime', le: '+Inf' })).toBe(35);
    expect(sample(s, 'butterfly_stage_jobs_total', { index: '0', stage: 'is_prime.parse' })).toBe(38);
    expect(sample(s, 'butterfly_stage_jobs_total', { index: '1', stage: 'is_prime.check' })).toBe(10);
    expect(sample(s, 'butterfly_stage_refused_total', { stage: 'is_prime.check' })).toBe(0);
    // The parse stage is adaptive: its two worker threads and one worker in the front end's thread.
    expect(sample(s, 'butterfly_stage_workers_alive', { stage: 'is_prime.parse' })).toBe(3);
    expect(sample(s, 'butterfly_stage_workers_ready', { stage: 'is_prime.check' })).toBe(2);
    expect(sample(s, 'butterfly_stage_queued', { stage: 'is_prime.check' })).toBe(0);
    expect(sample(s, 'butterfly_stage_in_flight', { stage: 'is_prime.check' })).toBe(0);
    expect(sample(s, 'butterfly_stage_pool_workers', { stage: 'is_prime.check' })).toBe(2);
    expect(sample(s, 'butterfly_stage_worker_restarts_total', { stage: 'is_prime.check' })).toBe(0);
    expect(sample(s, 'butterfly_requests_in_flight')).toBe(0);
    expect(sample(s, 'butterfly_loopback_undecodable_messages_total')).toBe(0);
    expect(sample(s, 'butterfly_stage_undecodable_messages_total', { stage: 'is_prime.parse' })).toBe(0);
    // Default process metrics come along.
    expect(sample(s, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(sample(s, 'nodejs_eventloop_lag_seconds')).toBeDefined();
    // /metrics is not on the public port: there it is just a path the pipeline does not know.
    expect((await request(b.port, '/metrics')).status).toBe(404);
  });

  it('counts 503 refusals by error code as the clients saw them', async () => {
    const b = await embedded({ adminPort: 0, metricsRoutes: ['/is_prime'], maxInFlight: 2, workers: 1 });
    const statuses = await Promise.all(Array.from({ length: 40 }, () => request(b.port, '/is_prime?possible_prime=32416190071').then((r) => r.status)));
    const refused = statuses.filter((st) => st === 503).length;
    expect(refused).toBeGreaterThan(0);
    expect(refused + statuses.filter((st) => st === 200).length).toBe(40);
    const s = await scrape(b.adminPort);
    expect(sample(s, 'butterfly_refusals_total', { code: 'BF_ERR_OVERLOADED' })).toBe(refused);
    expect(sample(s, 'butterfly_http_requests_total', { route: '/is_prime', status: '503' })).toBe(refused);
  });

  it('serves /health and /ready, refuses other paths and methods, and adds Server-Timing when asked', async () => {
    const b = await embedded({ adminPort: 0, serverTiming: true });
    expect(b.admin?.state).toBe('running');
    const health = await get(b.adminPort, '/health');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
    const ready = await get(b.adminPort, '/ready');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({
      ready: true,
      stages: [
        { index: 0, name: 'is_prime.parse', workers: 3 },
        { index: 1, name: 'is_prime.check', workers: 2 },
      ],
    });
    expect((await get(b.adminPort, '/elsewhere')).status).toBe(404);
    const post = await request(b.adminPort, '/metrics', { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);

    const timed = await request(b.port, '/is_prime?possible_prime=32416190071');
    expect(timed.status).toBe(200);
    expect(timed.headers['server-timing']).toMatch(/^pipeline;dur=\d+\.\d{3}$/);
    const refused = await request(b.port, '/is_prime?possible_prime=x');
    expect(refused.status).toBe(400);
    expect(refused.headers['server-timing']).toMatch(/^pipeline;dur=/);
    expect((await request(b.port, '/health')).headers['server-timing']).toBeUndefined();
  });

  it('has no admin port and no Server-Timing unless asked', async () => {
    const b = await embedded({});
    expect(b.admin).toBeUndefined();
    expect(b.registry).toBeUndefined();
    expect(b.adminPort).toBe(0);
    expect((await request(b.port, '/is_prime?possible_prime=7')).headers['server-timing']).toBeUndefined();
  });

  it('loads prom-client only in a process that serves metrics', async () => {
    // A fresh process each: this file's own process has loaded prom-client long since.
    const script = (options: string): string => `
      import { createRequire } from 'node:module';
      import { startButterfly } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
      const b = await startButterfly({ port: 0, workers: 1, workerLogLevel: 'warn', logLevel: 'warn', ${options} });
      const res = await fetch('http://127.0.0.1:' + b.port + '/is_prime?possible_prime=7');
      const loaded = Object.keys(createRequire(import.meta.url).cache).some((file) => file.includes('/prom-client/'));
      await b.close();
      console.log(JSON.stringify({ status: res.status, loaded }));
    `;
    const dir = mkdtempSync(join(tmpdir(), 'butterfly-prom-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const run = async (options: string): Promise<unknown> => {
      const file = join(dir, `${options === '' ? 'plain' : 'metrics'}.mjs`);
      writeFileSync(file, script(options));
      const { stdout } = await execFileP(process.execPath, [file], { timeout: 30_000 });
      return JSON.parse(stdout.trim().split('\n').pop()!);
    };
    expect(await run('')).toEqual({ status: 200, loaded: false });
    expect(await run('adminPort: 0')).toEqual({ status: 200, loaded: true });
  });

  it('writes an access log line per request and serves metrics from butterflyd --admin-port', async () => {
    const d = procs.start('butterflyd', ['--port', '0', '--workers', '1', '--admin-port', '0', '--access-log']);
    const [port, adminPort] = await Promise.all([portOf(d, 'listening'), portOf(d, 'admin listening')]);
    expect((await request(port, '/is_prime?possible_prime=7')).status).toBe(200);
    expect((await request(port, '/is_prime?possible_prime=-1')).status).toBe(400);
    const line = await d.waitFor((l) => l.log === 'access' && l.url === '/is_prime?possible_prime=7');
    expect(line).toMatchObject({ msg: 'request', method: 'GET', status: 200, remote: '127.0.0.1' });
    expect(typeof line.ms).toBe('number');
    const bad = await d.waitFor((l) => l.log === 'access' && l.status === 400);
    expect(bad).toMatchObject({ code: 'BF_ERR_BAD_REQUEST', url: '/is_prime?possible_prime=-1' });
    // The built-in pipeline's route is labelled without being asked for.
    const s = await scrape(adminPort);
    expect(sample(s, 'butterfly_http_requests_total', { route: '/is_prime', status: '200' })).toBe(1);
    // Lifecycle: start is logged, and SIGTERM drains and exits 0.
    expect(d.lines().some((l) => l.msg === 'worker joined')).toBe(true);
    expect(await d.stop('SIGTERM')).toBe(0);
    expect(d.lines().some((l) => l.msg === 'draining')).toBe(true);
  });

  it("reports a proxy daemon's own readiness on its admin port as workers join and leave", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bf-metrics-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const addr = (name: string): string => `ipc://${join(dir, name)}`;
    const proxy = procs.start('proxy', [
      'proxy', '--stage-index', '0', '--name', 'is_prime.parse', '--frontend', addr('in'), '--backend', addr('workers'),
      '--loopback', addr('loopback'), '--admin-port', '0',
    ]);
    const adminPort = await portOf(proxy, 'admin listening');
    const before = await get(adminPort, '/ready');
    expect(before.status).toBe(503);
    expect(JSON.parse(before.body)).toEqual({ ready: false, stages: [{ index: 0, name: 'is_prime.parse', workers: 0 }] });
    const worker = procs.start('worker', ['worker', '--stage', 'is_prime.parse', '--connect', addr('workers')]);
    await pollUntil('proxy ready', async () => ((await get(adminPort, '/ready')).status === 200 ? true : undefined));
    const s = await scrape(adminPort);
    expect(sample(s, 'butterfly_stage_workers_alive', { index: '0', stage: 'is_prime.parse' })).toBe(1);
    expect(await worker.stop('SIGTERM')).toBe(0);
    await pollUntil('proxy not ready', async () => ((await get(adminPort, '/ready')).status === 503 ? true : undefined));
    await proxy.waitFor((l) => l.msg === 'worker leaving');
  });
});
