import { definePipeline } from 'butterfly';
import greet from './stages/greet.ts';
import parse from './stages/parse.ts';

/** The same pipeline as pipeline.json, checked by the compiler: greet takes what parse passes on. */
export const pipeline = definePipeline(
  [
    { module: new URL('./stages/parse.ts', import.meta.url), stage: parse, workers: 1 },
    { module: new URL('./stages/greet.ts', import.meta.url), stage: greet, workers: 1 },
  ],
  { routes: ['/greet'] },
);
