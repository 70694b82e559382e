import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { jsonLines, run, tempDirs } from './helpers.js';
import { pollUntil } from './split-helpers.js';

const DIGITS = fileURLToPath(new URL('../examples/digits/digits.js', import.meta.url));
const OFFLOAD = fileURLToPath(new URL('../examples/offload/offload.js', import.meta.url));
const APP = fileURLToPath(new URL('../examples/webapp/app.js', import.meta.url));
const WATCHER = fileURLToPath(new URL('../examples/webapp/watcher.js', import.meta.url));
const tempDir = tempDirs('bf-examples-');

interface DigitsReport {
  plain: number;
  sum: number;
  chunks: number;
  plainFirst: number;
  runs: { workers: number; seconds: number; first: number; sum: number }[];
}

describe('examples/digits', () => {
  it('sums a seeded digit file through 1 and 2 workers to the plain loop\'s sum, as JSON and as a table', async () => {
    const file = `${tempDir()}/digits.txt`;
    const args = [DIGITS, '--size', '600000', '--chunk', '30000', '--workers', '1,2', '--cost', '2', '--seed', '7', '--repeat', '2', '--file', file];
    const json = await run(process.execPath, [...args, '--json'], { timeoutMs: 60_000 });
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as DigitsReport;
    expect(report.chunks).toBe(20);
    // 600,000 digits averaging 4.5: a sum near 2.7 million.
    expect(report.sum).toBeGreaterThan(2_600_000);
    expect(report.sum).toBeLessThan(2_800_000);
    expect(report.runs.map((r) => [r.workers, r.sum])).toEqual([
      [1, report.sum],
      [2, report.sum],
    ]);
    // Each time is the fastest of the runs, the first one among them.
    expect(report.plain).toBeLessThanOrEqual(report.plainFirst);
    for (const r of report.runs) expect(r.seconds).toBeLessThanOrEqual(r.first);
    const table = await run(process.execPath, args, { timeoutMs: 60_000 });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toContain('each time the fastest of 2 runs');
    expect(table.stdout).toMatch(/plain loop: [0-9.]+ s \([0-9.]+\), sum /);
    expect(table.stdout).toMatch(new RegExp(`1 worker : [0-9.]+ s \\([0-9.]+\\), sum ${report.sum}, -?\\d+ µs per chunk`));
    expect(table.stdout).toMatch(new RegExp(`2 workers: [0-9.]+ s \\([0-9.]+\\), sum ${report.sum}\\n`));
  });

  it('names the option at fault', async () => {
    const bad = await run(process.execPath, [DIGITS, '--workers', '1,0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--workers must be a positive integer, got "0"');
  });
});

describe('examples/offload', () => {
  it('runs batches of concurrent calls, the first call here and the rest on the pool, as JSON and as lines', async () => {
    const args = [OFFLOAD, '--calls', '4', '--batches', '2', '--ms', '60', '--workers', '2'];
    const json = await run(process.execPath, [...args, '--json'], { timeoutMs: 60_000 });
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as { plain: number; workers: number; calls: number; batches: { batch: number; seconds: number; mode: string }[] };
    expect(report).toMatchObject({ workers: 2, calls: 4 });
    // Four calls of 60 ms one after another here.
    expect(report.plain).toBeGreaterThanOrEqual(0.24);
    expect(report.batches.map((b) => [b.batch, b.mode])).toEqual([
      [1, 'pool'],
      [2, 'pool'],
    ]);
    const lines = await run(process.execPath, args, { timeoutMs: 60_000 });
    expect(lines.code, lines.stderr).toBe(0);
    expect(lines.stdout).toMatch(/^plain: 4 calls of 60 ms in [0-9.]+ s\nbatch 1: 4 calls in [0-9.]+ s \(on 2 workers\)\nbatch 2: 4 calls in [0-9.]+ s \(on 2 workers\)\n$/);
  });
});

describe('examples/webapp', () => {
  it('places orders through its route as jobs, and another process watching sees each worker\'s event', async () => {
    const app = spawn(process.execPath, [APP, '--port', '0', '--workers', '2'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const appLines = jsonLines(app);
    let watcher: ChildProcess | undefined;
    try {
      const { port, events } = (await pollUntil('the app to be ready', async () => appLines.find((l) => typeof (l as { port?: unknown }).port === 'number'))) as { port: number; events: string };
      watcher = spawn(process.execPath, [WATCHER, events], { stdio: ['ignore', 'pipe', 'inherit'] });
      const seen = jsonLines(watcher) as { id: string; item: string; quantity: number }[];
      const order = async (body: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
        const res = await fetch(`http://127.0.0.1:${port}/orders`, { method: 'POST', body: JSON.stringify(body) });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      // The watcher's subscription reaches the workers a moment after it starts: order until it sees one.
      await pollUntil('the watcher to see an order', async () => ((await order({ item: 'warm-up' })).status === 201 && seen.length > 0 ? true : undefined));
      const placed = await Promise.all(['tea', 'cake', 'jam'].map((item, i) => order({ item, quantity: i + 1 })));
      expect(placed.map((p) => p.status)).toEqual([201, 201, 201]);
      expect(placed.map((p) => [p.body.item, p.body.quantity])).toEqual([['tea', 1], ['cake', 2], ['jam', 3]]);
      const ids = placed.map((p) => p.body.id as string);
      await pollUntil('the three events', async () => (ids.every((id) => seen.some((s) => s.id === id)) ? true : undefined));
      expect(seen.filter((s) => ids.includes(s.id)).map((s) => s.item).sort()).toEqual(['cake', 'jam', 'tea']);
      expect(await order({ quantity: 2 })).toEqual({ status: 400, body: { error: 'BF_ERR_BAD_REQUEST', message: 'an order needs an item' } });
    } finally {
      watcher?.kill('SIGTERM');
      const exited = new Promise<number | null>((resolve) => app.once('exit', resolve));
      app.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});
