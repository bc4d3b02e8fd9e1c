// The web UI: sign-in, the live tree, a node's page, and the status bar.
// Every view reads the browser's own replica (IndexedDB) and every edit
// is a local write to it: the page works the same offline, and the link
// carries the writes up when it can. A view redraws when the store
// changes, in this tab or another.
//
// Routes (location.hash): "#/" the tree, "#/n/<node>" a node's page.

import { parseID, randomID } from "../crdt/ids.ts";
import { physicalOf } from "../crdt/hlc.ts";
import { placeOf } from "../crdt/placement.ts";
import { TypeEdge, TypeNodeType, type Point } from "../crdt/point.ts";
import { EdgeMoved } from "../crdt/tree.ts";
import type { ChildView, NodeView } from "../store/index.ts";
import { decodeMessage, encodeMessage } from "../wire/messages.ts";
import { chartView, defaultSpan, HistoryCharts, spans, type Span } from "./chart.ts";
import { coalesce, fill, h, morph } from "./dom.ts";
import { forgetSession, loadSession, saveSession, signIn, SignInError } from "./login.ts";
import { databaseName, openReplica, type Replica, type Session } from "./replica.ts";

const TypeDescription = "description";
const TypeRole = "role";
/** Points that have no history (credentials and roles) or no numbers (text). */
const uncharted = new Set([TypeNodeType, TypeDescription, TypeRole, "authKey", "password", "email"]);
/** A node page lists at most this many children, the tree as many per node. */
const maxListed = 500;

/** What the page shows of a node: its type and description. */
interface Label {
  nodeType: string;
  description: string;
}

function labelOf(points: Point[]): Label {
  const text = (t: string) => points.find((p) => p.type === t && p.key === "0" && !p.tombstone)?.text ?? "";
  return { nodeType: text(TypeNodeType), description: text(TypeDescription) };
}

function shortID(id: string): string {
  return id.slice(0, 8);
}

function when(t: bigint): string {
  return t === 0n ? "" : new Date(physicalOf(t)).toLocaleString();
}

/** Whether a point's history can be charted: a live number that is not a credential. */
function charted(p: Point): boolean {
  return !p.tombstone && p.text === "" && !uncharted.has(p.type) && Number.isFinite(p.value);
}

function pointName(p: Point): string {
  return p.key === "0" ? p.type : `${p.type}.${p.key}`;
}

function livePoint(node: string, type: string, key: string, value: number, text: string): Point {
  return { node, parent: "", type, key, value, text, tombstone: false, time: 0n, origin: "" };
}

/** The application: one per page. */
export class App {
  private replica: Replica | undefined;
  private readonly expanded: Set<string>;
  private showGone = false;
  private editing: string | undefined; // "type\0key" of the point being edited
  private notice = "";
  private focusEdit = false;
  private charts: HistoryCharts | undefined;
  private readonly charting = new Map<string, string>(); // node → "type\0key" of the point its page charts
  private span: Span = defaultSpan;
  private wasOnline = false;
  private readonly main: HTMLElement;
  private readonly bar: HTMLElement;
  private readonly who: HTMLElement;
  private readonly redraw = coalesce(() => this.render());
  private readonly redrawBar = coalesce(() => this.renderBar());

  constructor(
    root: HTMLElement,
    private readonly wsURL: string,
  ) {
    this.expanded = new Set(JSON.parse(sessionStorage.getItem("siot.expanded") ?? "[]") as string[]);
    this.who = h("span", { class: "who", "data-testid": "who" });
    this.main = h("main", { id: "view", "data-testid": "view" });
    this.bar = h("footer", { class: "status", "data-testid": "status" });
    fill(
      root,
      h("header", null, h("a", { class: "brand", href: "#/" }, "siot"), this.who),
      this.main,
      this.bar,
    );
    addEventListener("hashchange", () => {
      this.editing = undefined;
      this.notice = "";
      this.redraw();
    });
    // Another tab signed out (or in as someone else): follow it.
    addEventListener("storage", (e) => {
      if (e.key === "siot.session" && loadSession()?.token !== this.replica?.session.token) location.reload();
    });
  }

  /** Opens the replica of the saved session, or shows the sign-in form. */
  async boot(): Promise<void> {
    const s = loadSession();
    if (!s) return this.renderSignIn("");
    await this.open(s);
  }

  private async open(s: Session): Promise<void> {
    const r = await openReplica(s, this.wsURL);
    this.replica = r;
    this.charts = new HistoryCharts(
      async (req) => decodeMessage(await r.request("api.history", encodeMessage("history-request", req)), "history-page"),
      () => this.redraw(),
      () => r.clock.physical(),
    );
    this.wasOnline = false;
    r.onChange(() => this.redraw());
    r.onStatus(() => {
      this.redrawBar();
      const st = r.status();
      // Signed out by the server, or online again (a chart fetches) or offline (it says so).
      if ((st.state === "offline" && st.auth) || (st.state !== "offline") !== this.wasOnline) this.redraw();
      this.wasOnline = st.state !== "offline";
    });
    if (s.exp > Date.now()) this.replica.start();
    this.renderWho();
    this.renderBar();
    this.redraw();
  }

  // ----- sign-in and sign-out -----

  private renderSignIn(why: string, email = ""): void {
    const err = h("p", { class: "error", role: "alert", "data-testid": "signin-error" }, why);
    const emailIn = h("input", { type: "email", name: "email", autocomplete: "username", required: true, value: email, "data-testid": "email" });
    const pwIn = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true, "data-testid": "password" });
    const button = h("button", { type: "submit", "data-testid": "signin" }, "Sign in");
    const form = h(
      "form",
      {
        class: "signin",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          button.disabled = true;
          fill(err, "Signing in…");
          try {
            const s = await signIn(this.wsURL, emailIn.value, pwIn.value);
            pwIn.value = "";
            const old = this.replica;
            if (old) {
              this.replica = undefined;
              await old.close();
            }
            saveSession(s);
            await this.open(s);
          } catch (e) {
            fill(err, e instanceof SignInError ? e.message : String(e));
            button.disabled = false;
          }
        },
      },
      h("h1", null, "Sign in"),
      h("label", null, "Email ", emailIn),
      h("label", null, "Password ", pwIn),
      button,
      err,
    );
    fill(this.main, form);
    this.renderWho();
  }

  private async signOut(): Promise<void> {
    const r = this.replica;
    if (!r) return;
    const n = await r.unsynced().catch(() => 0);
    if (n > 0 && !confirm(`${n} change${n === 1 ? "" : "s"} made here have not reached the server yet. Sign out and discard them?`)) return;
    this.replica = undefined;
    await r.close();
    forgetSession();
    // The replica's data leaves the device with its user.
    await new Promise<void>((res) => {
      const d = indexedDB.deleteDatabase(databaseName(r.session.user));
      d.onsuccess = d.onerror = d.onblocked = () => res();
    });
    location.hash = "#/";
    this.renderSignIn("Signed out.");
    this.renderBar();
  }

  private renderWho(): void {
    const s = this.replica?.session;
    if (!s) return fill(this.who);
    fill(
      this.who,
      h("span", { "data-testid": "who-email" }, s.email || shortID(s.user)),
      " ",
      h("button", { class: "link", "data-testid": "signout", onclick: () => void this.signOut() }, "Sign out"),
    );
  }

  private renderBar(): void {
    const r = this.replica;
    if (!r) return fill(this.bar, h("span", { class: "dot offline" }), "signed out");
    const st = r.status();
    const parts: (Node | string)[] = [];
    switch (st.state) {
      case "online":
        parts.push(
          h("span", { class: "dot online" }),
          h("span", { "data-testid": "link-state" }, "online"),
          st.inSync ? h("span", { class: "why", "data-testid": "in-sync", title: "the last digest comparison with the server found your replica equal" }, " · in sync") : "",
        );
        break;
      case "syncing":
        parts.push(h("span", { class: "dot syncing" }), h("span", { "data-testid": "link-state" }, `syncing ${st.pending} change${st.pending === 1 ? "" : "s"}`));
        break;
      case "offline":
        parts.push(
          h("span", { class: "dot offline" }),
          h("span", { "data-testid": "link-state" }, st.auth ? "signed out by the server" : "offline"),
          st.error && st.error !== "connecting" ? h("span", { class: "why", title: st.error }, ` — ${st.error}`) : "",
        );
        break;
    }
    if (!r.leads && st.state !== "offline") parts.push(h("span", { class: "why" }, " (via another tab)"));
    const ref = r.refusal();
    if (ref) parts.push(h("span", { class: "refused", "data-testid": "refused" }, ` · the server refused ${ref.count} change${ref.count === 1 ? "" : "s"}: ${ref.reason}`));
    fill(this.bar, ...parts);
  }

  // ----- views -----

  private async render(): Promise<void> {
    const r = this.replica;
    if (!r) return;
    const st = r.status();
    if (r.session.exp <= Date.now() || (st.state === "offline" && st.auth)) {
      const n = await r.unsynced().catch(() => 0);
      return this.renderSignIn(
        `Your session has ended. Sign in again to sync${n > 0 ? `: your ${n} change${n === 1 ? "" : "s"} made here are kept` : ""}.`,
        r.session.email,
      );
    }
    const m = /^#\/n\/([0-9a-f-]{36})$/.exec(location.hash);
    const view = m ? await this.nodePage(r, m[1]) : await this.treePage(r);
    morph(this.main, view);
  }

  /** The scope's roots: the parents of the user's node. */
  private roots(r: Replica): string[] {
    return r.store.liveParents(r.session.user).sort();
  }

  /** The nodes under which the user may change the tree (role admin on its edge). */
  private async adminRoots(r: Replica): Promise<Set<string>> {
    const v = await r.store.get(r.session.user);
    const out = new Set<string>();
    for (const p of v.parents) {
      if (p.active && p.points.some((q) => q.type === TypeRole && q.text === "admin" && !q.tombstone)) out.add(p.parent);
    }
    return out;
  }

  /** Whether node is at or below one of admins over live edges. */
  private administers(r: Replica, admins: Set<string>, node: string): boolean {
    const seen = new Set<string>();
    const todo = [node];
    while (todo.length > 0) {
      const n = todo.pop()!;
      if (admins.has(n)) return true;
      if (seen.has(n)) continue;
      seen.add(n);
      todo.push(...r.store.liveParents(n));
    }
    return false;
  }

  private async treePage(r: Replica): Promise<HTMLElement> {
    const roots = this.roots(r);
    const toggleGone = h("label", { class: "gone-toggle" }, h("input", {
      type: "checkbox",
      "data-testid": "show-deleted",
      checked: this.showGone,
      onchange: (e: Event) => {
        this.showGone = (e.target as HTMLInputElement).checked;
        this.redraw();
      },
    }), " show deleted");
    if (roots.length === 0) {
      const seq = await r.store.lastSeq();
      return h("section", null, h("h1", null, "Tree"), h("p", { class: "muted", "data-testid": "empty" }, seq === 0 ? "Waiting for the server to send your tree…" : "You are not placed under any node: nothing to show."));
    }
    // The scope's roots start open, once per tab: the person sees what
    // they came for, and what they collapse stays collapsed.
    if (sessionStorage.getItem("siot.expanded") === null) {
      for (const id of roots) this.expanded.add(id);
      sessionStorage.setItem("siot.expanded", JSON.stringify([...this.expanded]));
    }
    const counts = r.store.childCounts();
    // Read only what the view needs: while a first sync writes, every
    // read waits for a write to finish.
    const admins = this.showGone ? await this.adminRoots(r) : new Set<string>();
    const items = await Promise.all(
      roots.map(async (id) =>
        this.treeItem(r, counts, admins, { id, active: true, ...(r.store.label(id) ?? labelOf((await r.store.get(id)).points)) }, "", new Set()),
      ),
    );
    return h("section", null, h("div", { class: "bar" }, h("h1", null, "Tree"), toggleGone), h("ul", { class: "tree", role: "tree", "data-testid": "tree" }, items));
  }

  private async treeItem(
    r: Replica,
    counts: ReadonlyMap<string, { live: number; gone: number }>,
    admins: Set<string>,
    c: ChildView,
    parent: string,
    path: Set<string>,
  ): Promise<HTMLElement> {
    const n = counts.get(c.id) ?? { live: 0, gone: 0 };
    const hasKids = n.live > 0 || (this.showGone && n.gone > 0);
    const open = hasKids && this.expanded.has(c.id) && !path.has(c.id);
    const li = h(
      "li",
      { role: "treeitem", "data-node": c.id, class: c.active ? "" : "gone", "aria-expanded": hasKids ? String(open) : null },
      h(
        "div",
        { class: "row" },
        h(
          "button",
          {
            class: "toggle",
            "aria-label": open ? "collapse" : "expand",
            disabled: !hasKids,
            onclick: () => {
              if (this.expanded.has(c.id)) this.expanded.delete(c.id);
              else this.expanded.add(c.id);
              sessionStorage.setItem("siot.expanded", JSON.stringify([...this.expanded]));
              this.redraw();
            },
          },
          hasKids ? (open ? "▾" : "▸") : "·",
        ),
        h("a", { href: `#/n/${c.id}`, class: "label" }, c.nodeType ? h("span", { class: "type" }, c.nodeType) : "", " ", c.description || h("span", { class: "muted" }, shortID(c.id))),
        h("span", { class: "count", title: "children", "data-testid": "count" }, n.live > 0 ? String(n.live) : ""),
        !c.active && parent !== "" && this.administers(r, admins, parent) ? this.restoreButton(r, c.id, parent) : "",
      ),
    );
    if (open) {
      const kids = (await r.store.children(c.id)).filter((k) => k.active || this.showGone).sort(byLabel);
      const next = new Set(path).add(c.id);
      const shown = await Promise.all(kids.slice(0, maxListed).map((k) => this.treeItem(r, counts, admins, k, c.id, next)));
      li.append(
        h(
          "ul",
          { role: "group" },
          shown,
          kids.length > maxListed ? h("li", { class: "muted" }, h("a", { href: `#/n/${c.id}` }, `${kids.length - maxListed} more…`)) : "",
        ),
      );
    }
    return li;
  }

  private restoreButton(r: Replica, child: string, parent: string): HTMLElement {
    return h("button", {
      class: "small",
      "data-testid": "restore",
      onclick: () => void this.act(() => r.write([{ node: child, parent, type: TypeEdge, key: "0", value: 0, text: "", tombstone: false, time: 0n, origin: "" }])),
    }, "Restore");
  }

  /** Runs a write, showing its failure. */
  private async act(fn: () => Promise<void>): Promise<void> {
    try {
      this.notice = "";
      await fn();
      for (const f of this.main.querySelectorAll("form")) f.reset();
    } catch (e) {
      this.notice = e instanceof Error ? e.message : String(e);
    }
    this.editing = undefined;
    (document.activeElement as HTMLElement | null)?.blur?.();
    this.redraw();
  }

  private async nodePage(r: Replica, id: string): Promise<HTMLElement> {
    const v = await r.store.get(id);
    const label = labelOf(v.points);
    const admins = await this.adminRoots(r);
    const mayAdmin = this.administers(r, admins, id);
    const inScope = this.administers(r, new Set(this.roots(r)), id);
    const counts = r.store.childCounts();
    const kids = (await r.store.children(id)).filter((k) => k.active || this.showGone).sort(byLabel);
    const live = v.parents.filter((p) => p.active);
    const parents = await Promise.all(v.parents.map(async (p) => ({ ...p, label: labelOf((await r.store.get(p.parent)).points) })));
    return h(
      "section",
      { class: "node", "data-testid": "node", "data-node": id },
      h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "Tree"), ...live.map((p) => [" › ", h("a", { href: `#/n/${p.parent}` }, labelText(parents.find((q) => q.parent === p.parent)!.label, p.parent))])),
      h("h1", null, label.nodeType ? h("span", { class: "type" }, label.nodeType) : "", " ", label.description || shortID(id)),
      h("p", { class: "muted id" }, id, !inScope ? " · outside your tree (deleted or moved away)" : ""),
      this.notice ? h("p", { class: "error", role: "alert", "data-testid": "notice" }, this.notice) : "",
      this.pointsTable(r, id, v, inScope),
      this.historySection(r, id, v),
      h("h2", null, `Children (${counts.get(id)?.live ?? 0})`),
      h(
        "ul",
        { class: "children", "data-testid": "children" },
        kids.slice(0, maxListed).map((k) =>
          h(
            "li",
            { "data-node": k.id, class: k.active ? "" : "gone" },
            h("a", { href: `#/n/${k.id}` }, k.nodeType ? h("span", { class: "type" }, k.nodeType) : "", " ", k.description || shortID(k.id)),
            h("span", { class: "count" }, String(counts.get(k.id)?.live || "")),
            !k.active && mayAdmin ? this.restoreButton(r, k.id, id) : "",
          ),
        ),
        kids.length > maxListed ? h("li", { class: "muted" }, `and ${kids.length - maxListed} more`) : "",
      ),
      h("label", { class: "gone-toggle" }, h("input", { type: "checkbox", checked: this.showGone, "data-testid": "show-deleted", onchange: (e: Event) => ((this.showGone = (e.target as HTMLInputElement).checked), this.redraw()) }), " show deleted"),
      mayAdmin ? this.structureForms(r, id, v) : h("p", { class: "muted" }, "You may edit this node's points; changing the tree here needs the admin role."),
    );
  }

  private pointsTable(r: Replica, id: string, v: NodeView, inScope: boolean): HTMLElement {
    const rows = v.points
      .filter((p) => !p.tombstone)
      .sort((a, b) => (a.type === b.type ? (a.key < b.key ? -1 : 1) : a.type < b.type ? -1 : 1))
      .map((p) => {
        const k = `${p.type}\0${p.key}`;
        const isText = p.text !== "" || p.type === TypeNodeType || p.type === TypeDescription;
        const shown = isText ? p.text : String(p.value);
        if (this.editing === k) {
          const input = h("input", { value: shown, "data-testid": "edit-input", "aria-label": `${p.type} ${p.key}`, type: isText ? "text" : "number", step: "any" });
          const save = async () => {
            if (isText) return r.write([livePoint(id, p.type, p.key, p.value, this.field("edit-input"))]);
            const n = Number(this.field("edit-input"));
            if (this.field("edit-input").trim() === "" || !Number.isFinite(n)) throw new Error(`${JSON.stringify(this.field("edit-input"))} is not a number`);
            return r.write([livePoint(id, p.type, p.key, n, p.text)]);
          };
          if (this.focusEdit) {
            this.focusEdit = false;
            queueMicrotask(() => this.main.querySelector<HTMLInputElement>("[data-testid=edit-input]")?.focus());
          }
          return h(
            "tr",
            { "data-type": p.type, "data-key": p.key },
            h("td", null, p.type),
            h("td", null, p.key),
            h(
              "td",
              { colspan: 3 },
              h(
                "form",
                { class: "inline", onsubmit: (e: Event) => (e.preventDefault(), void this.act(save)) },
                input,
                h("button", { type: "submit", "data-testid": "save" }, "Save"),
                h("button", { type: "button", onclick: () => ((this.editing = undefined), this.redraw()) }, "Cancel"),
              ),
            ),
          );
        }
        return h(
          "tr",
          { "data-type": p.type, "data-key": p.key },
          h("td", null, p.type),
          h("td", { class: "muted" }, p.key === "0" ? "" : p.key),
          h("td", { class: isText ? "text" : "num", "data-testid": "value" }, shown),
          h("td", { class: "muted when" }, when(p.time)),
          h(
            "td",
            null,
            inScope
              ? h("button", { class: "small", "data-testid": "edit", onclick: () => ((this.editing = k), (this.notice = ""), (this.focusEdit = true), this.redraw()) }, "Edit")
              : "",
          ),
        );
      });
    const type = h("input", { placeholder: "type", required: true, "data-testid": "new-type", maxlength: 64 });
    const key = h("input", { placeholder: "key", value: "0", "data-testid": "new-key", maxlength: 128, size: 4 });
    const val = h("input", { placeholder: "value or text", "data-testid": "new-value" });
    const add = async () => {
      const s = this.field("new-value");
      const n = Number(s);
      const numeric = s.trim() !== "" && Number.isFinite(n);
      await r.write([livePoint(id, this.field("new-type").trim(), this.field("new-key").trim() || "0", numeric ? n : 0, numeric ? "" : s)]);
    };
    return h(
      "div",
      { class: "points" },
      h("table", { "data-testid": "points" }, h("thead", null, h("tr", null, h("th", null, "type"), h("th", null, "key"), h("th", null, "value"), h("th", null, "updated"), h("th", null, ""))), h("tbody", null, rows)),
      inScope
        ? h("form", { class: "inline add-point", onsubmit: (e: Event) => (e.preventDefault(), void this.act(add)) }, type, key, val, h("button", { type: "submit", "data-testid": "add-point" }, "Set"))
        : "",
    );
  }

  /**
   * The history of one of the node's numeric points: a chip per point to
   * choose it (the one written last when the page opens), a span, and
   * the chart, fetched from the server. Always present (empty without a
   * numeric point), so that morph finds the elements after it in place.
   */
  private historySection(r: Replica, id: string, v: NodeView): HTMLElement {
    const pts = v.points.filter(charted).sort((a, b) => (a.type === b.type ? (a.key < b.key ? -1 : 1) : a.type < b.type ? -1 : 1));
    const reg = (p: Point) => `${p.type}\0${p.key}`;
    let p = pts.find((q) => reg(q) === this.charting.get(id));
    if (!p && pts.length > 0) {
      p = pts.reduce((a, b) => (b.time > a.time ? b : a));
      this.charting.set(id, reg(p));
    }
    if (!p || !this.charts) return h("section", { class: "history", "data-testid": "history", hidden: true });
    const sel = p;
    const online = r.status().state !== "offline";
    const c = this.charts.get(id, sel.type, sel.key, this.span, sel.time, online);
    return h(
      "section",
      { class: "history", "data-testid": "history" },
      h("h2", null, "History"),
      h(
        "div",
        { class: "chart-controls" },
        h(
          "div",
          { class: "chips", role: "group", "aria-label": "point" },
          pts.map((q) =>
            h("button", { class: "chip", "data-testid": "chart-point", "data-type": q.type, "data-key": q.key, "aria-pressed": String(q === sel), onclick: () => (this.charting.set(id, reg(q)), this.redraw()) }, pointName(q)),
          ),
        ),
        h(
          "div",
          { class: "chips", role: "group", "aria-label": "span" },
          spans.map((s) => h("button", { class: "chip", "data-testid": `span-${s.id}`, "aria-pressed": String(s === this.span), onclick: () => ((this.span = s), this.redraw()) }, s.label)),
        ),
      ),
      chartView(c, pointName(sel), this.span, online, () => (this.charts?.retry(id, sel.type, sel.key, this.span), this.redraw())),
    );
  }

  private structureForms(r: Replica, id: string, v: NodeView): HTMLElement {
    const live = v.parents.filter((p) => p.active);
    const isRoot = this.roots(r).includes(id);
    const ctype = h("input", { placeholder: "type", required: true, "data-testid": "child-type", maxlength: 64 });
    const cdesc = h("input", { placeholder: "description", "data-testid": "child-description" });
    const addChild = async () => {
      const cid = randomID();
      const pts: Point[] = [
        { node: cid, parent: id, type: TypeEdge, key: "0", value: 0, text: "", tombstone: false, time: 0n, origin: "" },
        livePoint(cid, TypeNodeType, "0", 0, this.field("child-type").trim()),
      ];
      if (this.field("child-description").trim()) pts.push(livePoint(cid, TypeDescription, "0", 0, this.field("child-description").trim()));
      await r.write(pts, true);
    };
    const from = h("select", { "data-testid": "from" }, live.map((p) => h("option", { value: p.parent }, shortID(p.parent))));
    const list = h("datalist", { id: "siot-move-targets" });
    const to = h("input", {
      placeholder: "new parent: type to search, or its ID",
      "data-testid": "move-to",
      list: "siot-move-targets",
      size: 36,
      onfocus: () => void this.moveTargets(r, id).then((opts) => fill(this.main.querySelector("#siot-move-targets") ?? list, opts.map(([label, nid]) => h("option", { value: `${label} · ${nid}` })))),
    });
    const move = async () => {
      const typed = /[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/.exec(this.field("move-to"));
      const target = parseID(typed ? typed[0] : this.field("move-to").trim());
      const old = this.field("from", live[0]?.parent ?? "");
      if (target === id) throw new Error("A node cannot be its own parent.");
      if (target === old) throw new Error("It is under that node already.");
      if (this.below(r, target, id)) throw new Error("The new parent is below this node: the move would make a cycle.");
      const edge = live.find((p) => p.parent === old)?.points.find((q) => q.type === TypeEdge);
      if (!edge) throw new Error("It has no live parent to move from.");
      const place = placeOf(edge);
      await r.write(
        [
          { node: id, parent: target, type: TypeEdge, key: "0", value: EdgeMoved, text: place, tombstone: false, time: 0n, origin: "" },
          { node: id, parent: old, type: TypeEdge, key: "0", value: EdgeMoved, text: place, tombstone: true, time: 0n, origin: "" },
        ],
        true,
      );
    };
    const del = async () => {
      const old = this.field("from", live[0]?.parent ?? "");
      const edge = live.find((p) => p.parent === old)?.points.find((q) => q.type === TypeEdge);
      if (!edge) throw new Error("It has no live parent to delete it from.");
      await r.write([{ node: id, parent: old, type: TypeEdge, key: "0", value: 0, text: placeOf(edge), tombstone: true, time: 0n, origin: "" }]);
    };
    return h(
      "div",
      { class: "structure" },
      h("h2", null, "Add a child"),
      h("form", { class: "inline", onsubmit: (e: Event) => (e.preventDefault(), void this.act(addChild)) }, ctype, cdesc, h("button", { type: "submit", "data-testid": "add-child" }, "Add")),
      live.length > 0 && !isRoot
        ? [
            h("h2", null, "Move or delete"),
            h(
              "form",
              { class: "inline", onsubmit: (e: Event) => (e.preventDefault(), void this.act(move)) },
              live.length > 1 ? ["from ", from, " "] : "",
              to,
              list,
              h("button", { type: "submit", "data-testid": "move" }, "Move"),
            ),
            h("button", { class: "danger", "data-testid": "delete", onclick: () => void this.act(del) }, live.length > 1 ? "Delete from the parent chosen" : "Delete"),
          ]
        : "",
    );
  }

  /**
   * Where node may move: the live nodes the user administers, but node
   * and what is below it, as [label, id], breadth first from the admin
   * roots, at most 2,000 (the list a person can scroll; an ID typed in
   * reaches the others).
   */
  private async moveTargets(r: Replica, node: string): Promise<[string, string][]> {
    const out: [string, string][] = [];
    const seen = new Set<string>([node]);
    let level = [...(await this.adminRoots(r))].filter((n) => !seen.has(n));
    for (const n of level) seen.add(n);
    while (level.length > 0 && out.length < 2000) {
      const next: string[] = [];
      for (const n of level) {
        if (out.length >= 2000) break;
        out.push([labelText(r.store.label(n) ?? labelOf((await r.store.get(n)).points), n), n]);
        for (const c of await r.store.children(n)) {
          if (c.active && !seen.has(c.id)) {
            seen.add(c.id);
            next.push(c.id);
          }
        }
      }
      level = next;
    }
    return out;
  }

  /**
   * The value of the live field with data-testid tid (or dflt when it is
   * not on the page). Handlers read fields so, never through the elements
   * they were built with: morph keeps the live ones.
   */
  private field(tid: string, dflt = ""): string {
    return this.main.querySelector<HTMLInputElement | HTMLSelectElement>(`[data-testid="${tid}"]`)?.value ?? dflt;
  }

  /** Whether node is below anc over live edges (or is it). */
  private below(r: Replica, node: string, anc: string): boolean {
    return this.administers(r, new Set([anc]), node);
  }
}

function labelText(l: Label, id: string): string {
  return l.description || l.nodeType || shortID(id);
}

function byLabel(a: ChildView, b: ChildView): number {
  if (a.active !== b.active) return a.active ? -1 : 1;
  const x = (a.description || a.nodeType).toLowerCase();
  const y = (b.description || b.nodeType).toLowerCase();
  return x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : 1;
}
