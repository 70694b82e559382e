import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import { type Butterfly, type ButterflyOptions, startButterfly } from '../dist/index.js';

/** The daemon's entry, as a user runs it. */
export const BUTTERFLYD = fileURLToPath(new URL('../bin/butterflyd.js', import.meta.url));

/** A test fixture's path as a file URL, for pipeline descriptions. */
export function fixture(name: string): string {
  return new URL(`./fixtures/${name}`, import.meta.url).href;
}

/** Starts an embedded pipeline on a free port, sized for a 2-core machine. */
export function start(options: Partial<ButterflyOptions> = {}): Promise<Butterfly> {
  return startButterfly({ port: 0, workers: 2, workerLogLevel: 'warn', ...options });
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** One HTTP/1.1 request over a keep-alive agent. */
export function request(port: number, path: string, init: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: init.method ?? 'GET', headers: init.headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

/** Sends raw bytes on a fresh connection; resolves with everything received until the server closes or `idleMs` passes without data. */
export function raw(port: number, bytes: string | Buffer, idleMs = 1000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        socket.destroy();
        resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: false });
      }, idleMs);
    };
    socket.on('connect', () => {
      socket.write(bytes);
      arm();
    });
    socket.on('data', (c) => {
      chunks.push(c);
      arm();
    });
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed: true });
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded by `timeoutMs`, then killed). */
export function run(command: string, args: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A daemon started with `butterflyd` and stopped by the test. */
export interface Daemon {
  readonly child: ChildProcess;
  readonly port: number;
  /** Resolves with the exit code once the daemon has exited. */
  readonly exited: Promise<number | null>;
  output(): string;
  stop(): Promise<number | null>;
}

/** Starts `butterflyd` with `args` and resolves once its log says it listens. */
export function daemon(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Daemon> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BUTTERFLYD, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const onData = (c: Buffer): void => {
      out += c.toString();
      const m = /"port":(\d+)[^\n]*"msg":"listening"/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve({
          child,
          port: Number(m[1]),
          exited,
          output: () => out,
          stop: async () => {
            if (child.exitCode === null) child.kill('SIGTERM');
            return exited;
          },
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`butterflyd did not listen within 20 s:\n${out}`));
    }, 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`butterflyd exited with ${code} before listening:\n${out}`));
    });
  });
}

/** A maker of temporary folders for one test file: each is removed after the test that made it. */
export function tempDirs(prefix: string): () => string {
  const made: string[] = [];
  afterEach(() => {
    for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    made.push(dir);
    return dir;
  };
}

/** Every live process below `root`, found through the ppid field of /proc/<pid>/stat. */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      parent.set(pid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited while listed
    }
  }
  const out: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const p = pending.pop()!;
    for (const [pid, ppid] of parent) {
      if (ppid === p) {
        out.push(pid);
        pending.push(pid);
      }
    }
  }
  return out;
}

/** A process's command line, NUL-separated; empty once it has exited. */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** The JSON lines a child process prints on stdout, parsed, as they come (other lines are skipped). */
export function jsonLines(child: ChildProcess): unknown[] {
  const out: unknown[] = [];
  let pending = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.startsWith('{')) out.push(JSON.parse(line));
    }
  });
  return out;
}
