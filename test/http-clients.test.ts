import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Butterfly } from '../dist/index.js';
import { fixture, start } from './helpers.js';

/**
 * undici, as Node's global `fetch`, against both engines: keep-alive, request bodies sent
 * whole and streamed (chunked), HEAD, many requests at once, and a refusal it must be able
 * to read. curl, ab, wrk and autocannon are driven against the daemon in clients.test.ts.
 */

interface Seen {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body: string;
}

for (const engine of ['node', 'uws'] as const) {
  describe(`undici (fetch) against the ${engine} engine`, () => {
    let bf: Butterfly;
    let base: string;
    beforeAll(async () => {
      bf = await start({ engine, pipeline: { stages: [{ module: fixture('http-echo.js'), workers: 1 }] }, server: { maxBodyBytes: 64 * 1024 } });
      base = `http://127.0.0.1:${bf.port}`;
    });
    afterAll(async () => {
      await bf?.close();
    });

    it('GETs with a decoded query and its own headers', async () => {
      const res = await fetch(`${base}/items/%C3%A9?q=a%20b&n=1`, { headers: { 'x-request-id': 'r-1' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(res.headers.get('date')).not.toBeNull();
      const seen = (await res.json()) as Seen;
      expect(seen).toMatchObject({ method: 'GET', path: '/items/é', query: { q: 'a b', n: '1' } });
      expect(seen.headers['x-request-id']).toBe('r-1');
    });

    it('POSTs a whole body and a streamed (chunked) one', async () => {
      const whole = await fetch(`${base}/echo`, { method: 'POST', body: 'x'.repeat(10_000) });
      expect(((await whole.json()) as Seen).body).toBe('x'.repeat(10_000));

      const parts = ['first,', 'second,', 'third'];
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          const part = parts.shift();
          if (part === undefined) controller.close();
          else controller.enqueue(new TextEncoder().encode(part));
        },
      });
      const streamed = await fetch(`${base}/echo`, { method: 'PUT', body: stream, duplex: 'half' } as RequestInit);
      const seen = (await streamed.json()) as Seen;
      expect(seen.headers['transfer-encoding']).toBe('chunked');
      expect(seen.body).toBe('first,second,third');
    });

    it('gets headers and no body for HEAD', async () => {
      const res = await fetch(`${base}/echo`, { method: 'HEAD' });
      expect(res.status).toBe(200);
      expect(Number(res.headers.get('content-length'))).toBeGreaterThan(0);
      expect(await res.text()).toBe('');
    });

    it('gets the right answer to each of 500 requests made at once over its keep-alive pool', async () => {
      const answers = await Promise.all(
        Array.from({ length: 500 }, async (_, i) => {
          const res = await fetch(`${base}/echo?i=${i}`);
          return ((await res.json()) as Seen).query.i;
        }),
      );
      expect(answers).toEqual(Array.from({ length: 500 }, (_, i) => String(i)));
    });

    it('reads a 413 for a body past maxBodyBytes, and the next request succeeds', async () => {
      const res = await fetch(`${base}/echo`, { method: 'POST', body: 'y'.repeat(64 * 1024 + 1) });
      expect(res.status).toBe(413);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('BF_ERR_BODY_TOO_LARGE');
      expect((await fetch(`${base}/echo`)).status).toBe(200);
    });
  });
}
