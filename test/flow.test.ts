import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as zmq from 'zeromq';
import { Proxy } from '../dist/proxy/index.js';
import { defineStage } from '../dist/index.js';
import { type Logger, silentLogger } from '../dist/logger.js';
import { IDENTITY_TOKEN_BYTES, Kind, RecordWriter, decodeRecords, readError, writeHello, writeReturned, writeValue, writeWelcome, type WireRecord } from '../dist/wire/index.js';
import { StageWorker } from '../dist/worker/index.js';

/**
 * Credit-based flow between a proxy and its workers, driven through real ZeroMQ sockets:
 * the test plays the front end (a PUSH to the frontend, a PULL on the loopback) and the
 * workers (DEALERs speaking the wire protocol), so every credit and record is visible.
 */

let dir: string;
let proxy: Proxy | undefined;
const sockets: zmq.Socket[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bf-flow-'));
});

afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  await proxy?.destroy();
  proxy = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const addr = (name: string): string => `ipc://${join(dir, name)}`;

function track<T extends zmq.Socket>(socket: T): T {
  socket.linger = 0;
  sockets.push(socket);
  return socket;
}

async function startProxy(options: { maxQueue?: number; logger?: Logger } = {}): Promise<{ proxy: Proxy; jobs: zmq.Push; loopback: zmq.Pull }> {
  const p = new Proxy({ stage: 0, name: 'flow', frontend: addr('in'), backend: addr('workers'), next: null, loopback: addr('loopback'), heartbeatMs: 60_000, ...options });
  proxy = p;
  const loopback = track(new zmq.Pull());
  await loopback.bind(addr('loopback'));
  await p.start();
  const jobs = track(new zmq.Push());
  jobs.connect(addr('in'));
  return { proxy: p, jobs, loopback };
}

function frame(write: (w: RecordWriter) => void): Buffer {
  const w = new RecordWriter();
  write(w);
  return w.take();
}

async function sendJobs(jobs: zmq.Push, ids: number[]): Promise<void> {
  await jobs.send(
    frame((w) => {
      for (const id of ids) {
        w.begin(Kind.JOB, 0, 0, id, 0);
        writeValue(w, id);
        w.end();
      }
    }),
  );
}

/** A worker played by the test: a DEALER on the proxy's backend. */
class FakeWorker {
  readonly dealer = track(new zmq.Dealer());
  /** Its identity token, the same in each of its HELLOs and pulses unless a test says otherwise. */
  token = randomBytes(IDENTITY_TOKEN_BYTES);
  private readonly received: WireRecord[] = [];
  private waiter: (() => void) | undefined;

  constructor() {
    this.dealer.connect(addr('workers'));
    void this.readLoop();
  }

  private async readLoop(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.dealer.receive();
      } catch {
        return;
      }
      for (const r of decodeRecords(frames[0]!)) this.received.push({ ...r, payload: Buffer.from(r.payload) });
      this.waiter?.();
    }
  }

  hello(concurrency: number, window: number, held = 0, label = ''): Promise<void> {
    return this.dealer.send(
      frame((w) => {
        w.begin(Kind.HELLO, 0, 0, 0, 0);
        writeHello(w, { concurrency, window, held, token: this.token, label });
        w.end();
      }),
    );
  }

  done(...ids: number[]): Promise<void> {
    return this.dealer.send(frame((w) => ids.forEach((id) => w.empty(Kind.DONE, 0, id))));
  }

  bye(returned: number[]): Promise<void> {
    return this.dealer.send(
      frame((w) => {
        w.begin(Kind.BYE, 0, 0, 0, 0);
        writeReturned(w, returned);
        w.end();
      }),
    );
  }

  /** Records of `kind` received so far. */
  of(kind: number): WireRecord[] {
    return this.received.filter((r) => r.kind === kind);
  }

  /** Waits until `count` records of `kind` have arrived (fails after 5 s). */
  async waitFor(kind: number, count: number): Promise<WireRecord[]> {
    const deadline = Date.now() + 5000;
    while (this.of(kind).length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${count} records of kind ${kind}; have ${this.of(kind).length}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.of(kind);
  }
}

/** Polls the proxy's stats until `check` holds (fails after 5 s). */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('credit-based flow between a proxy and its workers', () => {
  it('keeps concurrency plus window jobs at a worker, and tops the window up with each DONE', async () => {
    const { proxy: p, jobs } = await startProxy();
    const worker = new FakeWorker();
    await worker.hello(1, 2);
    await worker.waitFor(Kind.WELCOME, 1);
    await sendJobs(jobs, [1, 2, 3, 4, 5, 6]);
    const first = await worker.waitFor(Kind.JOB, 3);
    expect(first.map((r) => r.id)).toEqual([1, 2, 3]);
    await until('three jobs queued', () => p.stats().queued === 3);
    expect(p.stats().inFlight).toBe(3);
    await worker.done(1);
    const next = await worker.waitFor(Kind.JOB, 4);
    expect(next[3]!.id).toBe(4);
    await until('two jobs queued', () => p.stats().queued === 2);
    expect(p.stats().inFlight).toBe(3);
  });

  it('counts prefetched jobs against maxQueue and refuses the rest with 503', async () => {
    const { proxy: p, jobs, loopback } = await startProxy({ maxQueue: 2 });
    const worker = new FakeWorker();
    await worker.hello(1, 4);
    await worker.waitFor(Kind.WELCOME, 1);
    await sendJobs(jobs, [1, 2, 3, 4, 5, 6]);
    // One runs; two wait at the worker (the bound); the other three are refused.
    await worker.waitFor(Kind.JOB, 3);
    const refusals: WireRecord[] = [];
    while (refusals.length < 3) {
      const [f] = await loopback.receive();
      refusals.push(...decodeRecords(f!));
    }
    expect(refusals.map((r) => r.id)).toEqual([4, 5, 6]);
    expect(refusals.map((r) => readError(r.payload).status)).toEqual([503, 503, 503]);
    expect(p.stats()).toMatchObject({ queued: 0, inFlight: 3, refused: 3 });
  });

  it('refuses a HELLO asking for four billion slots, allocating nothing, and welcomes a sane one', async () => {
    const { proxy: p } = await startProxy();
    const greedy = new FakeWorker();
    await greedy.hello(0xffffffff, 0xffffffff);
    const sane = new FakeWorker();
    await sane.hello(2, 1);
    await sane.waitFor(Kind.WELCOME, 1);
    // The proxy reads its backend in order: the greedy HELLO was handled before the sane one.
    expect(greedy.of(Kind.WELCOME)).toHaveLength(0);
    expect(p.stats()).toMatchObject({ workers: 1, readySlots: 3, undecodable: 1 });
  });

  it("restores a rejoining worker's full capacity as the jobs it still runs end", async () => {
    const { proxy: p, jobs } = await startProxy();
    const worker = new FakeWorker();
    await worker.hello(2, 0, 0, 'w');
    await worker.waitFor(Kind.WELCOME, 1);
    await sendJobs(jobs, [1, 2, 3, 4, 5, 6]);
    await worker.waitFor(Kind.JOB, 2);
    // It rejoins while still running jobs 1 and 2: no new credit until they end.
    await worker.hello(2, 0, 2, 'w');
    await worker.waitFor(Kind.WELCOME, 2);
    await until('the rejoin to be handled', () => p.stats().readySlots === 0 && p.stats().workers === 1);
    expect(worker.of(Kind.JOB)).toHaveLength(2);
    await worker.done(1, 2);
    const all = await worker.waitFor(Kind.JOB, 4);
    expect(all.slice(2).map((r) => r.id)).toEqual([3, 4]);
    await until('two running again', () => p.stats().inFlight === 2);
  });

  it("refuses a HELLO under a live worker's label from another peer without its token, and the live worker keeps its place and its jobs", async () => {
    let refused: (() => void) | undefined;
    const warned = new Promise<void>((resolve) => (refused = resolve));
    const logger: Logger = { ...silentLogger, warn: (_obj, msg) => (msg.startsWith('HELLO refused: a live worker holds') ? refused?.() : undefined) };
    const { proxy: p, jobs } = await startProxy({ logger });
    const live = new FakeWorker();
    await live.hello(1, 1, 0, 'pool#0.1@host:1:abcd');
    await live.waitFor(Kind.WELCOME, 1);
    await sendJobs(jobs, [1, 2]);
    await live.waitFor(Kind.JOB, 2);
    const impostor = new FakeWorker();
    await impostor.hello(4, 4, 0, 'pool#0.1@host:1:abcd');
    await warned;
    expect(impostor.of(Kind.WELCOME)).toHaveLength(0);
    expect(p.stats()).toMatchObject({ workers: 1, inFlight: 2, readySlots: 0 });
    await live.done(1, 2);
    await until('both jobs done at the live worker', () => p.stats().inFlight === 0 && p.stats().readySlots === 2);
  });

  it('takes a rejoin under a live label from a new socket when it carries the same token, and drops the old entry', async () => {
    const { proxy: p, jobs } = await startProxy();
    const before = new FakeWorker();
    await before.hello(1, 0, 0, 'w@host');
    await before.waitFor(Kind.WELCOME, 1);
    // The worker rebuilt its socket (its proxy went silent): the same token on a new peer.
    const after = new FakeWorker();
    after.token = before.token;
    await after.hello(1, 0, 0, 'w@host');
    await after.waitFor(Kind.WELCOME, 1);
    expect(p.stats().workers).toBe(1);
    await sendJobs(jobs, [7]);
    expect((await after.waitFor(Kind.JOB, 1))[0]!.id).toBe(7);
    expect(before.of(Kind.JOB)).toHaveLength(0);
  });

  it('gives a job it could not send to a vanished worker to another worker instead of failing it', async () => {
    const { proxy: p, jobs } = await startProxy();
    const gone = new FakeWorker();
    await gone.hello(1, 0);
    await gone.waitFor(Kind.WELCOME, 1);
    // It vanishes without a BYE (killed); the proxy has not missed a heartbeat yet.
    gone.dealer.close();
    const other = new FakeWorker();
    await other.hello(1, 0);
    await other.waitFor(Kind.WELCOME, 1);
    // The vanished worker is first in line: the job is sent to it, refused by the socket, and goes on.
    await sendJobs(jobs, [1]);
    expect((await other.waitFor(Kind.JOB, 1))[0]!.id).toBe(1);
    expect(p.stats()).toMatchObject({ workers: 1, refused: 0 });
  });

  it('gives the jobs a leaving worker never started to another worker, exactly once, and then releases it', async () => {
    const { proxy: p, jobs } = await startProxy();
    const leaving = new FakeWorker();
    await leaving.hello(1, 3);
    await leaving.waitFor(Kind.WELCOME, 1);
    await sendJobs(jobs, [1, 2, 3, 4]);
    await leaving.waitFor(Kind.JOB, 4);
    const other = new FakeWorker();
    await other.hello(1, 0);
    await other.waitFor(Kind.WELCOME, 1);
    // Job 1 runs; 2, 3 and 4 were prefetched and are handed back.
    await leaving.bye([2, 3, 4]);
    for (const id of [2, 3, 4]) {
      const got = await other.waitFor(Kind.JOB, id - 1);
      expect(got[id - 2]!.id).toBe(id);
      await other.done(id);
    }
    expect(other.of(Kind.JOB).map((r) => r.id)).toEqual([2, 3, 4]);
    await leaving.done(1);
    await leaving.waitFor(Kind.BYE, 1);
    expect(leaving.of(Kind.JOB).map((r) => r.id)).toEqual([1, 2, 3, 4]);
    await until('the leaving worker to be forgotten', () => p.stats().workers === 1 && p.stats().inFlight === 0);
  });

  it('drops a cancelled job from the queue at once', async () => {
    const { proxy: p, jobs } = await startProxy();
    const worker = new FakeWorker();
    await worker.hello(1, 0);
    await worker.waitFor(Kind.WELCOME, 1);
    await sendJobs(jobs, [1, 2, 3]);
    await until('two queued', () => p.stats().queued === 2);
    await jobs.send(frame((w) => w.empty(Kind.CANCEL, 0, 2)));
    await until('one queued', () => p.stats().queued === 1);
    await worker.done(1);
    const got = await worker.waitFor(Kind.JOB, 2);
    expect(got.map((r) => r.id)).toEqual([1, 3]);
  });
});

describe('what a proxy tells its workers', () => {
  it('keeps a worker from joining a proxy whose WELCOME carries values outside the options\' bounds, and lets it join a sound one', async () => {
    const router = track(new zmq.Router());
    await router.bind(addr('fake-proxy'));
    const errors: string[] = [];
    let refused: () => void = () => undefined;
    const refusal = new Promise<void>((resolve) => (refused = resolve));
    const logger = {
      ...silentLogger,
      error: (obj: { err?: Error }, msg: string): void => {
        errors.push(`${msg}: ${obj.err?.message ?? ''}`);
        refused();
      },
    };
    const stage = defineStage({ name: 'welcome-check', handle: () => 'ok' });
    const worker = new StageWorker({ stage, connect: addr('fake-proxy'), logger });
    const started = worker.start();
    try {
      const [identity, hello] = await router.receive();
      expect(decodeRecords(hello!)[0]!.kind).toBe(Kind.HELLO);
      const welcome = (heartbeatMs: number): Buffer =>
        frame((w) => {
          w.begin(Kind.WELCOME, 0, 0, 0, 0);
          writeWelcome(w, { stage: 0, next: null, loopback: addr('loopback'), heartbeatMs, liveness: 3 });
          w.end();
        });
      await router.send([identity!, welcome(0)]);
      await refusal;
      expect(errors).toEqual(['malformed WELCOME from proxy: WELCOME heartbeatMs must be an integer from 10 to 60000, got 0']);
      expect(worker.state).toBe('starting');
      await router.send([identity!, welcome(1000)]);
      await started;
      expect(worker.state).toBe('running');
    } finally {
      await worker.destroy();
    }
  });
});
