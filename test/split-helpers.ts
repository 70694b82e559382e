import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import { BUTTERFLYD } from './helpers.js';

/** One JSON log line of a daemon. */
export type LogLine = Record<string, unknown> & { msg?: string };

/** A `butterflyd` process started by a test. */
export interface Proc {
  readonly child: ChildProcess;
  readonly name: string;
  /** Everything it wrote, stdout and stderr. */
  output(): string;
  /** Its JSON log lines so far. */
  lines(): LogLine[];
  /** Resolves with the first log line (past or future) for which `match` holds; rejects on exit or after `timeoutMs`. */
  waitFor(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends `signal` (default SIGTERM) and resolves with the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

/**
 * Starts and keeps track of `butterflyd` processes; `killAll()` (in `afterEach`) kills
 * whatever is still running, so that a failing test leaves nothing behind.
 */
export class Procs {
  private readonly all: Proc[] = [];

  /** Starts `butterflyd args`; with `prefix`, as `prefix... node butterflyd args` (`ip netns exec NS`, which execs it: the child is the daemon). */
  start(name: string, args: string[], env: NodeJS.ProcessEnv = process.env, prefix: readonly string[] = []): Proc {
    const [program, ...before] = [...prefix, process.execPath];
    const child = spawn(program!, [...before, BUTTERFLYD, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let pending = '';
    const parsed: LogLine[] = [];
    const waiters = new Set<() => void>();
    const onText = (text: string): void => {
      out += text;
      pending += text;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.startsWith('{')) {
          try {
            parsed.push(JSON.parse(line) as LogLine);
          } catch {
            // not a log line
          }
        }
      }
      for (const w of waiters) w();
    };
    child.stdout.on('data', (c: Buffer) => onText(c.toString()));
    child.stderr.on('data', (c: Buffer) => onText(c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let hasExited = false;
    void exited.then(() => {
      hasExited = true;
      for (const w of waiters) w();
    });
    const proc: Proc = {
      child,
      name,
      exited,
      output: () => out,
      lines: () => parsed,
      waitFor: (match, timeoutMs = 20_000) =>
        new Promise<LogLine>((resolve, reject) => {
          const check = (): void => {
            const found = parsed.find(match);
            if (found !== undefined) {
              done();
              resolve(found);
            } else if (hasExited) {
              done();
              reject(new Error(`${name} exited (code ${child.exitCode}) before the awaited log line:\n${out}`));
            }
          };
          const timer = setTimeout(() => {
            done();
            reject(new Error(`${name}: awaited log line not seen within ${timeoutMs} ms:\n${out}`));
          }, timeoutMs);
          const done = (): void => {
            clearTimeout(timer);
            waiters.delete(check);
          };
          waiters.add(check);
          check();
        }),
      stop: async (signal = 'SIGTERM') => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        return exited;
      },
    };
    this.all.push(proc);
    return proc;
  }

  /** Kills every process still running and waits for them to exit. */
  async killAll(): Promise<void> {
    const running = this.all.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    for (const p of running) p.child.kill('SIGKILL');
    await Promise.all(running.map((p) => p.exited));
    this.all.length = 0;
  }
}

/** The port a daemon's log line `msg` reports (`listening`, `admin listening`). */
export async function portOf(proc: Proc, msg: string): Promise<number> {
  const line = await proc.waitFor((l) => l.msg === msg && typeof l.port === 'number');
  return line.port as number;
}

/** A GET on 127.0.0.1, on a fresh connection. */
export function get(port: number, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** Calls `probe` every 50 ms until it returns a value other than undefined; throws after `timeoutMs` with the last reason. */
export async function pollUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms${last === undefined ? '' : ` (${String(last)})`}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** One sample of a Prometheus text exposition. */
export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses the Prometheus text format (what `/metrics` serves). */
export function parseMetrics(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return out;
}

/** The value of the sample named `name` whose labels include `labels`; undefined when there is none. */
export function sample(samples: readonly PromSample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

const SMALL_PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97];

/** True when stage 1 of is_prime passes `n` on to stage 2: at least 101², no prime factor below 100. */
export function needsStageTwo(n: number): boolean {
  return n >= 101 * 101 && SMALL_PRIMES.every((p) => n % p !== 0);
}

/** The first `count` numbers from `from` on that stage 1 of is_prime passes to stage 2. */
export function stageTwoNumbers(from: number, count: number): number[] {
  const out: number[] = [];
  for (let n = from; out.length < count; n++) if (needsStageTwo(n)) out.push(n);
  return out;
}
