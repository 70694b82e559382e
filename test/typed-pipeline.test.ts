import { describe, expect, it } from 'vitest';
import { type HttpRequest, definePipeline, defineStage } from '../dist/index.js';
import { inject } from '../dist/testing.js';
import double from './fixtures/typed-double.ts';
import parse from './fixtures/typed-parse.ts';
import shout from './fixtures/typed-shout.ts';

const at = (name: string): URL => new URL(`./fixtures/${name}`, import.meta.url);

describe('pipelines declared in TypeScript', () => {
  it('builds the description a pipeline file gives, and runs it', async () => {
    const pipeline = definePipeline([
      { module: at('typed-parse.ts'), stage: parse, workers: 1 },
      { module: at('typed-double.ts'), stage: double },
    ]);
    expect(pipeline.stages.map((s) => s.module)).toEqual([at('typed-parse.ts').href, at('typed-double.ts').href]);
    expect(pipeline.stages[0]!.workers).toBe(1);
    const res = await inject(pipeline, { path: '/double?n=21' });
    expect([res.status, res.json()]).toEqual([200, { doubled: 42 }]);
  });

  it('is checked by the compiler: a stage must take what the one before passes on', () => {
    // Each line below fails to compile; `npm run typecheck` (part of npm test) fails if one of them stops failing.
    const refused = (): unknown[] => [
      // @ts-expect-error stage 2 takes { text }, stage 1 passes { n }
      definePipeline([{ module: at('typed-parse.ts'), stage: parse }, { module: at('typed-shout.ts'), stage: shout }]),
      // @ts-expect-error the first stage takes the request, not { n }
      definePipeline([{ module: at('typed-double.ts'), stage: double }]),
      defineStage<HttpRequest, { n: number }>({
        name: 'wrong-next',
        // @ts-expect-error ctx.next must be given the declared payload
        handle: (_req, ctx) => ctx.next({ m: 1 }),
      }),
    ];
    expect(typeof refused).toBe('function');
  });
});
