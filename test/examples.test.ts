import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { run, tempDirs } from './helpers.js';

const DIGITS = fileURLToPath(new URL('../examples/digits/digits.js', import.meta.url));
const tempDir = tempDirs('bf-examples-');

interface DigitsReport {
  plain: number;
  sum: number;
  chunks: number;
  runs: { workers: number; seconds: number; sum: number }[];
}

describe('examples/digits', () => {
  it('sums a seeded digit file through 1 and 2 workers to the plain loop\'s sum, as JSON and as a table', async () => {
    const file = `${tempDir()}/digits.txt`;
    const args = [DIGITS, '--size', '600000', '--chunk', '30000', '--workers', '1,2', '--cost', '2', '--seed', '7', '--file', file];
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
    const table = await run(process.execPath, args, { timeoutMs: 60_000 });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toContain(`plain loop: `);
    expect(table.stdout).toMatch(new RegExp(`1 worker : [0-9.]+ s, sum ${report.sum}, -?\\d+ µs per chunk`));
    expect(table.stdout).toMatch(new RegExp(`2 workers: [0-9.]+ s, sum ${report.sum}\\n`));
  });

  it('names the option at fault', async () => {
    const bad = await run(process.execPath, [DIGITS, '--workers', '1,0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--workers must be a positive integer, got "0"');
  });
});
