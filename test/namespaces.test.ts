import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPrime } from '../dist/stages/builtin.js';
import { BASE_DIR, baseManifests, containerOf } from './deploy-helpers.js';
import { BUTTERFLYD, run, tempDirs } from './helpers.js';
import { type Proc, Procs, pollUntil } from './split-helpers.js';

/**
 * Several hosts, really: Linux network namespaces joined by veth links to a bridge, the
 * server in one, both proxies in a second, a worker pool in a third and a fourth, all over
 * tcp:// with CURVE, each daemon started with its command line from the Kubernetes base
 * (deploy/kubernetes) and its settings file, service names replaced by the namespaces'
 * addresses and key paths by the keys made here. Needs root, ip (iproute2) and tcpdump.
 */

function can(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const usable = process.platform === 'linux' && process.getuid?.() === 0 && can('ip', ['-V']) && can('tcpdump', ['--version']);
const tag = `bf${process.pid % 100000}`;
const SUBNET = '10.77.0';
/** The namespaces and their addresses: the test's own end of the bridge is .254. */
const HOSTS = { server: 1, proxies: 2, poolA: 3, poolB: 4 } as const;
type Host = keyof typeof HOSTS;
const nsOf = (host: Host): string => `${tag}-${host}`;
const vethOf = (host: Host): string => `${tag}${HOSTS[host]}h`;
const bridge = `${tag}br`;
const ip = (...args: string[]): void => {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
};
const addressOf = (host: Host): string => `${SUBNET}.${HOSTS[host]}`;

const procs = new Procs();
const tempDir = tempDirs('bf-netns-');

function setUpNetwork(): void {
  ip('link', 'add', bridge, 'type', 'bridge');
  ip('addr', 'add', `${SUBNET}.254/24`, 'dev', bridge);
  ip('link', 'set', bridge, 'up');
  for (const host of Object.keys(HOSTS) as Host[]) {
    const ns = nsOf(host);
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('link', 'add', vethOf(host), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('link', 'set', vethOf(host), 'master', bridge);
    ip('link', 'set', vethOf(host), 'up');
    ip('-n', ns, 'addr', 'add', `${addressOf(host)}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
  }
}

function tearDownNetwork(): void {
  for (const host of Object.keys(HOSTS) as Host[]) {
    try {
      ip('netns', 'del', nsOf(host));
    } catch {
      // not made
    }
  }
  try {
    ip('link', 'del', bridge);
  } catch {
    // not made
  }
}

/** A Deployment's command line from the base, with the test's addresses and key paths. */
function commandLine(deployment: string, keys: string): string[] {
  const manifest = baseManifests().find((m) => m.kind === 'Deployment' && m.metadata.name === deployment);
  if (manifest === undefined) throw new Error(`no Deployment ${deployment} in the base`);
  return containerOf(manifest).args.map((arg) =>
    arg
      .replaceAll('butterfly-server:', `${addressOf('server')}:`)
      .replaceAll('butterfly-proxy-parse:', `${addressOf('proxies')}:`)
      .replaceAll('butterfly-proxy-check:', `${addressOf('proxies')}:`)
      .replace(/^\/etc\/butterfly\/keys\//, `${keys}/`),
  );
}

interface Answer {
  readonly status: number;
  readonly body: string;
}

async function ask(path: string, timeoutMs = 20_000): Promise<Answer> {
  const res = await fetch(`http://${addressOf('server')}:8080${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

async function workersAt(adminPort: number): Promise<number | undefined> {
  const res = await fetch(`http://${addressOf('proxies')}:${adminPort}/ready`, { signal: AbortSignal.timeout(2000) });
  return (JSON.parse(await res.text()) as { stages: { workers?: number }[] }).stages[0]?.workers;
}

describe.skipIf(!usable)('several hosts: network namespaces over veth, every link tcp:// with CURVE', () => {
  let keys: string;
  let stranger: string;
  let checkProxy: Proc;
  const env = { ...process.env, BUTTERFLY_CONFIG: join(BASE_DIR, 'butterfly.json') };

  beforeAll(async () => {
    tearDownNetwork();
    setUpNetwork();
    const dir = tempDir();
    keys = join(dir, 'keys');
    const allow = join(dir, 'allow');
    mkdirSync(keys);
    mkdirSync(allow);
    for (const name of ['pipeline', 'worker', 'stranger']) {
      const made = await run(process.execPath, [BUTTERFLYD, 'keygen', join(keys, name)]);
      expect(made.code, made.stderr).toBe(0);
    }
    for (const name of ['pipeline.key', 'worker.key']) copyFileSync(join(keys, name), join(allow, name));
    stranger = join(keys, 'stranger.key_secret');
    const inNs = (host: Host): string[] => ['ip', 'netns', 'exec', nsOf(host)];
    const server = procs.start('server', [...commandLine('butterfly-server', keys), '--curve-allow', allow], env, inNs('server'));
    const proxies = [
      procs.start('proxy parse', [...commandLine('butterfly-proxy-parse', keys), '--curve-allow', allow], env, inNs('proxies')),
      // Both proxies share one namespace here, so one admin port moves.
      procs.start('proxy check', [...commandLine('butterfly-proxy-check', keys), '--curve-allow', allow, '--admin-port', '9091'], env, inNs('proxies')),
    ];
    checkProxy = proxies[1]!;
    await server.waitFor((l) => l.msg === 'listening');
    await Promise.all(proxies.map((p) => p.waitFor((l) => l.msg === 'proxy started')));
  }, 60_000);

  afterAll(async () => {
    await procs.killAll();
    if (usable) tearDownNetwork();
  });

  it('serves requests across the namespaces; an unknown key and a plaintext peer get no job; the wire holds no request in clear text; a cut link gives 502/503 in time and the other pool carries on', async () => {
    // Capture everything pool A's host sends and receives, from before its workers start.
    const pcap = join(tempDir(), 'pool-a.pcap');
    const capture: ChildProcess = spawn('tcpdump', ['-i', vethOf('poolA'), '-U', '-n', '-w', pcap, 'tcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      let err = '';
      capture.stderr!.on('data', (c: Buffer) => {
        err += c.toString();
        if (err.includes('listening on')) resolve();
      });
      capture.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
    });

    const pools: Proc[] = [];
    for (const host of ['poolA', 'poolB'] as const) {
      for (const deployment of ['butterfly-workers-parse', 'butterfly-workers-check']) {
        pools.push(procs.start(`${deployment} in ${host}`, [...commandLine(deployment, keys), '--admin-port', '0'], env, ['ip', 'netns', 'exec', nsOf(host)]));
      }
    }
    await Promise.all(pools.map((p) => p.waitFor((l) => l.msg === 'worker joined its proxy')));
    await pollUntil('both pools counted by both proxies', async () => ((await workersAt(9090)) === 2 && (await workersAt(9091)) === 2 ? true : undefined));

    // Served across the namespaces, each answer right.
    const numbers = Array.from({ length: 40 }, (_, i) => 1_000_000_007 + 2 * i * 7919);
    const marker = 1_000_000_000_039;
    numbers.push(marker);
    const answers = await Promise.all(numbers.map((n) => ask(`/is_prime?possible_prime=${n}`)));
    answers.forEach((a, i) => {
      expect(a.status).toBe(200);
      expect(JSON.parse(a.body)).toEqual({ possible_prime: numbers[i], is_prime: isPrime(numbers[i]!) });
    });

    // A worker with a key no one allows, and one without keys, from pool B's host.
    const strangerArgs = commandLine('butterfly-workers-check', keys).map((a) => (a.endsWith('worker.key_secret') ? stranger : a));
    const strangers = [
      procs.start('stranger', [...strangerArgs, '--admin-port', '0'], env, ['ip', 'netns', 'exec', nsOf('poolB')]),
      procs.start('plaintext', ['worker', '--stage', 'is_prime.check', '--connect', `tcp://${addressOf('proxies')}:5571`, '--admin-port', '0'], env, ['ip', 'netns', 'exec', nsOf('poolB')]),
    ];
    await checkProxy.waitFor((l) => l.msg === 'peer refused: its key is not on the allowlist');
    await checkProxy.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('peer refused: its handshake failed'));
    const again = await Promise.all(numbers.slice(0, 10).map((n) => ask(`/is_prime?possible_prime=${n}`)));
    expect(again.map((a) => a.status)).toEqual(new Array(10).fill(200));
    expect(await workersAt(9091)).toBe(2);
    for (const s of strangers) expect(s.lines().some((l) => l.msg === 'worker joined its proxy')).toBe(false);

    // The capture on pool A's link: ZeroMQ traffic (its greeting names the CURVE mechanism in clear), and no request or answer.
    capture.kill('SIGINT');
    await new Promise((resolve) => capture.once('exit', resolve));
    const captured = readFileSync(pcap);
    expect(captured.length).toBeGreaterThan(10_000);
    expect(captured.includes('CURVE')).toBe(true);
    // (Strings long enough not to turn up in ciphertext by chance.)
    for (const clear of ['possible_prime', 'is_prime', String(marker)]) expect(captured.includes(clear), `"${clear}" in the capture`).toBe(false);

    // Cut pool A's host off: what it held is answered 502 (or refused 503) once the proxies give it up; pool B carries on.
    ip('-n', nsOf('poolA'), 'link', 'set', 'eth0', 'down');
    const cutAt = Date.now();
    const during = await Promise.all(numbers.slice(0, 20).map(async (n) => ({ n, answer: await ask(`/is_prime?possible_prime=${n}`), at: Date.now() - cutAt })));
    for (const { n, answer } of during) {
      expect([200, 502, 503]).toContain(answer.status);
      // Requests pool B took are answered at once; pool A's wait for the proxies to give it up.
      if (answer.status === 200) expect(JSON.parse(answer.body)).toEqual({ possible_prime: n, is_prime: isPrime(n) });
    }
    // Some were at pool A (the proxies spread jobs over both pools' credit) ...
    expect(during.filter((d) => d.answer.status !== 200).length).toBeGreaterThan(0);
    // ... and heartbeat 1 s, liveness 3 (the base's settings): a worker gone silent is given up within about 4 s.
    expect(Math.max(...during.map((d) => d.at))).toBeLessThan(8000);
    await pollUntil('pool A given up by both proxies', async () => ((await workersAt(9090)) === 1 && (await workersAt(9091)) === 1 ? true : undefined));
    const after = await Promise.all(numbers.map((n) => ask(`/is_prime?possible_prime=${n}`)));
    expect(after.map((a) => a.status)).toEqual(new Array(numbers.length).fill(200));
  }, 90_000);
});
