import { describe, expect, it, vi } from 'vitest';
import {
  HEADER_BYTES,
  Kind,
  MAX_ID_PREFIX,
  MAX_WORKER_SLOTS,
  WIRE_VERSION,
  allocateBody,
  freePiece,
  encodeInPlace,
  encodeRequestJob,
  recycleBody,
  restamp,
  readHello,
  readReturned,
  writeHello,
  writePulse,
  readPulse,
  IDENTITY_TOKEN_BYTES,
  writeReturned,
  RecordWriter,
  RequestData,
  WireError,
  decodeRecords,
  splitFrame,
  readError,
  readResponse,
  readValue,
  readWelcome,
  writeError,
  writeResponse,
  writeResponseHead,
  writeValue,
  writeValueHead,
  writeWelcome,
  PortOutbox,
  receivePort,
} from '../dist/wire/index.js';
import { MessageChannel } from 'node:worker_threads';
import { getHeapStatistics } from 'node:v8';

function oneValue(value: unknown): Buffer {
  const w = new RecordWriter(16);
  w.begin(Kind.JOB, 0, 0, 1, 0);
  writeValue(w, value as never);
  w.end();
  const [record] = decodeRecords(w.take());
  return record!.payload;
}

describe('wire records', () => {
  it('round-trips several records of every kind in one frame, header fields intact', () => {
    const w = new RecordWriter(8);
    const deadline = Date.now() + 1234.5;
    w.begin(Kind.JOB, 1, 3, 0xfffffffe, deadline);
    writeValue(w, 'héllo');
    w.end();
    w.empty(Kind.DONE, 2, 7);
    w.begin(Kind.RESULT, 0, 1, 42, 0);
    writeResponse(w, { status: 201, headers: ['content-type', 'text/plain', 'x-a', 'b'], body: Buffer.from('made') });
    w.end();
    w.begin(Kind.ERROR, 0, 1, 43, 0);
    writeError(w, { code: 'BF_ERR_DEADLINE', status: 504, message: 'late ✓' });
    w.end();
    expect(w.records).toBe(4);
    const records = decodeRecords(w.take());
    expect(records.map((r) => r.kind)).toEqual([Kind.JOB, Kind.DONE, Kind.RESULT, Kind.ERROR]);
    expect(records[0]).toMatchObject({ flags: 1, stage: 3, id: 0xfffffffe });
    // The deadline crossed as the time left: back in this clock, give or take the time in between.
    expect(Math.abs(records[0]!.deadline - deadline)).toBeLessThan(50);
    expect(readValue(records[0]!.payload)).toBe('héllo');
    expect(records[1]).toMatchObject({ stage: 2, id: 7 });
    expect(records[1]!.payload.length).toBe(0);
    const res = readResponse(records[2]!.payload);
    expect(res.status).toBe(201);
    expect(res.headers).toEqual(['content-type', 'text/plain', 'x-a', 'b']);
    expect(res.body.toString()).toBe('made');
    expect(readError(records[3]!.payload)).toEqual({ code: 'BF_ERR_DEADLINE', status: 504, message: 'late ✓' });
  });

  it('carries 64-bit request ids up to the largest safe integer, and rejects ids beyond it', () => {
    const w = new RecordWriter();
    const ids = [1, 0xffffffff, 0x100000000, MAX_ID_PREFIX * 0x100000000 + 0xffffffff, Number.MAX_SAFE_INTEGER];
    for (const id of ids) w.empty(Kind.CANCEL, 0, id);
    const frame = w.take();
    expect(decodeRecords(frame).map((r) => r.id)).toEqual(ids);
    const tooLarge = Buffer.from(frame.subarray(0, HEADER_BYTES));
    tooLarge.writeUInt32LE(MAX_ID_PREFIX + 1, 8);
    expect(() => decodeRecords(tooLarge)).toThrow(WireError);
  });

  it('round-trips HELLO and refuses a worker asking for more slots than a proxy gives', () => {
    const token = Buffer.alloc(IDENTITY_TOKEN_BYTES, 7);
    const hello = (concurrency: number, window: number, held: number): Buffer => {
      const w = new RecordWriter();
      w.begin(Kind.HELLO, 0, 0, 0, 0);
      writeHello(w, { concurrency, window, held, token, label: 'w#1.2' });
      w.end();
      return decodeRecords(w.take())[0]!.payload;
    };
    expect(readHello(hello(2, 1, 3))).toEqual({ concurrency: 2, window: 1, held: 3, token, label: 'w#1.2' });
    expect(() => readHello(hello(0xffffffff, 1, 0))).toThrow(/concurrency must be 1 to 4096/);
    expect(() => readHello(hello(0, 1, 0))).toThrow(WireError);
    expect(() => readHello(hello(1, MAX_WORKER_SLOTS + 1, 0))).toThrow(/window/);
    expect(() => readHello(hello(1, 0, 0xffffffff))).toThrow(/held/);
    expect(() => readHello(Buffer.alloc(7))).toThrow(WireError);
    // A HELLO cut inside the token is refused.
    expect(() => readHello(hello(2, 1, 3).subarray(0, 12 + IDENTITY_TOKEN_BYTES - 1))).toThrow(WireError);
  });

  it("round-trips a pulse heartbeat's token and label, and refuses one shorter than a token", () => {
    const w = new RecordWriter();
    const token = Buffer.alloc(IDENTITY_TOKEN_BYTES, 3);
    w.begin(Kind.HEARTBEAT, 0, 0, 0, 0);
    writePulse(w, token, 'pool#1.0@h:9:ab');
    w.end();
    const payload = decodeRecords(w.take())[0]!.payload;
    expect(readPulse(payload)).toEqual({ token, label: 'pool#1.0@h:9:ab' });
    expect(() => readPulse(payload.subarray(0, IDENTITY_TOKEN_BYTES - 1))).toThrow(WireError);
  });

  it('round-trips the ids a leaving worker returns, and rejects a list cut mid-id', () => {
    const w = new RecordWriter();
    w.begin(Kind.BYE, 0, 0, 0, 0);
    writeReturned(w, [5, 0x1234500000001]);
    w.end();
    const payload = decodeRecords(w.take())[0]!.payload;
    expect(readReturned(payload)).toEqual([5, 0x1234500000001]);
    expect(readReturned(Buffer.alloc(0))).toEqual([]);
    expect(() => readReturned(payload.subarray(0, 12))).toThrow(WireError);
  });

  it('sizes a buffer for a large record to the record and a little room, and starts the next batch as large as the last', () => {
    const body = Buffer.alloc(1024 * 1024, 7);
    // Sized up front, as a worker writes an outcome that travels alone: the whole record fits, with little to spare.
    const alone = new RecordWriter(body.length + 16 * 1024);
    alone.begin(Kind.RESULT, 0, 0, 1, 0);
    alone.bytes(body);
    alone.end();
    const frame = alone.take();
    expect(frame.length).toBe(HEADER_BYTES + body.length);
    expect(frame.buffer.byteLength - frame.length).toBeLessThanOrEqual(64 * 1024);
    // A batch writer that took 100 KB writes the next 100 KB into one buffer, not one grown by doubling.
    const w = new RecordWriter();
    const payload = Buffer.alloc(100_000, 1);
    const batch = (): Buffer => {
      w.begin(Kind.JOB, 0, 0, 2, 0);
      w.bytes(payload);
      w.end();
      return w.take();
    };
    const allocations = vi.spyOn(Buffer, 'allocUnsafeSlow');
    try {
      batch();
      const grown = allocations.mock.calls.length;
      const second = batch();
      expect(grown).toBeGreaterThan(1);
      expect(allocations.mock.calls.length - grown).toBe(1);
      expect(decodeRecords(second)[0]!.payload.equals(payload)).toBe(true);
    } finally {
      allocations.mockRestore();
    }
  });

  it('encodes a large request around its body without copying it, and declines a body with no room in front', () => {
    const body = allocateBody(200_000);
    body.fill(9);
    const req = new RequestData('POST', '/echo?x=1', ['host', 'h', 'content-type', 'application/octet-stream'], body, '127.0.0.1');
    const deadline = Date.now() + 1234;
    const frame = encodeRequestJob(0x100000007, deadline, req)!;
    expect(frame.buffer).toBe(body.buffer);
    expect(frame.byteOffset + frame.length).toBe(body.byteOffset + body.length);
    const [record, ...rest] = decodeRecords(frame);
    expect(rest).toHaveLength(0);
    expect(record).toMatchObject({ kind: Kind.JOB, id: 0x100000007, flags: 0, stage: 0 });
    expect(Math.abs(record!.deadline - deadline)).toBeLessThan(50);
    const back = readValue(record!.payload) as RequestData;
    expect([back.method, back.target, back.headers, back.remoteAddress]).toEqual(['POST', '/echo?x=1', req.headers, '127.0.0.1']);
    expect(back.body.equals(body)).toBe(true);
    restamp(frame, 1, 3, deadline + 5000);
    expect(decodeRecords(frame)[0]).toMatchObject({ flags: 1, stage: 3, id: 0x100000007 });
    expect(Math.abs(decodeRecords(frame)[0]!.deadline - (deadline + 5000))).toBeLessThan(50);
    // Each body is encoded in place once; a plain buffer never is.
    expect(encodeRequestJob(1, 0, req)).toBeUndefined();
    expect(encodeRequestJob(1, 0, new RequestData('POST', '/', [], Buffer.alloc(200_000), ''))).toBeUndefined();
  });

  it('carries a deadline as the time left, so that a receiver whose clock is an hour ahead still has the time', () => {
    const w = new RecordWriter();
    w.begin(Kind.JOB, 0, 0, 1, Date.now() + 5000);
    writeValue(w, 1);
    w.end();
    w.empty(Kind.JOB, 0, 2, 0);
    w.empty(Kind.JOB, 0, 3, Date.now() - 10);
    const frame = w.take();
    // On the wire: about 5,000 ms left, not a clock reading; none stays 0; a past one is negative.
    expect(frame.readDoubleLE(12)).toBeGreaterThan(4900);
    expect(frame.readDoubleLE(12)).toBeLessThanOrEqual(5000);
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 3_600_000);
      const [ahead, none, past] = decodeRecords(frame);
      expect(ahead!.deadline - Date.now()).toBeGreaterThan(4900);
      expect(ahead!.deadline - Date.now()).toBeLessThanOrEqual(5000);
      expect(none!.deadline).toBe(0);
      expect(past!.deadline).toBeLessThan(Date.now());
      expect(past!.deadline).not.toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('round-trips every kind of value', () => {
    expect(readValue(oneValue(3.25))).toBe(3.25);
    expect(readValue(oneValue(null))).toBe(null);
    expect(readValue(oneValue(undefined))).toBe(null);
    expect(readValue(oneValue({ a: [1, 'x'] }))).toEqual({ a: [1, 'x'] });
    expect(readValue(oneValue(true))).toBe(true);
    expect((readValue(oneValue(Buffer.from([0, 255, 7]))) as Buffer).equals(Buffer.from([0, 255, 7]))).toBe(true);
    const req = new RequestData('POST', '/a%20b?x=1&y=%C3%A9', ['host', 'h', 'x-long', 'v'.repeat(70_000)], Buffer.from('body'), '::1');
    const back = readValue(oneValue(req)) as RequestData;
    expect(back).toBeInstanceOf(RequestData);
    expect(back.method).toBe('POST');
    expect(back.target).toBe('/a%20b?x=1&y=%C3%A9');
    expect(back.headers).toEqual(req.headers);
    expect(back.body.toString()).toBe('body');
    expect(back.remoteAddress).toBe('::1');
  });

  it('round-trips the WELCOME configuration', () => {
    const w = new RecordWriter();
    w.begin(Kind.WELCOME, 0, 0, 0, 0);
    const config = { stage: 1, next: null, loopback: 'ipc:///tmp/x', heartbeatMs: 1000, liveness: 3 };
    writeWelcome(w, config);
    w.end();
    expect(readWelcome(decodeRecords(w.take())[0]!.payload)).toEqual(config);
  });

  it('rejects every truncation of a valid frame with WireError', () => {
    const w = new RecordWriter();
    w.begin(Kind.RESULT, 0, 0, 9, 0);
    writeResponse(w, { status: 200, headers: ['a', 'b'], body: Buffer.from('xyz') });
    w.end();
    const frame = w.take();
    for (let len = 0; len < frame.length; len++) {
      const cut = frame.subarray(0, len);
      let payloadError = false;
      try {
        const records = decodeRecords(cut);
        readResponse(records[0]!.payload);
      } catch (err) {
        payloadError = err instanceof WireError;
      }
      expect(payloadError, `truncated to ${len} bytes`).toBe(true);
    }
  });

  it('rejects garbage with WireError and never another exception', () => {
    let seed = 12345;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    let rejected = 0;
    for (let i = 0; i < 5000; i++) {
      const len = Math.floor(random() * 64);
      const bytes = Buffer.alloc(len);
      for (let j = 0; j < len; j++) bytes[j] = Math.floor(random() * 256);
      if (len > 0 && random() < 0.5) bytes[0] = 1; // a plausible version byte now and then
      try {
        for (const r of decodeRecords(bytes)) {
          if (r.kind === Kind.JOB) readValue(r.payload);
          else if (r.kind === Kind.RESULT) readResponse(r.payload);
          else if (r.kind === Kind.ERROR) readError(r.payload);
        }
      } catch (err) {
        expect(err).toBeInstanceOf(WireError);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(4000);
  });

  it('rejects an unknown version, an unknown kind and a payload running past the frame', () => {
    const w = new RecordWriter();
    w.empty(Kind.HEARTBEAT, 0, 0);
    const good = w.take();
    expect(decodeRecords(good)).toHaveLength(1);
    const badVersion = Buffer.from(good);
    badVersion[0] = WIRE_VERSION + 1;
    expect(() => decodeRecords(badVersion)).toThrow(/version/);
    const badKind = Buffer.from(good);
    badKind[1] = 200;
    expect(() => decodeRecords(badKind)).toThrow(/kind/);
    const badLength = Buffer.from(good);
    badLength.writeUInt32LE(1, 20);
    expect(() => decodeRecords(badLength)).toThrow(/runs past/);
    expect(good.length).toBe(HEADER_BYTES);
  });

  it('refuses to encode a value JSON cannot represent, leaving the batch unharmed', () => {
    const w = new RecordWriter();
    w.empty(Kind.DONE, 0, 1);
    w.begin(Kind.JOB, 0, 0, 2, 0);
    expect(() => writeValue(w, { big: 1n } as never)).toThrow();
    w.abort();
    const records = decodeRecords(w.take());
    expect(records).toHaveLength(1);
    expect(records[0]!.kind).toBe(Kind.DONE);
  });

  it('cuts a batch at record boundaries into messages no larger than the limit', () => {
    const w = new RecordWriter();
    for (let i = 0; i < 10; i++) {
      w.begin(Kind.JOB, 0, 0, i, 0);
      writeValue(w, 'x'.repeat(100));
      w.end();
    }
    const frame = w.take();
    const perRecord = frame.length / 10;
    const pieces = splitFrame(frame, perRecord * 3 + 5);
    expect(pieces.map((p) => p.length)).toEqual([3, 3, 3, 1].map((n) => n * perRecord));
    expect(pieces.flatMap((p) => decodeRecords(p).map((r) => r.id))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(splitFrame(frame, frame.length)).toEqual([frame]);
    // A record larger than the limit travels alone.
    expect(splitFrame(frame, 10).map((p) => p.length)).toEqual(new Array(10).fill(perRecord));
  });
});

describe('batches through a port', () => {
  it('carries every byte value unchanged, in a small batch (sent as a string) and a larger one (sent as bytes)', async () => {
    const { port1, port2 } = new MessageChannel();
    const got: Buffer[] = [];
    const twoBatches = new Promise<void>((resolve) => {
      receivePort(port2, (frame) => {
        got.push(...decodeRecords(frame).map((r) => Buffer.from(r.payload)));
        if (got.length === 2) resolve();
      }, { warn: () => {} }, 'test');
    });
    const outbox = new PortOutbox(port1);
    const everyByte = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));
    const larger = Buffer.alloc(20_000, 0xff);
    for (const payload of [everyByte, larger]) {
      outbox.writer.begin(Kind.JOB, 0, 0, 1, 0);
      outbox.writer.bytes(payload);
      outbox.writer.end();
      outbox.flush();
    }
    await twoBatches;
    port1.close();
    expect(got[0]!.equals(everyByte)).toBe(true);
    expect(got[1]!.equals(larger)).toBe(true);
  });
});

describe('large messages written in place and memory used again', () => {
  it("writes a record's head in front of a body in a message it holds whole, and declines a body elsewhere or without room", () => {
    const own = Buffer.alloc(300_000, 7);
    const body = own.subarray(20_000, 220_000);
    const reply = { status: 201, headers: ['content-type', 'application/octet-stream'], body };
    const frame = encodeInPlace(own, body, Kind.RESULT, 0, 1, 0x100000009, 0, (w) => writeResponseHead(w, reply))!;
    expect(frame.buffer).toBe(own.buffer);
    expect(frame.byteOffset + frame.length).toBe(body.byteOffset + body.length);
    const [record, ...rest] = decodeRecords(frame);
    expect(rest).toHaveLength(0);
    expect(record).toMatchObject({ kind: Kind.RESULT, id: 0x100000009, stage: 1 });
    const back = readResponse(record!.payload);
    expect([back.status, back.headers]).toEqual([201, reply.headers]);
    expect(back.body.equals(Buffer.alloc(200_000, 7))).toBe(true);
    // A value's head: bytes, or a request and its body.
    const job = encodeInPlace(own, own.subarray(100_000), Kind.JOB, 0, 2, 5, 0, (w) => writeValueHead(w, own.subarray(100_000)))!;
    expect((readValue(decodeRecords(job)[0]!.payload) as Buffer).equals(Buffer.alloc(200_000, 7))).toBe(true);
    expect(encodeInPlace(own, Buffer.alloc(200_000), Kind.RESULT, 0, 1, 1, 0, (w) => writeResponseHead(w, reply))).toBeUndefined();
    expect(encodeInPlace(own, own.subarray(3), Kind.RESULT, 0, 1, 1, 0, (w) => writeResponseHead(w, reply))).toBeUndefined();
  });

  it("reads a later large body into the memory of an answer received whole from another thread, at most 8 buffers and 16 MiB of them, and never into other memory", async () => {
    const { port1, port2 } = new MessageChannel();
    const received: Buffer[] = [];
    const all = new Promise<void>((resolve) => {
      receivePort(port2, (frame) => {
        received.push(frame);
        if (received.length === 9) resolve();
      }, { warn: () => {} }, 'test');
    });
    for (let i = 0; i < 9; i++) port1.postMessage(new Uint8Array(100_000));
    await all;
    port1.close();
    // Memory this thread made itself is not kept: it may be shared with whatever made it.
    const mine = Buffer.allocUnsafeSlow(100_000);
    recycleBody(mine.subarray(16 * 1024));
    expect(allocateBody(80_000).buffer).not.toBe(mine.buffer);
    for (const frame of received) recycleBody(frame.subarray(16 * 1024));
    const reused = new Set(received.map((f) => f.buffer));
    const bodies = Array.from({ length: 9 }, () => allocateBody(80_000));
    expect(bodies.filter((b) => reused.has(b.buffer))).toHaveLength(8);
    expect(new Set(bodies.map((b) => b.buffer)).size).toBe(9);
    // A body read into kept memory is encoded in place like any other.
    const req = new RequestData('POST', '/', [], bodies[0]!.fill(3), '');
    expect(encodeRequestJob(1, 0, req)!.buffer).toBe(bodies[0]!.buffer);
    // The ninth was not kept; kept now, it is not spent on a body under half its size.
    const last = received[8]!;
    expect(reused.has(last.buffer)).toBe(true);
    expect(bodies.some((b) => b.buffer === last.buffer)).toBe(false);
    recycleBody(last.subarray(16 * 1024));
    expect(allocateBody(30_000).buffer).not.toBe(last.buffer);
    expect(allocateBody(70_000).buffer).toBe(last.buffer);
    // Nor is memory past 16 MiB in all.
    const { port1: huge1, port2: huge2 } = new MessageChannel();
    const hugeFrame = new Promise<Buffer>((resolve) => receivePort(huge2, resolve, { warn: () => {} }, 'test'));
    huge1.postMessage(new Uint8Array(17 * 1024 * 1024));
    const huge = await hugeFrame;
    huge1.close();
    recycleBody(huge.subarray(16 * 1024));
    expect(allocateBody(16 * 1024 * 1024).buffer).not.toBe(huge.buffer);
    // Memory handed out as a body is no longer held whole: it is not kept twice.
    recycleBody(bodies[1]!);
    expect(allocateBody(80_000).buffer).not.toBe(bodies[1]!.buffer);
  });

  it('frees a piece alone on its memory at the end of the turn, and leaves shared or small memory alone', async () => {
    const external = (): number => getHeapStatistics().external_memory;
    const pieces = Array.from({ length: 32 }, () => Buffer.allocUnsafeSlow(1024 * 1024).fill(1));
    const view = Buffer.allocUnsafeSlow(128 * 1024).fill(2).subarray(64 * 1024);
    const offset = Buffer.from(Buffer.allocUnsafeSlow(128 * 1024).fill(3).buffer, 1);
    const small = Buffer.allocUnsafeSlow(8 * 1024).fill(4);
    const before = external();
    for (const piece of [...pieces, view, offset, small]) freePiece(piece);
    // Nothing happens before the turn ends.
    expect(pieces.every((p) => p.length === 1024 * 1024 && p[0] === 1)).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(pieces.every((p) => p.length === 0 && p.buffer.byteLength === 0)).toBe(true);
    // 32 MiB left the thread at once, not at the collector's next pass.
    expect(before - external()).toBeGreaterThanOrEqual(31 * 1024 * 1024);
    expect([view.length, view[0]]).toEqual([64 * 1024, 2]);
    expect([offset.length, offset[0]]).toEqual([128 * 1024 - 1, 3]);
    expect([small.length, small[0]]).toEqual([8 * 1024, 4]);
  });
});
