// dom.js — small DOM helpers shared by the page's modules. Text from the network only ever goes
// in through `textContent`, `setAttribute` or `new Option()`; nothing here parses HTML.

/**
 * Creates an element. `attrs` are set with setAttribute, except `text` (textContent) and
 * `class`; undefined/null/false attributes are left out. Children are nodes or strings (appended
 * as text); null children are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const pad = (n, width = 2) => String(n).padStart(width, '0');

/** `HH:MM:SS.mmm` local time. */
export function clockTime(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** `HH:MM:SS` local time. */
export function shortTime(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A coarse age: `42s`, `3m 5s`, `2h 10m`, `1d 4h`. */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** A call timer: `0:07`, `12:34`, `1:02:03`. */
export function timer(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/**
 * An element whose text is a live timer counting from `startedAt` (a `Date.now()` time);
 * `tickAll` refreshes every such element once a second.
 */
export function ticker(tag, startedAt, attrs = {}) {
  const node = el(tag, { ...attrs, 'data-tick': Math.round(startedAt) });
  node.textContent = timer(Date.now() - startedAt);
  return node;
}

export function tickAll(root = document) {
  const now = Date.now();
  for (const node of root.querySelectorAll('[data-tick]')) {
    const text = timer(now - Number(node.dataset.tick));
    if (node.textContent !== text) node.textContent = text;
  }
}

const signatures = new WeakMap();

/**
 * Makes `container`'s children the rows for `items`, in order, reusing a row whose item has the
 * same key and signature (so unchanged rows keep their state, focus and live timers) and
 * building the others with `build(item)`.
 */
export function reconcile(container, items, keyOf, signatureOf, build) {
  const existing = new Map();
  for (const child of container.children) {
    const sig = signatures.get(child);
    if (sig) existing.set(sig.key, { node: child, signature: sig.signature });
  }
  const nodes = [];
  for (const item of items) {
    const key = keyOf(item);
    const signature = signatureOf(item);
    const old = existing.get(key);
    if (old && old.signature === signature) {
      nodes.push(old.node);
      existing.delete(key);
      continue;
    }
    const node = build(item);
    signatures.set(node, { key, signature });
    nodes.push(node);
  }
  const same = nodes.length === container.childElementCount
    && nodes.every((node, i) => container.children[i] === node);
  if (!same) container.replaceChildren(...nodes);
}
