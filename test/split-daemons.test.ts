import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isPrime } from '../dist/stages/builtin.js';
import { fixture, request } from './helpers.js';
import { type Proc, Procs, get, needsStageTwo, parseMetrics, pollUntil, portOf, sample, stageTwoNumbers } from './split-helpers.js';

const procs = new Procs();
let dir: string | undefined;

afterEach(async () => {
  await procs.killAll();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

interface Split {
  readonly port: number;
  readonly adminPort: number;
  readonly server: Proc;
  /** The proxies of stage 1 and stage 2. */
  readonly proxies: readonly Proc[];
  readonly addr: (name: string) => string;
}

/** Starts the front end and both is_prime proxies as separate daemons over ipc:// in a fresh folder; no workers yet. */
async function startSplit(): Promise<Split> {
  dir = mkdtempSync(join(tmpdir(), 'bf-split-'));
  const folder = dir;
  const addr = (name: string): string => `ipc://${join(folder, name)}`;
  const stats = ['--stats', addr('stats')];
  const server = procs.start('server', [
    'server', '--port', '0', '--admin-port', '0', '--loopback', addr('loopback'),
    '--stages', `${addr('stage-0')},${addr('stage-1')}`, ...stats, '--metrics-routes', '/is_prime',
  ]);
  const proxies = [
    procs.start('proxy 0', [
      'proxy', '--stage-index', '0', '--name', 'is_prime.parse', '--frontend', addr('stage-0'), '--backend', addr('workers-0'),
      '--next', addr('stage-1'), '--loopback', addr('loopback'), ...stats,
    ]),
    procs.start('proxy 1', [
      'proxy', '--stage-index', '1', '--name', 'is_prime.check', '--frontend', addr('stage-1'), '--backend', addr('workers-1'),
      '--loopback', addr('loopback'), ...stats,
    ]),
  ];
  const [port, adminPort] = await Promise.all([portOf(server, 'listening'), portOf(server, 'admin listening')]);
  await Promise.all(proxies.map((p) => p.waitFor((l) => l.msg === 'proxy started')));
  return { port, adminPort, server, proxies, addr };
}

/** A stage-1 pool of two worker threads in one process. */
async function startParsePool(split: Split): Promise<Proc> {
  const pool = procs.start('parse pool', ['worker', '--stage', 'is_prime.parse', '--connect', split.addr('workers-0'), '--workers', '2']);
  await pool.waitFor((l) => l.msg === 'worker pool started');
  return pool;
}

/** One stage-2 worker in a process of its own. */
async function startCheckWorker(split: Split, name: string): Promise<Proc> {
  const worker = procs.start(name, ['worker', '--stage', 'is_prime.check', '--connect', split.addr('workers-1')]);
  await worker.waitFor((l) => l.msg === 'worker joined its proxy');
  return worker;
}

interface Readiness {
  ready: boolean;
  stages: { index: number; name: string; workers?: number }[];
}

async function readiness(adminPort: number): Promise<{ status: number; body: Readiness }> {
  const res = await get(adminPort, '/ready');
  return { status: res.status, body: JSON.parse(res.body) as Readiness };
}

function expected(n: number): string {
  return JSON.stringify({ possible_prime: n, is_prime: isPrime(n) });
}

describe('split mode: server, proxies and workers as separate butterflyd processes', () => {
  it('answers is_prime through two proxies and two worker pools; /ready is false until stage 2 has a worker', async () => {
    const split = await startSplit();
    await startParsePool(split);

    // Both proxies have reported since stage 1's workers joined: stage 2 has none, so not ready.
    const before = await pollUntil('both stages reported', async () => {
      const r = await readiness(split.adminPort);
      return r.body.stages[0]?.workers === 2 && r.body.stages[1]?.workers !== undefined ? r : undefined;
    });
    expect(before.status).toBe(503);
    expect(before.body.ready).toBe(false);
    expect(before.body.stages).toEqual([
      { index: 0, name: 'is_prime.parse', workers: 2 },
      { index: 1, name: 'is_prime.check', workers: 0 },
    ]);

    // Stage 1 answers what it can; what needs stage 2 is refused at once.
    const small = await request(split.port, '/is_prime?possible_prime=97');
    expect(small.status).toBe(200);
    expect(small.body).toBe(expected(97));
    const [big] = stageTwoNumbers(1_000_000_000, 1);
    const refused = await request(split.port, `/is_prime?possible_prime=${big}`);
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('1');
    expect(JSON.parse(refused.body).error.code).toBe('BF_ERR_NO_WORKER');

    // A stage-2 pool joins: ready.
    const checkPool = procs.start('check pool', ['worker', '--stage', 'is_prime.check', '--connect', split.addr('workers-1'), '--workers', '2']);
    await checkPool.waitFor((l) => l.msg === 'worker pool started');
    // Reports come every second: the first one after the pool started may predate its second worker.
    const after = await pollUntil('ready with both stage-2 workers', async () => {
      const r = await readiness(split.adminPort);
      return r.status === 200 && r.body.stages[1]?.workers === 2 ? r : undefined;
    });
    expect(after.body.ready).toBe(true);
    expect(after.body.stages[1]!.workers).toBe(2);

    const numbers = [2, 91, 10_201, ...stageTwoNumbers(1_000_000_000, 20), 32_416_190_071];
    for (const n of numbers) {
      const res = await request(split.port, `/is_prime?possible_prime=${n}`);
      expect(res.status, `possible_prime=${n}`).toBe(200);
      expect(res.body).toBe(expected(n));
    }

    // One scrape of the server sees the front end and, through the stage reports, both stages.
    const viaStage2 = numbers.filter(needsStageTwo);
    const total = numbers.length + 2;
    const samples = await pollUntil('stage reports caught up', async () => {
      const s = parseMetrics((await get(split.adminPort, '/metrics')).body);
      return sample(s, 'butterfly_stage_jobs_total', { stage: 'is_prime.check' }) === viaStage2.length + 1 &&
        sample(s, 'butterfly_stage_jobs_total', { stage: 'is_prime.parse' }) === total
        ? s
        : undefined;
    });
    expect(sample(samples, 'butterfly_http_requests_total', { route: '/is_prime', status: '200' })).toBe(total - 1);
    expect(sample(samples, 'butterfly_http_requests_total', { route: '/is_prime', status: '503' })).toBe(1);
    expect(sample(samples, 'butterfly_http_request_duration_seconds_count', { route: '/is_prime' })).toBe(total);
    expect(sample(samples, 'butterfly_refusals_total', { code: 'BF_ERR_NO_WORKER' })).toBe(1);
    expect(sample(samples, 'butterfly_stage_refused_total', { stage: 'is_prime.check' })).toBe(1);
    expect(sample(samples, 'butterfly_stage_duration_seconds_count', { stage: 'is_prime.check' })).toBe(viaStage2.length);
    expect(sample(samples, 'butterfly_stage_duration_seconds_count', { stage: 'is_prime.parse' })).toBe(total);
    expect(sample(samples, 'butterfly_stage_workers_alive', { index: '1', stage: 'is_prime.check' })).toBe(2);
    expect(sample(samples, 'butterfly_stage_up', { index: '0' })).toBe(1);
    expect(sample(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
  });

  it('adds and removes stage-2 workers under load without losing or mixing up a request', async () => {
    const split = await startSplit();
    await startParsePool(split);
    const first = await startCheckWorker(split, 'check worker A');
    await pollUntil('ready', async () => ((await readiness(split.adminPort)).status === 200 ? true : undefined));

    // Every request asks about a different number, and its answer must be that number's.
    const numbers = stageTwoNumbers(1_000_000_000, 200_000);
    const answers = new Map<number, string[]>();
    const failures: string[] = [];
    let nextIndex = 0;
    let answered = 0;
    let stopping = false;
    const thresholds: { count: number; reached: () => void }[] = [];
    const answeredAtLeast = (count: number): Promise<void> =>
      new Promise((resolve) => {
        if (answered >= count) resolve();
        else thresholds.push({ count, reached: resolve });
      });
    const client = async (): Promise<void> => {
      while (!stopping && nextIndex < numbers.length) {
        const n = numbers[nextIndex++]!;
        try {
          const res = await request(split.port, `/is_prime?possible_prime=${n}`);
          const list = answers.get(n) ?? [];
          list.push(`${res.status} ${res.body}`);
          answers.set(n, list);
        } catch (err) {
          failures.push(`${n}: ${String(err)}`);
        }
        answered++;
        for (const t of thresholds.filter((t) => answered >= t.count)) {
          thresholds.splice(thresholds.indexOf(t), 1);
          t.reached();
        }
      }
    };
    const clients = Array.from({ length: 8 }, () => client());
    try {
      await answeredAtLeast(300);
      let current = first;
      for (const name of ['B', 'C']) {
        // Another worker joins while requests flow: nothing is restarted.
        const joining = await startCheckWorker(split, `check worker ${name}`);
        await answeredAtLeast(answered + 200);
        // The older one leaves: it says BYE, finishes what it holds and exits 0.
        expect(await current.stop('SIGTERM')).toBe(0);
        await answeredAtLeast(answered + 200);
        expect(joining.child.exitCode).toBeNull();
        current = joining;
      }
    } finally {
      stopping = true;
      await Promise.all(clients);
    }

    expect(failures).toEqual([]);
    const sent = numbers.slice(0, nextIndex);
    expect(answers.size).toBe(sent.length);
    const wrong = sent.filter((n) => answers.get(n)?.length !== 1 || answers.get(n)![0] !== `200 ${expected(n)}`);
    expect(wrong.map((n) => `${n}: ${JSON.stringify(answers.get(n))}`)).toEqual([]);
    expect(sent.length).toBeGreaterThanOrEqual(1100);
    // The front end counted every one of them as a 200.
    const scrape = parseMetrics((await get(split.adminPort, '/metrics')).body);
    expect(sample(scrape, 'butterfly_http_requests_total', { route: '/is_prime', status: '200' })).toBe(sent.length);
  }, 90_000);

  it('adds and removes a whole pool of a stage beside an identical one under load: no worker expired, every answer 200, every worker counted', async () => {
    const split = await startSplit();
    await startParsePool(split);
    const startPool = async (name: string): Promise<Proc> => {
      const pool = procs.start(name, ['worker', '--stage', 'is_prime.check', '--connect', split.addr('workers-1'), '--workers', '2', '--transport', 'process']);
      await pool.waitFor((l) => l.msg === 'worker pool started');
      return pool;
    };
    const stageTwoWorkers = (count: number): Promise<true> =>
      pollUntil(`${count} stage-2 workers`, async () => ((await readiness(split.adminPort)).body.stages[1]?.workers === count ? true : undefined));
    const first = await startPool('check pool A');
    await stageTwoWorkers(2);

    const numbers = stageTwoNumbers(2_000_000_000, 100_000);
    const wrong: string[] = [];
    let next = 0;
    let stopping = false;
    let answered = 0;
    const clients = Array.from({ length: 8 }, async () => {
      while (!stopping && next < numbers.length) {
        const n = numbers[next++]!;
        const res = await request(split.port, `/is_prime?possible_prime=${n}`);
        answered++;
        if (res.status !== 200 || res.body !== expected(n)) wrong.push(`${n}: ${res.status} ${res.body}`);
      }
    });
    const answeredAtLeast = (count: number): Promise<true> => pollUntil(`${count} answers`, async () => (answered >= count ? true : undefined), 30_000);
    try {
      await answeredAtLeast(200);
      // A second pool started exactly like the first joins while requests flow...
      await startPool('check pool B');
      await stageTwoWorkers(4);
      await answeredAtLeast(answered + 300);
      // ...and the first one leaves: its workers say BYE and finish what they hold.
      expect(await first.stop('SIGTERM')).toBe(0);
      await stageTwoWorkers(2);
      await answeredAtLeast(answered + 300);
    } finally {
      stopping = true;
      await Promise.all(clients);
    }
    expect(wrong).toEqual([]);
    const stageTwo = split.proxies[1]!;
    expect(stageTwo.lines().filter((l) => l.msg === 'worker expired')).toEqual([]);
    expect(stageTwo.lines().filter((l) => l.msg === 'worker joined')).toHaveLength(4);
  }, 90_000);

  it("kills a worker whose handler blocks its event loop past the deadline, and its pool starts another", async () => {
    dir = mkdtempSync(join(tmpdir(), 'bf-split-'));
    const folder = dir;
    const addr = (name: string): string => `ipc://${join(folder, name)}`;
    const server = procs.start('server', ['server', '--port', '0', '--loopback', addr('loopback'), '--stages', addr('stage-0'), '--request-timeout', '300']);
    procs.start('proxy', ['proxy', '--stage-index', '0', '--frontend', addr('stage-0'), '--backend', addr('workers'), '--loopback', addr('loopback')]);
    const pool = procs.start('pool', ['worker', '--stage', fixture('contract-stage.js'), '--connect', addr('workers'), '--workers', '2', '--transport', 'process']);
    const port = await portOf(server, 'listening');
    await pool.waitFor((l) => l.msg === 'worker pool started');
    const mark = join(folder, 'mark');
    const res = await request(port, `/spin?ms=60000&mark=${encodeURIComponent(mark)}`);
    expect(res.status).toBe(504);
    const spinner = Number(/started (\d+)/.exec(readFileSync(mark, 'utf8'))![1]);
    // deadline 300 ms + grace 1 s + the watchdog's margin of 1 s, then the pool's restart
    const exit = await pool.waitFor((l) => l.msg === 'worker exited; restarting', 10_000);
    expect(exit).toMatchObject({ pid: spinner, signal: 'SIGKILL' });
    expect(() => process.kill(spinner, 0)).toThrow();
    await pool.waitFor((l) => l.msg === 'worker joined its proxy' && l.pid !== spinner && pool.lines().filter((m) => m.msg === 'worker joined its proxy').length === 3);
    for (let i = 0; i < 10; i++) expect((await request(port, '/pid')).status).toBe(200);
  }, 60_000);
});