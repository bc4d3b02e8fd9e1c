import type { ConnectionOptions, Msg, NatsConnection } from "nats.ws";
import { SkewError, type Clock } from "../crdt/hlc.ts";
import { NilUUID, type Point } from "../crdt/point.ts";
import { decodeBatch, encodeBatch } from "../wire/batch.ts";
import { parseFrame } from "../wire/frame.ts";
import { decodeMessage, encodeError, encodeMessage, LinkProto, RemoteError, RoleUser, type Ack, type Push } from "../wire/messages.ts";
import type { Store } from "../store/index.ts";
import { runRepairs, type RepairPass } from "./repair.ts";

/**
 * What the UI shows of a link. inSync (online and syncing): the last
 * digest repair pass found the replica's scope equal to the acceptor's
 * (false until one did, and after one that found differences).
 */
export type LinkStatus =
  | { state: "offline"; error: string; /** The server refused the token: the link stopped; sign in again. */ auth?: boolean }
  | { state: "online"; inSync?: boolean }
  | { state: "syncing"; pending: number; inSync?: boolean };

/** Opens a NATS connection (nats.ws's connect; tests may wrap it). */
export type Connect = (opts: ConnectionOptions) => Promise<NatsConnection>;

/**
 * nats.ws's connect, loaded when first used: the page draws the replica's
 * tree from IndexedDB before the NATS client (most of the bundle) is even
 * parsed.
 */
export const natsConnect: Connect = async (opts) => (await import("nats.ws")).connect(opts);

/** Configures a Link. */
export interface LinkConfig {
  /** The WebSocket URL of the server's NATS: ws(s)://HOST/nats. Required. */
  url: string;
  /** The user's login token (siot login). Required. */
  token: string;
  /** The user's node: the token's user, the identity prefix siot.user.<user>. Required. */
  user: string;
  /** The replica's store; its instance ID is the link's. Required. */
  store: Store;
  /** The replica's clock: local writes are stamped with it, the acceptor's clock corrects it. Required. */
  clock: Clock;
  /** nats.ws's connect by default. */
  connect?: Connect;
  /** How long a hello, start, push or ping waits for its answer (30 s). */
  ackTimeoutMs?: number;
  /** A ping is sent when nothing was heard from the acceptor for this long (15 s). */
  pingMs?: number;
  /** How often the store's last change number is read for writes made without notify (1 s). */
  pollMs?: number;
  /** Reconnect backoff bounds (250 ms to 2 s, with jitter). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Most points of one push (1,024) and the bytes one push aims at (256 KiB). */
  maxPoints?: number;
  maxBytes?: number;
  /** Jitter source, Math.random by default. */
  random?: () => number;
  /** The mean time between digest repair passes that found the scope equal (60 s, drawn ±10%); 0 turns repair off. */
  repairMs?: number;
  /** Called with every digest repair pass (repair.ts), after the status took it in. */
  onRepair?: (p: RepairPass) => void;
}

/** The most points of a received push applied in one store transaction. */
const applyChunk = 4096;

const uuidRE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const serverNameRE = /^[A-Za-z0-9_-]{1,64}$/;

/** Reports whether a connection's failure is the server refusing its credentials. */
export function authRefused(why: string): boolean {
  return /authorization violation|user authentication expired/i.test(why);
}

/** A request that needs the server, made while the link has no connection to it. */
export class OfflineError extends Error {
  constructor(why: string) {
    super(why);
    this.name = "OfflineError";
  }
}

/** The session ended; why is its message. */
class SessionEnd extends Error {
  constructor(why: string) {
    super(why);
    this.name = "SessionEnd";
  }
}

/**
 * A user's link from the browser replica to a siot server: the dialer
 * side of a session of role "user" (docs/protocol.md, Links), over NATS
 * on WebSocket. It receives the user's scope into the store and pushes
 * the store's changes (local writes, offline ones included) up; it
 * resumes from the store's link marks after a reconnect or a reload.
 *
 * start() runs it until close(); a lost connection, a bye or an error
 * reconnects with backoff. Its pushes go one at a time, in feed order.
 * Call notify() after a local write to send it at once; without it the
 * store is polled every pollMs.
 */
export class Link {
  private readonly cfg: Required<Omit<LinkConfig, "connect" | "onRepair">> & { connect: Connect };
  private readonly onRepair: ((p: RepairPass) => void) | undefined;
  private readonly prefix: string;
  private listeners = new Set<(s: LinkStatus) => void>();
  private refusedFns = new Set<(count: number, reason: string) => void>();
  private current: LinkStatus = { state: "offline", error: "" };
  private running: Promise<void> | undefined;
  private stopped = false;
  private session: Session | undefined;
  private wakeSleep: (() => void) | undefined;
  private inSync = false;
  private lastPass: RepairPass | undefined;

  /** Throws a TypeError for a missing or malformed required field. */
  constructor(cfg: LinkConfig) {
    if (!cfg.url) throw new TypeError("link: LinkConfig.url is required");
    if (!cfg.token) throw new TypeError("link: LinkConfig.token is required");
    if (!uuidRE.test(cfg.user ?? "")) throw new TypeError(`link: user ${JSON.stringify(cfg.user)}: want a lowercase UUID`);
    if (!cfg.store || !cfg.clock) throw new TypeError("link: LinkConfig.store and clock are required");
    this.cfg = {
      url: cfg.url,
      token: cfg.token,
      user: cfg.user,
      store: cfg.store,
      clock: cfg.clock,
      connect: cfg.connect ?? natsConnect,
      ackTimeoutMs: cfg.ackTimeoutMs ?? 30_000,
      pingMs: cfg.pingMs ?? 15_000,
      pollMs: cfg.pollMs ?? 1_000,
      backoffMinMs: cfg.backoffMinMs ?? 250,
      backoffMaxMs: cfg.backoffMaxMs ?? 2_000,
      maxPoints: cfg.maxPoints ?? 1024,
      maxBytes: cfg.maxBytes ?? 256 << 10,
      random: cfg.random ?? Math.random,
      repairMs: cfg.repairMs ?? 60_000,
    };
    this.prefix = `siot.user.${cfg.user}`;
    this.onRepair = cfg.onRepair;
  }

  /** The latest status. */
  status(): LinkStatus {
    return this.current;
  }

  /** Calls fn with every status change from now on; returns a function that stops it. */
  subscribe(fn: (s: LinkStatus) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Calls fn whenever the acceptor refuses points of a push (outside the
   * user's scope or rights: docs/protocol.md, "Scope"), with how many and
   * its reason for the first. They stay in the store, and are not sent
   * again. Returns a function that stops it.
   */
  onRefused(fn: (count: number, reason: string) => void): () => void {
    this.refusedFns.add(fn);
    return () => this.refusedFns.delete(fn);
  }

  /** @internal */
  refused(count: number, reason: string): void {
    for (const fn of this.refusedFns) {
      try {
        fn(count, reason);
      } catch {
        // a listener's failure is not the link's
      }
    }
  }

  /** Starts linking; returns at once. Calling it again does nothing. */
  start(): void {
    if (this.running || this.stopped) return;
    this.running = this.loop();
  }

  /** Tells the link that the store has new local writes to push. */
  notify(): void {
    this.session?.wake();
  }

  /**
   * Says bye to the acceptor (waiting at most 1 s for its answer), closes
   * the connection and stops reconnecting. Resolves when the link is idle.
   */
  async close(): Promise<void> {
    this.stopped = true;
    this.wakeSleep?.();
    const s = this.session;
    if (s) await s.bye("link closed");
    await this.running;
    this.setStatus({ state: "offline", error: "closed" });
  }

  /**
   * Sends a local API request (name: "api.history" and the like) to the
   * server on the link's connection, so with the user's token and within
   * what the server lets the user read, and resolves with the reply frame
   * (an error frame too: the caller's decodeMessage throws it as a
   * RemoteError). Throws an OfflineError when the link has no connection,
   * an Error when the server does not answer within timeoutMs or serves
   * no such request.
   */
  async request(name: string, data: Uint8Array, timeoutMs = 15_000): Promise<Uint8Array> {
    const s = this.session;
    if (!s) throw new OfflineError(this.current.state === "offline" && this.current.error ? `offline: ${this.current.error}` : "offline");
    return s.api(name, data, timeoutMs);
  }

  /** The last digest repair pass of this link (repair.ts), if any ran. */
  lastRepair(): RepairPass | undefined {
    return this.lastPass;
  }

  /** @internal Records a repair pass; the status says whether it found the scope equal. */
  noteRepair(p: RepairPass): void {
    this.lastPass = p;
    this.inSync = p.equal;
    if (this.current.state !== "offline") this.setStatus(this.current);
    try {
      this.onRepair?.(p);
    } catch {
      // a listener's failure is not the link's
    }
  }

  /** @internal */
  setStatus(s: LinkStatus): void {
    if (s.state === "offline") this.inSync = false;
    else s = { ...s, inSync: this.inSync };
    const c = this.current;
    if (c.state === s.state && JSON.stringify(c) === JSON.stringify(s)) return;
    this.current = s;
    for (const fn of this.listeners) {
      try {
        fn(s);
      } catch {
        // a listener's failure is not the link's
      }
    }
  }

  private async loop(): Promise<void> {
    let delay = this.cfg.backoffMinMs;
    while (!this.stopped) {
      let why = "";
      let welcomed = false;
      let nc: NatsConnection | undefined;
      try {
        nc = await this.cfg.connect({
          servers: this.cfg.url,
          token: this.cfg.token,
          inboxPrefix: `${this.prefix}.inbox`,
          reconnect: false,
          name: "siot web",
          timeout: this.cfg.ackTimeoutMs,
        });
        if (this.stopped) break;
        const s = new Session(this, this.cfg, this.prefix, nc);
        this.session = s;
        why = await s.run(() => (welcomed = true));
      } catch (e) {
        why = e instanceof Error ? e.message : String(e);
      } finally {
        this.session = undefined;
        if (nc && !nc.isClosed()) await nc.close().catch(() => {});
      }
      if (this.stopped) break;
      if (authRefused(why)) {
        // A token that expired, was revoked or is of another instance
        // never starts working again: stop, and let the user sign in.
        this.stopped = true;
        this.setStatus({ state: "offline", error: why, auth: true });
        break;
      }
      this.setStatus({ state: "offline", error: why });
      if (welcomed) delay = this.cfg.backoffMinMs;
      const wait = delay / 2 + (this.cfg.random() * delay) / 2;
      delay = Math.min(delay * 2, this.cfg.backoffMaxMs);
      await new Promise<void>((res) => {
        const t = setTimeout(res, wait);
        this.wakeSleep = () => {
          clearTimeout(t);
          res();
        };
      });
      this.wakeSleep = undefined;
    }
  }
}

/** One session: a hello, a start, then pushes both ways until it ends. */
class Session {
  private readonly store: Store;
  private readonly clock: Clock;
  private remote = ""; // the acceptor's instance
  private subj = { start: "", up: "", down: "", ping: "" };
  private ended: ((why: string) => void) | undefined;
  private endedWhy: string | undefined;
  private heardAt = Date.now();
  private inFlight = 0;
  private wakeSender: (() => void) | undefined;
  private woken = false;
  private have = 0n; // how far we hold the acceptor's feed
  private live = false;
  private remoteIdle = false; // the acceptor's last push said it had nothing more
  private readonly stop = new AbortController(); // aborted when the session ends

  constructor(
    private readonly link: Link,
    private readonly cfg: Required<Omit<LinkConfig, "connect" | "onRepair">>,
    private readonly prefix: string,
    private readonly nc: NatsConnection,
  ) {
    this.store = cfg.store;
    this.clock = cfg.clock;
  }

  /** Wakes the sender: the store has changes. */
  wake(): void {
    this.woken = true;
    this.wakeSender?.();
  }

  private end(why: string): void {
    if (this.endedWhy !== undefined) return;
    this.endedWhy = why;
    this.stop.abort();
    this.ended?.(why);
    this.wakeSender?.();
  }

  /** Runs the session; resolves with why it ended. onWelcome is called when the acceptor welcomed it. */
  async run(onWelcome: () => void): Promise<string> {
    const endedP = new Promise<string>((res) => (this.ended = res));
    this.nc.closed().then((e) => this.end(e ? `connection lost: ${e.message}` : "connection closed"));

    // Hello.
    const raw = this.clock.physical() - this.clock.correction();
    const sent = Date.now();
    const hello = encodeMessage("hello", {
      proto: LinkProto,
      instance: this.store.instance,
      root: NilUUID,
      role: RoleUser,
      time: BigInt(Math.floor(this.clock.physical())),
    });
    const w = decodeMessage(await this.request(this.subject("link.hello"), hello), "welcome");
    const rtt = Date.now() - sent;
    if (w.instance === NilUUID || w.instance === this.store.instance) {
      throw new SessionEnd(`hello: remote instance ${w.instance}: cannot link to itself or to nil`);
    }
    if (!/^[0-9a-f]{32}$/.test(w.session)) throw new SessionEnd(`hello: bad session id ${JSON.stringify(w.session.slice(0, 40))}`);
    if (this.endedWhy !== undefined) throw new SessionEnd(this.endedWhy);
    this.correctClock(Number(w.time), rtt, raw);
    this.remote = w.instance;
    const p = `${this.prefix}.link.${w.session}.`;
    this.subj = { start: p + "start", up: p + "up", down: p + "down", ping: p + "ping" };
    onWelcome();

    // Where each side resumes: the acceptor after our mark of its feed;
    // we after what its welcome says it holds of ours, or from 0 when
    // that is more than we ever wrote (a restored backup: our numbering
    // is the truth).
    const mark = await this.store.link(this.remote);
    this.have = BigInt(mark.received);
    let ours = w.have;
    if (ours > BigInt(await this.store.lastSeq())) ours = 0n;

    const sub = this.nc.subscribe(this.subj.down);
    const down = this.downLoop(sub);
    decodeMessage(await this.request(this.subj.start, encodeMessage("start", { have: this.have })), "ack");
    this.live = true;
    const sender = this.sendLoop(ours);
    const repairs = this.repairLoop(p + "repair");
    const keepalive = setInterval(() => this.keepalive(), Math.max(50, Math.min(this.cfg.pingMs, this.cfg.pollMs)));
    try {
      return await endedP;
    } finally {
      this.live = false;
      clearInterval(keepalive);
      sub.unsubscribe();
      await Promise.allSettled([down, sender, repairs]);
    }
  }

  /** Says bye on the ping subject and waits at most 1 s for the answer. */
  async bye(why: string): Promise<void> {
    if (this.live && !this.nc.isClosed()) {
      try {
        await this.nc.request(this.subj.ping, encodeMessage("bye", { reason: why }), { timeout: 1000 });
      } catch {
        // gone already: the session ends all the same
      }
    }
    this.end(`bye: ${why}`);
  }

  /** Link.request on this session's connection. */
  async api(name: string, data: Uint8Array, timeout: number): Promise<Uint8Array> {
    if (this.endedWhy !== undefined || this.nc.isClosed()) throw new OfflineError("offline: the connection to the server is closing");
    try {
      const m = await this.nc.request(this.subject(name), data, { timeout });
      this.heardAt = Date.now();
      return m.data;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "503") throw new Error(`the server does not answer ${name} requests (an older version?)`);
      if (code === "TIMEOUT") throw new Error(`the server did not answer within ${Math.round(timeout / 1000)} s`);
      throw e;
    }
  }

  private subject(name: string): string {
    // siot's clients name the server they reached (a cluster member serves
    // the links its connection reached).
    const server = this.nc.info?.server_name ?? "";
    return serverNameRE.test(server) ? `${this.prefix}.${name}.${server}` : `${this.prefix}.${name}`;
  }

  private async request(subj: string, data: Uint8Array, timeout = this.cfg.ackTimeoutMs): Promise<Uint8Array> {
    try {
      const m = await this.nc.request(subj, data, { timeout });
      this.heardAt = Date.now();
      return m.data;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "503") throw new SessionEnd("the remote holds no session for our pushes (no responders)");
      throw e;
    }
  }

  // The acceptor's clock wins when ours is off by more than half the skew
  // bound (Go's correctClock): a device may have no real-time clock.
  private correctClock(remoteMs: number, rtt: number, rawMs: number): void {
    const off = Math.round(remoteMs + rtt / 2 - rawMs);
    if (Math.abs(off) > this.clock.maxOffsetMs / 2) this.clock.setCorrection(off);
    else if (this.clock.correction() !== 0) this.clock.setCorrection(0);
  }

  private async downLoop(sub: AsyncIterable<Msg>): Promise<void> {
    for await (const m of sub) {
      this.heardAt = Date.now();
      try {
        const { reply, end } = await this.onDown(m.data);
        m.respond(reply);
        if (end) throw new SessionEnd(end);
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        if (!(e instanceof SessionEnd)) m.respond(encodeError(why));
        this.end(e instanceof SessionEnd ? why : `down: ${why}`);
        return;
      }
    }
  }

  // Handles one message on the down subject: a push (applied, then
  // acknowledged), a bye (acknowledged; the session ends) or an error
  // frame (the session ends).
  private async onDown(data: Uint8Array): Promise<{ reply: Uint8Array; end?: string }> {
    if (parseFrame(data).type === "bye") {
      const b = decodeMessage(data, "bye");
      const reply = encodeMessage("ack", { have: this.have, gap: false, rejected: 0n, reason: "" });
      return { reply, end: `the acceptor said bye: ${b.reason}` };
    }
    let p: Push;
    try {
      p = decodeMessage(data, "push");
    } catch (e) {
      if (e instanceof RemoteError) throw new SessionEnd(`the acceptor ended the session: ${e.remote}`);
      throw e;
    }
    this.remoteIdle = p.idle;
    if (p.from > this.have) return { reply: encodeMessage("ack", { have: this.have, gap: true, rejected: 0n, reason: "" }) };
    const pts = p.points && p.points.length > 0 ? decodeBatch(p.points) : [];
    // A point too far ahead of our clock is refused; it never wins.
    const kept: Point[] = [];
    let rejected = 0n;
    let reason = "";
    let maxTime = 0n;
    for (const pt of pts) {
      try {
        this.clock.check(pt.time);
      } catch (e) {
        if (!(e instanceof SkewError)) throw e;
        if (rejected === 0n) reason = e.message;
        rejected++;
        continue;
      }
      kept.push(pt);
      if (pt.time > maxTime) maxTime = pt.time;
    }
    const next = p.from === 0n && p.through > 0n ? p.through : p.through > this.have ? p.through : this.have;
    if (kept.length > 0 || next !== this.have) {
      // A large push (a first sync's carry thousands of points) is applied
      // in transactions of at most applyChunk points, the received mark
      // with the last: the page's reads wait for the write transaction in
      // progress, and one of a whole push held the first view back for
      // about a second at each redraw. A session that ends midway resends the push; what was
      // applied of it merges again as stale.
      let i = 0;
      for (; kept.length - i > applyChunk; i += applyChunk) await this.store.apply(kept.slice(i, i + applyChunk), { source: this.remote });
      await this.store.apply(kept.slice(i), { source: this.remote, received: { remote: this.remote, seq: Number(next) } });
    }
    if (maxTime > 0n) this.clock.update(maxTime);
    this.have = next;
    return { reply: encodeMessage("ack", { have: this.have, gap: false, rejected, reason }) };
  }

  // Runs digest repair (repair.ts) until the session ends: its requests
  // and pushes count as in flight (a ping then expects no answer), and
  // wait the ack timeout plus a reply's budget at 16 kbit/s, as Go's do.
  // A round that fails but for the acceptor's refusal ends the session.
  private async repairLoop(subject: string): Promise<void> {
    if (this.cfg.repairMs <= 0) return;
    const inFlight = async <T>(f: () => Promise<T>): Promise<T> => {
      this.inFlight++;
      try {
        return await f();
      } finally {
        this.inFlight--;
      }
    };
    const timeout = (n: number) => this.cfg.ackTimeoutMs + Math.ceil(((n + (512 << 10)) / 2048) * 1000);
    try {
      await runRepairs({
        io: {
          store: this.store,
          remote: this.remote,
          request: (b) => inFlight(() => this.request(subject, b, timeout(b.length))),
          push: (b) => inFlight(() => this.request(this.subj.up, b, timeout(b.length))),
          checkTime: (t) => this.clock.check(t),
          observe: (t) => this.clock.update(t),
        },
        user: this.cfg.user,
        intervalMs: this.cfg.repairMs,
        random: this.cfg.random,
        waitIdle: () => this.waitIdle(this.cfg.repairMs),
        sleep: (ms) => this.pause(ms),
        onPass: (p) => this.link.noteRepair(p),
      });
    } catch (e) {
      this.end(`repair: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  // Resolves true once our sender and the acceptor's are idle (the
  // initial resume is done), or after limitMs; false when the session ended.
  private async waitIdle(limitMs: number): Promise<boolean> {
    const deadline = Date.now() + limitMs;
    while (!(this.link.status().state === "online" && this.remoteIdle) && Date.now() < deadline) {
      if (!(await this.pause(20))) return false;
    }
    return this.endedWhy === undefined;
  }

  // Resolves true after ms, or false as soon as the session ends.
  private pause(ms: number): Promise<boolean> {
    if (this.stop.signal.aborted) return Promise.resolve(false);
    return new Promise((res) => {
      const done = () => {
        clearTimeout(t);
        res(false);
      };
      const t = setTimeout(() => {
        this.stop.signal.removeEventListener("abort", done);
        res(true);
      }, ms);
      this.stop.signal.addEventListener("abort", done, { once: true });
    });
  }

  // Pushes the store's changes, one push at a time, in feed order. The
  // feed holds local writes only (store/index.ts, "The feed"): a change
  // received from the acceptor takes a change number but is never echoed;
  // its number is covered by the next push after it.
  private async sendLoop(ours: bigint): Promise<void> {
    let acked = ours; // what the acceptor holds of our feed
    if (ours > 0n) await this.store.setLink(this.remote, { acked: Number(ours) }).catch(() => {});
    let idleSent = false;
    try {
      while (this.endedWhy === undefined) {
        this.woken = false;
        const { points, through, more } = await this.nextPush(acked);
        const pending = await this.pendingCount(through);
        // Nothing of ours: no push (but the first, which says we are
        // idle); the next one covers the numbers of what was received
        // meanwhile. The feed has no entries for received changes, so an
        // idle sender's scan reads nothing however much it received (the
        // bound below on uncovered change numbers never trips).
        if (points.length === 0 && idleSent && through - acked < BigInt(this.cfg.maxPoints)) {
          this.link.setStatus(pending > 0 ? { state: "syncing", pending } : { state: "online" });
          await this.sleep();
          continue;
        }
        this.link.setStatus({ state: "syncing", pending: pending + points.length });
        const push = encodeMessage("push", { from: acked, through, idle: !more, points: encodeBatch(points) });
        this.inFlight++;
        let ack: Ack;
        try {
          ack = decodeMessage(await this.request(this.subj.up, push), "ack");
        } finally {
          this.inFlight--;
        }
        if (ack.have > through) throw new SessionEnd(`the acceptor acknowledged ${ack.have}, beyond our push through ${through}`);
        if (ack.rejected > 0n) this.link.refused(Number(ack.rejected), ack.reason);
        acked = ack.have; // on a gap: back to what it holds
        if (acked > 0n) await this.store.setLink(this.remote, { acked: Number(acked) });
        if (!more) idleSent = true;
      }
    } catch (e) {
      this.end(e instanceof Error ? e.message : String(e));
    }
  }

  // The next push after position after: the feed's changes (local
  // writes; the source check is kept for a feed that held others), at
  // most maxPoints and, but for a single point, within maxBytes encoded;
  // through is the last change number it covers.
  private async nextPush(after: bigint): Promise<{ points: Point[]; through: bigint; more: boolean }> {
    const kept: { point: Point; seq: number }[] = [];
    let pos = Number(after);
    let more = false;
    for (;;) {
      const page = await this.store.changesSince(pos, this.cfg.maxPoints);
      for (const c of page) {
        if (c.source !== this.remote) {
          if (kept.length === this.cfg.maxPoints) {
            more = true;
            break;
          }
          kept.push({ point: c.point, seq: c.seq });
        }
        pos = c.seq;
      }
      if (more || page.length < this.cfg.maxPoints) break;
    }
    let n = kept.length;
    while (n > 1 && encodeBatch(kept.slice(0, n).map((k) => k.point)).length > this.cfg.maxBytes) n = Math.ceil(n / 2);
    if (n < kept.length) return { points: kept.slice(0, n).map((k) => k.point), through: BigInt(kept[n - 1].seq), more: true };
    return { points: kept.map((k) => k.point), through: BigInt(pos), more };
  }

  private async pendingCount(after: bigint): Promise<number> {
    const rest = await this.store.changesSince(Number(after));
    return rest.filter((c) => c.source !== this.remote).length;
  }

  // Sleeps until woken (notify, a poll that finds new changes) or ended.
  private sleep(): Promise<void> {
    if (this.woken || this.endedWhy !== undefined) return Promise.resolve();
    return new Promise((res) => {
      this.wakeSender = () => {
        this.wakeSender = undefined;
        res();
      };
    });
  }

  private lastPolled = -1;
  private pinging = false;

  // Runs on a timer: polls the store for writes made without notify, and
  // pings the acceptor when nothing was heard from it for pingMs.
  private keepalive(): void {
    if (this.endedWhy !== undefined) return;
    this.store.lastSeq().then(
      (seq) => {
        if (seq !== this.lastPolled) {
          this.lastPolled = seq;
          this.wake();
        }
      },
      () => {},
    );
    if (Date.now() - this.heardAt < this.cfg.pingMs || this.pinging) return;
    const ping = encodeMessage("ping", {});
    if (this.inFlight > 0) {
      // the push's own timeout watches the link; an answer would queue behind its ack
      this.nc.publish(this.subj.ping, ping);
      this.heardAt = Date.now();
      return;
    }
    this.pinging = true;
    this.request(this.subj.ping, ping)
      .then((b) => decodeMessage(b, "ack"))
      .catch((e) => this.end(`ping: ${e instanceof Error ? e.message : String(e)}`))
      .finally(() => (this.pinging = false));
  }
}
