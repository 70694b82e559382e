import { type ChildProcess, spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, Events, InvalidOptionError, defineStage } from '../dist/index.js';
import { inject } from '../dist/testing.js';
import { fixture, jsonLines, request, start, tempDirs } from './helpers.js';
import { Procs, pollUntil, portOf } from './split-helpers.js';

const tempDir = tempDirs('bf-events-');
const procs = new Procs();
afterEach(async () => {
  await procs.killAll();
});

interface Seen {
  topic: string;
  data: unknown;
}

/** A subscriber process, and the events it printed so far. */
function subscriber(address: string, topics: string[]): { child: ChildProcess; seen: Seen[] } {
  const child = spawn(process.execPath, [new URL(fixture('event-subscriber.js')).pathname, address, ...topics], { stdio: ['ignore', 'pipe', 'inherit'] });
  return { child, seen: jsonLines(child) as Seen[] };
}

/**
 * ZeroMQ carries a subscription to the publishers a moment after it is made: publishes
 * `hello` until the subscriber has seen one, so that what comes after reaches it.
 */
async function handshake(events: Events, seen: Seen[]): Promise<void> {
  let round = 0;
  await pollUntil('the subscriber to be heard', async () => {
    events.publish('hello', { round: ++round });
    return seen.some((s) => s.topic === 'hello') ? true : undefined;
  });
}

describe('events', () => {
  it.each(['process', 'thread'] as const)('reach a subscriber in another process from stages (%s workers) and from code, at most once: one joining late gets only what comes after', async (transport) => {
    await using bf = await start({ http: false, events: true, transport, workers: 2, pipeline: { stages: [{ module: fixture('event-stage.js') }] } });
    const events = bf.events!;
    // Published before anyone subscribes: lost, at most once.
    events.publish('news', { seq: 1 });
    const sub = subscriber(bf.eventAddresses!.subscribe, ['hello', 'news', 'jobs.done']);
    try {
      await handshake(events, sub.seen);
      // Each worker process's own link to the forwarder is up once one of its events arrives.
      const pids = transport === 'process' ? 2 : 1;
      await pollUntil('an event from each worker process', async () => {
        await bf.jobs.send({ n: 0 });
        return new Set(sub.seen.filter((s) => s.topic === 'jobs.done').map((s) => (s.data as { pid: number }).pid)).size === pids ? true : undefined;
      });
      events.publish('news', { seq: 2 });
      const answers = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => bf.jobs.send({ n })));
      expect(answers).toEqual([1, 2, 3, 4, 5, 6].map((n) => ({ n })));
      // (Late events of the warm-up's jobs, numbered 0, may still come.)
      const counted = (): { n: number; pid: number }[] => sub.seen.filter((s) => s.topic === 'jobs.done').map((s) => s.data as { n: number; pid: number }).filter((d) => d.n > 0);
      await pollUntil('every job event', async () => (counted().length >= 6 ? true : undefined));
      const done = counted();
      expect(done.map((d) => d.n).sort()).toEqual([1, 2, 3, 4, 5, 6]);
      // From the worker processes, not this one; worker threads' events go out through their proxy, in this one.
      const workers = new Set(transport === 'process' ? bf.workerPids() : [process.pid]);
      expect(done.every((d) => workers.has(d.pid))).toBe(true);
      await pollUntil('the second news', async () => (sub.seen.some((s) => s.topic === 'news') ? true : undefined));
      expect(sub.seen.filter((s) => s.topic === 'news').map((s) => s.data)).toEqual([{ seq: 2 }]);
    } finally {
      sub.child.kill('SIGTERM');
    }
  });

  it('calls only the handlers of the exact topic, carries JSON, text and bytes as they were, and stops at unsubscribe', async () => {
    const dir = tempDir();
    await using bus = new EventBus({ publish: `ipc://${dir}/in`, subscribe: `ipc://${dir}/out` });
    await bus.start();
    await using events = new Events({ publish: `ipc://${dir}/in`, subscribe: `ipc://${dir}/out` });
    const got: Seen[] = [];
    const stop = events.subscribe('a', (data, topic) => got.push({ topic, data }));
    events.subscribe('hello', (data, topic) => got.push({ topic, data }));
    await handshake(events, got);
    events.publish('ab', 'not for a');
    events.publish('a', { json: [1, 2] });
    events.publish('a', 'text');
    events.publish('a', Buffer.from([0, 255]));
    await pollUntil('three events on a', async () => (got.filter((g) => g.topic === 'a').length === 3 ? true : undefined));
    expect(got.filter((g) => g.topic !== 'hello')).toEqual([
      { topic: 'a', data: { json: [1, 2] } },
      { topic: 'a', data: 'text' },
      { topic: 'a', data: Buffer.from([0, 255]) },
    ]);
    stop();
    events.publish('a', 'after');
    // A marker on another topic, published after: once it is here, `after` would have been too.
    events.publish('hello', 'marker');
    await pollUntil('the marker', async () => (got.some((g) => g.data === 'marker') ? true : undefined));
    expect(got.some((g) => g.data === 'after')).toBe(false);
    expect(() => events.publish('', 1)).toThrow(InvalidOptionError);
    expect(() => events.subscribe('x'.repeat(256), () => {})).toThrow(/topic/);
  });

  it('are told to inject\'s onEvent, and a stage of a pipeline without events is told so', async () => {
    const stage = defineStage<{ n: number }>({
      name: 'pub',
      handle(job, ctx) {
        ctx.events.publish('seen', job.n);
        return ctx.respond('ok');
      },
    });
    const published: [string, unknown][] = [];
    const res = await inject(stage, { path: '/', method: 'POST', body: '{"n":1}' }, { onEvent: (topic, data) => published.push([topic, data]) });
    expect(res.status).toBe(200);
    expect(published).toHaveLength(1);
    await using bf = await start({ http: false, workers: 1, pipeline: { stages: [{ module: fixture('event-stage.js') }] } });
    await expect(bf.jobs.send({ n: 1 })).rejects.toMatchObject({ status: 500, message: expect.stringContaining('events') });
  });
});

describe('events in split mode', () => {
  it('go from a worker daemon through the server\'s forwarder to a subscriber process', async () => {
    const dir = tempDir();
    const addr = (name: string): string => `ipc://${dir}/${name}`;
    const server = procs.start('server', ['server', '--port', '0', '--loopback', addr('loopback'), '--stages', addr('stage-0'), '--events-publish', addr('events-in'), '--events-subscribe', addr('events-out')]);
    const proxy = procs.start('proxy', ['proxy', '--stage-index', '0', '--frontend', addr('stage-0'), '--backend', addr('workers'), '--loopback', addr('loopback'), '--events-publish', addr('events-in')]);
    const worker = procs.start('worker', ['worker', '--stage', fixture('event-stage.js'), '--connect', addr('workers')]);
    const port = await portOf(server, 'listening');
    await proxy.waitFor((l) => l.msg === 'proxy started');
    await worker.waitFor((l) => l.msg === 'worker joined its proxy');
    const sub = subscriber(addr('events-out'), ['jobs.done']);
    try {
      // The subscription and the worker's own link are up once one event gets through.
      await pollUntil('an event through the forwarder', async () => ((await request(port, '/')).status === 200 && sub.seen.length > 0 ? true : undefined));
      const before = sub.seen.length;
      for (let i = 0; i < 3; i++) expect((await request(port, '/')).status).toBe(200);
      await pollUntil('three more events', async () => (sub.seen.length >= before + 3 ? true : undefined));
      expect(sub.seen.every((s) => s.topic === 'jobs.done')).toBe(true);
    } finally {
      sub.child.kill('SIGTERM');
    }
  });

  it('refuses --events-publish without --events-subscribe on the server, naming both', async () => {
    const dir = tempDir();
    const server = procs.start('server', ['server', '--port', '0', '--loopback', `ipc://${dir}/l`, '--stages', `ipc://${dir}/s`, '--events-publish', `ipc://${dir}/e`]);
    expect(await server.exited).toBe(2);
    expect(server.output()).toContain('--events-publish and --events-subscribe go together');
  });
});
