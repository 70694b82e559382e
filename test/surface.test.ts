import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { optionsTable } from '../dist/cli/help.js';
import { ButterflyError, ERROR_STATUS, InvalidOptionError, StageLoadError, WorkerStartError, defineStage, startButterfly } from '../dist/index.js';
import { BUTTERFLYD, fixture, request, run, start, tempDirs } from './helpers.js';
import { pollUntil } from './split-helpers.js';

const node = process.execPath;
const tempDir = tempDirs('bf-surface-');

/** The text a file holds once it is no longer `unless` (or absent). */
function fileOtherThan(path: string, unless: string): Promise<string> {
  return pollUntil(`${path} written`, async () => {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
    return text === unless || text === '' ? undefined : text;
  });
}

describe('the public surface', () => {
  it('exports from butterfly only what stage authors, embedders and clients use, the demo only from butterfly/stages, and inject from butterfly/testing', async () => {
    const root = await import('butterfly');
    expect(Object.keys(root).sort()).toEqual([
      'ButterflyError',
      'ERROR_STATUS',
      'EventBus',
      'Events',
      'HttpRequest',
      'InvalidOptionError',
      'RequestData',
      'StageLoadError',
      'UwsUnavailableError',
      'WorkerStartError',
      'chunks',
      'connectPipeline',
      'definePipeline',
      'defineStage',
      'offload',
      'startButterfly',
    ]);
    const stages = await import('butterfly/stages');
    expect(Object.keys(stages).sort()).toEqual(['BUILTIN_STAGES', 'MAX_POSSIBLE_PRIME', 'isPrime', 'isPrimePipeline', 'parsePossiblePrime']);
    const testing = await import('butterfly/testing');
    expect(Object.keys(testing)).toEqual(['inject']);
  });

  it("keeps the README's option table equal to the one the option schema gives", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const table = readme.slice(readme.indexOf('<!-- options:start -->\n') + '<!-- options:start -->\n'.length, readme.indexOf('<!-- options:end -->'));
    expect(table.trim()).toBe(optionsTable());
  });

  it('names a bad option with one message format from the command line, the environment and code', async () => {
    const cli = await run(node, [BUTTERFLYD, '--workers', '0']);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('--workers must be an integer from 1 to 256, got "0"');
    const env = await run(node, [BUTTERFLYD, '--port', '0'], { env: { ...process.env, BUTTERFLY_MAX_HEADER_COUNT: '0' } });
    expect(env.code).toBe(2);
    expect(env.stderr).toContain('BUTTERFLY_MAX_HEADER_COUNT must be an integer from 1 to 10000, got "0"');
    const err = await startButterfly({ workers: 0 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InvalidOptionError);
    expect(err).toBeInstanceOf(ButterflyError);
    expect(err).toMatchObject({ code: 'BF_ERR_INVALID_OPTION', status: ERROR_STATUS.BF_ERR_INVALID_OPTION, option: 'workers', message: 'workers must be an integer from 1 to 256, got 0' });
    expect(() => defineStage({ name: 'x', concurrency: 0, handle: () => null })).toThrow('stage x: concurrency must be an integer from 1 to 4096, got 0');
  });

  it('gives every error code an HTTP status, and tells start-up failures apart by code', async () => {
    for (const [code, status] of Object.entries(ERROR_STATUS)) {
      expect(code).toMatch(/^BF_ERR_[A-Z_]+$/);
      expect(status, code).toBeGreaterThanOrEqual(400);
      expect(status, code).toBeLessThanOrEqual(599);
    }
    const notStage = await start({ workers: 1, pipeline: { stages: [{ module: fixture('helpers-not-a-stage.js') }] } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(notStage).toBeInstanceOf(StageLoadError);
    expect(notStage).toMatchObject({ code: 'BF_ERR_STAGE_LOAD', status: 500 });
    const setup = await start({ workers: 1, pipeline: { stages: [{ module: fixture('setup-throws.js') }] } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(setup).toBeInstanceOf(WorkerStartError);
    expect(setup).toMatchObject({ code: 'BF_ERR_WORKER_START', status: 500 });
    expect((setup as Error).message).toContain('no database');
  });
});

describe('cancellation and deadlines abort a job with their own codes', () => {
  it("aborts ctx.signal with BF_ERR_CANCELLED when the client goes away, and with BF_ERR_DEADLINE at the request's deadline", async () => {
    await using bf = await start({ workers: 1, requestTimeoutMs: 1000, pipeline: { stages: [{ module: fixture('signal-reason.js') }] } });
    const dir = tempDir();
    const gone = join(dir, 'gone');
    const req = http.get({ host: '127.0.0.1', port: bf.port, path: `/?mark=${encodeURIComponent(gone)}`, agent: false });
    req.on('error', () => undefined);
    await fileOtherThan(gone, '');
    req.destroy();
    expect(await fileOtherThan(gone, 'started')).toBe('BF_ERR_CANCELLED');
    const late = join(dir, 'late');
    const res = await request(bf.port, `/?mark=${encodeURIComponent(late)}`);
    expect(res.status).toBe(504);
    expect(await fileOtherThan(late, 'started')).toBe('BF_ERR_DEADLINE');
  });
});

describe('one lifecycle: close() is graceful, destroy() immediate, state read-only', () => {
  const slow = { workers: 1, pipeline: { stages: [{ module: fixture('contract-stage.js') }] } };

  it('lets a request in flight finish on close()', async () => {
    const bf = await start(slow);
    const mark = join(tempDir(), 'mark');
    const answer = request(bf.port, `/sleep?ms=300&mark=${encodeURIComponent(mark)}`);
    await fileOtherThan(mark, '');
    await bf.close();
    expect((await answer).status).toBe(200);
    expect(bf.server?.state).toBe('closed');
    expect(bf.client.state).toBe('closed');
    expect(bf.proxies.map((p) => p.state)).toEqual(['closed']);
  });

  it('answers a request in flight 503 at once on destroy(), and both verbs are idempotent', async () => {
    const bf = await start(slow);
    const mark = join(tempDir(), 'mark');
    const answer = request(bf.port, `/sleep?ms=30000&mark=${encodeURIComponent(mark)}`);
    await fileOtherThan(mark, '');
    await Promise.all([bf.destroy(), bf.destroy(), bf.close()]);
    const res = await answer;
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body).error.code).toBe('BF_ERR_DRAINING');
  });

  it('refuses writes to state, ports and counters from outside', async () => {
    await using bf = await start({ workers: 1 });
    const writes: [object, string][] = [
      [bf.server!, 'state'],
      [bf.server!, 'port'],
      [bf.client, 'state'],
      [bf.client, 'unmatched'],
      [bf.proxies[0]!, 'state'],
      [bf.pools[0]!, 'state'],
      [bf.pools[0]!, 'restarts'],
    ];
    for (const [target, field] of writes) {
      const before = Reflect.get(target, field) as unknown;
      expect(Reflect.set(target, field, 7), field).toBe(false);
      expect(Reflect.get(target, field), field).toBe(before);
    }
    const counters = bf.server!.counters;
    expect(Reflect.set(counters, 'requests', 1e9)).toBe(false);
    expect(bf.server!.counters.requests).not.toBe(1e9);
  });
});

describe('simulate runs any pipeline', () => {
  it('sends COUNT requests with {n} in the target through a pipeline file, and counts the answers by status', async () => {
    const dir = tempDir();
    const pipeline = join(dir, 'pipeline.json');
    writeFileSync(pipeline, JSON.stringify({ stages: [{ module: fixture('echo-stage.js') }] }));
    const { code, stdout, stderr } = await run(node, [BUTTERFLYD, 'simulate', '200', '--pipeline', pipeline, '--target', '/echo?n={n}', '--workers', '1']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toContain('sent 200 requests to /echo?n={n}: 0 failures');
    expect(stdout).toContain('answers by status: 200 200');
  });
});
