/** What a `JobList` links: the list owns the two link fields. */
export interface Linked<T> {
  prev: T | undefined;
  next: T | undefined;
  /** True while the item is on a list. */
  listed: boolean;
}

/**
 * A doubly linked queue whose items carry their own links: push at either end, take from
 * the front, and remove any item in O(1), so a cancelled job leaves the queue (and
 * releases the message it pins) at once instead of waiting for its turn. Callers bound it.
 */
export class JobList<T extends Linked<T>> {
  private head: T | undefined;
  private tail: T | undefined;
  private count = 0;

  get size(): number {
    return this.count;
  }

  push(item: T): void {
    item.prev = this.tail;
    item.next = undefined;
    if (this.tail === undefined) this.head = item;
    else this.tail.next = item;
    this.tail = item;
    item.listed = true;
    this.count++;
  }

  /** Puts an item at the front, to be taken next. */
  unshift(item: T): void {
    item.next = this.head;
    item.prev = undefined;
    if (this.head === undefined) this.tail = item;
    else this.head.prev = item;
    this.head = item;
    item.listed = true;
    this.count++;
  }

  shift(): T | undefined {
    const item = this.head;
    if (item !== undefined) this.remove(item);
    return item;
  }

  /** Takes an item out wherever it is; does nothing for an item not on the list. */
  remove(item: T): void {
    if (!item.listed) return;
    if (item.prev === undefined) this.head = item.next;
    else item.prev.next = item.next;
    if (item.next === undefined) this.tail = item.prev;
    else item.next.prev = item.prev;
    item.prev = undefined;
    item.next = undefined;
    item.listed = false;
    this.count--;
  }

  /** Iterates from the front; the current item may be removed while iterating. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let item = this.head; item !== undefined; ) {
      const next = item.next;
      yield item;
      item = next;
    }
  }
}
