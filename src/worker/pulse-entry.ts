/**
 * A worker's pulse: a thread that heartbeats to the stage proxy on its own socket, so that
 * a handler blocking the worker's event loop does not make the worker look dead, while a
 * killed or stopped process (all its threads) still falls silent.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as zmq from 'zeromq';
import { Kind, RecordWriter, configureSocket } from '../wire/index.js';
import type { PulseLaunch } from './pulse.js';

const launch = workerData as PulseLaunch;
const dealer = new zmq.Dealer();
configureSocket(dealer, { maxMessageBytes: 64 * 1024 });
dealer.sendTimeout = 0;
dealer.connect(launch.connect);
const writer = new RecordWriter(256);
const beat = (): void => {
  writer.begin(Kind.HEARTBEAT, 0, launch.stage, 0, 0);
  writer.utf8(launch.label);
  writer.end();
  // A full queue (proxy gone) drops the beat: silence is the message then.
  dealer.send(writer.take()).catch(() => {});
};
const timer = setInterval(beat, launch.heartbeatMs);
beat();
parentPort?.on('message', () => {
  clearInterval(timer);
  dealer.close();
  parentPort?.postMessage('stopped');
  parentPort?.close();
});
