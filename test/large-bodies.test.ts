import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixture, start, tempDirs } from './helpers.js';

const ECHO = { stages: [{ module: fixture('pass-body.js') }, { module: fixture('answer-body.js') }] };
const tempDir = tempDirs('bf-large-');

async function echo(port: number, body: Buffer, path = '/'): Promise<Buffer> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', body });
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

/** Bodies around the size at which a record travels alone (64 KiB), and larger ones after each other. */
const SIZES = [64 * 1024 - 1, 64 * 1024, 1 << 20, 700_000, (3 << 20) + 7, 100_000, 1 << 20, 20];

describe('large bodies through two stages', () => {
  for (const [engine, transport] of [['node', 'thread'], ['uws', 'thread'], ['node', 'process']] as const) {
    it(`echoes every body byte for byte, a smaller one after a larger, many at once (${engine} engine, ${transport} workers)`, async () => {
      await using bf = await start({ engine, transport, workers: 2, pipeline: ECHO });
      for (let round = 0; round < 3; round++) {
        const bodies = SIZES.map((n) => randomBytes(n));
        const back = await Promise.all(bodies.map((b) => echo(bf.port, b)));
        back.forEach((b, i) => expect(b.equals(bodies[i]!)).toBe(true));
      }
    });
  }

  it('echoes chunked bodies byte for byte, of every size around the one at which a record travels alone (node engine)', async () => {
    await using bf = await start({ workers: 2, pipeline: ECHO });
    const chunked = async (body: Buffer): Promise<Buffer> => {
      // A stream of 64 KiB pieces, sent without a length: Transfer-Encoding: chunked.
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let at = 0; at < body.length; at += 64 * 1024) controller.enqueue(body.subarray(at, at + 64 * 1024));
          controller.close();
        },
      });
      const res = await fetch(`http://127.0.0.1:${bf.port}/`, { method: 'POST', body: stream, duplex: 'half' } as RequestInit);
      expect(res.status).toBe(200);
      return Buffer.from(await res.arrayBuffer());
    };
    const bodies = SIZES.map((n) => randomBytes(n));
    const back = await Promise.all(bodies.map(chunked));
    back.forEach((b, i) => expect(b.equals(bodies[i]!)).toBe(true));
  });

  it('hands on, without a copy, a body of 64 KiB or more that a thread stage passes on: its own view of it is empty afterwards; a smaller one it keeps', async () => {
    await using bf = await start({ workers: 1, pipeline: { stages: [{ module: fixture('keep-body.js') }, { module: fixture('answer-body.js') }] } });
    const mark = join(tempDir(), 'mark');
    const path = `/?mark=${encodeURIComponent(mark)}`;
    const large = randomBytes(1 << 20);
    expect((await echo(bf.port, large, path)).equals(large)).toBe(true);
    const small = randomBytes(1000);
    expect((await echo(bf.port, small, path)).equals(small)).toBe(true);
    expect(readFileSync(mark, 'utf8')).toBe('0');
    expect((await echo(bf.port, large, path)).equals(large)).toBe(true);
    expect(readFileSync(mark, 'utf8')).toBe('1000');
  });
});
