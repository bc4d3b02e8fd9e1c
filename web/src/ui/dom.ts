// A few DOM helpers: the UI builds a region's new elements with h() and
// morphs the live ones into them (morph): elements the two share stay in
// place, so a click, the focus, a half-typed value and the scroll survive a
// live update. No framework: the whole UI is a few hundred lines, and the
// bundle stays small.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, string | number | boolean | null | undefined | ((e: Event) => void)>;

/**
 * Creates element tag with attributes (on* keys become the element's
 * handler properties, so morph can move them; booleans toggle the
 * attribute; null and undefined are skipped) and children (strings become
 * text: never parsed as HTML). A value is the attribute too, so that
 * form.reset() returns to it.
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") (el as unknown as Record<string, unknown>)[k.toLowerCase()] = v;
    else if (v === true) {
      el.setAttribute(k, "");
      if (k === "checked") (el as unknown as HTMLInputElement).checked = true;
    } else {
      el.setAttribute(k, String(v));
      if (k === "value" && "value" in el) (el as HTMLInputElement).value = String(v);
    }
  }
  append(el, children);
  return el;
}

/**
 * Creates SVG element tag (in the SVG namespace, which h() cannot) with
 * attributes (null and undefined skipped) and children. Presentation
 * attributes only: the page's CSP refuses style attributes.
 */
export function svg(tag: string, attrs: Record<string, string | number | null | undefined> | null, ...children: Child[]): SVGElement {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs ?? {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
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

/** The handler properties h() sets, which morph carries over. */
const handlers = ["onclick", "onchange", "onsubmit", "onfocus", "oninput", "onkeydown"] as const;

/**
 * Makes the children of el look like children (usually a fresh h() tree),
 * keeping the live elements where the two agree: same tag and same
 * data-node. Attributes and handlers follow the new tree; a text input's
 * typed value and the focus are left alone (its value attribute, its
 * default, follows), a checkbox's checked state follows.
 */
export function morph(el: Element, ...children: Child[]): void {
  const next = document.createElement(el.tagName);
  append(next, children);
  morphChildren(el, next);
}

function morphChildren(old: Node, neu: Node): void {
  const o = [...old.childNodes];
  const n = [...neu.childNodes];
  for (let i = 0; i < n.length; i++) {
    const a = o[i];
    const b = n[i];
    if (!a) old.appendChild(b);
    else if (!same(a, b)) old.replaceChild(b, a);
    else if (a.nodeType === Node.TEXT_NODE) {
      if (a.nodeValue !== b.nodeValue) a.nodeValue = b.nodeValue;
    } else morphElement(a as Element, b as Element);
  }
  for (let i = o.length - 1; i >= n.length; i--) o[i].remove();
}

function same(a: Node, b: Node): boolean {
  if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
  if (a.nodeType !== Node.ELEMENT_NODE) return true;
  const x = a as Element;
  const y = b as Element;
  return x.getAttribute("data-node") === y.getAttribute("data-node") && x.getAttribute("data-testid") === y.getAttribute("data-testid");
}

function morphElement(a: Element, b: Element): void {
  for (const at of [...a.attributes]) if (!b.hasAttribute(at.name)) a.removeAttribute(at.name);
  for (const at of [...b.attributes]) if (a.getAttribute(at.name) !== at.value) a.setAttribute(at.name, at.value);
  const ah = a as unknown as Record<string, unknown>;
  const bh = b as unknown as Record<string, unknown>;
  for (const k of handlers) if (ah[k] !== bh[k]) ah[k] = bh[k];
  if (a instanceof HTMLInputElement && (a.type === "checkbox" || a.type === "radio")) a.checked = (b as HTMLInputElement).checked;
  if (a instanceof HTMLSelectElement && document.activeElement !== a) {
    morphChildren(a, b);
    a.value = (b as HTMLSelectElement).value;
    return;
  }
  // An input keeps what was typed; a datalist what it was filled with on demand.
  if (a instanceof HTMLInputElement || a instanceof HTMLTextAreaElement || a instanceof HTMLDataListElement) return;
  morphChildren(a, b);
}

/** Replaces el's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/**
 * Coalesces calls to fn: a call while fn runs makes it run once more
 * after; calls before it starts make one run. It starts on the next
 * macrotask (a timer, not requestAnimationFrame, so a tab in the
 * background still follows its data), without a fixed delay: a view
 * follows a change as soon as the change is committed.
 */
export function coalesce(fn: () => void | Promise<void>): () => void {
  let queued = false;
  let running = false;
  let again = false;
  const run = async () => {
    queued = false;
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
    if (running) {
      again = true;
      return;
    }
    if (queued) return;
    queued = true;
    setTimeout(() => void run(), 0);
  };
  return schedule;
}
