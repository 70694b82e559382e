import { inject } from 'butterfly/testing';
import { describe, expect, it } from 'vitest';
import { pipeline } from '../pipeline.ts';
import parse from '../stages/parse.ts';

describe('the greeter pipeline', () => {
  it('greets by name', async () => {
    const res = await inject(pipeline, { path: '/greet?name=Ada' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.json()).toEqual({ greeting: 'hello, Ada' });
  });

  it('refuses a request without a name with 400, in stage 1 alone', async () => {
    const res = await inject(parse, { path: '/greet' });
    expect(res.status).toBe(400);
    expect(res.json()).toEqual({ error: { code: 'BF_ERR_BAD_REQUEST', message: 'name is required' } });
  });

  it('answers 404 for any other path', async () => {
    const res = await inject(pipeline, { path: '/hello' });
    expect(res.status).toBe(404);
  });
});
