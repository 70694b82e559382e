import { randomUUID } from 'node:crypto';
import { ButterflyError, defineStage } from 'butterfly';

/** Takes an order (`{ item, quantity }`), publishes `orders.placed`, and answers with its number. */
export default defineStage({
  name: 'orders.place',
  handle(order, ctx) {
    if (typeof order?.item !== 'string' || order.item === '') throw new ButterflyError('BF_ERR_BAD_REQUEST', 'an order needs an item');
    const quantity = Number.isSafeInteger(order.quantity) && order.quantity > 0 ? order.quantity : 1;
    const placed = { id: randomUUID(), item: order.item, quantity };
    ctx.events.publish('orders.placed', placed);
    return ctx.respond(placed);
  },
});
