// Process-tree accounting from /proc: CPU time and resident memory of a server's root
// processes and every descendant, sampled on an interval, and a stop sequence that
// signals exactly those processes by pid.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** Clock ticks per second used by the utime/stime fields of /proc/<pid>/stat. */
export const CLOCK_TICKS = readClockTicks();

function readClockTicks() {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(ticks) && ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
}

/**
 * Reads /proc/<pid>/stat. Returns undefined when the process does not exist (or
 * vanished while being read).
 * @param {number} pid
 * @returns {{ pid: number, ppid: number, comm: string, state: string, ticks: number, startTime: number } | undefined}
 */
export function readStat(pid, file = `/proc/${pid}/stat`) {
  let text;
  try {
    text = readFileSync(file, 'latin1');
  } catch {
    return undefined;
  }
  // The command name is in parentheses and may itself contain spaces and parentheses,
  // so the fixed fields start after the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const fields = text.slice(close + 2).split(' ');
  // fields[0] is field 3 of proc(5): state, ppid, ..., utime (14), stime (15), starttime (22).
  return {
    pid,
    ppid: Number(fields[1]),
    comm,
    state: fields[0] ?? '?',
    ticks: Number(fields[11]) + Number(fields[12]),
    startTime: Number(fields[19]),
  };
}

/**
 * CPU ticks of each thread of a process, by thread id (/proc/<pid>/task/<tid>/stat).
 * @param {number} pid
 * @returns {Map<number, number>}
 */
export function threadTicks(pid) {
  const ticks = new Map();
  let tids;
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return ticks;
  }
  for (const entry of tids) {
    const tid = Number(entry);
    const stat = readStat(tid, `/proc/${pid}/task/${tid}/stat`);
    if (stat) ticks.set(tid, stat.ticks);
  }
  return ticks;
}

/**
 * Reads the current and peak resident set size (KiB) from /proc/<pid>/status.
 * @param {number} pid
 * @returns {{ rssKiB: number, hwmKiB: number } | undefined}
 */
export function readMemory(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return undefined;
  }
  const rss = /^VmRSS:\s+(\d+)/m.exec(text);
  const hwm = /^VmHWM:\s+(\d+)/m.exec(text);
  if (!rss) return undefined; // zombie or kernel thread
  return { rssKiB: Number(rss[1]), hwmKiB: Number(hwm?.[1] ?? rss[1]) };
}

/**
 * A short name for a process: the script it runs (and a sub-command after it, if any),
 * else its kernel command name.
 * @param {number} pid
 * @param {string} comm
 */
function describe(pid, comm) {
  let argv;
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return comm;
  }
  const script = argv.findIndex((arg, i) => i > 0 && /\.(?:[cm]?js|ts)$/.test(arg));
  if (script === -1) return comm;
  const next = argv[script + 1];
  const name = path.basename(argv[script] ?? comm);
  const worker = argv.find((arg) => arg.startsWith('worker='));
  // A pool's worker process: its command line names it (`stage=MODULE worker=LABEL`).
  if (worker !== undefined) return `${name} ${worker.slice('worker='.length)}`;
  return next !== undefined && !next.startsWith('-') ? `${name} ${next}` : name;
}

/**
 * The pids of every live process under the given roots (the roots included), found by
 * following the ppid field of every /proc/<pid>/stat.
 * @param {number[]} roots
 * @returns {Map<number, ReturnType<typeof readStat>>}
 */
export function processTree(roots) {
  const children = new Map();
  const stats = new Map();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (!stat) continue;
    stats.set(pid, stat);
    const siblings = children.get(stat.ppid);
    if (siblings) siblings.push(pid);
    else children.set(stat.ppid, [pid]);
  }
  const tree = new Map();
  const pending = roots.filter((pid) => stats.has(pid));
  while (pending.length > 0) {
    const pid = /** @type {number} */ (pending.pop());
    if (tree.has(pid)) continue;
    tree.set(pid, stats.get(pid));
    pending.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/**
 * Samples the CPU time and memory of a process tree every `intervalMs`. Processes are
 * identified by pid and start time, so a reused pid is never mistaken for a known one.
 * A measurement window (`beginWindow` / `endWindow`) gives the CPU seconds spent during
 * the load alone; processes that exit between two samples lose at most one interval.
 */
export class TreeSampler {
  /**
   * @param {number[]} roots pids of the processes the harness started
   * @param {{ intervalMs?: number }} [options]
   */
  constructor(roots, { intervalMs = 200 } = {}) {
    this.roots = roots;
    this.intervalMs = intervalMs;
    /** @type {Map<string, { pid: number, startTime: number, name: string, ticks: number, windowStart: number, windowEnd: number | undefined, hwmKiB: number, alive: boolean }>} */
    this.processes = new Map();
    this.peakTotalRssKiB = 0;
    this.state = 'idle';
    this.windowClosed = false;
    this.timer = undefined;
  }

  start() {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    this.state = 'sampling';
  }

  /** Takes one sample now. */
  sample() {
    const tree = processTree(this.roots);
    let totalRss = 0;
    for (const entry of this.processes.values()) entry.alive = false;
    for (const [pid, stat] of tree) {
      if (!stat || stat.state === 'Z') continue;
      const key = `${pid}:${stat.startTime}`;
      let entry = this.processes.get(key);
      if (!entry) {
        entry = {
          pid,
          startTime: stat.startTime,
          name: describe(pid, stat.comm),
          ticks: 0,
          // A process born inside the window counts from zero.
          windowStart: 0,
          // A process first seen after the window closed spent nothing inside it.
          windowEnd: this.windowClosed ? 0 : undefined,
          hwmKiB: 0,
          alive: true,
        };
        this.processes.set(key, entry);
      }
      entry.alive = true;
      entry.ticks = stat.ticks;
      const memory = readMemory(pid);
      if (memory) {
        totalRss += memory.rssKiB;
        entry.hwmKiB = Math.max(entry.hwmKiB, memory.hwmKiB);
      }
    }
    this.peakTotalRssKiB = Math.max(this.peakTotalRssKiB, totalRss);
  }

  /** Marks the start of the measured load. */
  beginWindow() {
    this.sample();
    this.windowStartedAt = performance.now();
    for (const entry of this.processes.values()) {
      entry.windowStart = entry.ticks;
      entry.windowEnd = undefined;
      entry.threadsAtStart = threadTicks(entry.pid);
    }
  }

  /** Marks the end of the measured load. */
  endWindow() {
    this.sample();
    this.windowSeconds = (performance.now() - (this.windowStartedAt ?? performance.now())) / 1000;
    for (const entry of this.processes.values()) {
      entry.windowEnd = entry.ticks;
      entry.threadsAtEnd = entry.alive ? threadTicks(entry.pid) : undefined;
    }
    this.windowClosed = true;
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.state = 'stopped';
  }

  /** The processes seen alive at the last sample, as { pid, startTime }. */
  alive() {
    return [...this.processes.values()].filter((entry) => entry.alive).map(({ pid, startTime }) => ({ pid, startTime }));
  }

  /**
   * Figures for the report. CPU seconds are those of the measurement window when one
   * was taken, else of the whole life seen. Peak RSS per process is the kernel's
   * high-water mark (VmHWM); the total is the largest sum of VmRSS over one sample.
   */
  summary() {
    const window = this.windowSeconds ?? 0;
    const processes = [...this.processes.values()].map((entry) => {
      const end = entry.windowEnd ?? entry.ticks;
      const cpuSeconds = Math.max(0, end - entry.windowStart) / CLOCK_TICKS;
      // Threads busy for at least 5% of the window: worker threads show as their own rows.
      const threads = [];
      if (entry.threadsAtStart && entry.threadsAtEnd && window > 0) {
        for (const [tid, endTicks] of entry.threadsAtEnd) {
          const seconds = Math.max(0, endTicks - (entry.threadsAtStart.get(tid) ?? 0)) / CLOCK_TICKS;
          if (seconds / window >= 0.05) threads.push({ tid, cpuSeconds: seconds, share: seconds / window });
        }
        threads.sort((a, b) => b.cpuSeconds - a.cpuSeconds);
      }
      return {
        pid: entry.pid,
        name: entry.name,
        cpuSeconds,
        // The share of one core the process used during the measured load (1 = a core busy throughout).
        share: window > 0 ? cpuSeconds / window : NaN,
        threads,
        cpuSecondsTotal: entry.ticks / CLOCK_TICKS,
        peakRssBytes: entry.hwmKiB * 1024,
      };
    });
    return {
      processes,
      cpuSeconds: processes.reduce((sum, p) => sum + p.cpuSeconds, 0),
      cpuSecondsTotal: processes.reduce((sum, p) => sum + p.cpuSecondsTotal, 0),
      peakRssBytes: this.peakTotalRssKiB * 1024,
      windowSeconds: window,
    };
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isSameLiveProcess({ pid, startTime }) {
  const stat = readStat(pid);
  return stat !== undefined && stat.startTime === startTime && stat.state !== 'Z';
}

function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

/**
 * Stops a server: SIGTERM to the root processes, then waits up to `graceMs` for them
 * and every process last seen in their tree to exit; whatever is left gets SIGKILL, by
 * pid, after checking its start time so a reused pid is never signalled.
 * @param {TreeSampler} sampler
 * @param {number[]} roots
 * @param {{ graceMs: number }} options
 * @returns {Promise<{ killed: number[] }>} the pids that needed SIGKILL
 */
export async function stopTree(sampler, roots, { graceMs }) {
  sampler.sample();
  const known = sampler.alive();
  for (const root of known.filter(({ pid }) => roots.includes(pid))) signal(root.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  let left = known.filter(isSameLiveProcess);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(50);
    left = left.filter(isSameLiveProcess);
  }
  const killed = [];
  for (const target of left) {
    if (isSameLiveProcess(target)) {
      signal(target.pid, 'SIGKILL');
      killed.push(target.pid);
    }
  }
  const hardDeadline = Date.now() + 2000;
  while (left.some(isSameLiveProcess) && Date.now() < hardDeadline) await sleep(20);
  sampler.stop();
  return { killed };
}

/**
 * Immediate clean-up for an interrupted run: SIGKILL to every live process last seen
 * in the tree, by pid.
 * @param {TreeSampler} sampler
 */
export function killTreeNow(sampler) {
  for (const target of sampler.alive()) if (isSameLiveProcess(target)) signal(target.pid, 'SIGKILL');
  sampler.stop();
}
