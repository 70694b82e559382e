import type { Reply, ReplyInit, StageContext } from '../stage.js';

const JSON_REPLY: ReplyInit = Object.freeze({ headers: Object.freeze({ 'content-type': 'application/json' }) });

/** The is_prime response: `{"possible_prime":N,"is_prime":true|false}`. */
export function answer(ctx: StageContext, n: number, prime: boolean): Reply {
  return ctx.respond(`{"possible_prime":${n},"is_prime":${prime}}`, JSON_REPLY);
}
