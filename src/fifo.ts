/**
 * A first-in first-out ring buffer of growing capacity: a proxy's ready workers, a
 * worker's jobs waiting to start. Callers bound it: the ready list holds each live worker
 * at most once, a worker's inbox at most the window its proxy gave it credit for.
 */
export class Fifo<T> {
  private items: (T | undefined)[];
  private head = 0;
  private count = 0;

  constructor(initialCapacity = 64) {
    this.items = new Array<T | undefined>(initialCapacity);
  }

  get size(): number {
    return this.count;
  }

  push(item: T): void {
    if (this.count === this.items.length) this.grow();
    this.items[(this.head + this.count) % this.items.length] = item;
    this.count++;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.count--;
    return item;
  }

  /** Removes and returns the first item `match` accepts, keeping the others in order. O(size). */
  removeFirst(match: (item: T) => boolean): T | undefined {
    const n = this.items.length;
    for (let i = 0; i < this.count; i++) {
      const at = (this.head + i) % n;
      const item = this.items[at] as T;
      if (!match(item)) continue;
      for (let j = i; j < this.count - 1; j++) this.items[(this.head + j) % n] = this.items[(this.head + j + 1) % n];
      this.items[(this.head + this.count - 1) % n] = undefined;
      this.count--;
      return item;
    }
    return undefined;
  }

  /** Removes and returns every item, in order. */
  takeAll(): T[] {
    const all: T[] = [];
    for (let item = this.shift(); item !== undefined; item = this.shift()) all.push(item);
    return all;
  }

  private grow(): void {
    const next = new Array<T | undefined>(this.items.length * 2);
    for (let i = 0; i < this.count; i++) next[i] = this.items[(this.head + i) % this.items.length];
    this.items = next;
    this.head = 0;
  }
}
