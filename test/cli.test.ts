import { describe, expect, it } from 'vitest';
import { BUTTERFLYD, run } from './helpers.js';

const node = process.execPath;

describe('butterflyd command line', () => {
  it('lists every option in --help', async () => {
    const { code, stdout } = await run(node, [BUTTERFLYD, '--help']);
    expect(code).toBe(0);
    for (const flag of [
      '--host', '--port', '--engine', '--workers', '--transport', '--pipeline', '--request-timeout', '--max-in-flight',
      '--max-queue', '--max-body', '--health-path', '--drain-timeout', '--log-level', '--stage', '--connect', '--concurrency',
      '--help', '--version', 'simulate', 'worker',
    ]) {
      expect(stdout).toContain(flag);
    }
  });

  it('prints the version', async () => {
    const { code, stdout } = await run(node, [BUTTERFLYD, '--version']);
    expect(code).toBe(0);
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('exits 2 with a message naming the bad option', async () => {
    const cases: [string[], RegExp][] = [
      [['--port', 'abc'], /--port must be an integer from 0 to 65535, got "abc"/],
      [['--engine', 'fast'], /--engine must be one of node, uws, got "fast"/],
      [['--workers', '0'], /--workers must be an integer from 1 to 256, got "0"/],
      [['--bogus'], /--bogus/],
      [['--pipeline', '/nonexistent/pipeline.json'], /--pipeline: pipeline must be a readable file/],
      [['simulate', 'many'], /simulate needs COUNT/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['worker', '--connect', 'ipc:///tmp/x'], /worker needs --stage/],
    ];
    for (const [args, message] of cases) {
      const { code, stderr } = await run(node, [BUTTERFLYD, ...args]);
      expect(code, args.join(' ')).toBe(2);
      expect(stderr).toMatch(message);
    }
  });

  it('refuses --engine uws with a clear message when the uWS native addon did not load', async () => {
    // UWS_USE_FALLBACK makes the package load its pure-JS copy instead of the addon.
    const { code, stderr } = await run(node, [BUTTERFLYD, '--engine', 'uws', '--port', '0', '--workers', '1'], {
      env: { ...process.env, UWS_USE_FALLBACK: '1' },
    });
    expect(code).toBe(1);
    expect(stderr).toMatch(/native addon.*did not load.*use --engine node/);
  });

  it('counts the 78,498 primes below 1,000,000 in simulation mode', async () => {
    const { code, stdout } = await run(node, [BUTTERFLYD, 'simulate', '1000000', '--workers', '2'], { timeoutMs: 120_000 });
    expect(stdout).toContain('checked 1000000 numbers from 1 to 1000000: 78498 primes, 0 failures');
    expect(stdout).toMatch(/\d+ checks\/s/);
    expect(code).toBe(0);
  }, 150_000);
});
