import { mkdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { afterEach, describe, expect, it } from 'vitest';
import { isPrime } from '../dist/stages/builtin.js';
import { PipelineClient } from '../dist/server/index.js';
import { Kind, RecordWriter, linkRefusals, readKeyFile, secureClient, type LinkSecurity } from '../dist/wire/index.js';
import { BUTTERFLYD, cmdline, descendants, request, run, tempDirs } from './helpers.js';
import { type Proc, Procs, get, parseMetrics, pollUntil, portOf, sample } from './split-helpers.js';

const procs = new Procs();
const tempDir = tempDirs('bf-curve-');

afterEach(async () => {
  await procs.killAll();
});

/** Ports free at the time of asking, for daemons that bind tcp:// themselves. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise<net.Server>((resolve) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

/** `butterflyd keygen` in `dir`: the paths of NAME.key and NAME.key_secret. */
async function keygen(dir: string, name: string): Promise<{ pub: string; secret: string }> {
  const result = await run(process.execPath, [BUTTERFLYD, 'keygen', join(dir, name)]);
  expect(result.code, result.stderr).toBe(0);
  return { pub: join(dir, `${name}.key`), secret: join(dir, `${name}.key_secret`) };
}

async function security(secretFile: string, serverFile: string, allow: string[] = []): Promise<LinkSecurity> {
  const own = await readKeyFile(secretFile);
  return { publicKey: own.publicKey, secretKey: own.secretKey!, serverKey: (await readKeyFile(serverFile)).publicKey, allow };
}

describe('butterflyd keygen', () => {
  it('writes a public key file and a secret key file only its owner can read, and never overwrites them', async () => {
    const dir = tempDir();
    const { pub, secret } = await keygen(dir, 'pipeline');
    expect(statSync(secret).mode & 0o777).toBe(0o600);
    const pair = await readKeyFile(secret);
    expect(pair.secretKey).toMatch(/^.{40}$/);
    expect(await readKeyFile(pub)).toEqual({ publicKey: pair.publicKey, secretKey: undefined });
    expect(readFileSync(pub, 'utf8')).not.toContain('secret-key');
    const again = await run(process.execPath, [BUTTERFLYD, 'keygen', join(dir, 'pipeline')]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already exists');
    expect((await readKeyFile(secret)).secretKey).toBe(pair.secretKey);
  });
});

describe('binding a network address', () => {
  it('refuses to start a proxy binding tcp:// beyond loopback without keys, naming the option; --insecure starts it with a warning', async () => {
    const [front, back, loop] = await freePorts(3);
    const args = ['proxy', '--stage-index', '0', '--frontend', `tcp://127.0.0.1:${front}`, '--backend', `tcp://0.0.0.0:${back}`, '--loopback', `tcp://127.0.0.1:${loop}`];
    const refused = await run(process.execPath, [BUTTERFLYD, ...args]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`--backend tcp://0.0.0.0:${back}`);
    expect(refused.stderr).toContain('--curve-key');
    const insecure = procs.start('insecure proxy', [...args, '--insecure']);
    const warning = await insecure.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('insecure'));
    expect(warning).toMatchObject({ option: '--backend', address: `tcp://0.0.0.0:${back}` });
    await insecure.waitFor((l) => l.msg === 'proxy started');
    expect(await insecure.stop()).toBe(0);
  });

  it('refuses a secret key file that holds no secret key, and an allowlist that holds no key', async () => {
    const dir = tempDir();
    const { pub, secret } = await keygen(dir, 'k');
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const base = ['proxy', '--stage-index', '0', '--frontend', 'tcp://127.0.0.1:1', '--backend', 'tcp://127.0.0.1:2', '--loopback', 'tcp://127.0.0.1:3'];
    const noSecret = await run(process.execPath, [BUTTERFLYD, ...base, '--curve-key', pub, '--curve-allow', pub]);
    expect(noSecret.code).toBe(2);
    expect(noSecret.stderr).toContain('--curve-key');
    const noAllow = await run(process.execPath, [BUTTERFLYD, ...base, '--curve-key', secret, '--curve-allow', empty]);
    expect(noAllow.code).toBe(2);
    expect(noAllow.stderr).toContain('--curve-allow');
    const missing = await run(process.execPath, [BUTTERFLYD, ...base, '--curve-key', secret]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--curve-allow');
  });
});

interface SecureSplit {
  readonly port: number;
  readonly proxies: readonly Proc[];
  readonly proxyAdmin: number;
  readonly addr: (i: number) => string;
  readonly keys: { pipeline: { pub: string; secret: string }; worker: { pub: string; secret: string }; stranger: { pub: string; secret: string } };
}

/**
 * The is_prime pipeline as separate daemons over tcp:// on 127.0.0.1 with CURVE: the
 * server and proxies share the pipeline key pair, workers hold the worker key, and the
 * allowlist holds those two public keys; `stranger` is a key pair no one allows.
 */
async function startSecureSplit(): Promise<SecureSplit> {
  const dir = tempDir();
  const allow = join(dir, 'allow');
  mkdirSync(allow);
  const pipeline = await keygen(dir, 'pipeline');
  const worker = await keygen(dir, 'worker');
  const stranger = await keygen(dir, 'stranger');
  await run('cp', [pipeline.pub, worker.pub, allow]);
  const ports = await freePorts(6);
  const addr = (i: number): string => `tcp://127.0.0.1:${ports[i]!}`;
  const keys = ['--curve-key', pipeline.secret, '--curve-allow', allow];
  const server = procs.start('server', ['server', '--port', '0', '--loopback', addr(0), '--stages', `${addr(1)},${addr(3)}`, '--stats', addr(5), ...keys]);
  const proxies = [
    procs.start('proxy 0', ['proxy', '--stage-index', '0', '--name', 'is_prime.parse', '--frontend', addr(1), '--backend', addr(2), '--next', addr(3), '--loopback', addr(0), '--stats', addr(5), ...keys]),
    procs.start('proxy 1', ['proxy', '--stage-index', '1', '--name', 'is_prime.check', '--frontend', addr(3), '--backend', addr(4), '--loopback', addr(0), '--stats', addr(5), '--admin-port', '0', ...keys]),
  ];
  const port = await portOf(server, 'listening');
  await Promise.all(proxies.map((p) => p.waitFor((l) => l.msg === 'proxy started')));
  const proxyAdmin = await portOf(proxies[1]!, 'admin listening');
  return { port, proxies, proxyAdmin, addr, keys: { pipeline, worker, stranger } };
}

async function workersOf(adminPort: number): Promise<number | undefined> {
  const res = await get(adminPort, '/ready');
  return (JSON.parse(res.body) as { stages: { workers?: number }[] }).stages[0]?.workers;
}

describe('split mode over tcp:// with CURVE keys', () => {
  it('serves requests end to end; a worker with an unknown key and a plaintext worker get no job, and each refusal is counted and logged', async () => {
    const split = await startSecureSplit();
    const workerKeys = ['--curve-key', split.keys.worker.secret, '--curve-server-key', split.keys.pipeline.pub];
    const parse = procs.start('parse pool', ['worker', '--stage', 'is_prime.parse', '--connect', split.addr(2), '--workers', '2', ...workerKeys]);
    const check = procs.start('check worker', ['worker', '--stage', 'is_prime.check', '--connect', split.addr(4), ...workerKeys]);
    await parse.waitFor((l) => l.msg === 'worker pool started');
    await check.waitFor((l) => l.msg === 'worker joined its proxy');
    // The pool's worker processes got their keys over IPC: their command lines name them, and hold no key.
    const poolWorkers = descendants(parse.child.pid!);
    expect(poolWorkers).toHaveLength(2);
    const secretKey = (await readKeyFile(split.keys.worker.secret)).secretKey!;
    for (const pid of poolWorkers) {
      expect(cmdline(pid)).toContain('worker=is_prime.parse#');
      expect(cmdline(pid)).not.toContain(secretKey);
    }

    const stranger = procs.start('stranger', ['worker', '--stage', 'is_prime.check', '--connect', split.addr(4), '--curve-key', split.keys.stranger.secret, '--curve-server-key', split.keys.pipeline.pub]);
    const plaintext = procs.start('plaintext', ['worker', '--stage', 'is_prime.check', '--connect', split.addr(4)]);
    const checkProxy = split.proxies[1]!;
    const keyRefusal = await checkProxy.waitFor((l) => l.msg === 'peer refused: its key is not on the allowlist');
    expect(keyRefusal.key).toBe((await readKeyFile(split.keys.stranger.pub)).publicKey);
    await checkProxy.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('peer refused: its handshake failed'));

    const numbers = [32416190071, 104729, 1299709, 15485863, 15485864, 999983 * 999979];
    for (let round = 0; round < 5; round++) {
      const answers = await Promise.all(numbers.map((n) => request(split.port, `/is_prime?possible_prime=${n}`)));
      answers.forEach((a, i) => {
        expect(a.status).toBe(200);
        expect(JSON.parse(a.body)).toEqual({ possible_prime: numbers[i], is_prime: isPrime(numbers[i]!) });
      });
    }
    expect(await workersOf(split.proxyAdmin)).toBe(1);
    expect(stranger.lines().some((l) => l.msg === 'worker joined its proxy')).toBe(false);
    expect(plaintext.lines().some((l) => l.msg === 'worker joined its proxy')).toBe(false);
    const metrics = parseMetrics((await get(split.proxyAdmin, '/metrics')).body);
    expect(sample(metrics, 'butterfly_link_refusals_total', { reason: 'unknown_key' })).toBeGreaterThan(0);
    expect(sample(metrics, 'butterfly_link_refusals_total', { reason: 'handshake' })).toBeGreaterThan(0);
    // The refused peers keep trying; each is logged once, not once per try.
    expect(checkProxy.lines().filter((l) => l.msg === 'peer refused: its key is not on the allowlist')).toHaveLength(1);
  });
});

describe('the loopback with CURVE keys', () => {
  it('reads no answer from a peer with an unknown key or a plaintext one, and does read one from an allowed key', async () => {
    const dir = tempDir();
    const server = await keygen(dir, 'server');
    const friend = await keygen(dir, 'friend');
    const stranger = await keygen(dir, 'stranger');
    const [loop, stage] = await freePorts(2);
    const allowed = (await readKeyFile(friend.pub)).publicKey;
    const client = new PipelineClient({
      loopback: `tcp://127.0.0.1:${loop}`,
      stages: [`tcp://127.0.0.1:${stage}`],
      requestTimeoutMs: 60_000,
      security: await security(server.secret, server.pub, [allowed]),
    });
    await client.start();
    const sockets: zmq.Push[] = [];
    try {
      // An answer for a request id no one asked for: once read, it is dropped and counted (unmatched, or undecodable).
      const forge = async (keys: LinkSecurity | undefined): Promise<void> => {
        const push = new zmq.Push();
        push.linger = 0;
        secureClient(push, keys);
        push.connect(`tcp://127.0.0.1:${loop}`);
        sockets.push(push);
        const writer = new RecordWriter(256);
        writer.begin(Kind.RESULT, 0, 0, 2 ** 40 + 7, 0);
        writer.end();
        // A send to a peer that never completes the handshake stays queued: do not wait for it.
        void push.send(writer.take()).catch(() => {});
      };
      const before = { ...linkRefusals };
      await forge(await security(stranger.secret, server.pub));
      await forge(undefined);
      await pollUntil('both refusals', async () => (linkRefusals.unknown_key > before.unknown_key && linkRefusals.handshake > before.handshake ? true : undefined));
      expect(client.unmatched + client.undecodable).toBe(0);
      // The same forgery from an allowed key is read (and dropped): the check above can fail.
      await forge(await security(friend.secret, server.pub));
      await pollUntil('the allowed answer', async () => (client.unmatched + client.undecodable > 0 ? true : undefined));
      expect(client.unmatched + client.undecodable).toBe(1);
    } finally {
      for (const s of sockets) s.close();
      await client.destroy();
    }
  });
});
