// A few DOM helpers: the UI builds its elements with h() and replaces a
// region's children whole when its data changed. No framework: the whole
// UI is a few hundred lines, and the bundle stays small.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | ((e: Event) => void)>;

/**
 * Creates element tag with attributes (on* keys become listeners,
 * booleans toggle the attribute, null and undefined are skipped) and
 * children (strings become text: never parsed as HTML).
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (v === true) el.setAttribute(k, "");
    else if (k === "value" && "value" in el) (el as HTMLInputElement).value = String(v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

/** Replaces el's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/**
 * Coalesces calls to fn: one run at most every 16 ms, never two at once.
 * A timer, not requestAnimationFrame, so a tab in the background still
 * follows its data.
 */
export function coalesce(fn: () => void | Promise<void>): () => void {
  let queued = false;
  let running = false;
  let again = false;
  const run = async () => {
    queued = false;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await fn();
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (queued) return;
    queued = true;
    setTimeout(() => void run(), 16);
  };
  return schedule;
}
