import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StageLoadError } from '../dist/index.js';
import { fixture, request, start, tempDirs } from './helpers.js';

const tempDir = tempDirs('bf-ts-');

describe('stages written in TypeScript', () => {
  for (const transport of ['thread', 'process'] as const) {
    it(`loads a .ts stage as it is, in a worker ${transport}`, async () => {
      await using bf = await start({ transport, workers: 1, pipeline: { stages: [{ module: fixture('hello-stage.ts') }] } });
      const res = await request(bf.port, '/?name=ts');
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toEqual({ hello: 'ts', from: 'typescript', module: fixture('hello-stage.ts') });
    });
  }

  it('refuses at start-up a .ts stage with a syntax error, naming the file and the line', async () => {
    const file = join(tempDir(), 'broken.ts');
    writeFileSync(file, "import { defineStage } from 'butterfly';\n\nexport default defineStage({\n  name: 'broken',\n  handle() {\n    return { oops: ;\n  },\n});\n");
    const err = await start({ workers: 1, pipeline: { stages: [{ module: file }] } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StageLoadError);
    expect((err as Error).message).toMatch(/broken\.ts:6/);
  });
});
