import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Butterfly } from '../dist/index.js';
import { fixture, request, start } from './helpers.js';

/**
 * Fuzzing the HTTP front end: thousands of random and mutated requests, each on its own
 * connection, from a seeded generator (the seed is in the test name, so a failure can be
 * replayed). Every connection must get a response or a close within a second, and the
 * server must still answer a normal request afterwards.
 */

const SEED = 0x5eed_b0f1;
const CASES = 2000;
/** Connections open at once. */
const PARALLEL = 32;
/** The whole run stops generating after this long, whatever the count reached. */
const BUDGET_MS = 25_000;
const WITHIN_MS = 1000;

/** mulberry32: a small, fast, seedable PRNG with a 2^32 period. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BASES = [
  'GET /echo?x=1&y=%20z HTTP/1.1\r\nHost: a\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n',
  'POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world',
  'POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n',
  'GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n',
  'HEAD /health HTTP/1.1\r\nHost: a\r\n\r\n',
  'PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc',
  'GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?n=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  'DELETE /echo/%C3%A9 HTTP/1.1\r\nHost: a\r\nCookie: a=b; c=d\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n',
].map((s) => Buffer.from(s, 'latin1'));

/** Fragments that break framing, syntax or limits when dropped in at random. */
const TOKENS = [
  '\r', '\n', '\r\n', '\0', ' ', '\t', ':', ',', ';', '\x7f', '\xff', '%', '%zz', '\r\n\r\n', '\r\n ', '-1', '+', '0x',
  'ffffffffffffffffff', 'chunked', ' HTTP/1.1', ' HTTP/2.0', 'HTTP/0.9', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
  'Content-Length: 5\r\n', 'Content-Length: 99999999999\r\n', 'Content-Length: \r\n', 'Transfer-Encoding: chunked\r\n',
  'Transfer-Encoding: gzip\r\n', 'Transfer-Encoding: chunked, identity\r\n', 'Host: b\r\n', 'Expect: 100-continue\r\n',
  'Expect: bogus\r\n', 'Connection: close\r\n', 'Connection: keep-alive\r\n', 'X-Long: ' + 'l'.repeat(3000) + '\r\n',
  '/' + 'u'.repeat(2000),
].map((s) => Buffer.from(s, 'latin1'));

function mutate(input: Buffer, random: () => number): Buffer {
  const at = (n: number): number => Math.floor(random() * n);
  let b = input;
  const rounds = 1 + at(4);
  for (let r = 0; r < rounds; r++) {
    const pos = at(b.length + 1);
    switch (at(8)) {
      case 0: {
        if (b.length === 0) break;
        const copy = Buffer.from(b);
        copy[at(copy.length)] = at(256);
        b = copy;
        break;
      }
      case 1:
        b = Buffer.concat([b.subarray(0, pos), TOKENS[at(TOKENS.length)]!, b.subarray(pos)]);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + 1 + at(8))]);
        break;
      case 3: {
        const end = Math.min(b.length, pos + 1 + at(40));
        b = Buffer.concat([b.subarray(0, end), b.subarray(pos, end), b.subarray(end)]);
        break;
      }
      case 4:
        b = b.subarray(0, pos);
        break;
      case 5:
        b = Buffer.from(b.toString('latin1').replace(/\d+/, String(at(2 ** 31))), 'latin1');
        break;
      case 6:
        b = Buffer.concat([b, input]);
        break;
      default: {
        const end = Math.min(b.length, pos + 1 + at(12));
        const text = b.toString('latin1', pos, end);
        b = Buffer.concat([b.subarray(0, pos), Buffer.from(random() < 0.5 ? text.toUpperCase() : text.toLowerCase(), 'latin1'), b.subarray(end)]);
      }
    }
  }
  return b;
}

function generate(random: () => number): Buffer {
  const kind = random();
  if (kind < 0.05) return Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256)));
  if (kind < 0.1) {
    const line = (): string => Array.from({ length: Math.floor(random() * 60) }, () => String.fromCharCode(32 + Math.floor(random() * 95))).join('');
    return Buffer.from(Array.from({ length: 1 + Math.floor(random() * 5) }, line).join('\r\n') + '\r\n\r\n', 'latin1');
  }
  return mutate(BASES[Math.floor(random() * BASES.length)]!, random);
}

interface Outcome {
  input: Buffer;
  /** ms from the write to the first response byte or the close; Infinity when neither came in time. */
  ms: number;
  /** The status of the first response, or 0 for a close without one. */
  status: number;
}

/**
 * Writes `input` on a new connection, half-closes it `halfCloseAfterMs` later if nothing
 * came back by then (never when null), and times the first sign of an answer.
 */
function probe(port: number, input: Buffer, halfCloseAfterMs: number | null): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let started = 0;
    let done = false;
    const finish = (ms: number, status: number): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(halfClose);
      socket.destroy();
      resolve({ input, ms, status });
    };
    const timer = setTimeout(() => finish(Infinity, 0), WITHIN_MS + 2000);
    let halfClose: NodeJS.Timeout | undefined;
    const answered = (): void => finish(started === 0 ? 0 : performance.now() - started, 0);
    socket.once('connect', () => {
      started = performance.now();
      socket.write(input);
      if (halfCloseAfterMs === 0) socket.end();
      else if (halfCloseAfterMs !== null) halfClose = setTimeout(() => socket.end(), halfCloseAfterMs);
    });
    socket.once('data', (d: Buffer) => finish(performance.now() - started, Number(/^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1', 0, 16))?.[1] ?? -1)));
    socket.once('end', answered);
    socket.once('close', answered);
    // A reset is a close too.
    socket.once('error', answered);
  });
}

/** A refusal the front end makes itself, to send with requests pipelined behind it. */
interface Refusal {
  readonly request: string;
  readonly status: number;
  /** False where uWS decides before our code runs (see test/http-raw.test.ts). */
  readonly uws: boolean;
  /** False where the request must come whole in the connection's first read. */
  readonly cut?: boolean;
}

const H = 'Host: a\r\n';
/** One of each class the front end refuses, for the limits of the server below (maxBodyBytes 4096, other limits their defaults). */
const REFUSALS: readonly Refusal[] = [
  { request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd`, status: 400, uws: true },
  { request: `GET /echo HTTP/1.1\r\n${H}${H}\r\n`, status: 400, uws: true },
  { request: `GET /echo HTTP/1.1\r\n${H}X-A: a\x7fb\r\n\r\n`, status: 400, uws: true },
  { request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\n`, status: 400, uws: true },
  { request: `GET /echo HTTP/1.1\r\n${H}X-A : a\r\n\r\n`, status: 400, uws: false },
  { request: `GET /ec\x01ho HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  { request: 'GET /echo HTTP/1.1\r\nHost: user@a:1/x\r\n\r\n', status: 400, uws: true },
  { request: `GET /echo#x HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { request: `GET /caf\xc3\xa9 HTTP/1.1\r\n${H}\r\n`, status: 400, uws: true },
  { request: `GET * HTTP/1.1\r\n${H}\r\n`, status: 400, uws: false },
  { request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 4097\r\n\r\n`, status: 413, uws: true },
  { request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${`800\r\n${'c'.repeat(2048)}\r\n`.repeat(3)}0\r\n\r\n`, status: 413, uws: true },
  { request: `GET /${'u'.repeat(8192)} HTTP/1.1\r\n${H}\r\n`, status: 414, uws: true },
  { request: `GET /echo HTTP/1.1\r\n${H}X-Big: ${'b'.repeat(16_384)}\r\n\r\n`, status: 431, uws: true },
  { request: `TRACE /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: true },
  { request: `POST /echo HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, status: 501, uws: true },
  { request: `FOO /echo HTTP/1.1\r\n${H}\r\n`, status: 501, uws: false },
  { request: `POST /echo HTTP/1.1\r\n${H}Content-Length: 3\r\nExpect: bogus\r\n\r\nabc`, status: 417, uws: true },
  { request: `GET /echo HTTP/1.2\r\n${H}\r\n`, status: 505, uws: false },
  // The `node` engine looks for an HTTP/0.9 request line in a connection's first read only.
  { request: 'GET /echo\r\n', status: 505, uws: false, cut: false },
];

/** Requests sent behind a refusal: none may reach the pipeline or be answered. */
const FOLLOWERS = [
  `GET /echo?smuggled=1 HTTP/1.1\r\n${H}\r\n`,
  `POST /echo?smuggled=2 HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello`,
  `GET /health?smuggled=3 HTTP/1.1\r\n${H}\r\n`,
  `GET /echo?smuggled=4 HTTP/1.1\r\n${H}\r\nGET /echo?smuggled=5 HTTP/1.1\r\n${H}\r\n`,
];

/**
 * Writes each of `parts` on a new connection, one write each, and resolves with the
 * statuses of the whole responses that came before the server closed it (`closed` false
 * when it had not within `withinMs`), and whatever bytes followed them.
 */
function exchange(port: number, parts: readonly Buffer[], withinMs = 3000): Promise<{ statuses: number[]; rest: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      let received = Buffer.concat(chunks);
      const statuses: number[] = [];
      for (;;) {
        const end = received.indexOf('\r\n\r\n');
        if (end === -1) break;
        const head = received.toString('latin1', 0, end);
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
        const length = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (status === null || length === null || received.length < end + 4 + Number(length[1])) break;
        statuses.push(Number(status[1]));
        received = received.subarray(end + 4 + Number(length[1]));
      }
      resolve({ statuses, rest: received.toString('latin1'), closed });
    };
    const timer = setTimeout(() => finish(false), withinMs);
    socket.once('connect', () => {
      for (const part of parts) socket.write(part);
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.once('close', () => finish(true));
    // A reset is a close too.
    socket.on('error', () => undefined);
  });
}

for (const engine of ['node', 'uws'] as const) {
  describe(`fuzzing the ${engine} engine`, () => {
    let bf: Butterfly;
    beforeAll(async () => {
      bf = await start({
        engine,
        pipeline: { stages: [{ module: fixture('http-echo.js'), workers: 1 }] },
        server: { headersTimeoutMs: 300, requestReadTimeoutMs: 500, keepAliveTimeoutMs: 500, maxBodyBytes: 4096 },
      });
    });
    afterAll(async () => {
      await bf?.close();
    });

    // Each connection half-closes at once, or 200 ms later when nothing came back, or (node
    // only) never, relying on our timeouts. uWS waits about 10 s on an unfinished or
    // malformed head whatever our options say, and closes on the half-close; so against it
    // every connection half-closes.
    it(`answers or closes each of ${CASES} random and mutated requests within ${WITHIN_MS} ms, then still serves (seed ${SEED.toString(16)})`, async () => {
      // Generated up front, so that the cases do not depend on the order connections finish in.
      const random = prng(SEED);
      const cases = Array.from({ length: CASES }, () => {
        const input = generate(random);
        const pick = Math.floor(random() * (engine === 'uws' ? 2 : 3));
        return { input, halfCloseAfterMs: pick === 0 ? 0 : pick === 1 ? 200 : null };
      });
      const deadline = Date.now() + BUDGET_MS;
      const slow: Outcome[] = [];
      const statuses = new Map<number, number>();
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < cases.length && Date.now() < deadline) {
          const { input, halfCloseAfterMs } = cases[next++]!;
          const outcome = await probe(bf.port, input, halfCloseAfterMs);
          statuses.set(outcome.status, (statuses.get(outcome.status) ?? 0) + 1);
          if (outcome.ms > WITHIN_MS) slow.push(outcome);
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      expect(next).toBeGreaterThanOrEqual(1000);
      // The mix reached the pipeline and the refusals alike (0 counts closes without a response).
      const seen = [...statuses.keys()].sort((a, b) => a - b);
      for (const status of engine === 'node' ? [200, 400, 408, 505] : [200, 400]) expect(seen, JSON.stringify([...statuses])).toContain(status);
      expect(
        slow.map((o) => ({ ms: o.ms, input: o.input.toString('latin1').slice(0, 200) })),
        'connections with neither a response nor a close in time',
      ).toEqual([]);
      const res = await request(bf.port, '/echo?after=fuzz');
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toMatchObject({ query: { after: 'fuzz' } });
      expect(bf.server!.counters.refused).toBeGreaterThan(0);
    }, BUDGET_MS + 30_000);

    // Each refusal with each follower, in one write, in two, and with the refusal itself
    // cut in two at a seeded random byte. The `node` engine answers the refusal and closes;
    // on the `uws` engine a follower uWS parsed in the same read closes the connection
    // before the refusal goes out, so there it comes at most.
    it(`answers a refusal of each class at most once, and nothing pipelined behind it, then closes (seed ${SEED.toString(16)})`, async () => {
      const random = prng(SEED);
      const cases = REFUSALS.filter((r) => engine === 'node' || r.uws).flatMap((refusal) =>
        FOLLOWERS.flatMap((follower) => {
          const head = Buffer.from(refusal.request, 'latin1');
          const tail = Buffer.from(follower, 'latin1');
          const cut = 1 + Math.floor(random() * (head.length - 1));
          const splits = [[Buffer.concat([head, tail])], [head, tail]];
          if (refusal.cut !== false) splits.push([head.subarray(0, cut), Buffer.concat([head.subarray(cut), tail])]);
          return splits.map((parts) => ({ refusal, parts }));
        }),
      );
      const before = bf.server!.counters.requests;
      const wrong: { request: string; statuses: number[]; rest: string; closed: boolean }[] = [];
      let answered = 0;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < cases.length) {
          const { refusal, parts } = cases[next++]!;
          const { statuses, rest, closed } = await exchange(bf.port, parts);
          if (statuses.length === 1) answered++;
          const ok = closed && rest === '' && (engine === 'node' ? statuses.length === 1 && statuses[0] === refusal.status : statuses.length <= 1 && statuses.every((s) => s === refusal.status));
          if (!ok) wrong.push({ request: refusal.request.slice(0, 80), statuses, rest: rest.slice(0, 200), closed });
        }
      };
      await Promise.all(Array.from({ length: 16 }, worker));
      expect(wrong, 'connections that answered otherwise than the one refusal, or stayed open').toEqual([]);
      // No follower reached the front end (nor did a refused request).
      expect(bf.server!.counters.requests).toBe(before);
      // Every refusal came where nothing was pipelined behind it in the same read: on `node`
      // always; on `uws` at least where the follower came in a later write.
      expect(answered).toBeGreaterThan(engine === 'node' ? cases.length - 1 : 0);
    });
  });
}
