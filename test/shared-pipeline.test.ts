import { afterEach, describe, expect, it } from 'vitest';
import { connectPipeline } from '../dist/index.js';
import { fixture, request, tempDirs } from './helpers.js';
import { Procs, portOf } from './split-helpers.js';

const procs = new Procs();
const tempDir = tempDirs('bf-shared-');
afterEach(async () => {
  await procs.killAll();
});

describe('several clients on one pipeline', () => {
  it('gives the HTTP server and two clients from code each only its own answers, all at once', async () => {
    const dir = tempDir();
    const addr = (name: string): string => `ipc://${dir}/${name}`;
    const server = procs.start('server', ['server', '--port', '0', '--loopback', addr('loopback'), '--stages', addr('stage-0'), '--clients', addr('clients')]);
    const proxy = procs.start('proxy', ['proxy', '--stage-index', '0', '--frontend', addr('stage-0'), '--backend', addr('workers'), '--loopback', addr('loopback')]);
    const pool = procs.start('pool', ['worker', '--stage', fixture('echo-any.js'), '--connect', addr('workers'), '--workers', '2']);
    const port = await portOf(server, 'listening');
    await proxy.waitFor((l) => l.msg === 'proxy started');
    await pool.waitFor((l) => l.msg === 'worker pool started');
    await using a = await connectPipeline({ stages: [addr('stage-0')], via: addr('clients') });
    await using b = await connectPipeline({ stages: [addr('stage-0')], via: addr('clients') });
    // connectPipeline resolves once the hub has taken the client's prefix (so no answer to its first jobs is lost); the hub says so too.
    await server.waitFor(() => server.lines().filter((m) => m.msg === 'client joined').length === 2);

    const count = 300;
    const [fromA, fromB, overHttp] = await Promise.all([
      Promise.all(Array.from({ length: count }, (_, i) => a.jobs.send({ from: 'a', i }))),
      Promise.all(Array.from({ length: count }, (_, i) => b.jobs.send({ from: 'b', i }))),
      Promise.all(Array.from({ length: 100 }, (_, i) => request(port, `/http?i=${i}`))),
    ]);
    expect(fromA).toEqual(Array.from({ length: count }, (_, i) => ({ echo: { from: 'a', i } })));
    expect(fromB).toEqual(Array.from({ length: count }, (_, i) => ({ echo: { from: 'b', i } })));
    expect(overHttp.map((r) => r.status)).toEqual(new Array(100).fill(200));
    expect(overHttp.map((r) => JSON.parse(r.body))).toEqual(Array.from({ length: 100 }, (_, i) => ({ http: `/http?i=${i}` })));
    // Nothing reached the wrong client.
    expect([a.client.unmatched, b.client.unmatched, a.client.undecodable, b.client.undecodable]).toEqual([0, 0, 0, 0]);
  });

  it('names the option at fault for a hub address that is not one', async () => {
    await expect(connectPipeline({ stages: ['ipc:///tmp/x'], via: 'not an address' })).rejects.toThrow(/via/);
  });
});
