import { InvalidOptionError } from './errors.js';

/**
 * Validation helpers for options objects: each returns the value when it is valid and
 * throws `InvalidOptionError` naming the option and the bad value otherwise.
 */

/** An integer in [min, max]. */
export function integerIn(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? (min === 1 ? 'a positive integer' : `an integer >= ${min}`) : `an integer from ${min} to ${max}`;
    throw new InvalidOptionError(name, range, value);
  }
  return value;
}

/** A string that is one of `choices`. */
export function oneOf<T extends string>(name: string, value: unknown, choices: readonly T[]): T {
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw new InvalidOptionError(name, `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`, value);
  }
  return value as T;
}

/** A non-empty string. */
export function nonEmptyString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidOptionError(name, 'a non-empty string', value);
  return value;
}

/** A ZeroMQ endpoint: `ipc://…`, `tcp://host:port` or `inproc://…`. */
export function endpoint(name: string, value: unknown): string {
  if (typeof value !== 'string' || !/^(ipc:\/\/.+|inproc:\/\/.+|tcp:\/\/[^:]+:(\d+|\*))$/.test(value)) {
    throw new InvalidOptionError(name, 'a ZeroMQ endpoint (ipc://PATH or tcp://HOST:PORT)', value);
  }
  return value;
}

/** Fills in defaults: every key of `defaults` missing (or undefined) in `given`. */
export function withDefaults<T extends object>(defaults: Readonly<T>, given: Partial<T> | undefined): T {
  const out = { ...defaults } as T;
  if (given === undefined) return out;
  for (const key of Object.keys(given) as (keyof T)[]) {
    const v = given[key];
    if (v !== undefined) out[key] = v as T[keyof T];
  }
  return out;
}
