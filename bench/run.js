// Benchmark harness: `npm run bench` (see bench/README.md).
//
// Starts each server in turn on 127.0.0.1, waits until it answers, warms it up, drives
// it for a fixed time, stops it, and reports throughput, latency, errors, and the CPU
// time and peak memory of all its processes. Then prints the performance targets of
// DESIGN.md as ratios measured in this run, and appends the raw figures to
// bench/results/<YYYY-MM-DD>.json. One server and one load at a time, always.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, HOST, waitReady } from './lib/http.js';
import { runIdeal } from './lib/ideal.js';
import { findWrk, runAutocannon, runWrk, wrkVersion } from './lib/load.js';
import { killTreeNow, processTree, readMemory, stopTree, TreeSampler } from './lib/proc.js';
import * as fmt from './lib/report.js';
import { commandsFor, probeButterfly, ROOT, SERVERS } from './lib/servers.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const HEAVY_CANDIDATE = 32416190071;
const HEAVY_PATH = `/is_prime?possible_prime=${HEAVY_CANDIDATE}`;
const LARGE_BODY_BYTES = 1024 * 1024;
const REQUEST_TIMEOUT_S = 10;
const MEMORY_REQUESTS = 1_000_000;
const MEMORY_SEGMENT_S = 5;
const MEMORY_MAX_SEGMENTS = 40;
const ALL_SERVERS = SERVERS.map((s) => s.name);
const POOLED_SERVERS = ['cluster-inline', 'piscina-pool', 'butterfly-node', 'butterfly-uws', 'butterfly-process', 'butterfly-split'];

/**
 * @typedef {object} Workload
 * @property {string} title
 * @property {'fixed' | 'uneven' | 'memory'} kind  fixed: one request repeated (wrk); uneven: the Node load generator;
 *   memory: fixed, in segments until MEMORY_REQUESTS answers, sampling RSS after each
 * @property {string[]} servers
 * @property {{ connections: number, workers?: number }[]} variants
 * @property {{ method?: 'GET' | 'POST', path: string, bodyBytes?: number }} request
 */

/** @type {Record<string, Workload>} */
const WORKLOADS = {
  overhead: {
    title: 'overhead: GET /is_prime?possible_prime=7',
    kind: 'fixed',
    servers: ALL_SERVERS,
    variants: [{ connections: 64 }],
    request: { path: '/is_prime?possible_prime=7' },
  },
  heavy: {
    title: `heavy: GET ${HEAVY_PATH}`,
    kind: 'fixed',
    servers: POOLED_SERVERS,
    variants: [{ connections: 8 }, { connections: 64 }],
    request: { path: HEAVY_PATH },
  },
  uneven: {
    title: 'uneven: 1% GET /uneven?slow=1 (200 ms of CPU), 99% GET /uneven (instant)',
    kind: 'uneven',
    servers: POOLED_SERVERS,
    variants: [{ connections: 64 }],
    request: { path: '/uneven' },
  },
  large: {
    title: 'large: POST /echo with a 1 MiB body, echoed back',
    kind: 'fixed',
    servers: POOLED_SERVERS,
    variants: [{ connections: 16 }],
    request: { method: 'POST', path: '/echo', bodyBytes: LARGE_BODY_BYTES },
  },
  memory: {
    title: 'memory: GET /is_prime?possible_prime=7 until 1,000,000 answers, RSS of every process after each segment',
    kind: 'memory',
    servers: ['butterfly-node'],
    variants: [{ connections: 64 }],
    request: { path: '/is_prime?possible_prime=7' },
  },
  scaling: {
    title: 'scaling: heavy at 1..4 workers per stage',
    kind: 'fixed',
    servers: ['butterfly-node'],
    variants: [1, 2, 3, 4].map((workers) => ({ connections: 64, workers })),
    request: { path: HEAVY_PATH },
  },
};

// --quick: every server on the overhead workload, and only what the ratios need of the
// others, with short runs; anything that would end past the budget is skipped.
const QUICK_WORKLOADS = ['overhead', 'heavy', 'uneven'];
const QUICK_SERVERS = { heavy: ['cluster-inline', 'butterfly-node', 'butterfly-uws'], uneven: ['cluster-inline', 'butterfly-node', 'butterfly-uws'] };
const QUICK_VARIANTS = { heavy: [{ connections: 8 }] };

const TIMING = {
  full: { warmupS: 3, durationS: 10, unevenWarmupS: 3, unevenDurationS: 15, idealS: 5, idealWarmupS: 1, readyMs: 30_000, graceMs: 5000, budgetS: Infinity },
  quick: { warmupS: 1, durationS: 2, unevenWarmupS: 0.5, unevenDurationS: 2, idealS: 1, idealWarmupS: 0.3, readyMs: 15_000, graceMs: 3000, budgetS: 55 },
};

const USAGE = `Usage: npm run bench -- [options]

  --quick                 short runs; the whole run ends within a minute
  --only <server,...>     run only these servers (${ALL_SERVERS.join(', ')};
                          "butterfly" means all three butterfly-*)
  --workload <name,...>   run only these workloads (${Object.keys(WORKLOADS).join(', ')})
  --duration <s>          seconds of measured load per case (whole seconds)
  --warmup <s>            seconds of warm-up per case (whole seconds)
  --load-generator <tool> wrk (default when installed) or autocannon
  --uneven-rate <req/s>   uneven workload in open loop at this offered rate
                          (default: closed loop, each connection sends when answered)
  -h, --help              this text
`;

function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}

function parseOptions() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        workload: { type: 'string' },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        'load-generator': { type: 'string' },
        'uneven-rate': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (error) {
    fail(`${error instanceof Error ? error.message : error}\n\n${USAGE}`);
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const list = (text) => (text ?? '').split(',').map((s) => s.trim()).filter(Boolean);

  let only;
  if (parsed.only !== undefined) {
    only = new Set();
    for (const name of list(parsed.only)) {
      if (name === 'butterfly') ALL_SERVERS.filter((s) => s.startsWith('butterfly-')).forEach((s) => only.add(s));
      else if (ALL_SERVERS.includes(name)) only.add(name);
      else fail(`--only: unknown server "${name}"; known: ${ALL_SERVERS.join(', ')}, butterfly`);
    }
  }
  let workloads;
  if (parsed.workload !== undefined) {
    workloads = list(parsed.workload);
    for (const name of workloads) {
      if (!(name in WORKLOADS)) fail(`--workload: unknown workload "${name}"; known: ${Object.keys(WORKLOADS).join(', ')}`);
    }
  } else {
    workloads = parsed.quick ? QUICK_WORKLOADS : Object.keys(WORKLOADS);
  }

  const timing = { ...TIMING[parsed.quick ? 'quick' : 'full'] };
  for (const key of ['duration', 'warmup']) {
    if (parsed[key] === undefined) continue;
    const seconds = Number(parsed[key]);
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > 600) fail(`--${key} must be whole seconds in 1..600, got ${parsed[key]}`);
    if (key === 'duration') {
      timing.durationS = timing.unevenDurationS = seconds;
      timing.idealS = Math.min(timing.idealS, seconds);
    } else {
      timing.warmupS = timing.unevenWarmupS = seconds;
    }
  }

  const generator = parsed['load-generator'];
  if (generator !== undefined && generator !== 'wrk' && generator !== 'autocannon') {
    fail(`--load-generator must be wrk or autocannon, got ${generator}`);
  }
  let unevenRate = 0;
  if (parsed['uneven-rate'] !== undefined) {
    unevenRate = Number(parsed['uneven-rate']);
    if (!Number.isFinite(unevenRate) || unevenRate <= 0 || unevenRate > 1e6) {
      fail(`--uneven-rate must be a positive number of requests per second, got ${parsed['uneven-rate']}`);
    }
  }
  return { quick: parsed.quick, only, workloads, timing, generator, unevenRate };
}

const options = parseOptions();
const { timing } = options;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'butterfly-bench-'));
const startedAt = Date.now();

/** What is running right now, so an interrupted run leaves nothing behind. */
const active = { sampler: undefined, loadChild: undefined };

function cleanUp() {
  active.loadChild?.kill('SIGKILL');
  if (active.sampler) killTreeNow(active.sampler);
  rmSync(scratch, { recursive: true, force: true });
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    console.error(`\nbench: ${signal}, stopping the server under test`);
    cleanUp();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------
// Load generators

const wrk = options.generator === 'autocannon' ? undefined : findWrk();
if (wrk === undefined && options.generator !== 'autocannon') {
  console.error(
    'bench: wrk not found (looked at /usr/bin/wrk and on PATH); install it with `apt-get install wrk`.\n' +
      "bench: falling back to autocannon's programmatic API; its figures are not comparable with wrk's.",
  );
}
const generatorName = wrk === undefined ? 'autocannon' : wrkVersion(wrk);

/**
 * Drives the server with one fixed request for `durationS` seconds.
 * @param {number} port
 * @param {Workload} workload
 * @param {number} connections
 * @param {number} durationS
 */
function fixedLoad(port, workload, connections, durationS) {
  const spec = {
    url: `http://${HOST}:${port}${workload.request.path}`,
    connections,
    durationS,
    method: workload.request.method ?? 'GET',
    bodyBytes: workload.request.bodyBytes ?? 0,
    timeoutS: REQUEST_TIMEOUT_S,
  };
  if (wrk === undefined) return runAutocannon(spec);
  return runWrk(wrk, spec, { scriptDir: scratch, track: (child) => (active.loadChild = child) });
}

/**
 * Runs the uneven load generator (its own process): warm-up, then the measured part,
 * during which the sampler's window is open.
 * @param {number} port
 * @param {number} connections
 * @param {TreeSampler} sampler
 */
function unevenLoad(port, connections, sampler) {
  const args = [
    path.join(BENCH, 'lib', 'uneven-load.js'),
    '--url', `http://${HOST}:${port}`,
    '--connections', String(connections),
    '--warmup', String(timing.unevenWarmupS),
    '--duration', String(timing.unevenDurationS),
    '--slow-fraction', '0.01',
    '--seed', '1',
    '--timeout-ms', String(REQUEST_TIMEOUT_S * 1000),
    '--rate', String(options.unevenRate),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    active.loadChild = child;
    let stdout = '';
    let stderr = '';
    let measuring = false;
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      stdout += chunk;
      if (!measuring && stdout.includes('measuring\n')) {
        measuring = true;
        sampler.beginWindow();
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    const limitS = timing.unevenWarmupS + timing.unevenDurationS + REQUEST_TIMEOUT_S + 10;
    const killer = setTimeout(() => child.kill('SIGKILL'), limitS * 1000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(killer);
      active.loadChild = undefined;
      sampler.endWindow();
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code !== 0 || !line.startsWith('{')) {
        reject(new Error(`uneven load generator exited (${signal ?? code}): ${stderr.trim().slice(-400)}`));
        return;
      }
      resolve(JSON.parse(line));
    });
  });
}

/** Total RSS of a process tree, MiB. */
function treeRssMiB(roots) {
  let kib = 0;
  for (const pid of processTree(roots).keys()) kib += readMemory(pid)?.rssKiB ?? 0;
  return kib / 1024;
}

/**
 * Drives the server in segments until MEMORY_REQUESTS answers (or MEMORY_MAX_SEGMENTS),
 * recording the tree's RSS after each: a leak shows as a climb, a working set as a plateau.
 * The first segment is the warm-up; growth is measured from the end of it.
 */
async function memoryLoad(port, workload, connections, roots) {
  const samples = [];
  let requests = 0;
  let non2xx = 0;
  let errorsTotal = 0;
  let durationS = 0;
  for (let segment = 0; segment < MEMORY_MAX_SEGMENTS && requests < MEMORY_REQUESTS; segment++) {
    const load = await fixedLoad(port, workload, connections, MEMORY_SEGMENT_S);
    requests += load.requests;
    non2xx += load.non2xx;
    errorsTotal += load.errorsTotal;
    durationS += load.durationS;
    samples.push({ requests, rssMiB: treeRssMiB(roots) });
  }
  const first = samples[0]?.rssMiB ?? 0;
  const last = samples.at(-1)?.rssMiB ?? 0;
  return { requests, non2xx, errorsTotal, durationS, samples, growth: first > 0 ? (last - first) / first : NaN, latencyMs: { p50: NaN, p99: NaN, p999: NaN } };
}

function memoryTable(results) {
  const rows = [];
  for (const r of results) {
    if (r.status !== 'ok') {
      rows.push({ first: r.server, note: r.reason });
      continue;
    }
    for (const s of r.load.samples) rows.push([r.server, fmt.count(s.requests), `${s.rssMiB.toFixed(1)} MiB`]);
    rows.push([r.server, 'growth after warm-up', `${(r.load.growth * 100).toFixed(1)}%`]);
  }
  return fmt.table(['server', 'answers so far', 'RSS of all its processes'], rows);
}

// ---------------------------------------------------------------------------------
// One case: one server, one workload variant

const butterfly = probeButterfly();
let caseNumber = 0;

function logTail(file) {
  try {
    const text = readFileSync(file, 'utf8');
    return text.slice(-2000).trim();
  } catch {
    return '';
  }
}

/** The most telling line of a log tail: the last one naming an error, else the last. */
function headline(tail) {
  const lines = tail.split('\n').map((l) => l.trim()).filter(Boolean);
  return [...lines].reverse().find((l) => /error|cannot|unknown|not found/i.test(l)) ?? lines.at(-1) ?? '';
}

/**
 * @param {import('./lib/servers.js').ServerDef} server
 * @param {string} workloadName
 * @param {{ connections: number, workers?: number }} variant
 */
async function runCase(server, workloadName, variant) {
  const workload = WORKLOADS[workloadName];
  const base = { workload: workloadName, server: server.name, connections: variant.connections, workers: variant.workers ?? null };
  if (server.family === 'butterfly' && !butterfly.daemon) return { ...base, status: 'unavailable', reason: butterfly.reason };
  if (server.split && !butterfly.split) return { ...base, status: 'unavailable', reason: butterfly.splitReason };

  const isUneven = workload.kind === 'uneven';
  const expectedS =
    (isUneven ? timing.unevenWarmupS + timing.unevenDurationS : workload.kind === 'memory' ? MEMORY_SEGMENT_S * 12 : timing.warmupS + timing.durationS) + 3;
  if ((Date.now() - startedAt) / 1000 + expectedS > timing.budgetS) {
    return { ...base, status: 'skipped', reason: `skipped: would end past the ${timing.budgetS} s budget of --quick` };
  }

  caseNumber++;
  const port = await freePort();
  const runDir = mkdtempSync(path.join(scratch, 'run-'));
  let commands;
  try {
    commands = await commandsFor(server, { host: HOST, port, workload: workloadName, workers: variant.workers, runDir });
  } catch (caught) {
    return { ...base, status: 'failed', reason: `failed: cannot build its command lines: ${caught instanceof Error ? caught.message : caught}` };
  }
  const logFile = path.join(scratch, `${caseNumber}-${server.name}-${workloadName}.log`);
  const log = openSync(logFile, 'a');

  let death;
  const children = commands.map((args) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', log, log] });
    child.once('exit', (code, signal) => {
      death ??= `${path.basename(args[0] ?? '')}${args[1]?.startsWith('-') ? '' : ` ${args[1]}`} exited (${signal ?? `code ${code}`})`;
    });
    child.once('error', (error) => (death ??= error.message));
    return child;
  });
  const roots = children.map((child) => child.pid).filter((pid) => pid !== undefined);
  const sampler = new TreeSampler(roots, { intervalMs: 200 });
  sampler.start();
  active.sampler = sampler;

  const probeRequest = {
    method: workload.request.method ?? 'GET',
    path: workload.request.path,
    ...(workload.request.method === 'POST' ? { body: 'ping' } : {}),
  };

  let load;
  let error;
  try {
    await waitReady(port, probeRequest, { deadlineMs: timing.readyMs, exited: () => death });
    if (isUneven) {
      load = await unevenLoad(port, variant.connections, sampler);
    } else if (workload.kind === 'memory') {
      load = await memoryLoad(port, workload, variant.connections, roots);
    } else {
      await fixedLoad(port, workload, variant.connections, timing.warmupS);
      sampler.beginWindow();
      load = await fixedLoad(port, workload, variant.connections, timing.durationS);
      sampler.endWindow();
    }
    if (death !== undefined) throw new Error(`${death} during the load`);
  } catch (caught) {
    error = caught instanceof Error ? caught.message : String(caught);
  } finally {
    const stopped = await stopTree(sampler, roots, { graceMs: timing.graceMs });
    active.sampler = undefined;
    closeSync(log);
    base.killedAfterGrace = stopped.killed;
  }
  const resources = sampler.summary();
  if (error !== undefined) {
    const tail = logTail(logFile);
    const detail = headline(tail);
    return { ...base, status: 'failed', reason: `failed: ${error}${detail ? ` | ${detail}` : ''}`, log: tail, resources };
  }
  return { ...base, status: 'ok', load, resources };
}

// ---------------------------------------------------------------------------------
// Reporting

/** Good answers per second: completed requests minus failure statuses. */
function goodRps(load) {
  return load.durationS > 0 ? (load.requests - load.non2xx) / load.durationS : 0;
}

function progress(result) {
  const label = `${result.workload}${result.workers === null ? '' : ` w${result.workers}`} c${result.connections} ${result.server}`;
  if (result.status !== 'ok') return `  ${label}: ${result.reason}`;
  const load = result.load;
  if (result.workload === 'memory') {
    return `  ${label}: ${fmt.count(load.requests)} answers, RSS ${load.samples[0].rssMiB.toFixed(1)} -> ${load.samples.at(-1).rssMiB.toFixed(1)} MiB`;
  }
  const p99 = result.workload === 'uneven' ? `instant p99 ${fmt.latency(load.instant.p99)}` : `p99 ${fmt.latency(load.latencyMs.p99)}`;
  return `  ${label}: ${fmt.rate(goodRps(load))} req/s, ${p99}, CPU ${fmt.cpu(result.resources.cpuSeconds)}`;
}

function resourceCells(result) {
  return [fmt.cpu(result.resources.cpuSeconds), fmt.mebibytes(result.resources.peakRssBytes), String(result.resources.processes.length)];
}

function fixedTable(results, ideal) {
  const withIdeal = ideal !== undefined;
  const header = ['server', 'conns', 'req/s', 'p50', 'p99', 'p99.9', 'errors', 'non-2xx', 'CPU', 'peak RSS', 'procs', ...(withIdeal ? ['x ideal'] : [])];
  const rows = results.map((r) => {
    if (r.status !== 'ok') return { first: r.server, note: r.reason };
    const l = r.load;
    return [
      r.server, String(r.connections), fmt.rate(goodRps(l)),
      fmt.latency(l.latencyMs.p50), fmt.latency(l.latencyMs.p99), fmt.latency(l.latencyMs.p999),
      fmt.count(l.errorsTotal), fmt.count(l.non2xx), ...resourceCells(r),
      ...(withIdeal ? [fmt.ratio(goodRps(l) / ideal.checksPerSecond)] : []),
    ];
  });
  if (withIdeal) {
    rows.push([
      `ideal (${ideal.threads} threads, in-process)`, '-', fmt.rate(ideal.checksPerSecond), '-', '-', '-', '-', '-', '-', '-', '-', '1.00x',
    ]);
  }
  return fmt.table(header, rows);
}

function unevenTable(results) {
  const header = ['server', 'req/s', 'instant p50', 'instant p99', 'instant p99.9', 'slow p50', 'slow p99', 'slow n', 'errors', 'non-2xx', 'CPU', 'peak RSS', 'procs'];
  const rows = results.map((r) => {
    if (r.status !== 'ok') return { first: r.server, note: r.reason };
    const l = r.load;
    return [
      r.server, fmt.rate(l.rps), fmt.latency(l.instant.p50), fmt.latency(l.instant.p99), fmt.latency(l.instant.p999),
      fmt.latency(l.slow.p50), fmt.latency(l.slow.p99), String(l.slow.count), fmt.count(l.errorsTotal), fmt.count(l.non2xx),
      ...resourceCells(r),
    ];
  });
  return fmt.table(header, rows);
}

function scalingTable(results) {
  const header = ['workers per stage', 'req/s', 'speed-up', 'p99', 'errors', 'non-2xx', 'CPU', 'peak RSS', 'procs'];
  const one = results.find((r) => r.status === 'ok' && r.workers === 1);
  const rows = results.map((r) => {
    if (r.status !== 'ok') return { first: String(r.workers), note: r.reason };
    const rps = goodRps(r.load);
    return [
      String(r.workers), fmt.rate(rps), one ? fmt.ratio(rps / goodRps(one.load)) : '-', fmt.latency(r.load.latencyMs.p99),
      fmt.count(r.load.errorsTotal), fmt.count(r.load.non2xx), ...resourceCells(r),
    ];
  });
  return fmt.table(header, rows);
}

/** A share of one core as a percentage, e.g. ` 94%`. */
function share(value) {
  return Number.isFinite(value) ? `${Math.round(value * 100)}%`.padStart(5) : '    -';
}

function processLines(results) {
  const lines = [];
  for (const r of results) {
    if (!r.resources || r.resources.processes.length === 0) continue;
    const label = r.workers === null ? `${r.server} c${r.connections}` : `${r.server} w${r.workers}`;
    lines.push(`  ${label}:`);
    for (const p of r.resources.processes) {
      lines.push(`    ${String(p.pid).padStart(7)}  ${p.name.padEnd(28)} CPU ${fmt.cpu(p.cpuSeconds).padStart(7)} ${share(p.share)}  peak RSS ${fmt.mebibytes(p.peakRssBytes).padStart(9)}`);
      if ((p.threads ?? []).length > 1) {
        for (const t of p.threads) lines.push(`             thread ${String(t.tid).padEnd(14)} CPU ${fmt.cpu(t.cpuSeconds).padStart(7)} ${share(t.share)}`);
      }
    }
  }
  return lines.length === 0 ? '' : `Processes (CPU during the measured load, as seconds and as % of one core; threads busy >= 5%; peak RSS):\n${lines.join('\n')}`;
}

/**
 * The targets of DESIGN.md, each a ratio of two figures measured in this run.
 * @param {any[]} results
 * @param {{ checksPerSecond: number } | undefined} ideal
 */
function targets(results, ideal) {
  const pick = (workload, server, connections) =>
    results.find((r) => r.workload === workload && r.server === server && r.workers === null && (connections === undefined || r.connections === connections));
  const rps = (r) => goodRps(r.load);
  const instantP99 = (r) => r.load.instant.p99;
  const errorShare = (r) =>
    r.workload === 'uneven'
      ? (r.load.errorsTotal + r.load.non2xx) / Math.max(1, r.load.instant.count + r.load.slow.count + r.load.errorsTotal + r.load.non2xx)
      : (r.load.errorsTotal + r.load.non2xx) / Math.max(1, r.load.requests + r.load.errorsTotal);

  const specs = [
    { workload: 'overhead', label: 'overhead req/s: butterfly-uws / uws-hello', a: ['overhead', 'butterfly-uws'], b: ['overhead', 'uws-hello'], measure: rps, floor: 0.35 },
    { workload: 'overhead', label: 'overhead req/s: butterfly-uws / cluster-inline', a: ['overhead', 'butterfly-uws'], b: ['overhead', 'cluster-inline'], measure: rps, floor: 0.6 },
    { workload: 'overhead', label: 'overhead req/s: butterfly-node / cluster-inline', a: ['overhead', 'butterfly-node'], b: ['overhead', 'cluster-inline'], measure: rps, floor: 0.35 },
    { workload: 'heavy', label: 'heavy c8 req/s: butterfly-node / ideal checks/s', a: ['heavy', 'butterfly-node', 8], b: 'ideal', measure: rps, floor: 0.85 },
    { workload: 'heavy', label: 'heavy c64 req/s: butterfly-node / ideal checks/s', a: ['heavy', 'butterfly-node', 64], b: 'ideal', measure: rps, floor: 0.85 },
    { workload: 'heavy', label: 'heavy c64 req/s: butterfly-uws / ideal checks/s', a: ['heavy', 'butterfly-uws', 64], b: 'ideal', measure: rps, floor: 0.85 },
    { workload: 'uneven', label: 'uneven instant p99: butterfly-node / cluster-inline', a: ['uneven', 'butterfly-node'], b: ['uneven', 'cluster-inline'], measure: instantP99, ceiling: 0.2 },
    { workload: 'uneven', label: 'uneven instant p99: butterfly-uws / cluster-inline', a: ['uneven', 'butterfly-uws'], b: ['uneven', 'cluster-inline'], measure: instantP99, ceiling: 0.2 },
    { workload: 'large', label: 'large req/s: butterfly-node / cluster-inline', a: ['large', 'butterfly-node'], b: ['large', 'cluster-inline'], measure: rps, floor: 0.6 },
  ];

  const memory = pick('memory', 'butterfly-node');
  const memoryEntry = { workload: 'memory', label: 'memory: RSS growth over 1,000,000 answers (after warm-up)', bound: '<= 0.1', floor: null, ceiling: 0.1 };
  const memoryTarget =
    memory === undefined || memory.status !== 'ok'
      ? { ...memoryEntry, value: null, verdict: 'n/a', note: memory === undefined ? 'butterfly-node: not run' : memory.reason }
      : {
          ...memoryEntry,
          value: memory.load.growth,
          verdict: memory.load.growth <= 0.1 && memory.load.requests >= MEMORY_REQUESTS && errorShare(memory) <= 0.01 ? 'PASS' : 'FAIL',
          note: memory.load.requests < MEMORY_REQUESTS ? `only ${memory.load.requests} answers` : '',
        };

  return [...specs.map((spec) => {
    const bound = spec.floor !== undefined ? `>= ${spec.floor}` : `<= ${spec.ceiling}`;
    const entry = { workload: spec.workload, label: spec.label, bound, floor: spec.floor ?? null, ceiling: spec.ceiling ?? null, value: null, verdict: 'n/a', note: '' };
    const a = pick(...spec.a);
    const b = spec.b === 'ideal' ? undefined : pick(...spec.b);
    const missing = (r, name) => (r === undefined ? `${name}: not run` : r.status !== 'ok' ? `${name}: ${r.reason}` : undefined);
    const why =
      missing(a, spec.a[1]) ??
      (spec.b === 'ideal' ? (ideal === undefined ? 'ideal: not run' : undefined) : missing(b, spec.b[1]));
    if (why !== undefined) return { ...entry, note: why };
    const denominator = spec.b === 'ideal' ? ideal.checksPerSecond : spec.measure(b);
    const value = spec.measure(a) / denominator;
    if (!Number.isFinite(value)) return { ...entry, note: 'no samples' };
    const pass = spec.floor !== undefined ? value >= spec.floor : value <= spec.ceiling;
    const errors = [a, b].filter((r) => r !== undefined && errorShare(r) > 0.01).map((r) => r.server);
    return {
      ...entry,
      value,
      verdict: pass && errors.length === 0 ? 'PASS' : 'FAIL',
      note: errors.length === 0 ? '' : `more than 1% errors or non-2xx: ${errors.join(', ')}`,
    };
  }), memoryTarget];
}

function targetsTable(rows) {
  return fmt.table(
    ['target', 'measured', 'bound', 'verdict'],
    rows.map((t) => (t.value === null ? { first: t.label, note: `n/a  (${t.note})` } : [t.label, fmt.ratio(t.value), t.bound, `${t.verdict}${t.note ? ` (${t.note})` : ''}`])),
  );
}

function localDate(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function gitRevision() {
  try {
    const head = readFileSync(path.join(ROOT, '.git', 'HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = path.join(ROOT, '.git', ref);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim();
    const packed = readFileSync(path.join(ROOT, '.git', 'packed-refs'), 'utf8');
    return packed.split('\n').find((line) => line.endsWith(` ${ref}`))?.split(' ')[0] ?? null;
  } catch {
    return null;
  }
}

/** Appends this run to bench/results/<date>.json (written to a .tmp file, then renamed). */
function save(run) {
  const dir = path.join(BENCH, 'results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${localDate(new Date(startedAt))}.json`);
  let runs = [];
  if (existsSync(file)) {
    try {
      const previous = JSON.parse(readFileSync(file, 'utf8'));
      if (Array.isArray(previous.runs)) runs = previous.runs;
    } catch {
      console.error(`bench: ${path.relative(ROOT, file)} was not readable JSON; replacing it`);
    }
  }
  runs.push(run);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ runs }, null, 2)}\n`);
  renameSync(tmp, file);
  return file;
}

// ---------------------------------------------------------------------------------
// Main

async function main() {
  const cpus = os.cpus();
  const machine = {
    cores: os.availableParallelism(),
    cpu: cpus[0]?.model ?? 'unknown',
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
  };
  console.log(`butterfly bench, ${options.quick ? 'quick' : 'full'} run, ${new Date(startedAt).toISOString()}`);
  console.log(`machine: ${machine.cores} cores (${machine.cpu}), ${machine.kernel}, node ${machine.node}`);
  console.log(`load: ${generatorName}${wrk === undefined ? '' : ' (-t1 below 16 connections, else -t2; --latency)'}; uneven: node:http load generator`);
  console.log(`butterfly: ${butterfly.daemon ? 'bin/butterflyd.js' : butterfly.reason}${butterfly.daemon ? `, split sub-commands ${butterfly.split ? 'present' : 'absent'}` : ''}`);
  console.log(`timing: ${timing.warmupS} s warm-up + ${timing.durationS} s measured per case (uneven ${timing.unevenWarmupS} + ${timing.unevenDurationS} s)\n`);

  const results = [];
  let ideal;
  for (const workloadName of options.workloads) {
    const workload = WORKLOADS[workloadName];
    let serverNames = options.quick && options.only === undefined ? (QUICK_SERVERS[workloadName] ?? workload.servers) : workload.servers;
    if (options.only !== undefined) serverNames = serverNames.filter((name) => options.only.has(name));
    const variants = options.quick ? (QUICK_VARIANTS[workloadName] ?? workload.variants) : workload.variants;

    const loop =
      workload.kind !== 'uneven' ? '' : options.unevenRate > 0 ? ` [open loop, ${options.unevenRate} req/s offered]` : ' [closed loop]';
    console.log(`== ${workload.title}${loop}`);
    if (workloadName === 'heavy' && ideal === undefined) {
      ideal = await runIdeal({ candidate: HEAVY_CANDIDATE, durationS: timing.idealS, warmupS: timing.idealWarmupS });
      console.log(`  ideal: ${fmt.rate(ideal.checksPerSecond)} checks/s on ${ideal.threads} threads (${ideal.microsPerCheck.toFixed(0)} us per check)`);
    }
    if (serverNames.length === 0) {
      console.log('  nothing to run: no server of this workload was selected\n');
      continue;
    }
    const workloadResults = [];
    for (const variant of variants) {
      for (const name of serverNames) {
        const server = /** @type {import('./lib/servers.js').ServerDef} */ (SERVERS.find((s) => s.name === name));
        const result = await runCase(server, workloadName, variant);
        console.log(progress(result));
        workloadResults.push(result);
        results.push(result);
      }
    }
    console.log('');
    if (workloadName === 'uneven') console.log(unevenTable(workloadResults));
    else if (workloadName === 'scaling') console.log(scalingTable(workloadResults));
    else if (workloadName === 'memory') console.log(memoryTable(workloadResults));
    else console.log(fixedTable(workloadResults, workloadName === 'heavy' ? ideal : undefined));
    const processes = processLines(workloadResults);
    if (processes) console.log(`\n${processes}`);
    console.log('');
  }

  const measured = targets(results, ideal).filter((t) => options.workloads.includes(t.workload));
  console.log('== Targets (DESIGN.md "Performance targets"), as ratios measured in this run');
  console.log(measured.length === 0 ? 'none: no workload of a target was run' : targetsTable(measured));

  const file = save({
    startedAt: new Date(startedAt).toISOString(),
    elapsedS: (Date.now() - startedAt) / 1000,
    quick: options.quick,
    revision: gitRevision(),
    machine,
    loadGenerator: generatorName,
    timing,
    unevenRate: options.unevenRate || null,
    butterfly,
    ideal: ideal ?? null,
    cases: results,
    targets: measured,
  });
  console.log(`\nraw figures appended to ${path.relative(process.cwd(), file) || file}; ${((Date.now() - startedAt) / 1000).toFixed(1)} s in all`);
}

try {
  await main();
  rmSync(scratch, { recursive: true, force: true });
} catch (error) {
  console.error(`bench: ${error instanceof Error ? (error.stack ?? error.message) : error}`);
  cleanUp();
  process.exit(1);
}
