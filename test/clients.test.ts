import autocannon from 'autocannon';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, daemon, run } from './helpers.js';

/** wrk's summary: requests, non-2xx and socket errors. */
function parseWrk(out: string): { requests: number; non2xx: number; socketErrors: boolean } {
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return { requests, non2xx, socketErrors: /Socket errors/.test(out) };
}

async function cannon(port: number): Promise<autocannon.Result> {
  return autocannon({ url: `http://127.0.0.1:${port}/is_prime?possible_prime=1000003`, connections: 64, duration: 2 });
}

describe('real clients against the default daemon (node engine, port 8002)', () => {
  let d: Daemon;
  beforeAll(async () => {
    // Exactly what a user runs: no flags, so 127.0.0.1:8002.
    d = await daemon([]);
    expect(d.port).toBe(8002);
  });
  afterAll(async () => {
    expect(await d?.stop()).toBe(0);
  });

  it('serves curl over HTTP/1.0 and HTTP/1.1', async () => {
    for (const version of ['--http1.0', '--http1.1']) {
      const { code, stdout } = await run('curl', ['-sS', version, '-i', 'http://127.0.0.1:8002/is_prime?possible_prime=97']);
      expect(code).toBe(0);
      expect(stdout).toMatch(version === '--http1.0' ? /^HTTP\/1\.[01] 200 OK/ : /^HTTP\/1\.1 200 OK/);
      expect(stdout).toContain('{"possible_prime":97,"is_prime":true}');
    }
  });

  it("completes `ab -k -n 1000 -c 8` on the heavy prime with no failed or non-2xx responses", async () => {
    const { code, stdout } = await run('ab', ['-k', '-n', '1000', '-c', '8', 'http://127.0.0.1:8002/is_prime?possible_prime=32416190071'], { timeoutMs: 120_000 });
    expect(code).toBe(0);
    expect(stdout).toMatch(/Complete requests:\s+1000\b/);
    expect(stdout).toMatch(/Failed requests:\s+0\b/);
    expect(stdout).not.toMatch(/Non-2xx responses/);
    expect(stdout).toMatch(/Keep-Alive requests:\s+1000\b/);
  }, 150_000);

  it('serves wrk with no errors', async () => {
    const { code, stdout } = await run('wrk', ['-t1', '-c64', '-d2s', 'http://127.0.0.1:8002/is_prime?possible_prime=7']);
    expect(code).toBe(0);
    const r = parseWrk(stdout);
    expect(r.requests).toBeGreaterThan(1000);
    expect(r.non2xx).toBe(0);
    expect(r.socketErrors).toBe(false);
  });

  it('serves autocannon -c 64 with no errors', async () => {
    const r = await cannon(8002);
    expect(r.requests.total).toBeGreaterThan(1000);
    expect(r.errors).toBe(0);
    expect(r.timeouts).toBe(0);
    expect(r.non2xx).toBe(0);
  });
});

describe('real clients against butterflyd --engine uws', () => {
  let d: Daemon;
  beforeAll(async () => {
    d = await daemon(['--engine', 'uws', '--port', '0', '--workers', '2']);
  });
  afterAll(async () => {
    expect(await d?.stop()).toBe(0);
  });

  it('serves curl over HTTP/1.1', async () => {
    const { code, stdout } = await run('curl', ['-sS', '--http1.1', '-i', `http://127.0.0.1:${d.port}/is_prime?possible_prime=97`]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(stdout).toContain('{"possible_prime":97,"is_prime":true}');
  });

  it('serves wrk with no errors', async () => {
    const { code, stdout } = await run('wrk', ['-t1', '-c64', '-d2s', `http://127.0.0.1:${d.port}/is_prime?possible_prime=32416190071`]);
    expect(code).toBe(0);
    const r = parseWrk(stdout);
    expect(r.requests).toBeGreaterThan(100);
    expect(r.non2xx).toBe(0);
    expect(r.socketErrors).toBe(false);
  });

  it('serves autocannon -c 64 with no errors', async () => {
    const r = await cannon(d.port);
    expect(r.requests.total).toBeGreaterThan(1000);
    expect(r.errors).toBe(0);
    expect(r.timeouts).toBe(0);
    expect(r.non2xx).toBe(0);
  });
});
