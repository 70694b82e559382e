/**
 * CURVE on butterfly's ZeroMQ links, with a ZAP allowlist: a socket that binds is a CURVE
 * server that lets in only the peers whose public keys it was given; a socket that
 * connects is a CURVE client holding its own key pair and the key of the server it
 * expects. Links are encrypted, and a peer whose key is not on the list (or that speaks
 * plaintext) never gets past the handshake: it is sent nothing and nothing it sends is
 * read.
 */
import { chmod, open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import type { LinkLogger } from './link.js';

/** Keys for the links of one process: Z85 text, 40 characters each (ZeroMQ's form). */
export interface LinkSecurity {
  /** This process's public key: its identity as a client. */
  readonly publicKey: string;
  /** This process's secret key: for its links as a client and as a server. */
  readonly secretKey: string;
  /** The public key of the daemons this one connects to (their secret key's other half). */
  readonly serverKey: string;
  /** Public keys of the peers let in on the sockets this process binds. */
  readonly allow: readonly string[];
}

/** Why a peer was kept out, as counted in `linkRefusals` and metrics. */
export type RefusalReason = 'unknown_key' | 'handshake';

/** Peers kept out of this thread's bound sockets since start, by reason. */
export const linkRefusals: Record<RefusalReason, number> = { unknown_key: 0, handshake: 0 };

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_VALUE = new Map([...Z85].map((c, i) => [c, i]));
const KEY_TEXT = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** The Z85 text of a 32-byte key (ZeroMQ RFC 32). */
function z85Encode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let value = ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
    let chunk = '';
    for (let j = 0; j < 5; j++) {
      chunk = Z85[value % 85]! + chunk;
      value = Math.floor(value / 85);
    }
    out += chunk;
  }
  return out;
}

/** True for the Z85 text of a CURVE key whose 32 bytes it decodes to. */
function isKeyText(text: string): boolean {
  if (!KEY_TEXT.test(text)) return false;
  for (let i = 0; i < 40; i += 5) {
    let value = 0;
    for (let j = 0; j < 5; j++) value = value * 85 + Z85_VALUE.get(text[i + j]!)!;
    if (value > 0xffffffff) return false;
  }
  return true;
}

/** A key file's keys: `public-key = "…"` and, in a secret key file, `secret-key = "…"`. */
export interface KeyFile {
  readonly publicKey: string;
  readonly secretKey: string | undefined;
}

/**
 * Reads a key file written by `writeKeyPair` (the ZeroMQ certificate format: lines
 * `public-key = "<Z85>"` and `secret-key = "<Z85>"`; `#` starts a comment). A file of
 * one bare Z85 key is a public key. Throws, naming the file, when it holds no valid key.
 */
export async function readKeyFile(path: string): Promise<KeyFile> {
  const text = await readFile(path, 'utf8');
  const field = (name: string): string | undefined => new RegExp(`^\\s*${name}\\s*=\\s*"([^"]*)"\\s*$`, 'm').exec(text)?.[1];
  const bare = text.trim();
  const publicKey = field('public-key') ?? (isKeyText(bare) ? bare : undefined);
  const secretKey = field('secret-key');
  if (publicKey === undefined || !isKeyText(publicKey)) throw new Error(`${path} holds no public key (a line public-key = "<40 Z85 characters>")`);
  if (secretKey !== undefined && !isKeyText(secretKey)) throw new Error(`${path}: its secret-key is not 40 Z85 characters`);
  return { publicKey, secretKey };
}

/**
 * Reads the public keys let in: one key file, or every file of a directory except secret
 * key files (`*_secret`) and hidden ones. Throws, naming the path, when there is none.
 */
export async function readAllowList(path: string): Promise<string[]> {
  const files = (await stat(path)).isDirectory()
    ? (await readdir(path))
        .filter((f) => !f.startsWith('.') && !f.endsWith('_secret'))
        .sort()
        .map((f) => join(path, f))
    : [path];
  const keys: string[] = [];
  for (const file of files) {
    if (!(await stat(file)).isFile()) continue;
    keys.push((await readKeyFile(file)).publicKey);
  }
  if (keys.length === 0) throw new Error(`${path} holds no public key file`);
  return [...new Set(keys)];
}

/**
 * Writes a new key pair as `<base>.key` (the public key, to hand to peers) and
 * `<base>.key_secret` (both keys, mode 0600). Refuses to overwrite either file.
 * Resolves with the public key.
 */
export async function writeKeyPair(base: string): Promise<{ publicFile: string; secretFile: string; publicKey: string }> {
  const { publicKey, secretKey } = zmq.curveKeyPair();
  const header = '#   butterfly CURVE key pair (ZeroMQ certificate format)\n';
  const publicFile = `${base}.key`;
  const secretFile = `${base}.key_secret`;
  const secret = await open(secretFile, 'wx', 0o600);
  try {
    await secret.writeFile(`${header}#   SECRET: keep this file to the daemon that owns it.\ncurve\n    public-key = "${publicKey}"\n    secret-key = "${secretKey}"\n`);
  } finally {
    await secret.close();
  }
  // The process umask may have narrowed the mode; it must not have widened it.
  await chmod(secretFile, 0o600);
  const pub = await open(publicFile, 'wx', 0o644);
  try {
    await pub.writeFile(`${header}curve\n    public-key = "${publicKey}"\n`);
  } finally {
    await pub.close();
  }
  return { publicFile, secretFile, publicKey };
}

/** Makes a socket a CURVE client of a server holding `security.serverKey`'s secret half. Call before `connect`. */
export function secureClient(socket: zmq.Socket, security: LinkSecurity | undefined): void {
  if (security === undefined) return;
  socket.curveServerKey = security.serverKey;
  socket.curvePublicKey = security.publicKey;
  socket.curveSecretKey = security.secretKey;
}

/**
 * Makes a socket a CURVE server that lets in only `security.allow`'s keys, starting this
 * thread's ZAP handler if it is not running yet. Await it before `bind`. The returned
 * function releases the socket's hold on the handler: call it once the socket is closed.
 * Handshake failures (a plaintext peer, a client expecting another server key) are
 * counted and logged once per address.
 */
export async function secureServer(socket: zmq.Socket, security: LinkSecurity | undefined, logger: LinkLogger): Promise<() => void> {
  if (security === undefined) return () => {};
  const domain = await authenticator.register(security.allow, logger);
  socket.curveServer = true;
  socket.curveSecretKey = security.secretKey;
  socket.zapDomain = domain;
  void watchHandshakes(socket, logger);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    authenticator.release(domain);
  };
}

/** How many distinct peers a refusal is logged for; later ones are only counted. */
const LOGGED_PEERS_MAX = 1000;

async function watchHandshakes(socket: zmq.Socket, logger: LinkLogger): Promise<void> {
  const logged = new Set<string>();
  try {
    for await (const event of socket.events) {
      if (event.type !== 'handshake:error:protocol' && event.type !== 'handshake:error:other') continue;
      linkRefusals.handshake++;
      const address = event.address;
      if (logged.size < LOGGED_PEERS_MAX && !logged.has(address)) {
        logged.add(address);
        logger.warn({ socket: address, reason: event.type }, 'peer refused: its handshake failed (plaintext, or expecting another server key)');
      }
    }
  } catch {
    // The socket closed: nothing more to watch.
  }
}

/** ZeroMQ's address for the ZAP handler of a context (RFC 27). */
const ZAP_ENDPOINT = 'inproc://zeromq.zap.01';

/**
 * This thread's ZAP handler: one ROUTER socket answering libzmq's authentication requests
 * for every CURVE server socket of the thread's context. Each allowlist gets a ZAP domain
 * of its own, so sockets with different lists can share the handler.
 */
class Authenticator {
  private socket: zmq.Router | undefined;
  private starting: Promise<void> | undefined;
  private readonly domains = new Map<string, { allow: ReadonlySet<string>; logger: LinkLogger }>();
  private readonly logged = new Set<string>();
  private nextDomain = 0;

  async register(allow: readonly string[], logger: LinkLogger): Promise<string> {
    const domain = `butterfly-${++this.nextDomain}`;
    this.domains.set(domain, { allow: new Set(allow), logger });
    if (this.socket === undefined) {
      this.starting ??= this.start();
      await this.starting;
    }
    return domain;
  }

  release(domain: string): void {
    this.domains.delete(domain);
    if (this.domains.size > 0 || this.socket === undefined) return;
    this.socket.close();
    this.socket = undefined;
    this.starting = undefined;
  }

  private async start(): Promise<void> {
    const socket = new zmq.Router();
    socket.linger = 0;
    await socket.bind(ZAP_ENDPOINT);
    this.socket = socket;
    void this.serve(socket);
  }

  private async serve(socket: zmq.Router): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await socket.receive();
      } catch {
        return;
      }
      // [routing id, empty, version, request id, domain, address, identity, mechanism, credentials...]
      const [routing, , version, requestId, domainFrame, addressFrame, , mechanism, key] = frames;
      if (routing === undefined || requestId === undefined) continue;
      const domain = this.domains.get(domainFrame?.toString() ?? '');
      const address = addressFrame?.toString() ?? '';
      const publicKey = key !== undefined && key.length === 32 ? z85Encode(key) : '';
      const allowed = version?.toString() === '1.0' && mechanism?.toString() === 'CURVE' && domain !== undefined && domain.allow.has(publicKey);
      if (!allowed) this.refused(domain?.logger, address, publicKey);
      const reply = [routing, Buffer.alloc(0), '1.0', requestId, allowed ? '200' : '400', allowed ? 'OK' : 'key not allowed', allowed ? publicKey : '', Buffer.alloc(0)];
      try {
        await socket.send(reply);
      } catch {
        return;
      }
    }
  }

  private refused(logger: LinkLogger | undefined, address: string, publicKey: string): void {
    linkRefusals.unknown_key++;
    const peer = `${address} ${publicKey}`;
    if (this.logged.size >= LOGGED_PEERS_MAX || this.logged.has(peer)) return;
    this.logged.add(peer);
    logger?.warn({ peer: address, key: publicKey }, 'peer refused: its key is not on the allowlist');
  }
}

const authenticator = new Authenticator();

const LOOPBACK_TCP = /^tcp:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\]):/;

/**
 * Whether binding `address` without keys is safe: ipc and inproc are local to the host,
 * and tcp on a loopback address too. Anything else is reachable from the network.
 */
export function isLocalAddress(address: string): boolean {
  return !address.startsWith('tcp://') || LOOPBACK_TCP.test(address);
}
