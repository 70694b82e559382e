import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Answer, type Daemon, cmdline, daemon, descendants, fixture, request, start } from './helpers.js';
import { Procs, portOf } from './split-helpers.js';

/**
 * Bounded memory and exactly-once delivery with parts of the pipeline stopped or leaving,
 * against real processes: workers and proxies are stopped with SIGSTOP under load.
 */

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'bf-bounds-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const procs = new Procs();
const daemons: Daemon[] = [];
afterEach(async () => {
  for (const d of daemons.splice(0)) {
    for (const pid of descendants(d.child.pid!)) signal(pid, 'SIGCONT');
    d.child.kill('SIGKILL');
    await d.exited;
  }
  await procs.killAll();
});

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Resident memory of a process, in MiB. */
function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return Number(m?.[1] ?? 0) / 1024;
}

const fresh = new http.Agent({ keepAlive: true, maxSockets: 32 });

interface Posted {
  /** The status, or 0 when the request failed without one (`error` says how). */
  status: number;
  ms: number;
  intact: boolean;
  error?: string;
}

/** A POST of `body` bytes; resolves with the status, the time it took and whether the body came back intact. */
function post(port: number, path: string, body: Buffer): Promise<Posted> {
  const started = Date.now();
  return new Promise((resolve) => {
    const failed = (err: NodeJS.ErrnoException): void => resolve({ status: 0, ms: Date.now() - started, intact: false, error: err.code ?? err.message });
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: fresh, headers: { 'content-length': String(body.length) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: Date.now() - started, intact: Buffer.concat(chunks).equals(body) }));
      res.on('error', failed);
    });
    req.on('error', failed);
    req.end(body);
  });
}

/** One line per answer that is not what `ok` expects, for an assertion message. */
function unexpected(answers: Posted[], ok: (a: Posted) => boolean): string {
  return answers
    .filter((a) => !ok(a))
    .slice(0, 5)
    .map((a) => `status ${a.status}${a.error === undefined ? '' : ` (${a.error})`} after ${a.ms} ms${a.status === 200 && !a.intact ? ', body changed' : ''}`)
    .join('; ');
}

/** `connections` loops of POSTs until `durationMs` has passed; every answer. */
async function load(port: number, body: Buffer, connections: number, durationMs: number): Promise<Posted[]> {
  const until = Date.now() + durationMs;
  const answers: Posted[] = [];
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < until) answers.push(await post(port, '/echo', body));
    }),
  );
  return answers;
}

function echoPipeline(): string {
  const file = join(dir, `echo-${Date.now()}-${Math.random()}.json`);
  writeFileSync(file, JSON.stringify({ stages: [{ module: fixture('pass-body.js') }, { module: fixture('answer-body.js') }] }));
  return file;
}

const BODY = Buffer.alloc(256 * 1024, 7);
const TIMEOUT_MS = 1500;
const served = (a: Posted): boolean => a.status === 200 && a.intact;
const refusedInTime = (a: Posted): boolean => (a.status === 503 || a.status === 504) && a.ms < TIMEOUT_MS + 1000;

describe('a stopped stage under load', () => {
  it('refuses or times out every request in time with stage-2 workers stopped, memory stays bounded, and serves again after SIGCONT', async () => {
    const d = await daemon(['--port', '0', '--workers', '2', '--transport', 'process', '--pipeline', echoPipeline(), '--max-queue', '8', '--request-timeout', String(TIMEOUT_MS)]);
    daemons.push(d);
    const front = d.child.pid!;
    const warm = await load(d.port, BODY, 8, 1000);
    expect(unexpected(warm, served)).toBe('');
    const workers = descendants(front);
    const stageTwo = workers.filter((pid) => cmdline(pid).includes('answer-body'));
    const stageOne = workers.filter((pid) => cmdline(pid).includes('pass-body'));
    expect(stageTwo).toHaveLength(2);
    expect(stageOne).toHaveLength(2);
    const before = [front, ...stageOne].map(rssMiB);
    for (const pid of stageTwo) process.kill(pid, 'SIGSTOP');

    const stopped = await load(d.port, BODY, 16, 3000);
    const after = [front, ...stageOne].map(rssMiB);
    expect(stopped.length).toBeGreaterThan(16);
    expect(unexpected(stopped, refusedInTime)).toBe('');
    // 16 clients sending 256 KiB each: what waits is bounded by the queue, the windows and the socket marks.
    after.forEach((mib, i) => expect(mib - before[i]!, `process ${i} grew from ${before[i]} MiB to ${mib} MiB`).toBeLessThan(96));

    for (const pid of stageTwo) process.kill(pid, 'SIGCONT');
    const resumed = await load(d.port, BODY, 8, 1500);
    expect(resumed.length).toBeGreaterThan(8);
    // Jobs queued while stopped may still be answered late: only the last ones must all succeed.
    expect(unexpected(resumed.slice(-8), served)).toBe('');
  });

  it('refuses or times out every request in time with the stage-2 proxy stopped (split mode), and serves again after SIGCONT', async () => {
    const folder = mkdtempSync(join(dir, 'split-'));
    const addr = (name: string): string => `ipc://${join(folder, name)}`;
    const server = procs.start('server', ['server', '--port', '0', '--loopback', addr('loopback'), '--stages', `${addr('stage-0')},${addr('stage-1')}`, '--request-timeout', String(TIMEOUT_MS)]);
    const proxies = [
      procs.start('proxy 0', ['proxy', '--stage-index', '0', '--frontend', addr('stage-0'), '--backend', addr('workers-0'), '--next', addr('stage-1'), '--loopback', addr('loopback'), '--max-queue', '8']),
      procs.start('proxy 1', ['proxy', '--stage-index', '1', '--frontend', addr('stage-1'), '--backend', addr('workers-1'), '--loopback', addr('loopback'), '--max-queue', '8']),
    ];
    const port = await portOf(server, 'listening');
    await Promise.all(proxies.map((p) => p.waitFor((l) => l.msg === 'proxy started')));
    const stageOne = procs.start('pass pool', ['worker', '--stage', fileURLToPath(fixture('pass-body.js')), '--connect', addr('workers-0'), '--workers', '2']);
    const stageTwo = procs.start('answer pool', ['worker', '--stage', fileURLToPath(fixture('answer-body.js')), '--connect', addr('workers-1'), '--workers', '2']);
    await Promise.all([stageOne, stageTwo].map((p) => p.waitFor((l) => l.msg === 'worker pool started')));
    const warm = await load(port, BODY, 8, 1000);
    expect(unexpected(warm, served)).toBe('');

    const watched = [server.child.pid!, ...descendants(stageOne.child.pid!)];
    const before = watched.map(rssMiB);
    process.kill(proxies[1]!.child.pid!, 'SIGSTOP');
    const stopped = await load(port, BODY, 16, 3000);
    const after = watched.map(rssMiB);
    expect(stopped.length).toBeGreaterThan(16);
    expect(unexpected(stopped, refusedInTime)).toBe('');
    after.forEach((mib, i) => expect(mib - before[i]!, `process ${i} grew from ${before[i]} MiB to ${mib} MiB`).toBeLessThan(96));

    process.kill(proxies[1]!.child.pid!, 'SIGCONT');
    const resumed = await load(port, BODY, 8, 2000);
    expect(unexpected(resumed.slice(-8), served)).toBe('');
  });
});

describe('drain in split mode', () => {
  it('starts the drain time at SIGTERM: a request still running when it is up is answered 503 and the server exits 0', async () => {
    const folder = mkdtempSync(join(dir, 'drain-'));
    const addr = (name: string): string => `ipc://${join(folder, name)}`;
    const server = procs.start('server', ['server', '--port', '0', '--loopback', addr('loopback'), '--stages', addr('stage-0'), '--drain-timeout', '300']);
    const proxy = procs.start('proxy', ['proxy', '--stage-index', '0', '--frontend', addr('stage-0'), '--backend', addr('workers-0'), '--loopback', addr('loopback')]);
    const port = await portOf(server, 'listening');
    await proxy.waitFor((l) => l.msg === 'proxy started');
    const worker = procs.start('worker', ['worker', '--stage', fileURLToPath(fixture('contract-stage.js')), '--connect', addr('workers-0')]);
    await worker.waitFor((l) => l.msg === 'worker joined its proxy');
    const mark = join(folder, 'mark');
    const started = Date.now();
    const answer = request(port, `/sleep?ms=20000&mark=${encodeURIComponent(mark)}`);
    const deadline = Date.now() + 5000;
    while (!readFileSafe(mark).startsWith('started')) {
      if (Date.now() > deadline) throw new Error('the request did not start');
      await new Promise((r) => setTimeout(r, 10));
    }
    const signalled = Date.now();
    server.child.kill('SIGTERM');
    const res = await answer;
    expect(res.status).toBe(503);
    // The drain time (300 ms) ran from the signal, not from when the connection went.
    expect(Date.now() - signalled).toBeLessThan(2000);
    expect(await server.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

describe('workers leaving and clients going away', () => {
  it('runs every job exactly once while workers holding prefetched jobs are replaced under load', async () => {
    for (const transport of ['thread', 'process'] as const) {
      await using bf = await start({ transport, workers: 2, pipeline: { stages: [{ module: fixture('ledger-stage.js') }] } });
      const ledger = join(dir, `ledger-${transport}`);
      writeFileSync(ledger, '');
      const send = (n: number): Promise<Answer> => request(bf.port, `/?n=${n}&ms=20&ledger=${encodeURIComponent(ledger)}`);
      const requests = Array.from({ length: 60 }, (_, n) => send(n));
      await bf.pools[0]!.rollingRestart();
      // Sent once every worker has been replaced: only the new workers can run these.
      requests.push(...Array.from({ length: 20 }, (_, n) => send(60 + n)));
      const answers = await Promise.all(requests);
      expect(answers.map((a) => a.status)).toEqual(new Array(80).fill(200));
      expect(answers.map((a) => JSON.parse(a.body).n)).toEqual(Array.from({ length: 80 }, (_, n) => n));
      const ran = readFileSync(ledger, 'utf8').trim().split('\n').map((line) => Number(line.split(' ')[0]));
      expect(ran.sort((a, b) => a - b), transport).toEqual(Array.from({ length: 80 }, (_, n) => n));
      // The workers that left ran jobs, and so did their replacements.
      const runners = new Set(readFileSync(ledger, 'utf8').trim().split('\n').map((line) => line.split(' ')[1]));
      expect(runners.size, transport).toBeGreaterThan(2);
    }
  });

  it('keeps an idle thread worker joined beyond its liveness', async () => {
    await using bf = await start({ workers: 2, heartbeatMs: 50, liveness: 2, pipeline: { stages: [{ module: fixture('echo-stage.js') }] } });
    // Ten liveness windows with no job: a worker that did not heartbeat would be dropped in one.
    await new Promise((r) => setTimeout(r, 1000));
    expect(bf.proxies[0]!.stats().workers).toBe(2);
    expect((await request(bf.port, '/')).status).toBe(200);
  });

  it('keeps memory and capacity bounded through a storm of cancelled 1 MiB requests', async () => {
    const d = await daemon(['--port', '0', '--workers', '2', '--pipeline', echoPipeline()]);
    daemons.push(d);
    const big = Buffer.alloc(1024 * 1024, 3);
    expect((await post(d.port, '/echo', big)).intact).toBe(true);
    // Each client sends a whole 1 MiB request and leaves before the answer.
    const storm = async (rounds: number): Promise<void> => {
      for (let round = 0; round < rounds; round++) {
        await Promise.all(
          Array.from({ length: 16 }, () =>
            new Promise<void>((resolve) => {
              const req = http.request({ host: '127.0.0.1', port: d.port, path: '/echo', method: 'POST', agent: false, headers: { 'content-length': String(big.length) } });
              req.on('error', () => resolve());
              req.on('response', () => resolve());
              req.on('close', () => resolve());
              req.end(big, () => req.destroy());
            }),
          ),
        );
      }
    };
    // The allocators settle at a working size over the first rounds (about 60 on a 2-core
    // machine); after that, more of the same must not cost more memory.
    await storm(60);
    const settled = rssMiB(d.child.pid!);
    await storm(30);
    const grown = rssMiB(d.child.pid!);
    expect(grown - settled, `RSS ${settled} MiB after 960 cancelled requests, ${grown} MiB after 1440`).toBeLessThan(48);
    expect(grown).toBeLessThan(640);
    // The storm's clients hand their bodies to the kernel and leave; the server reads and
    // drops them after they are gone. One answered request marks the end of that backlog.
    expect((await post(d.port, '/echo', big)).intact).toBe(true);
    const answers = await load(d.port, big, 4, 1000);
    expect(answers.length).toBeGreaterThan(4);
    expect(unexpected(answers, served)).toBe('');
  });
});
