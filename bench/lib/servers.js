// The servers under test and the command lines that start them. Every server is a set
// of Node processes started from the repository root; the harness accounts for them
// and all their descendants.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (the folder above bench/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BENCH = path.join(ROOT, 'bench');
const DAEMON = path.join(ROOT, 'bin', 'butterflyd.js');

/**
 * @typedef {object} ServerDef
 * @property {string} name      the name `--only` takes
 * @property {string} label     one line for the README and the table
 * @property {'baseline' | 'butterfly'} family
 * @property {string} [script]  baseline entry point, relative to bench/
 * @property {'node' | 'uws'} [engine]
 * @property {boolean} [split]  butterfly split into separate proxy/worker/server processes
 * @property {'thread' | 'process'} [transport]  embedded butterfly's worker transport (default: the daemon's)
 */

/** @type {readonly ServerDef[]} */
export const SERVERS = Object.freeze([
  { name: 'uws-hello', label: 'bare uWebSockets.js, fixed body', family: 'baseline', script: 'servers/uws-hello.js' },
  { name: 'cluster-inline', label: 'node:http + node:cluster, work inline', family: 'baseline', script: 'servers/cluster-inline.js' },
  { name: 'piscina-pool', label: 'node:http + piscina thread pool', family: 'baseline', script: 'servers/piscina-pool.js' },
  { name: 'butterfly-node', label: 'butterfly embedded, --engine node', family: 'butterfly', engine: 'node' },
  { name: 'butterfly-uws', label: 'butterfly embedded, --engine uws', family: 'butterfly', engine: 'uws' },
  { name: 'butterfly-process', label: 'butterfly embedded, --engine node, --transport process', family: 'butterfly', engine: 'node', transport: 'process' },
  { name: 'butterfly-split', label: 'butterfly split: proxy / worker / server processes', family: 'butterfly', engine: 'node', split: true },
]);

/**
 * What this build of butterfly can run: whether the daemon exists, and whether its
 * `--help` lists a `butterflyd proxy` sub-command, the mark of the split layout.
 * @returns {{ daemon: boolean, reason?: string, split: boolean, splitReason?: string }}
 */
export function probeButterfly() {
  const splitReason = 'split: not available in this build';
  if (!existsSync(DAEMON)) return { daemon: false, reason: 'not available: bin/butterflyd.js not found', split: false, splitReason };
  const help = spawnSync(process.execPath, [DAEMON, '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 10_000 });
  const split = help.status === 0 && /^\s*butterflyd\s+proxy\b/m.test(help.stdout ?? '');
  return split ? { daemon: true, split } : { daemon: true, split, splitReason };
}

/**
 * The butterfly pipeline file a workload needs, or undefined for the built-in is_prime
 * pipeline.
 * @param {string} workload
 */
export function pipelineFor(workload) {
  if (workload === 'uneven') return path.join(BENCH, 'pipelines', 'uneven.json');
  if (workload === 'large') return path.join(BENCH, 'pipelines', 'echo.json');
  return undefined;
}

/**
 * The stage module files and worker counts of a pipeline: from its JSON file (module
 * paths relative to the file), or the built-in is_prime pipeline of `butterfly/stages`.
 * @param {string | undefined} pipeline
 * @param {number} defaultWorkers
 */
async function stagesOf(pipeline, defaultWorkers) {
  const describeStage = (stage, base) => ({
    file: stage.module.startsWith('file:') ? fileURLToPath(stage.module) : path.resolve(base, stage.module),
    workers: stage.workers ?? defaultWorkers,
    concurrency: stage.concurrency,
  });
  if (pipeline === undefined) {
    const { isPrimePipeline } = await import('butterfly/stages');
    return isPrimePipeline().stages.map((stage) => describeStage(stage, ROOT));
  }
  const description = JSON.parse(readFileSync(pipeline, 'utf8'));
  return description.stages.map((stage) => describeStage(stage, path.dirname(pipeline)));
}

/**
 * Command lines (arguments to `node`) that start one server, in start order.
 * @param {ServerDef} server
 * @param {{ host: string, port: number, workload: string, workers?: number, runDir: string }} options
 * @returns {Promise<string[][]>}
 */
export async function commandsFor(server, { host, port, workload, workers, runDir }) {
  if (server.family === 'baseline') {
    return [[path.join(BENCH, /** @type {string} */ (server.script)), '--host', host, '--port', String(port)]];
  }
  const pipeline = pipelineFor(workload);
  const pipelineArgs = pipeline === undefined ? [] : ['--pipeline', pipeline];
  const front = ['--host', host, '--port', String(port), ...(server.engine === 'uws' ? ['--engine', 'uws'] : [])];
  if (!server.split) {
    const transport = server.transport === undefined ? [] : ['--transport', server.transport];
    return [[DAEMON, ...front, ...transport, ...pipelineArgs, ...(workers === undefined ? [] : ['--workers', String(workers)])]];
  }
  // Split layout on one host: one `butterflyd proxy` per stage, each worker in a process
  // of its own, then `butterflyd server`; they meet on ipc sockets in the run directory.
  const stages = await stagesOf(pipeline, workers ?? os.availableParallelism());
  const ipc = (name) => `ipc://${path.join(runDir, name)}`;
  const loopback = ['--loopback', ipc('loopback')];
  return [
    ...stages.map((_, i) => [
      DAEMON, 'proxy', '--stage-index', String(i), '--frontend', ipc(`stage-${i}-in`), '--backend', ipc(`stage-${i}-workers`),
      ...(i + 1 < stages.length ? ['--next', ipc(`stage-${i + 1}-in`)] : []), ...loopback,
    ]),
    ...stages.flatMap((stage, i) =>
      Array.from({ length: stage.workers }, () => [
        DAEMON, 'worker', '--stage', stage.file, '--connect', ipc(`stage-${i}-workers`),
        ...(stage.concurrency === undefined ? [] : ['--concurrency', String(stage.concurrency)]),
      ]),
    ),
    [DAEMON, 'server', ...front, ...loopback, '--stages', stages.map((_, i) => ipc(`stage-${i}-in`)).join(',')],
  ];
}
