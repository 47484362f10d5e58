/** A promise with its resolve and reject functions exposed. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
  /** True once resolve or reject was called. */
  readonly settled: boolean;
}

/**
 * Creates a {@link Deferred}. A class rather than an object literal with a getter: V8 keeps a
 * class instance's properties in its fast layout (a literal with an accessor went to the slower,
 * larger dictionary layout: about 450 bytes each, three per connected device in aranya).
 */
export function deferred<T>(): Deferred<T> {
  return new DeferredPromise<T>();
}

class DeferredPromise<T> implements Deferred<T> {
  readonly promise: Promise<T>;
  settled = false;
  #resolve!: (v: T) => void;
  #reject!: (e: unknown) => void;

  constructor() {
    this.promise = new Promise<T>((res, rej) => {
      this.#resolve = res;
      this.#reject = rej;
    });
  }

  // Arrow fields: callers pass them on unbound (`p.then(d.resolve, d.reject)`).
  readonly resolve = (v: T): void => {
    if (this.settled) return;
    this.settled = true;
    this.#resolve(v);
  };

  readonly reject = (e: unknown): void => {
    if (this.settled) return;
    this.settled = true;
    this.#reject(e);
  };
}
