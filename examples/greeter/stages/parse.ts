import { ButterflyError, type HttpRequest, defineStage } from 'butterfly';

/** What stage 1 hands to stage 2. */
export interface Greeting {
  readonly name: string;
}

const MAX_NAME = 64;

/**
 * Stage 1: reads `GET /greet?name=NAME`, refuses what it cannot greet with a 400, and
 * passes the name on. Cheap checks belong in the first stage: a bad request never
 * reaches the second.
 */
export default defineStage<HttpRequest, Greeting>({
  name: 'greeter.parse',
  handle(req, ctx) {
    if (req.path !== '/greet') throw new ButterflyError('BF_ERR_NOT_FOUND', 'try GET /greet?name=NAME');
    const name = req.query.name?.trim() ?? '';
    if (name === '') throw new ButterflyError('BF_ERR_BAD_REQUEST', 'name is required');
    if (name.length > MAX_NAME) throw new ButterflyError('BF_ERR_BAD_REQUEST', `name must be at most ${MAX_NAME} characters`);
    return ctx.next({ name });
  },
});
