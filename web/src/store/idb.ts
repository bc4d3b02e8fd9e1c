// Promise helpers over IndexedDB requests and transactions. A transaction
// stays active while requests are pending or their results are being
// handled: a caller may await these promises between requests of one
// transaction, but must not await anything else (a timer, a fetch), or the
// transaction commits under it.

/** Resolves with a request's result, rejects with its error. */
export function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("indexeddb: request failed"));
  });
}

/**
 * Resolves when tx commits, rejects when it fails or is aborted. The
 * returned promise never goes unhandled: a caller that aborts tx on its own
 * error path may drop it.
 */
export function done(tx: IDBTransaction): Promise<void> {
  const p = new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("indexeddb: transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("indexeddb: transaction aborted"));
  });
  p.catch(() => {});
  return p;
}

/** Aborts tx unless it already finished (abort would throw then). */
export function abortQuietly(tx: IDBTransaction): void {
  try {
    tx.abort();
  } catch {
    // already committed or aborted
  }
}

/** Every value of a store (or of a key range of it, at most count of them), in key order. */
export function getAll<T>(s: IDBObjectStore, range?: IDBKeyRange, count?: number): Promise<T[]> {
  return req(s.getAll(range, count) as IDBRequest<T[]>);
}
