// The page's replica: the user's store in IndexedDB, the clock that stamps
// its writes, and the link to the server, shared by every tab of one
// browser profile.
//
// Tabs: all tabs of a user open the same database. One of them, the
// holder of the Web Lock "siot.link.<user>", runs the Link (a second link
// of the same instance would replace the first at the server, and the
// two would take turns). The others write to the store too; a
// BroadcastChannel tells every tab when any of them committed (so it
// catches up its tree records and redraws, and the link's tab pushes at
// once) and carries the link's status and clock correction to the tabs
// without it. When the link's tab closes, the lock passes to another.

import { Clock } from "../crdt/hlc.ts";
import type { Point } from "../crdt/point.ts";
import { Link, OfflineError, type LinkStatus } from "../link/index.ts";
import { openStore, type Store } from "../store/index.ts";

/** Who is signed in, as kept in localStorage between visits. */
export interface Session {
  user: string; // the user's node
  email: string;
  token: string;
  exp: number; // the token's expiry, Unix ms
}

/** A refusal of the server, for the status bar. */
export interface Refusal {
  count: number;
  reason: string;
  at: number;
}

type Note =
  | { t: "committed" }
  | { t: "status"; status: LinkStatus; correction: number }
  | { t: "hello" }
  | { t: "refused"; refusal: Refusal }
  | { t: "ask"; id: string; name: string; data: Uint8Array; timeoutMs: number }
  | { t: "answer"; id: string; data?: Uint8Array; error?: string; offline?: boolean };

/** The database of a user's replica: one per user, so a sign-in as another never mixes them. */
export function databaseName(user: string): string {
  return `siot.${user}`;
}

/** Opens the replica of session's user; call start() to link. */
export async function openReplica(session: Session, wsURL: string): Promise<Replica> {
  const store = await openStore(databaseName(session.user));
  return new Replica(session, wsURL, store);
}

export class Replica {
  readonly clock = new Clock({ physical: Date.now });
  private link: Link | undefined;
  private linkStatus: LinkStatus = { state: "offline", error: "connecting" };
  private lastRefusal: Refusal | undefined;
  private readonly changeFns = new Set<() => void>();
  private readonly statusFns = new Set<() => void>();
  private readonly bc: BroadcastChannel | undefined;
  private readonly stop = new AbortController();
  private released: (() => void) | undefined;
  private reloading: Promise<void> | undefined;
  private reloadAgain = false;
  private closed = false;
  private readonly asks = new Map<string, { res: (b: Uint8Array) => void; rej: (e: Error) => void }>();

  constructor(
    readonly session: Session,
    private readonly wsURL: string,
    readonly store: Store,
  ) {
    this.bc = typeof BroadcastChannel === "function" ? new BroadcastChannel(`siot.tabs.${session.user}`) : undefined;
    if (this.bc) this.bc.onmessage = (e: MessageEvent<Note>) => this.onNote(e.data);
    store.onCommit(() => {
      this.post({ t: "committed" });
      this.link?.notify();
      this.changed();
    });
  }

  /** Whether this tab runs the link (the others follow it). */
  get leads(): boolean {
    return this.link !== undefined;
  }

  /** The link's status, as the tab that runs it last reported it. */
  status(): LinkStatus {
    return this.linkStatus;
  }

  /** The server's last refusal of this replica's writes, if any. */
  refusal(): Refusal | undefined {
    return this.lastRefusal;
  }

  /** Calls fn when the store changed (here or in another tab). */
  onChange(fn: () => void): () => void {
    this.changeFns.add(fn);
    return () => this.changeFns.delete(fn);
  }

  /** Calls fn when the link's status or a refusal changed. */
  onStatus(fn: () => void): () => void {
    this.statusFns.add(fn);
    return () => this.statusFns.delete(fn);
  }

  /**
   * Links to the server from this tab when it gets the lock, and until
   * then follows the tab that holds it.
   */
  start(): void {
    const run = async () => {
      if (this.closed) return;
      const link = new Link({ url: this.wsURL, token: this.session.token, user: this.session.user, store: this.store, clock: this.clock });
      this.link = link;
      link.subscribe((s) => this.setStatus(s, this.clock.correction()));
      link.onRefused((count, reason) => this.setRefusal({ count, reason, at: Date.now() }));
      link.start();
      await new Promise<void>((res) => (this.released = res));
      await link.close();
      this.link = undefined;
    };
    const locks = (navigator as Navigator & { locks?: LockManager }).locks;
    if (!locks) {
      // No Web Locks (an old browser): every tab links.
      void run();
      return;
    }
    locks.request(`siot.link.${this.session.user}`, { signal: this.stop.signal }, run).catch(() => {});
    this.post({ t: "hello" });
  }

  /**
   * Writes points stamped now (time 0n gets the clock's, origin "" this
   * replica's). With oneTime every point shares one timestamp: a move.
   */
  async write(points: Point[], oneTime = false): Promise<void> {
    await this.store.writeLocal(points, this.clock, { oneTime });
  }

  /**
   * Sends a local API request (name "api.history" and the like) to the
   * server with the user's token, and resolves with the reply frame: on
   * this tab's link, or on the linked tab's, which answers over the
   * BroadcastChannel. Throws an OfflineError when no link is connected,
   * and what Link.request throws.
   */
  async request(name: string, data: Uint8Array, timeoutMs = 15_000): Promise<Uint8Array> {
    if (this.closed) throw new OfflineError("signed out");
    if (this.link) return this.link.request(name, data, timeoutMs);
    if (!this.bc) throw new OfflineError("offline");
    const id = `${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}`;
    return new Promise((res, rej) => {
      const t = setTimeout(() => {
        this.asks.delete(id);
        rej(new OfflineError("offline: no tab of this browser is linked to the server"));
      }, timeoutMs + 2_000);
      const done = () => (clearTimeout(t), this.asks.delete(id));
      this.asks.set(id, { res: (b) => (done(), res(b)), rej: (e) => (done(), rej(e)) });
      this.post({ t: "ask", id, name, data, timeoutMs });
    });
  }

  /** Points written here that the server has not acknowledged yet. */
  async unsynced(): Promise<number> {
    const marks = await this.store.links();
    const acked = marks.reduce((m, l) => Math.max(m, l.acked), 0);
    const changes = await this.store.changesSince(acked);
    return changes.filter((c) => c.source === "").length;
  }

  /** Stops linking (saying bye) and closes the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stop.abort();
    this.released?.();
    for (const a of [...this.asks.values()]) a.rej(new OfflineError("signed out"));
    const link = this.link;
    if (link) await link.close();
    this.bc?.close();
    await this.store.close();
  }

  private post(n: Note): void {
    try {
      this.bc?.postMessage(n);
    } catch {
      // closed
    }
  }

  private onNote(n: Note): void {
    if (this.closed) return;
    switch (n.t) {
      case "committed":
        this.link?.notify();
        this.reloadThenChanged();
        return;
      case "status":
        if (this.link) return; // ours is the truth
        if (n.correction !== this.clock.correction()) this.clock.setCorrection(n.correction);
        this.setStatus(n.status, n.correction);
        return;
      case "hello":
        if (this.link) this.post({ t: "status", status: this.linkStatus, correction: this.clock.correction() });
        if (this.link && this.lastRefusal) this.post({ t: "refused", refusal: this.lastRefusal });
        return;
      case "refused":
        if (!this.link) this.setRefusal(n.refusal);
        return;
      case "ask": {
        // Another tab of this user asks the server through our link: only
        // local API requests, which the server authorizes as the user's.
        const link = this.link;
        if (!link || !/^api\.[a-z]+$/.test(n.name)) return;
        link.request(n.name, n.data, n.timeoutMs).then(
          (data) => this.post({ t: "answer", id: n.id, data }),
          (e: unknown) => this.post({ t: "answer", id: n.id, error: e instanceof Error ? e.message : String(e), offline: e instanceof OfflineError }),
        );
        return;
      }
      case "answer": {
        const a = this.asks.get(n.id);
        if (!a) return;
        if (n.data) a.res(n.data);
        else a.rej(n.offline ? new OfflineError(n.error ?? "offline") : new Error(n.error ?? "no answer"));
        return;
      }
    }
  }

  private setStatus(s: LinkStatus, correction: number): void {
    this.linkStatus = s;
    if (this.link) this.post({ t: "status", status: s, correction });
    for (const fn of this.statusFns) fn();
  }

  private setRefusal(r: Refusal): void {
    this.lastRefusal = r;
    if (this.link) this.post({ t: "refused", refusal: r });
    for (const fn of this.statusFns) fn();
  }

  private changed(): void {
    for (const fn of this.changeFns) fn();
  }

  // Another tab committed: the tree records in memory are stale. Reloads
  // run one at a time; one arriving meanwhile runs once more after.
  private reloadThenChanged(): void {
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    this.reloading = this.store
      .reload()
      .catch(() => {})
      .then(() => {
        this.reloading = undefined;
        this.changed();
        if (this.reloadAgain) {
          this.reloadAgain = false;
          this.reloadThenChanged();
        }
      });
  }
}
