import { describe, expect, it } from 'vitest';
import { fixture, request, start } from './helpers.js';
import { parseMetrics, sample } from './split-helpers.js';

/**
 * Answers are checked where they enter the front end, and a stage's outcome that cannot be
 * encoded fails that job alone: every other client of the same batch gets its right answer.
 */
describe('answers HTTP cannot carry', () => {
  for (const transport of ['thread', 'process'] as const) {
    it(`gives each bad answer its own 500 or 502 and every other client its right answer (${transport} workers)`, async () => {
      await using bf = await start({
        transport,
        workers: 1,
        maxMessageBytes: 1024 * 1024,
        metrics: true,
        server: { maxBodyBytes: 1024 },
        pipeline: { stages: [{ module: fixture('bad-answers.js') }] },
      });
      const bad = ['/crlf', '/informational', '/status', '/thrown-status', '/long-code', '/async-long-code', '/huge?bytes=2000000'];
      const good = Array.from({ length: 40 }, (_, n) => `/?n=${n}`);
      // Interleaved, so that bad and good outcomes share the workers' batches.
      const paths = good.flatMap((p, i) => (i < bad.length ? [p, bad[i]!] : [p]));
      const answers = await Promise.all(paths.map((p) => request(bf.port, p)));
      const byPath = new Map(paths.map((p, i) => [p, answers[i]!]));
      const statusOf = (p: string): [number, string] => {
        const a = byPath.get(p)!;
        return [a.status, a.status >= 400 ? JSON.parse(a.body).error.code : ''];
      };
      expect(statusOf('/crlf')).toEqual([502, 'BF_ERR_BAD_ANSWER']);
      expect(byPath.get('/crlf')!.headers['set-cookie']).toBeUndefined();
      expect(statusOf('/informational')).toEqual([502, 'BF_ERR_BAD_ANSWER']);
      expect(statusOf('/status')).toEqual([500, 'BF_ERR_STAGE_FAILED']);
      expect(statusOf('/thrown-status')).toEqual([500, 'BF_ERR_STAGE_FAILED']);
      expect(statusOf('/long-code')).toEqual([500, 'BF_ERR_STAGE_FAILED']);
      expect(statusOf('/async-long-code')).toEqual([500, 'BF_ERR_STAGE_FAILED']);
      expect(statusOf('/huge?bytes=2000000')).toEqual([500, 'BF_ERR_INTERNAL']);
      for (const [n, p] of good.entries()) {
        const a = byPath.get(p)!;
        expect(a.status, p).toBe(200);
        expect(JSON.parse(a.body)).toEqual({ n });
      }
      expect(bf.server!.counters.badAnswers).toBe(2);
      expect(sample(parseMetrics(await bf.registry!.metrics()), 'butterfly_http_bad_answers_total')).toBe(2);
      // The worker survived them all: no restart, and it still serves.
      expect(bf.pools[0]!.restarts).toBe(0);
      expect((await request(bf.port, '/?n=7')).status).toBe(200);
    });
  }
});
