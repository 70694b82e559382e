import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { inject } from '../dist/testing.js';
import { loadPipelineFile } from '../dist/stages/index.js';
import { daemon, request, start } from './helpers.js';

const PIPELINE = fileURLToPath(new URL('../examples/greeter/pipeline.json', import.meta.url));

describe('the example plugin package (examples/greeter)', () => {
  for (const transport of ['thread', 'process'] as const) {
    it(`runs its TypeScript stages under startButterfly in worker ${transport}s, answering as inject does`, async () => {
      const pipeline = await loadPipelineFile(PIPELINE);
      await using bf = await start({ transport, pipeline });
      for (const path of ['/greet?name=Ada', '/greet', '/hello']) {
        const [served, injected] = await Promise.all([request(bf.port, path), inject(pipeline, { path })]);
        expect([served.status, served.body]).toEqual([injected.status, injected.text()]);
      }
      expect((await request(bf.port, '/greet?name=Ada')).body).toBe('{"greeting":"hello, Ada"}');
      // A ButterflyError thrown by a stage loaded through the TypeScript loader keeps its status.
      expect((await request(bf.port, '/greet')).status).toBe(400);
      expect((await request(bf.port, '/hello')).status).toBe(404);
    });
  }

  it('runs under butterflyd --pipeline, as its npm start does', async () => {
    const d = await daemon(['--port', '0', '--pipeline', PIPELINE, '--workers', '1']);
    try {
      const res = await request(d.port, '/greet?name=Grace');
      expect([res.status, res.body]).toEqual([200, '{"greeting":"hello, Grace"}']);
    } finally {
      expect(await d.stop()).toBe(0);
    }
    expect(join(PIPELINE)).toContain('examples');
  });
});
