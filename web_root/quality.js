// quality.js — call quality and endpoint health on the dashboard: keeps the selected server's
// `GET /api/v1/servers/{id}/quality` summary current, and builds the quality figures of a call
// row and the endpoint panel (a small loss/jitter chart and the recent changes).
//
// The page computes no quality itself: amihub's state (src/state/quality.rs) is the one place
// the formulas live, and this module only asks for its summary — after RTCP or endpoint-health
// events of the selected server (debounced, at most one request in flight, at least
// MIN_GAP_MS apart) and every REFRESH_MS while the page shows a server. Colours follow the
// thresholds amihub sends with every summary (`[quality]` in its config).
//
// Knows nothing about the WebSocket; all text from the network goes in with textContent.

import { el } from './dom.js';

/** Events after which the summary is asked for again. */
const QUALITY_EVENTS = new Set(['RTCPSent', 'RTCPReceived', 'ContactStatus', 'PeerStatus',
  'Registry', 'Hangup']);
/** Delay from a triggering event to the request, so a burst of reports costs one. */
const DEBOUNCE_MS = 150;
/** Least gap between two requests. */
const MIN_GAP_MS = 500;
/** Refresh while nothing triggers one (endpoint windows age). */
const REFRESH_MS = 10000;
/** Calls asked for: every call of a busy PBX. */
const CALL_ROWS = 1000;
/** Changes listed in the endpoint panel, newest first. */
const PANEL_CHANGES = 8;

const SVG = 'http://www.w3.org/2000/svg';

const fmt = (v, digits) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–');

/** Grade of one figure against the thresholds: 'good', 'warn' or 'bad' ('' when unknown). */
export function gradeOf(kind, value, th) {
  if (!th || typeof value !== 'number' || !Number.isFinite(value)) return '';
  if (kind === 'mos') {
    if (value < th.mos_bad) return 'bad';
    return value < th.mos_warn ? 'warn' : 'good';
  }
  const [warn, bad] = {
    loss: [th.loss_warn_pct, th.loss_bad_pct],
    jitter: [th.jitter_warn_ms, th.jitter_bad_ms],
    rtt: [th.rtt_warn_ms, th.rtt_bad_ms],
  }[kind] || [];
  if (value >= bad) return 'bad';
  return value >= warn ? 'warn' : 'good';
}

/**
 * The quality feed of one page: `select(serverId)`, `event(serverId, name)`, `chooseEndpoint()`,
 * and `onChange()` called after every new summary.
 */
export function createQualityFeed({ fetchJson, onChange }) {
  const feed = {
    serverId: null,
    summary: null, // the last summary of serverId
    endpoint: null, // endpoint chosen for the panel (null: the worst one)
    error: '',
    inFlight: false,
    again: false,
    lastAt: 0,
    timer: null,
  };

  function schedule(delay) {
    if (feed.serverId === null) return;
    if (feed.inFlight) {
      feed.again = true;
      return;
    }
    if (feed.timer !== null) return;
    const wait = Math.max(delay, feed.lastAt + MIN_GAP_MS - Date.now());
    feed.timer = setTimeout(load, wait);
  }

  async function load() {
    feed.timer = null;
    const id = feed.serverId;
    if (id === null) return;
    feed.inFlight = true;
    feed.again = false;
    feed.lastAt = Date.now();
    const params = new URLSearchParams({ limit: String(CALL_ROWS) });
    if (feed.endpoint) params.set('endpoint', feed.endpoint);
    try {
      const body = await fetchJson(`api/v1/servers/${encodeURIComponent(id)}/quality?${params}`);
      if (feed.serverId === id) {
        feed.summary = body;
        feed.error = '';
      }
    } catch (err) {
      if (feed.serverId === id) feed.error = err.message;
    } finally {
      feed.inFlight = false;
    }
    onChange();
    if (feed.again) schedule(0);
  }

  setInterval(() => schedule(0), REFRESH_MS);

  return {
    /** The page now shows `serverId`: forget the other's summary and ask for this one's. */
    select(serverId) {
      if (serverId === feed.serverId) return;
      feed.serverId = serverId;
      feed.summary = null;
      feed.endpoint = null;
      clearTimeout(feed.timer);
      feed.timer = null;
      schedule(0);
    },
    /** A live event of `serverId` named `name`. */
    event(serverId, name) {
      if (serverId === feed.serverId && QUALITY_EVENTS.has(name)) schedule(DEBOUNCE_MS);
    },
    /** Shows `name` in the endpoint panel (null: the worst endpoint). */
    chooseEndpoint(name) {
      feed.endpoint = name;
      clearTimeout(feed.timer);
      feed.timer = null;
      feed.lastAt = 0;
      schedule(0);
      onChange();
    },
    get summary() { return feed.summary; },
    get endpoint() { return feed.endpoint; },
    get error() { return feed.error; },
  };
}

/** Channel name -> the summary's call entry (grade, worst, inbound, outbound). */
export function callQualityIndex(summary) {
  const index = new Map();
  for (const c of (summary && Array.isArray(summary.calls) ? summary.calls : [])) {
    if (c && typeof c.channel === 'string') index.set(c.channel, c);
  }
  return index;
}

const GRADE_RANK = { good: 0, warn: 1, bad: 2 };

/** The worst quality entry among a call's channels, or null. */
export function worstOf(channels, index) {
  let worst = null;
  for (const ch of channels) {
    const q = index.get(ch.channel);
    if (!q || !q.worst) continue;
    if (!worst || (GRADE_RANK[q.grade] ?? 0) > (GRADE_RANK[worst.grade] ?? 0)
      || ((q.grade === worst.grade) && q.worst.mos < worst.worst.mos)) worst = q;
  }
  return worst;
}

/** Signature part of a call's quality, for row reuse. */
export function qualitySignature(q) {
  if (!q) return null;
  const w = q.worst;
  return [q.grade, w.loss_pct, w.jitter_ms, w.rtt_ms, w.mos];
}

/** `loss 0.0 % · jitter 2 ms · RTT 40 ms · MOS 4.4`, each coloured by its grade. */
export function buildCallQuality(q, th) {
  if (!q) return el('span', { class: 'call-quality muted', 'data-testid': 'call-quality', 'data-grade': 'none', text: 'no RTCP yet' });
  const w = q.worst;
  const part = (kind, label, text, value) => el('span', {
    class: `qf q-${gradeOf(kind, value, th) || 'none'}`,
    'data-testid': `q-${kind}`,
    title: label,
    text,
  });
  const dir = w.direction === 'outbound' ? 'media sent (far end\'s report)' : 'media received (our report)';
  return el('span', {
    class: `call-quality q-row-${q.grade}`,
    'data-testid': 'call-quality',
    'data-grade': q.grade,
    'data-endpoint': q.endpoint,
    title: `Worst direction: ${dir}; channel ${q.channel}`,
  },
  el('span', { class: `badge q-badge q-${q.grade}`, 'data-testid': 'quality-grade', text: q.grade }),
  part('loss', 'Packet loss', `loss ${fmt(w.loss_pct, 1)} %`, w.loss_pct),
  part('jitter', 'Interarrival jitter', `jitter ${fmt(w.jitter_ms, 0)} ms`, w.jitter_ms),
  w.rtt_ms === null || w.rtt_ms === undefined ? null : part('rtt', 'Round trip', `RTT ${fmt(w.rtt_ms, 0)} ms`, w.rtt_ms),
  part('mos', 'Estimated MOS (E-model)', `MOS ${fmt(w.mos, 2)}`, w.mos));
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/**
 * A small chart of loss % (bars, max per bucket) and jitter ms (line, average) over the window:
 * `slots` buckets of `bucketMs`, the newest bucket at the right edge.
 */
export function buildChart(series, th, slots = 60, bucketMs = 15000) {
  const W = 280;
  const H = 90;
  const PAD = 4;
  const root = svg('svg', {
    class: 'q-chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-testid': 'quality-chart',
  });
  const buckets = Array.isArray(series) ? series : [];
  const title = svg('title');
  title.textContent = buckets.length
    ? `Loss % (bars) and jitter ms (line) per ${buckets.length} time slots`
    : 'No RTCP reports in the window';
  root.append(title);
  root.append(svg('rect', { x: 0, y: 0, width: W, height: H, class: 'q-chart-bg' }));
  if (!buckets.length) return root;
  const lossTop = Math.max(th ? th.loss_bad_pct * 2 : 10, ...buckets.map((b) => b.loss_pct.max));
  const jitterTop = Math.max(th ? th.jitter_bad_ms * 2 : 100, ...buckets.map((b) => b.jitter_ms.avg));
  const step = (W - 2 * PAD) / Math.max(slots, 1);
  const newest = Math.max(...buckets.map((b) => b.at_ms));
  const slotOf = (b) => slots - 1 - Math.round((newest - b.at_ms) / bucketMs);
  const y = (v, top) => H - PAD - (Math.min(v, top) / top) * (H - 2 * PAD);
  if (th) {
    const line = y(th.loss_bad_pct, lossTop);
    root.append(svg('line', { x1: 0, x2: W, y1: line, y2: line, class: 'q-chart-limit' }));
  }
  const shown = buckets.filter((b) => slotOf(b) >= 0);
  shown.forEach((b) => {
    const i = slotOf(b);
    const top = y(b.loss_pct.max, lossTop);
    root.append(svg('rect', {
      x: PAD + i * step + 1,
      y: top,
      width: Math.max(step - 2, 1),
      height: Math.max(H - PAD - top, 0.5),
      class: `q-bar q-${gradeOf('loss', b.loss_pct.max, th) || 'none'}`,
    }));
  });
  const points = shown.map((b) => `${(PAD + (slotOf(b) + 0.5) * step).toFixed(1)},${y(b.jitter_ms.avg, jitterTop).toFixed(1)}`);
  root.append(svg('polyline', { points: points.join(' '), class: 'q-jitter' }));
  for (const b of shown) {
    const [cx, cy] = [PAD + (slotOf(b) + 0.5) * step, y(b.jitter_ms.avg, jitterTop)];
    root.append(svg('circle', { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 1.8, class: 'q-jitter-dot' }));
  }
  const label = svg('text', { x: PAD + 2, y: PAD + 9, class: 'q-chart-label' });
  label.textContent = `loss % ▮ (0–${fmt(lossTop, 0)})  jitter ms ─ (0–${fmt(jitterTop, 0)})  · ${Math.round(slots * bucketMs / 60000)} min`;
  root.append(label);
  return root;
}

const FIELD_TEXT = {
  status: 'Contact', address: 'Address', user_agent: 'User-Agent', device: 'Device', registration: 'Registration',
};

/** The endpoint panel: health, chart, window figures, recent changes. */
export function buildEndpointPanel(name, detail, th, timeText, windowS = 900, bucketS = 15) {
  const health = detail && detail.health;
  const quality = detail && detail.quality;
  const rows = [];
  if (health) {
    for (const key of ['status', 'address', 'user_agent', 'registration']) {
      if (health[key]) rows.push(el('div', { class: 'eq-kv' }, el('dt', { text: FIELD_TEXT[key] }), el('dd', { 'data-testid': `eq-${key}`, text: health[key] })));
    }
  }
  const figures = quality && quality.samples > 0
    ? el('p', { class: 'eq-figures', 'data-testid': 'eq-figures' },
      el('span', { class: `qf q-${gradeOf('loss', quality.loss_pct.max, th) || 'none'}`, text: `loss ≤ ${fmt(quality.loss_pct.max, 1)} % (avg ${fmt(quality.loss_pct.avg, 1)})` }),
      el('span', { class: `qf q-${gradeOf('jitter', quality.jitter_ms.max, th) || 'none'}`, text: `jitter ≤ ${fmt(quality.jitter_ms.max, 0)} ms` }),
      el('span', { class: `qf q-${gradeOf('mos', quality.mos.min, th) || 'none'}`, text: `MOS ≥ ${fmt(quality.mos.min, 2)}` }),
      el('span', { class: 'muted', text: `${quality.samples} reports` }))
    : el('p', { class: 'muted empty-small', text: 'No RTCP reports in the last 15 minutes.' });
  const changes = health && Array.isArray(health.changes) ? health.changes.slice(-PANEL_CHANGES).reverse() : [];
  const list = changes.length
    ? el('ol', { class: 'eq-changes', 'data-testid': 'eq-changes' }, ...changes.map((c) => el('li', {
      class: 'eq-change', 'data-testid': 'eq-change', 'data-field': c.field,
    },
    el('span', { class: 'eq-when muted', text: timeText(c.at_ms) }),
    el('span', { class: 'eq-field', text: FIELD_TEXT[c.field] || c.field }),
    el('span', { class: 'eq-from', text: c.from || '(none)' }),
    el('span', { class: 'eq-arrow', 'aria-label': 'changed to', text: '→' }),
    el('span', { class: 'eq-to', text: c.to }))))
    : el('p', { class: 'muted empty-small', text: 'No changes seen.' });
  return el('div', { class: 'eq-body', 'data-testid': 'endpoint-quality', 'data-endpoint': name },
    el('h3', { class: 'eq-name', 'data-testid': 'eq-name', text: name }),
    rows.length ? el('dl', { class: 'eq-health' }, ...rows) : null,
    buildChart(quality && quality.series, th, Math.round(windowS / bucketS), bucketS * 1000),
    figures,
    el('h4', { text: 'Recent changes' }),
    list);
}
