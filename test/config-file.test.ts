import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BUTTERFLYD, type Daemon, daemon, request, run } from './helpers.js';
import { get, portOf, Procs } from './split-helpers.js';

const node = process.execPath;
const dir = mkdtempSync(join(tmpdir(), 'bf-config-'));
const daemons: Daemon[] = [];
const procs = new Procs();

afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.stop()));
  await procs.killAll();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a config file into the test's folder and returns its path. */
function config(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** The environment without any BUTTERFLY_ variable of the caller's, plus `extra`. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BUTTERFLY_')));
  return { ...clean, ...extra };
}

describe('configuration: config file, environment and flags', () => {
  it('lists every option and sub-command in --help', async () => {
    const { code, stdout } = await run(node, [BUTTERFLYD, '--help']);
    expect(code).toBe(0);
    for (const word of [
      '--config', '--log-level', '--max-message-bytes', '--admin-port', '--admin-host', '--host', '--port', '--engine', '--max-body',
      '--health-path', '--drain-timeout', '--access-log', '--server-timing', '--metrics-routes', '--request-timeout', '--max-in-flight',
      '--pipeline', '--workers', '--transport', '--max-queue', '--heartbeat', '--loopback', '--stages', '--stats', '--stage-index',
      '--frontend', '--backend', '--next', '--name', '--idempotent', '--stage', '--connect', '--concurrency', '--help', '--version',
      'butterflyd simulate', 'butterflyd server', 'butterflyd proxy', 'butterflyd worker', 'BUTTERFLY_PORT', 'BUTTERFLY_LOG_LEVEL',
      'is_prime.parse', 'is_prime.check',
    ]) {
      expect(stdout, word).toContain(word);
    }
  });

  it('refuses a bad config file at start-up with a message naming the field', async () => {
    const cases: [string[], RegExp][] = [
      [['--config', config('port.json', { port: '8080' })], /port\.json: port must be an integer from 0 to 65535, got "8080"/],
      [['--config', config('typo.json', { prot: 1 })], /typo\.json: unknown field "prot"/],
      [['--config', config('case.json', { max_queue: 1 })], /unknown field "max_queue"; did you mean "maxQueue"\?/],
      [['--config', config('engine.json', { engine: 'fast' })], /engine\.json: engine must be one of node, uws, got "fast"/],
      [['--config', config('bool.json', { accessLog: 'yes' })], /bool\.json: accessLog must be true or false, got "yes"/],
      [['--config', config('routes.json', { metricsRoutes: '/a' })], /routes\.json: metricsRoutes must be a list of strings, got "\/a"/],
      [['--config', config('admin.json', { adminPort: 70000 })], /admin\.json: adminPort must be an integer from 0 to 65535, got 70000/],
      [
        ['--config', config('inline.json', { pipeline: { stages: [{ module: 'is_prime.parse', workers: 0 }] } })],
        /inline\.json: pipeline\.stages\[0\]\.workers must be an integer from 1 to 256, got 0/,
      ],
      [['--config', config('nojson.json', '{ "port": 80,')], /--config: .*nojson\.json is not valid JSON/],
      [['--config', config('array.json', [1])], /array\.json must hold a JSON object/],
      [['--config', join(dir, 'missing.json')], /--config: cannot read .*missing\.json \(ENOENT\)/],
      [['server', '--config', config('stages.json', { stages: 'ipc:///tmp/a', loopback: 'ipc:///tmp/l' })], /stages\.json: stages must be a list of strings/],
      [['proxy', '--config', config('endpoint.json', { frontend: 'http://x' })], /endpoint\.json: frontend must be a ZeroMQ endpoint/],
    ];
    for (const [args, message] of cases) {
      const { code, stderr } = await run(node, [BUTTERFLYD, ...args], { env: env() });
      expect(stderr, args.join(' ')).toMatch(message);
      expect(code, args.join(' ')).toBe(2);
    }
  });

  it('refuses bad environment variables, misplaced flags and missing split-mode addresses, naming them', async () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [[], { BUTTERFLY_PORT: 'abc' }, /BUTTERFLY_PORT must be an integer from 0 to 65535, got "abc"/],
      [[], { BUTTERFLY_ENGINE: 'fast' }, /BUTTERFLY_ENGINE must be one of node, uws, got "fast"/],
      [[], { BUTTERFLY_WORKERS: '0' }, /BUTTERFLY_WORKERS must be an integer from 1 to 256, got "0"/],
      [[], { BUTTERFLY_ACCESS_LOG: 'maybe' }, /BUTTERFLY_ACCESS_LOG must be true or false/],
      [[], { BUTTERFLY_LOG_LEVEL: 'loud' }, /BUTTERFLY_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"/],
      [[], { BUTTERFLY_CONFIG: join(dir, 'nowhere.json') }, /--config: cannot read/],
      [['proxy', '--engine', 'uws'], {}, /--engine does not apply to butterflyd proxy/],
      [['worker', '--port', '1'], {}, /--port does not apply to butterflyd worker/],
      [['server', '--stages', 'ipc:///tmp/bf-a'], {}, /server needs --loopback ADDR/],
      [['server', '--loopback', 'ipc:///tmp/bf-l', '--stages', 'ipc:///tmp/a,nope'], {}, /--stages must list 1 to 255 ZeroMQ endpoints/],
      [['proxy', '--frontend', 'ipc:///tmp/bf-f'], {}, /proxy needs --stage-index I/],
      [['worker', '--stage', 'is_prime.check'], {}, /worker needs --connect ADDR/],
      [['worker', '--stage', './no-such-stage.js', '--connect', 'ipc:///tmp/bf-w'], {}, /--stage: cannot load "\.\/no-such-stage\.js"/],
      [['--max-message-bytes', '1048576'], {}, /--max-message-bytes must be at least --max-body \+ 65536 \(10551296\), got 1048576/],
      [['--metrics-routes', 'is_prime'], {}, /--metrics-routes must list at most 32 paths starting with \//],
    ];
    for (const [args, extra, message] of cases) {
      const { code, stderr } = await run(node, [BUTTERFLYD, ...args], { env: env(extra) });
      expect(stderr, `${args.join(' ')} ${JSON.stringify(extra)}`).toMatch(message);
      expect(code, args.join(' ')).toBe(2);
    }
  });

  it('takes flags over environment variables over the config file', async () => {
    const file = config('layers.json', { port: 0, workers: 1, healthPath: '/from-config', maxQueue: 64 });
    const fromEnv = await daemon(['--config', file], env({ BUTTERFLY_HEALTH_PATH: '/from-env' }));
    daemons.push(fromEnv);
    expect((await request(fromEnv.port, '/from-env')).status).toBe(200);
    expect((await request(fromEnv.port, '/from-config')).status).toBe(404);
    await fromEnv.stop();

    const fromFlag = await daemon(['--config', file, '--health-path', '/from-flag'], env({ BUTTERFLY_HEALTH_PATH: '/from-env' }));
    daemons.push(fromFlag);
    expect((await request(fromFlag.port, '/from-flag')).status).toBe(200);
    expect((await request(fromFlag.port, '/from-env')).status).toBe(404);

    const fromFile = await daemon([], env({ BUTTERFLY_CONFIG: file }));
    daemons.push(fromFile);
    expect((await request(fromFile.port, '/from-config')).status).toBe(200);
  });

  it('runs from a config file alone, with a pipeline file relative to it that names built-in stages', async () => {
    writeFileSync(join(dir, 'pipeline.json'), JSON.stringify({ stages: [{ module: 'is_prime.parse', workers: 1 }, { module: 'is_prime.check', workers: 1 }] }));
    const file = config('whole.json', {
      port: 0,
      adminPort: 0,
      pipeline: 'pipeline.json',
      metricsRoutes: ['/is_prime'],
      serverTiming: true,
      maxMessageBytes: 16 * 1024 * 1024,
      logLevel: 'info',
    });
    const d = procs.start('butterflyd', ['--config', file], env());
    const [port, adminPort] = await Promise.all([portOf(d, 'listening'), portOf(d, 'admin listening')]);
    const res = await request(port, '/is_prime?possible_prime=32416190071');
    expect(res.status).toBe(200);
    expect(res.body).toBe('{"possible_prime":32416190071,"is_prime":true}');
    expect(res.headers['server-timing']).toMatch(/^pipeline;dur=/);
    const ready = await get(adminPort, '/ready');
    expect(JSON.parse(ready.body)).toMatchObject({ ready: true, stages: [{ workers: 1 }, { workers: 1 }] });
  });
});
