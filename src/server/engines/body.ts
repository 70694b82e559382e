import { LARGE_RECORD_BYTES, allocateBody, freePiece } from '../../wire/index.js';

/**
 * A request body as it arrives, for either engine. A large body of known length is read
 * straight into a buffer with room for its job's head in front (see `allocateBody`), so
 * that it reaches its stage without another copy; any other body is kept as its pieces and
 * joined at the end. Pieces no longer needed once copied or joined are freed at once (see
 * `freePiece`).
 */
export class BodyReader {
  private readonly into: Buffer | undefined;
  private readonly pieces: Buffer[] = [];
  /** Bytes read so far. */
  size = 0;
  /** Bytes the body may hold: its declared length when read in place, else the limit. */
  private readonly limit: number;

  /** @param declared the body's declared length, 0 when unknown (chunked) */
  constructor(declared: number, maxBodyBytes: number) {
    this.into = declared >= LARGE_RECORD_BYTES && declared <= maxBodyBytes ? allocateBody(declared) : undefined;
    this.limit = this.into?.length ?? maxBodyBytes;
  }

  /** Whether `bytes` more stay within `limit`. */
  fits(bytes: number): boolean {
    return this.size + bytes <= this.limit;
  }

  /**
   * Adds the next piece. With `keep`, the piece is this body's alone (node:http's) and may
   * be kept as it is; otherwise (memory uWS reuses after its callback) it is copied.
   */
  add(piece: Buffer, keep: boolean): void {
    if (this.into !== undefined) {
      this.into.set(piece, this.size);
      if (keep) freePiece(piece);
    } else {
      this.pieces.push(keep ? piece : Buffer.from(piece));
    }
    this.size += piece.length;
  }

  /** The whole body. */
  take(): Buffer {
    const into = this.into;
    if (into !== undefined) return this.size === into.length ? into : into.subarray(0, this.size);
    if (this.pieces.length === 1) return this.pieces[0]!;
    const body = Buffer.concat(this.pieces, this.size);
    for (const piece of this.pieces) freePiece(piece);
    return body;
  }
}
