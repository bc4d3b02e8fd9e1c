// A point's history on its node page: an SVG chart of the step summaries
// the server keeps (api.history; docs/protocol.md, "Local API"). The
// browser replica keeps no history, so the page asks the server, on the
// link's connection and with the user's token: the server answers what
// the user may read, and refuses the rest. Offline, the chart says that
// history needs the server (and keeps showing what it last fetched).
//
// A chart asks for chartSteps steps over its span (span/chartSteps ms
// each, aligned to whole steps so that a refresh draws the same steps),
// page after page while the server says there are more, and draws each
// step's range as a band and its mean as a line. When its point changes
// (a value set here or elsewhere), it asks again, at most every
// refreshMs. No chart library: a few SVG paths, with the labels in HTML
// around them so that they stay legible at any width.

import { physicalOf } from "../crdt/hlc.ts";
import { OfflineError } from "../link/link.ts";
import { decodeHistorySteps } from "../wire/history.ts";
import { RemoteError, type HistoryPage, type HistoryRequest } from "../wire/messages.ts";
import { MalformedError } from "../wire/msgpack.ts";
import { h, svg } from "./dom.ts";

/** A span a chart shows: the last ms before now. */
export interface Span {
  id: string;
  label: string;
  ms: number;
}

const hour = 3_600_000;
export const spans: readonly Span[] = [
  { id: "1h", label: "1 h", ms: hour },
  { id: "24h", label: "24 h", ms: 24 * hour },
  { id: "7d", label: "7 d", ms: 7 * 24 * hour },
  { id: "30d", label: "30 d", ms: 30 * 24 * hour },
];
export const defaultSpan = spans[1];

/** The steps a chart asks for: every span is a whole number of ms times this. */
export const chartSteps = 240;
/** A chart whose point changed is fetched again at most this often (ms). */
export const refreshMs = 5_000;
/** The most pages of one fetch: 240 steps fit one page (8,192), so this only stops a server that never ends. */
const maxPages = 16;
/** How often a chart that lacks its point's latest value is fetched again for it (a write of this page on its way up). */
const maxTries = 6;
/** Charts kept in memory (the page shows one at a time). */
const maxCached = 24;

/** One step: the numeric samples of [start, start+step). */
export interface Step {
  start: number;
  count: number;
  min: number;
  max: number;
  mean: number;
  last: number;
}

/** A chart as last fetched. */
export interface Chart {
  /** The span fetched, [from, end) in ms, in steps of step ms. */
  from: number;
  end: number;
  step: number;
  /** The steps that have samples, in order, their samples' count, and the HLC of the latest (0n: none). */
  steps: Step[];
  count: number;
  latest: bigint;
  /** Whether the server holds anything of the node (false: it has not reached the server). */
  known: boolean;
  /**
   * Whether a fetch succeeded (steps are its), when the last one ended
   * (ms), the point's HLC when it started, and how many fetches in a row
   * started with that HLC.
   */
  loaded: boolean;
  at: number;
  seen: bigint;
  tries: number;
  /** Why the last fetch failed, if it did; retry: it failed for want of the server (offline, busy), not for good. */
  error?: string;
  retry?: boolean;
}

/**
 * The charts of a page: what was fetched, and the fetches to come. ask
 * sends one request; changed is called when a fetch ended (the view
 * redraws); now is the page's clock (ms). Fetches run one at a time: the
 * server allows an identity two history reads at once.
 */
export class HistoryCharts {
  private readonly cache = new Map<string, Chart>();
  private readonly want = new Map<string, bigint>();
  private readonly busy = new Set<string>();
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly ask: (req: HistoryRequest) => Promise<HistoryPage>,
    private readonly changed: () => void,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The chart of node's point type.key over span, as last fetched (none
   * yet: undefined). seen is the point's HLC: a chart fetched before it
   * changed is fetched again, at most every refreshMs, as is one whose
   * last step has ended, and one that lacks the value of seen (a write
   * of this page that had not reached the server: a few times); one that
   * failed for want of the server, after a second. online false fetches
   * nothing.
   */
  get(node: string, type: string, key: string, span: Span, seen: bigint, online: boolean): Chart | undefined {
    const k = `${node}\0${type}\0${key}\0${span.id}`;
    this.want.set(k, seen);
    const c = this.cache.get(k);
    if (!online || this.busy.has(k) || this.timers.has(k)) return c;
    const behind = c !== undefined && c.loaded && c.error === undefined && seen > c.latest && physicalOf(seen) >= c.from && c.tries < maxTries;
    if (c && !c.retry && c.seen === seen && !behind && (c.error !== undefined || this.now() < c.end)) return c;
    // A fetch that failed for want of the server is tried again after a
    // second (the link may be between sessions), others after refreshMs.
    const wait = c ? c.at + (c.retry ? 1_000 : refreshMs) - this.now() : 0;
    const go = () => this.fetch(k, node, type, key, span);
    if (wait <= 0) go();
    else
      this.timers.set(
        k,
        setTimeout(() => {
          this.timers.delete(k);
          go();
        }, wait),
      );
    return c;
  }

  /** Forgets a failed fetch's error so that the next get fetches again. */
  retry(node: string, type: string, key: string, span: Span): void {
    const c = this.cache.get(`${node}\0${type}\0${key}\0${span.id}`);
    if (c?.error !== undefined) c.retry = true;
  }

  private fetch(k: string, node: string, type: string, key: string, span: Span): void {
    if (this.busy.has(k)) return;
    this.busy.add(k);
    const run = async () => {
      const seen = this.want.get(k) ?? 0n;
      const step = span.ms / chartSteps;
      const end = (Math.floor(this.now() / step) + 1) * step;
      const from = end - span.ms;
      const prev = this.cache.get(k);
      const tries = prev?.seen === seen ? prev.tries + 1 : 1; // a failed fetch is no try
      let c: Chart;
      try {
        c = { ...(await this.read(node, type, key, from, step)), from, end, step, loaded: true, at: this.now(), seen, tries };
      } catch (e) {
        const busy = e instanceof RemoteError && /limit reached/i.test(e.remote);
        c = { from, end, step, steps: [], count: 0, latest: 0n, known: true, loaded: false, ...prev, at: this.now(), seen, tries: tries - 1, error: describe(e), retry: e instanceof OfflineError || busy };
      }
      this.cache.delete(k);
      this.cache.set(k, c);
      if (this.cache.size > maxCached) this.cache.delete(this.cache.keys().next().value!);
    };
    this.queue = this.queue
      .then(run)
      .catch(() => {})
      .then(() => {
        this.busy.delete(k);
        this.changed();
      });
  }

  // Reads the steps of [from, no end) page by page.
  private async read(node: string, type: string, key: string, from: number, step: number): Promise<Pick<Chart, "steps" | "count" | "latest" | "known">> {
    const steps: Step[] = [];
    let count = 0;
    let latest = 0n;
    let known = false;
    let after: Uint8Array | null = null;
    for (let page = 0; ; page++) {
      const p = await this.ask({ node, type, key, from: BigInt(from), to: 0n, step: BigInt(step), after, max: 0n });
      if (page === 0) known = p.known;
      for (const s of decodeHistorySteps(p.steps)) {
        const start = Number(s.start);
        const prev = steps[steps.length - 1];
        if (start < from || (start - from) % step !== 0 || (prev && start <= prev.start)) throw new MalformedError(`history: a step at ${start} that does not follow the steps before`);
        const n = Number(s.count);
        const mean = s.sum / n;
        count += n;
        if (s.lastTime > latest) latest = s.lastTime;
        steps.push({ start, count: n, min: s.min, max: s.max, mean: Number.isFinite(mean) ? Math.min(s.max, Math.max(s.min, mean)) : s.last, last: s.last });
      }
      if (!p.more) return { steps, count, latest, known };
      if (!p.next || p.next.length === 0 || (after && p.next.join() === after.join()) || page + 1 >= maxPages) {
        throw new MalformedError("history: the server sent a page without a new cursor");
      }
      after = p.next;
    }
  }
}

/** What the person reads of a failed fetch. */
function describe(e: unknown): string {
  if (e instanceof OfflineError) return "History needs the server, and this page is offline: the chart comes back with the link.";
  if (e instanceof RemoteError) {
    if (/permission denied/i.test(e.remote)) return "You may not read this point's history (the server refused: permission denied).";
    if (/limit reached/i.test(e.remote)) return "The server is busy with other history reads of yours; trying again.";
    return `The server refused: ${e.remote}`;
  }
  return `History is unavailable: ${e instanceof Error ? e.message : String(e)}`;
}

// ----- drawing -----

const W = 600;
const H = 200;

/** Round to a tenth: SVG coordinates need no more. */
const r1 = (n: number) => Math.round(n * 10) / 10;

/** A number as a label: at most 6 significant digits. */
export function formatValue(v: number): string {
  return v.toLocaleString(undefined, { maximumSignificantDigits: 6 });
}

/** Evenly spaced round values from lo to hi (about 4 intervals), and their decimals. */
function ticks(lo: number, hi: number): { values: number[]; decimals: number } {
  if (hi === lo) {
    const pad = Math.abs(lo) / 10 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  const tick = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
  const first = Math.floor(lo / tick);
  const last = Math.ceil(hi / tick);
  const values: number[] = [];
  for (let i = last; i >= first; i--) values.push(i * tick);
  const decimals = Math.max(0, -Math.floor(Math.log10(tick) + 1e-9) + (n > 2 && n <= 2.5 ? 1 : 0));
  return { values, decimals: Math.min(decimals, 12) };
}

// A time on the axis: the time of day over an hour, with the day over a
// day (its ends are a day apart), the day over longer spans.
function timeLabel(t: number, span: Span): string {
  const d = new Date(t);
  if (span.ms <= hour) return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  if (span.ms <= 24 * hour) return d.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

/**
 * The chart's figure: the plot, or what stands in for it (loading, no
 * history, offline, an error). label names the point; online false says
 * that what is shown is as of the last fetch.
 */
export function chartView(c: Chart | undefined, label: string, span: Span, online: boolean, onRetry: () => void): HTMLElement {
  const state = (cls: string, text: string, retry = false) =>
    h("p", { class: `chart-state ${cls}`, "data-testid": "chart-state" }, text, retry ? [" ", h("button", { class: "small", "data-testid": "chart-retry", onclick: onRetry }, "Retry")] : "");
  if (!c) {
    return h("figure", { class: "chart" }, state("muted", online ? "Loading history…" : "History needs the server, and this page is offline: the chart comes back with the link."));
  }
  const notes: HTMLElement[] = [];
  if (c.error !== undefined && c.loaded) notes.push(state(c.retry ? "muted" : "error", `${c.error} Shown: the history as of ${new Date(c.at).toLocaleTimeString()}.`, !c.retry));
  else if (!online && c.loaded) notes.push(state("muted", `Offline: history needs the server. Shown: the history as of ${new Date(c.at).toLocaleTimeString()}.`));
  if (!c.loaded) return h("figure", { class: "chart" }, state(c.retry ? "muted" : "error", c.error ?? "", !c.retry));
  if (c.steps.length === 0) {
    const why = c.known ? `No readings of ${label} in the last ${span.label}.` : "The server holds nothing of this node yet: its points have not reached it.";
    return h("figure", { class: "chart" }, h("p", { class: "chart-state muted", "data-testid": "chart-empty" }, why), notes);
  }
  return h("figure", { class: "chart" }, caption(c, label), plot(c, label, span), notes);
}

function caption(c: Chart, label: string): HTMLElement {
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of c.steps) {
    lo = Math.min(lo, s.min);
    hi = Math.max(hi, s.max);
  }
  const last = c.steps[c.steps.length - 1].last;
  return h(
    "figcaption",
    null,
    h("strong", null, label),
    " · ",
    h("span", { "data-testid": "chart-count", "data-count": c.count }, `${c.count.toLocaleString()} sample${c.count === 1 ? "" : "s"}`),
    ` · min ${formatValue(lo)} · max ${formatValue(hi)} · last ${formatValue(last)}`,
  );
}

function plot(c: Chart, label: string, span: Span): HTMLElement {
  const steps = c.steps;
  const t0 = c.from;
  const t1 = Math.max(c.end, steps[steps.length - 1].start + c.step);
  const X = (t: number) => r1(((t - t0) / (t1 - t0)) * W);
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of steps) {
    lo = Math.min(lo, s.min);
    hi = Math.max(hi, s.max);
  }
  const tk = ticks(lo, hi);
  const ylo = tk.values[tk.values.length - 1];
  const yhi = tk.values[0];
  const Y = (v: number) => r1(H - ((v - ylo) / (yhi - ylo)) * H);
  // Runs of steps drawn as one line: a gap longer than a twelfth of the
  // span (the sensor was silent) breaks it.
  const runs: Step[][] = [];
  for (let i = 0; i < steps.length; i++) {
    if (i === 0 || steps[i].start - steps[i - 1].start > span.ms / 12) runs.push([]);
    runs[runs.length - 1].push(steps[i]);
  }
  const mid = (s: Step) => X(s.start + c.step / 2);
  let band = "";
  let whiskers = "";
  let mean = "";
  let dots = "";
  for (const run of runs) {
    if (run.length > 1) {
      band += `M${run.map((s) => `${mid(s)} ${Y(s.max)}`).join("L")}L${[...run].reverse().map((s) => `${mid(s)} ${Y(s.min)}`).join("L")}Z`;
      mean += `M${run.map((s) => `${mid(s)} ${Y(s.mean)}`).join("L")}`;
    } else if (run[0].min < run[0].max) {
      whiskers += `M${mid(run[0])} ${Y(run[0].max)}V${Y(run[0].min)}`; // a step alone: its range as a bar
    }
    // Few steps, or one alone: a dot each (a zero-length line with round caps).
    if (steps.length <= 120 || run.length === 1) dots += run.map((s) => `M${mid(s)} ${Y(s.mean)}h0`).join("");
  }
  const grid = tk.values.map((v) => svg("line", { class: "grid", x1: 0, x2: W, y1: Y(v), y2: Y(v) }));
  const fmt = (v: number) => v.toLocaleString(undefined, { minimumFractionDigits: tk.decimals, maximumFractionDigits: tk.decimals });
  const tm = t0 + (t1 - t0) / 2;
  return h(
    "div",
    { class: "plot" },
    h("div", { class: "y", "aria-hidden": "true" }, tk.values.map((v) => h("span", null, fmt(v)))),
    svg(
      "svg",
      {
        viewBox: `0 0 ${W} ${H}`,
        preserveAspectRatio: "none",
        role: "img",
        "data-testid": "chart",
        "aria-label": `${label} over the last ${span.label}: ${c.count} samples, from ${formatValue(lo)} to ${formatValue(hi)}`,
      },
      grid,
      band ? svg("path", { class: "band", d: band }) : "",
      whiskers ? svg("path", { class: "whiskers", d: whiskers }) : "",
      mean ? svg("path", { class: "mean", d: mean }) : "",
      dots ? svg("path", { class: "dots", d: dots }) : "",
    ),
    h("div", { class: "x", "aria-hidden": "true" }, h("span", null, timeLabel(t0, span)), h("span", null, timeLabel(tm, span)), h("span", null, timeLabel(t1, span))),
  );
}
