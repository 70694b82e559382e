/**
 * A worker's pulse: a thread that heartbeats to the stage proxy on its own socket, so that
 * a handler blocking the worker's event loop does not make the worker look dead, while a
 * killed or stopped process (all its threads) still falls silent. It is also the worker's
 * watchdog: a handler that blocks the event loop well past its deadline gets the process
 * killed (SIGKILL), and the pool that runs it starts another; in split mode nothing else
 * could, the proxy being in another process.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as zmq from 'zeromq';
import { Kind, RecordWriter, configureSocket, secureClient, writePulse } from '../wire/index.js';
import type { PulseLaunch } from './pulse.js';

/** How often the watchdog looks, in ms. */
const WATCHDOG_CHECK_MS = 100;

const launch = workerData as PulseLaunch;
const dealer = new zmq.Dealer();
configureSocket(dealer, { maxMessageBytes: 64 * 1024 });
dealer.sendTimeout = 0;
secureClient(dealer, launch.security);
dealer.connect(launch.connect);
const writer = new RecordWriter(256);
const beat = (): void => {
  writer.begin(Kind.HEARTBEAT, 0, launch.stage, 0, 0);
  writePulse(writer, launch.token, launch.label);
  writer.end();
  // A full queue (proxy gone) drops the beat: silence is the message then.
  dealer.send(writer.take()).catch(() => {});
};
const timer = setInterval(beat, launch.heartbeatMs);
beat();
const watch = new Float64Array(launch.watch);
const watchdog = setInterval(() => {
  const stuckAfter = watch[0]!;
  if (stuckAfter === 0 || Date.now() <= stuckAfter) return;
  process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, role: 'worker', worker: launch.label, msg: 'event loop blocked past a job deadline; killing this worker so that its pool replaces it' })}\n`);
  // process.exit() would end only this thread: the blocked main thread must go too.
  process.kill(process.pid, 'SIGKILL');
}, WATCHDOG_CHECK_MS);
parentPort?.on('message', () => {
  clearInterval(timer);
  clearInterval(watchdog);
  dealer.close();
  parentPort?.postMessage('stopped');
  parentPort?.close();
});
