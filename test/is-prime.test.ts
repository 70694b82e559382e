import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Butterfly } from '../dist/index.js';
import { isPrime } from '../dist/stages/builtin.js';
import { request, start } from './helpers.js';

const PRIMES = [2, 3, 5, 97, 101, 10_007, 104_729, 32_416_190_071];
const COMPOSITES = [4, 9, 100, 10_201, 1_000_000, 32_416_190_073, 9_007_199_254_740_991];

for (const engine of ['node', 'uws'] as const) {
  describe(`is_prime over the ${engine} engine`, () => {
    let bf: Butterfly;
    beforeAll(async () => {
      bf = await start({ engine });
    });
    afterAll(async () => {
      await bf?.close();
    });

    const check = async (n: number | string): Promise<{ status: number; body: unknown }> => {
      const res = await request(bf.port, `/is_prime?possible_prime=${n}`);
      return { status: res.status, body: JSON.parse(res.body) };
    };

    it('answers true for primes, including the largest checked by stage 2', async () => {
      for (const n of PRIMES) expect(await check(n)).toEqual({ status: 200, body: { possible_prime: n, is_prime: true } });
    });

    it('answers false for composites, 0 and 1, and the largest accepted value', async () => {
      for (const n of [0, 1, ...COMPOSITES]) expect(await check(n)).toEqual({ status: 200, body: { possible_prime: n, is_prime: false } });
    });

    it('answers 400 with a message naming the problem for bad input', async () => {
      const cases: [string, RegExp][] = [
        ['', /required/],
        ['-7', /non-negative integer/],
        ['3.5', /non-negative integer/],
        ['abc', /non-negative integer/],
        ['1e3', /non-negative integer/],
        ['9007199254740992', /at most 9007199254740991/],
        ['123456789012345678901234567890', /at most/],
      ];
      for (const [value, message] of cases) {
        const res = await check(value);
        expect(res.status, value).toBe(400);
        expect(res.body).toMatchObject({ error: { code: 'BF_ERR_BAD_REQUEST', message: expect.stringMatching(message) } });
      }
      const missing = await request(bf.port, '/is_prime');
      expect(missing.status).toBe(400);
      expect(JSON.parse(missing.body).error.message).toMatch(/possible_prime is required/);
    });

    it('answers 404 for other paths and 200 on the health path without the pipeline', async () => {
      expect((await request(bf.port, '/nope')).status).toBe(404);
      const accepted = bf.proxies[0]!.stats().accepted;
      const health = await request(bf.port, '/health');
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toEqual({ status: 'ok' });
      expect(bf.proxies[0]!.stats().accepted).toBe(accepted);
    });

    it('answers HEAD with the headers of GET and no body', async () => {
      const head = await request(bf.port, '/is_prime?possible_prime=7', { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.body).toBe('');
      expect(head.headers['content-length']).toBe(String('{"possible_prime":7,"is_prime":true}'.length));
      expect(head.headers['content-type']).toBe('application/json');
      expect(head.headers.date).toBeDefined();
    });

    it('answers short-circuited numbers in stage 1 without reaching stage 2', async () => {
      const before = bf.proxies[1]!.stats().accepted;
      for (const n of [0, 1, 2, 4, 97, 1001, 10_000]) await check(n);
      expect(bf.proxies[1]!.stats().accepted).toBe(before);
      await check(32_416_190_071);
      expect(bf.proxies[1]!.stats().accepted).toBe(before + 1);
    });

    it('gives each of 1000 concurrent requests its own right answer', async () => {
      const numbers = Array.from({ length: 1000 }, (_, i) => 1_000_000 + i * 7919);
      const answers = await Promise.all(numbers.map((n) => check(n)));
      answers.forEach((a, i) => {
        expect(a.status).toBe(200);
        expect(a.body).toEqual({ possible_prime: numbers[i], is_prime: isPrime(numbers[i]!) });
      });
    });
  });
}
