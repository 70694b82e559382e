import { threadId } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { ButterflyError, InvalidOptionError, offload } from '../dist/index.js';
import { fixture } from './helpers.js';

const FNS = fixture('offload-fns.js');
type Where = { x: number; threadId: number };

describe('offload', () => {
  it('keeps a function that proves quick in the caller\'s thread, every call', async () => {
    await using quick = offload<(x: number) => Where>(FNS, 'quick', { thresholdMs: 50, workers: 2 });
    expect(quick.mode).toBe('undecided');
    expect(await quick(1)).toEqual({ x: 1, threadId });
    expect(quick.mode).toBe('local');
    const rest = await Promise.all([2, 3, 4].map((x) => quick(x)));
    expect(rest).toEqual([2, 3, 4].map((x) => ({ x, threadId })));
  });

  it('runs the first call of a slow function here, timed, and the later ones in a pool of worker threads, two at a time with two workers', async () => {
    await using slow = offload<(ms: number, x: number) => Where>(FNS, 'slow', { thresholdMs: 100, workers: 2 });
    const first = await slow(150, 0);
    expect(first).toEqual({ x: 0, threadId });
    expect(slow.mode).toBe('pool');
    const started = Date.now();
    const later = await Promise.all([1, 2, 3, 4].map((x) => slow(150, x)));
    expect(later.map((r) => r.x)).toEqual([1, 2, 3, 4]);
    // Off the caller's thread, on two workers.
    expect(new Set(later.map((r) => r.threadId)).has(threadId)).toBe(false);
    expect(new Set(later.map((r) => r.threadId)).size).toBe(2);
    // Four 150 ms calls on two workers in parallel (the pool's start included), not one after another here.
    expect(Date.now() - started).toBeLessThan(4 * 150 + 2000);
  });

  it('makes calls made before the first one ends wait for its verdict, then follow it', async () => {
    await using slow = offload<(ms: number, x: number) => Where>(FNS, 'slow', { thresholdMs: 50, workers: 2 });
    const all = await Promise.all([0, 1, 2].map((x) => slow(80, x)));
    expect(all[0]!.threadId).toBe(threadId);
    expect(all.slice(1).every((r) => r.threadId !== threadId)).toBe(true);
  });

  it('brings back text and undefined from the pool as they were', async () => {
    await using text = offload<(s: string) => string>(FNS, 'text', { thresholdMs: 0, workers: 1 });
    expect(await text('a')).toBe('got a');
    expect(text.mode).toBe('pool');
    expect(await text('b')).toBe('got b');
    await using nothing = offload<() => undefined>(FNS, 'nothing', { thresholdMs: 0, workers: 1 });
    await nothing();
    expect(nothing.mode).toBe('pool');
    expect(await nothing()).toBeNull();
  });

  it('rejects a call that fails in the pool with a ButterflyError, its code and status kept, and any other error as BF_ERR_STAGE_FAILED', async () => {
    await using picky = offload<(n: number | null) => number>(FNS, 'picky', { thresholdMs: 0, workers: 1 });
    expect(await picky(2)).toBe(4);
    expect(picky.mode).toBe('pool');
    expect(await picky(3)).toBe(6);
    await expect(picky(-1)).rejects.toMatchObject({ code: 'BF_ERR_BAD_REQUEST', status: 400, message: 'negative' });
    await expect(picky(null)).rejects.toMatchObject({ code: 'BF_ERR_STAGE_FAILED', status: 500 });
    await expect(picky(-1)).rejects.toBeInstanceOf(ButterflyError);
  });

  it('decides nothing on a first call that fails: the next call is timed instead', async () => {
    await using refuse = offload<(m: string) => never>(FNS, 'refuse', { thresholdMs: 0, workers: 1 });
    await expect(refuse('here')).rejects.toMatchObject({ code: 'BF_ERR_BAD_REQUEST', message: 'here' });
    expect(refuse.mode).toBe('undecided');
  });

  it('refuses a bad option at once and an export that is not a function at the first call', async () => {
    expect(() => offload(FNS, 'quick', { thresholdMs: -1 })).toThrow(InvalidOptionError);
    expect(() => offload(FNS, '', {})).toThrow(/exportName/);
    expect(() => offload(FNS, 'quick', { workers: 0 })).toThrow(/workers/);
    await using missing = offload(FNS, 'notAFunction');
    await expect(missing()).rejects.toThrow(/exportName/);
  });
});
