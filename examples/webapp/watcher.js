#!/usr/bin/env node
/**
 * Another process watching the web app's orders: prints each `orders.placed` event the
 * app's workers publish, as a JSON line.
 *
 *   node examples/webapp/watcher.js EVENTS_ADDRESS
 */
import { Events } from 'butterfly';

const address = process.argv[2];
if (address === undefined) {
  console.error('watcher: give the events address app.js printed');
  process.exit(2);
}
const events = new Events({ subscribe: address });
events.subscribe('orders.placed', (order) => console.log(JSON.stringify(order)));
process.on('SIGTERM', () => void events.close().then(() => process.exit(0)));
process.on('SIGINT', () => void events.close().then(() => process.exit(0)));
