// app.js — the dashboard: connection status, servers with their status, the selected server's
// active calls, queues and endpoints (kept live from a snapshot plus live events), the event log
// and the action form.
//
// State: per server, `ProxyAction: Snapshot` over the WebSocket loads the state (in the same
// stream as the events, so nothing between the snapshot and the next event is lost), and every
// live event is then applied to the client copy (state.js). A snapshot is asked for when the
// page connects and when amihub says `state ready` after a (re)login. After a hiccup of the page's
// own WebSocket it resumes instead (`?resume=` with the last epoch/offset seen per server: amihub
// replays what was missed), and takes a snapshot only of a server amihub answers with
// `resume gap`. While a server is down, or the page itself is disconnected, its state is marked
// stale ("continuity lost") until a replay or a fresh snapshot brings it up to date.
//
// Every piece of text that came from the network is put into the page with `textContent`,
// `new Option()` or `setAttribute`, never parsed as HTML.

import {
  MessageType, connect, firstValue, framePosition, headerValues, pageToken, wsUrl,
} from './protocol.js';
import {
  applyEvent, emptyState, endpointList, groupCalls, stateCounts, stateFromSnapshot,
} from './state.js';
import {
  clockTime, duration, el, pad, reconcile, shortTime, tickAll,
} from './dom.js';
import {
  buildCallRow, buildEndpoint, buildQueue, callSignature, endpointSignature, queueSignature,
} from './views.js';

/** Event rows kept in the DOM; older ones are removed as new ones arrive. */
const LOG_DOM_MAX = 500;
/** Entries kept in memory so that changing the filter can show recent history again. */
const LOG_MEMORY_MAX = 2000;
/** Replies kept in the reply panel. */
const REPLY_MAX = 100;
/** ActionIDs remembered so that list events answering our actions reach the reply panel. */
const PENDING_ACTIONS_MAX = 100;
/** Characters of the one-line key=value summary of an event row. */
const SUMMARY_MAX_CHARS = 300;
/** Headers left out of the summary: the name and time are already shown, Privilege is noise. */
const SUMMARY_SKIP = new Set(['Event', 'Privilege', 'Timestamp']);
const KNOWN_STATUSES = new Set(['Connecting', 'Connected', 'Disconnected', 'AuthFailed']);
/** A snapshot not answered within this long is given up (and asked again on the next cue). */
const SNAPSHOT_TIMEOUT_MS = 10000;
/** A server Connected without `state ready` this long gets a snapshot anyway (older hubs). */
const STATE_READY_GRACE_MS = 5000;
/** State panels are redrawn at most this often while events stream in. */
const RENDER_DELAY_MS = 50;

const token = pageToken();
const byId = (id) => document.getElementById(id);

const ui = {
  conn: byId('conn'),
  connStatus: byId('conn-status'),
  reconnectNow: byId('reconnect-now'),
  totals: byId('totals'),
  serversMessage: byId('servers-message'),
  serverList: byId('server-list'),
  calls: byId('calls'),
  callsCount: byId('calls-count'),
  callsEmpty: byId('calls-empty'),
  queues: byId('queues'),
  queuesCount: byId('queues-count'),
  queuesEmpty: byId('queues-empty'),
  endpoints: byId('endpoints'),
  endpointsCount: byId('endpoints-count'),
  endpointsEmpty: byId('endpoints-empty'),
  detailServer: document.querySelectorAll('[data-role="detail-server"]'),
  detailStale: document.querySelectorAll('[data-role="detail-stale"]'),
  filter: byId('filter'),
  logServer: byId('log-server'),
  pause: byId('pause'),
  clear: byId('clear'),
  logCount: byId('log-count'),
  log: byId('event-log'),
  logEmpty: byId('log-empty'),
  actionForm: byId('action-form'),
  actionInput: byId('action-input'),
  actionServer: byId('action-server'),
  reply: byId('action-reply'),
  replyClear: byId('reply-clear'),
};

const sessionTag = Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => pad(b.toString(16))).join('');
let idCounter = 0;
const nextId = (kind) => {
  idCounter += 1;
  return `${kind}-${sessionTag}-${idCounter}`;
};

function authHeaders() {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/**
 * id -> {id, name, host, port, ssl, status, shown, reason, banner, sinceAt, connects, liveAt,
 *        row, parts, state, stateLoaded, stateVersion, stale, staleSince, staleWhy, stateNote,
 *        snap: {inFlight, again, timer, graceTimer}}
 */
const servers = new Map();
let selectedId = null;

/** Display name of a server; replies from amihub itself carry no (or a zero) server id. */
function serverName(id, fallback) {
  if (fallback) return fallback;
  const server = servers.get(id);
  if (server) return server.name;
  return id === null || id === 0 ? 'amihub' : `#${id}`;
}

function upsertServer(id) {
  let server = servers.get(id);
  if (!server) {
    server = {
      id, name: `#${id}`, host: '', port: null, ssl: false, status: 'Connecting', shown: 'Connecting',
      reason: '', banner: '', sinceAt: Date.now(), connects: null, liveAt: 0, row: null, parts: null,
      state: emptyState(), stateLoaded: false, stateVersion: null, stale: false, staleSince: 0,
      staleWhy: '', stateNote: '', snap: { inFlight: null, again: false, timer: null, graceTimer: null },
    };
    servers.set(id, server);
  }
  return server;
}

/** Status as shown: a retry of a server that is down still reads "Disconnected" (no flapping). */
function shownStatus(server, status) {
  if (status === 'Connecting' && (server.shown === 'Disconnected' || server.shown === 'AuthFailed')) return server.shown;
  return status;
}

function setStatus(server, status, reason) {
  const before = server.status;
  server.status = status;
  server.shown = shownStatus(server, status);
  server.reason = reason;
  if (status !== 'Connected') {
    markStale(server, reason ? `${status}: ${reason}` : status);
    clearTimeout(server.snap.graceTimer);
    server.snap.graceTimer = null;
  } else if (before !== 'Connected' || server.stale || !server.stateLoaded) {
    // Logged in; amihub rebuilds its state and says `state ready`. An older hub never does.
    clearTimeout(server.snap.graceTimer);
    server.snap.graceTimer = setTimeout(() => {
      server.snap.graceTimer = null;
      if (server.status === 'Connected' && (server.stale || !server.stateLoaded)) requestSnapshot(server);
    }, STATE_READY_GRACE_MS);
  }
}

/** The state we hold may be out of date from now on. */
function markStale(server, why) {
  const hasState = server.stateLoaded || server.state.channels.size > 0 || server.state.queues.size > 0;
  if (!hasState) return;
  if (!server.stale) server.staleSince = Date.now();
  server.stale = true;
  server.staleWhy = why;
  scheduleRender();
}

/** Applies `GET /api/v1/servers`; a type-7 update newer than the request wins over it. */
function applyServerList(list, requestedAt) {
  const seen = new Set();
  for (const item of list) {
    if (!item || !Number.isInteger(item.id)) continue;
    seen.add(item.id);
    const server = upsertServer(item.id);
    if (typeof item.name === 'string' && item.name) server.name = item.name;
    if (typeof item.host === 'string') server.host = item.host;
    if (Number.isInteger(item.port)) server.port = item.port;
    if (typeof item.ssl === 'boolean') server.ssl = item.ssl;
    if (typeof item.banner === 'string') server.banner = item.banner;
    if (Number.isInteger(item.connects)) server.connects = item.connects;
    // The list is older than a status pushed since it was asked for, unless they agree.
    const current = server.liveAt <= requestedAt || item.status === server.status;
    if (current) {
      if (typeof item.status === 'string') setStatus(server, item.status, typeof item.reason === 'string' ? item.reason : server.reason);
      if (typeof item.since_ms === 'number' && Number.isFinite(item.since_ms)) {
        // Either a wall-clock time (epoch ms) or how long the server has been in this status.
        server.sinceAt = item.since_ms > 1e12 ? Math.min(item.since_ms, Date.now()) : Date.now() - item.since_ms;
      }
    }
  }
  for (const id of [...servers.keys()]) {
    if (!seen.has(id)) {
      servers.get(id).row?.remove();
      servers.delete(id);
    }
  }
  if (selectedId === null || !servers.has(selectedId)) selectServer(firstServerId(), false);
  // Anything connected whose state we lack or no longer trust: ask now.
  for (const server of servers.values()) {
    if (server.status === 'Connected' && (!server.stateLoaded || server.stale)) requestSnapshot(server);
  }
  renderServers();
  scheduleRender();
}

function firstServerId() {
  const fromHash = /(?:^|[#&])server=(\d+)/.exec(window.location.hash);
  if (fromHash && servers.has(Number(fromHash[1]))) return Number(fromHash[1]);
  const ids = [...servers.keys()].sort((a, b) => a - b);
  return ids.length ? ids[0] : null;
}

function selectServer(id, updateHash = true) {
  selectedId = id;
  if (updateHash && id !== null) {
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}#server=${id}`);
  }
  for (const server of servers.values()) {
    if (server.row) server.row.classList.toggle('selected', server.id === id);
    if (server.parts) server.parts.select.setAttribute('aria-pressed', String(server.id === id));
  }
  renderDetails();
}

function applyServerStatus(envelope) {
  if (envelope.serverId === null) return;
  const server = upsertServer(envelope.serverId);
  if (envelope.serverName) server.name = envelope.serverName;
  if (typeof envelope.raw.ssl === 'boolean') server.ssl = envelope.raw.ssl;
  const status = firstValue(envelope.data.Status);
  const reason = firstValue(envelope.data.Reason);
  if (status && status !== server.status) {
    server.sinceAt = Date.now();
    if (status === 'Connected' && server.connects !== null) server.connects += 1;
  }
  if (status) setStatus(server, status, reason);
  server.liveAt = performance.now();
  if (status === 'Connected' && reason === 'state ready') {
    // While resuming, only a `state ready` in the replay (a new position, not the join's repeat
    // of the newest one) means the PBX state was rebuilt meanwhile.
    if (server.resuming) server.snapAfterResume ||= !envelope.repeat;
    else requestSnapshot(server);
  }
  if (selectedId === null) selectServer(firstServerId(), false);
  renderServers();
}

function buildServerRow(server) {
  const parts = {
    select: el('button', { type: 'button', class: 'server-select', 'aria-pressed': 'false' }),
    name: el('span', { class: 'server-name', 'data-testid': 'server-name' }),
    addr: el('span', { class: 'server-addr muted' }),
    status: el('span', { class: 'badge', 'data-testid': 'server-status' }),
    stale: el('span', { class: 'badge tone-stale', 'data-testid': 'state-stale', hidden: '' }),
    reason: el('span', { class: 'server-reason' }),
    since: el('span', { class: 'server-since muted' }),
    connects: el('span', { class: 'server-connects muted' }),
    counts: el('span', { class: 'server-counts', 'data-testid': 'server-counts' }),
  };
  parts.select.append(
    el('span', { class: 'server-line' }, parts.name, parts.status, parts.stale),
    el('span', { class: 'server-line server-meta' }, parts.addr, parts.since, parts.connects),
    el('span', { class: 'server-line server-meta' }, parts.counts, parts.reason),
  );
  parts.select.addEventListener('click', () => selectServer(server.id));
  const row = el('li', { class: 'server-row', 'data-testid': 'server-row', 'data-server-id': server.id }, parts.select);
  server.row = row;
  server.parts = parts;
  row.classList.toggle('selected', server.id === selectedId);
  parts.select.setAttribute('aria-pressed', String(server.id === selectedId));
}

function renderServer(server) {
  if (!server.row) buildServerRow(server);
  const { parts } = server;
  const shown = server.shown;
  const statusClass = KNOWN_STATUSES.has(shown) ? shown.toLowerCase() : 'unknown';
  server.row.dataset.status = server.status;
  parts.name.textContent = server.name;
  parts.addr.textContent = server.host ? `${server.ssl ? 'tls://' : ''}${server.host}${server.port ? `:${server.port}` : ''}` : '';
  parts.addr.title = server.banner;
  parts.status.textContent = shown;
  parts.status.className = `badge status-${statusClass}`;
  parts.status.dataset.status = server.status;
  parts.stale.hidden = !server.stale;
  parts.stale.textContent = 'continuity lost';
  parts.stale.title = server.stale
    ? `Since ${shortTime(new Date(server.staleSince))} (${server.staleWhy}): calls and queues shown are the last known state`
    : '';
  let reason = server.reason;
  if (shown !== server.status) reason = reason ? `${reason} · retrying` : 'retrying…';
  if (server.status === 'Connected' && reason === 'state ready') reason = '';
  parts.reason.textContent = reason;
  parts.reason.hidden = !reason;
  parts.connects.textContent = server.connects === null ? '' : `${server.connects} connect${server.connects === 1 ? '' : 's'}`;
  const counts = stateCounts(server.state);
  parts.counts.textContent = `${counts.calls} call${counts.calls === 1 ? '' : 's'} · ${counts.waiting} waiting`;
  renderSince(server);
}

function renderSince(server) {
  server.parts.since.textContent = `${server.shown === 'Connected' ? 'up' : 'for'} ${duration(Date.now() - server.sinceAt)}`;
}

function renderServers() {
  const sorted = [...servers.values()].sort((a, b) => a.id - b.id);
  for (const server of sorted) {
    renderServer(server);
    ui.serverList.append(server.row); // re-appending keeps id order without rebuilding rows
  }
  fillServerSelect(ui.logServer, sorted);
  fillServerSelect(ui.actionServer, sorted);
  renderTotals();
}

function renderTotals() {
  let calls = 0;
  let waiting = 0;
  let up = 0;
  for (const server of servers.values()) {
    const counts = stateCounts(server.state);
    calls += counts.calls;
    waiting += counts.waiting;
    if (server.status === 'Connected') up += 1;
  }
  ui.totals.textContent = servers.size
    ? `${up}/${servers.size} PBX up · ${calls} call${calls === 1 ? '' : 's'} · ${waiting} waiting`
    : '';
  const down = servers.size - up;
  document.title = `${down > 0 ? `⚠ ${down} down · ` : ''}${calls} call${calls === 1 ? '' : 's'} · amihub`;
}

function showServersMessage(text, kind = 'info') {
  ui.serversMessage.textContent = text;
  ui.serversMessage.className = kind === 'error' ? 'message-error' : 'muted';
  ui.serversMessage.hidden = false;
}

function fillServerSelect(select, sorted) {
  const current = select.value;
  const wanted = ['', ...sorted.map((s) => `${s.id}:${s.name}`)].join('|');
  if (select.dataset.options === wanted) return; // unchanged: keep the open dropdown alone
  select.dataset.options = wanted;
  const options = [new Option('All servers', '')];
  for (const server of sorted) options.push(new Option(`${server.name} (#${server.id})`, String(server.id)));
  select.replaceChildren(...options);
  select.value = sorted.some((s) => String(s.id) === current) ? current : '';
}

async function loadServers() {
  const requestedAt = performance.now();
  try {
    const response = await fetch(new URL('api/v1/servers', document.baseURI), {
      headers: authHeaders(),
      cache: 'no-store',
      // With a token, only the token: no cached Basic credentials, no login prompt.
      credentials: token ? 'omit' : 'same-origin',
    });
    if (!response.ok) {
      let hint = '';
      if (response.status === 401) hint = token ? ': the token was refused' : ': sign in, or open this page with ?token=…';
      else if (response.status === 403) hint = ': not allowed from here';
      throw new Error(`HTTP ${response.status}${hint}`);
    }
    const body = await response.json();
    const list = Array.isArray(body && body.servers) ? body.servers : [];
    ui.serversMessage.hidden = true;
    applyServerList(list, requestedAt);
    if (servers.size === 0) showServersMessage('No servers configured.');
  } catch (err) {
    showServersMessage(`Could not load servers: ${err.message}`, 'error');
  }
}

// ---------------------------------------------------------------------------------------------
// Server state: snapshots and live events
// ---------------------------------------------------------------------------------------------

/** Snapshot requests in the order sent: {id, serverId}. amihub answers them in order. */
const pendingSnapshots = [];

function requestSnapshot(server) {
  if (connState.state !== 'live') return;
  // The replay brings the state up to date; a `state ready` in it asks once it is done.
  if (server.resuming) return;
  if (server.snap.inFlight) {
    server.snap.again = true;
    return;
  }
  const id = nextId('snap');
  if (!client.send(JSON.stringify({ ProxyAction: 'Snapshot', AMIServerID: server.id, ActionID: id }))) return;
  server.snap.inFlight = id;
  server.snap.again = false;
  pendingSnapshots.push({ id, serverId: server.id });
  clearTimeout(server.snap.timer);
  server.snap.timer = setTimeout(() => {
    dropPendingSnapshot(id);
    if (server.snap.inFlight !== id) return;
    server.snap.inFlight = null;
    server.stateNote = 'The state snapshot timed out; it is asked for again when the server reports ready.';
    scheduleRender();
  }, SNAPSHOT_TIMEOUT_MS);
}

function dropPendingSnapshot(id) {
  const i = pendingSnapshots.findIndex((p) => p.id === id);
  if (i >= 0) pendingSnapshots.splice(i, 1);
}

function snapshotDone(server, id) {
  if (server.snap.inFlight !== id && id !== null) return false;
  clearTimeout(server.snap.timer);
  server.snap.inFlight = null;
  if (server.snap.again) requestSnapshot(server);
  return true;
}

/** A type-8 reply that answers one of our snapshot requests; true if it was one. */
function handleSnapshotReply(envelope) {
  const { data } = envelope;
  const proxy = firstValue(data.ProxyAction);
  const response = firstValue(data.Response);
  const actionId = firstValue(data.ActionID);
  if (proxy === 'Snapshot' && response === 'Success') {
    const serverId = Number(firstValue(data.ServerID) || (envelope.serverId ?? NaN));
    const pending = pendingSnapshots.find((p) => p.id === actionId) || pendingSnapshots.find((p) => p.serverId === serverId);
    if (pending) dropPendingSnapshot(pending.id);
    const server = servers.get(serverId);
    if (!server) return Boolean(pending);
    snapshotDone(server, pending ? pending.id : null);
    server.state = stateFromSnapshot(data.State, Date.now());
    server.stateLoaded = true;
    server.stateVersion = data.StateVersion ?? null;
    server.stale = false;
    server.staleWhy = '';
    server.stateNote = data.Complete === false ? 'amihub is still rebuilding this server\'s state.' : '';
    renderServer(server);
    renderTotals();
    scheduleRender();
    return true;
  }
  if (response.toLowerCase() !== 'error' || pendingSnapshots.length === 0) return false;
  const message = firstValue(data.Message);
  let pending = pendingSnapshots.find((p) => p.id === actionId);
  if (!pending && /snapshot|proxyaction/i.test(message)) [pending] = pendingSnapshots;
  if (!pending) return false;
  dropPendingSnapshot(pending.id);
  const server = servers.get(pending.serverId);
  if (server) {
    snapshotDone(server, pending.id);
    server.stateNote = `No state from amihub: ${message || 'error'}. Showing only what happened since the page opened.`;
    scheduleRender();
  }
  return true;
}

function applyLiveEvent(envelope) {
  if (envelope.serverId === null) return;
  const server = servers.get(envelope.serverId);
  if (!server) return;
  // List items answering someone's action (ActionID set) are not live changes.
  if (envelope.data.ActionID !== undefined && envelope.data.Event !== 'OriginateResponse') return;
  if (applyEvent(server.state, envelope.data, Date.now())) scheduleRender(server);
}

let renderTimer = null;
const dirtyServers = new Set();

function scheduleRender(server = null) {
  if (server) dirtyServers.add(server);
  if (renderTimer !== null) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    for (const s of dirtyServers) if (s.row) renderServer(s);
    dirtyServers.clear();
    renderTotals();
    renderDetails();
  }, RENDER_DELAY_MS);
}

function renderDetails() {
  const server = selectedId === null ? null : servers.get(selectedId);
  for (const node of ui.detailServer) node.textContent = server ? server.name : '';
  let note = '';
  if (server) {
    if (server.stale) {
      note = `Continuity lost at ${shortTime(new Date(server.staleSince))} (${server.staleWhy}) — showing the last known state, which may be out of date.`;
    } else if (server.stateNote) {
      note = server.stateNote;
    } else if (!server.stateLoaded) {
      note = server.status === 'Connected' ? 'Loading state…' : `No state yet: the server is ${server.shown}.`;
    }
  }
  for (const node of ui.detailStale) {
    node.textContent = note;
    node.hidden = !note;
    node.classList.toggle('is-stale', Boolean(server && server.stale));
  }
  document.body.classList.toggle('detail-stale', Boolean(server && server.stale));
  const state = server ? server.state : emptyState();

  const calls = groupCalls(state);
  reconcile(ui.calls, calls, (c) => c.key, callSignature, buildCallRow);
  ui.callsCount.textContent = String(calls.length);
  ui.callsEmpty.hidden = calls.length > 0;

  const queues = [...state.queues.values()].sort((a, b) => a.name.localeCompare(b.name));
  reconcile(ui.queues, queues, (q) => q.name, queueSignature, buildQueue);
  let waiting = 0;
  for (const q of queues) waiting += q.callers.size;
  ui.queuesCount.textContent = queues.length ? `${queues.length} · ${waiting} waiting` : '0';
  ui.queuesEmpty.hidden = queues.length > 0;

  const endpoints = endpointList(state);
  reconcile(ui.endpoints, endpoints, (e) => e.name, endpointSignature, buildEndpoint);
  const busy = endpoints.filter((e) => e.deviceState && e.deviceState !== 'NOT_INUSE').length;
  ui.endpointsCount.textContent = endpoints.length ? `${busy}/${endpoints.length} busy` : '0';
  ui.endpointsEmpty.hidden = endpoints.length > 0;
}

// ---------------------------------------------------------------------------------------------
// Event log
// ---------------------------------------------------------------------------------------------

const log = {
  memory: [],        // entries, oldest first, at most LOG_MEMORY_MAX (+ slack)
  pending: [],       // matching entries not yet in the DOM, oldest first
  flushScheduled: false,
  paused: false,
  pausedNew: 0,
  received: 0,
  filterText: '',
  serverFilter: null,
  entries: new WeakMap(), // row element -> entry
};

function entryName(envelope) {
  const { data } = envelope;
  switch (envelope.type) {
    case MessageType.EVENT: return firstValue(data.Event) || 'Event';
    case MessageType.SERVER_STATUS: return 'ServerStatus';
    case MessageType.PROMPT: return 'Prompt';
    case MessageType.ACTION: return 'Action';
    case MessageType.LEGACY_TEXT: return 'Queues';
    case MessageType.RESPONSE:
    case MessageType.COMMAND_OUTPUT: return 'Response';
    case MessageType.HUB_REPLY: return 'amihub';
    default: return 'Unknown';
  }
}

function summaryOf(data) {
  const parts = [];
  let length = 0;
  for (const [key, value] of Object.entries(data)) {
    if (SUMMARY_SKIP.has(key)) continue;
    const text = Array.isArray(value) ? `${key}=[${value.join(', ')}]` : `${key}=${value}`;
    parts.push(text);
    length += text.length + 2;
    if (length > SUMMARY_MAX_CHARS) break;
  }
  const summary = parts.join('  ');
  return summary.length > SUMMARY_MAX_CHARS ? `${summary.slice(0, SUMMARY_MAX_CHARS - 1)}…` : summary;
}

/** Lower-cased event name and every header value, for the filter. */
function searchTextOf(entry) {
  if (entry.search === undefined) {
    const values = [entry.name];
    for (const value of Object.values(entry.envelope.data)) values.push(...headerValues(value));
    entry.search = values.join('\n').toLowerCase();
  }
  return entry.search;
}

function matches(entry) {
  if (log.serverFilter !== null && entry.envelope.serverId !== log.serverFilter) return false;
  return log.filterText === '' || searchTextOf(entry).includes(log.filterText);
}

function addLogEntry(envelope) {
  const entry = { envelope, name: entryName(envelope), time: new Date() };
  log.received += 1;
  log.memory.push(entry);
  if (log.memory.length > LOG_MEMORY_MAX + 200) log.memory.splice(0, log.memory.length - LOG_MEMORY_MAX);
  if (log.paused) {
    log.pausedNew += 1;
  } else if (matches(entry)) {
    log.pending.push(entry);
    if (log.pending.length > LOG_DOM_MAX) log.pending.splice(0, log.pending.length - LOG_DOM_MAX);
  }
  scheduleFlush();
}

function buildEventRow(entry) {
  const { envelope } = entry;
  const row = el('div', {
    class: `event-row type-${envelope.type}`,
    'data-testid': 'event-row',
    'data-event': entry.name,
    'data-server-id': envelope.serverId ?? undefined,
  });
  const summary = envelope.type === MessageType.SERVER_STATUS
    ? [firstValue(envelope.data.Status), firstValue(envelope.data.Reason)].filter(Boolean).join(' — ')
    : summaryOf(envelope.data);
  const head = el('button', { type: 'button', class: 'event-head', 'aria-expanded': 'false' },
    el('time', { class: 'ev-time', datetime: entry.time.toISOString(), text: clockTime(entry.time) }),
    el('span', { class: 'ev-server', text: serverName(envelope.serverId, envelope.serverName) }),
    el('span', { class: 'ev-name', text: entry.name }),
    el('span', { class: 'ev-summary', text: summary }));
  row.append(head);
  log.entries.set(row, entry);
  return row;
}

function toggleEventRow(row) {
  const head = row.firstElementChild;
  const open = row.querySelector('.event-json');
  if (open) {
    open.remove();
    head.setAttribute('aria-expanded', 'false');
    row.classList.remove('expanded');
    return;
  }
  const entry = log.entries.get(row);
  if (!entry) return;
  row.append(el('pre', { class: 'event-json', 'data-testid': 'event-json', text: JSON.stringify(entry.envelope.raw, null, 2) }));
  head.setAttribute('aria-expanded', 'true');
  row.classList.add('expanded');
}

function scheduleFlush() {
  if (log.flushScheduled) return;
  log.flushScheduled = true;
  // A hidden tab runs no animation frames; `pending` is bounded, so nothing piles up meanwhile.
  requestAnimationFrame(flushLog);
}

function flushLog() {
  log.flushScheduled = false;
  if (log.pending.length > 0) {
    const fragment = document.createDocumentFragment();
    for (let i = log.pending.length - 1; i >= 0; i -= 1) fragment.append(buildEventRow(log.pending[i]));
    log.pending = [];
    // Keep what the reader is looking at in place when they have scrolled down.
    const keepPosition = ui.log.scrollTop > 0;
    const heightBefore = ui.log.scrollHeight;
    ui.log.prepend(fragment);
    while (ui.log.childElementCount > LOG_DOM_MAX) ui.log.lastElementChild.remove();
    if (keepPosition) ui.log.scrollTop += ui.log.scrollHeight - heightBefore;
  }
  renderLogCount();
}

/** Rebuilds the DOM from memory: after a filter change, a resume or a clear. */
function rerenderLog() {
  log.pending = [];
  const rows = [];
  for (let i = log.memory.length - 1; i >= 0 && rows.length < LOG_DOM_MAX; i -= 1) {
    if (matches(log.memory[i])) rows.push(buildEventRow(log.memory[i]));
  }
  ui.log.replaceChildren(...rows);
  ui.log.scrollTop = 0;
  renderLogCount();
}

function renderLogCount() {
  const shown = ui.log.childElementCount;
  let text = `${shown} shown · ${log.received} received`;
  if (log.paused) text = `Paused — ${log.pausedNew} new · ${text}`;
  ui.logCount.textContent = text;
  ui.logEmpty.hidden = shown > 0;
  ui.logEmpty.textContent = log.received === 0 ? 'Waiting for events…' : 'No events match.';
}

function setPaused(paused) {
  log.paused = paused;
  log.pausedNew = 0;
  ui.pause.textContent = paused ? 'Resume' : 'Pause';
  ui.pause.setAttribute('aria-pressed', String(paused));
  if (paused) renderLogCount();
  else rerenderLog();
}

// ---------------------------------------------------------------------------------------------
// Actions and replies
// ---------------------------------------------------------------------------------------------

const pendingActionIds = new Set();

function rememberActionId(id) {
  pendingActionIds.add(id);
  if (pendingActionIds.size > PENDING_ACTIONS_MAX) {
    pendingActionIds.delete(pendingActionIds.values().next().value);
  }
}

/** `Key: value` lines as AMI writes them, repeated headers on repeated lines, then any Output. */
function replyBody(data) {
  const lines = [];
  for (const [key, value] of Object.entries(data)) {
    if (key === 'Output') continue;
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      lines.push(`${key}: ${JSON.stringify(value)}`);
      continue;
    }
    for (const v of headerValues(value)) lines.push(`${key}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
  }
  if ('Output' in data) {
    if (lines.length > 0) lines.push('');
    lines.push(...headerValues(data.Output));
  }
  return lines.join('\n');
}

function addReply({ kind, label, server, body, actionId = '', time = new Date() }) {
  const item = el('div', {
    class: `reply reply-${kind}`, 'data-testid': 'reply-item', 'data-kind': kind, 'data-action-id': actionId || undefined,
  },
  el('div', { class: 'reply-meta' },
    el('time', { class: 'ev-time', datetime: time.toISOString(), text: clockTime(time) }),
    el('span', { class: 'ev-server', text: server }),
    el('span', { class: 'reply-label', text: label })));
  if (body) item.append(el('pre', { class: 'reply-body', text: body }));
  ui.reply.prepend(item);
  while (ui.reply.childElementCount > REPLY_MAX) ui.reply.lastElementChild.remove();
}

function addEnvelopeReply(envelope) {
  const { data } = envelope;
  const response = firstValue(data.Response);
  const message = firstValue(data.Message);
  const isError = response.toLowerCase() === 'error';
  let label;
  if (envelope.type === MessageType.EVENT) label = `Event: ${firstValue(data.Event)}`;
  else if (response) label = message ? `${response}: ${message}` : response;
  else label = envelope.type === MessageType.HUB_REPLY ? 'amihub reply' : 'Response';
  addReply({
    kind: isError ? 'error' : `type-${envelope.type}`,
    label,
    server: serverName(envelope.serverId, envelope.serverName),
    body: replyBody(data),
    actionId: firstValue(data.ActionID),
  });
}

function localNote(label, kind = 'local') {
  addReply({ kind, label, server: 'page', body: '' });
}

function sendAction() {
  let action;
  try {
    action = JSON.parse(ui.actionInput.value);
  } catch (err) {
    localNote(`Not valid JSON: ${err.message}`, 'error');
    return;
  }
  if (action === null || typeof action !== 'object' || Array.isArray(action)) {
    localNote('The action must be a JSON object, e.g. {"Action":"Ping"}', 'error');
    return;
  }
  const serverId = ui.actionServer.value;
  if (serverId !== '') action.AMIServerID = Number(serverId);
  if (('Action' in action || 'ProxyAction' in action) && action.ActionID === undefined) {
    action.ActionID = nextId('web');
  }
  if (!client.send(JSON.stringify(action))) {
    localNote('Not connected to amihub; nothing was sent.', 'error');
    return;
  }
  if (typeof action.ActionID === 'string') rememberActionId(action.ActionID);
  const what = 'Action' in action ? String(action.Action) : 'ProxyAction' in action ? `ProxyAction ${action.ProxyAction}` : 'message';
  const target = serverId === '' ? 'all servers' : serverName(Number(serverId));
  localNote(`Sent ${what}${action.ActionID ? ` (ActionID ${action.ActionID})` : ''} to ${target}`);
}

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

let connState = { state: 'connecting', retryAt: null, lastClose: null };

function renderConnState() {
  const { state, retryAt, lastClose } = connState;
  let text;
  if (state === 'live') text = 'live';
  else if (state === 'reconnecting') text = `reconnecting in ${Math.max(1, Math.ceil((retryAt - Date.now()) / 1000))}s`;
  else if (state === 'closed') text = 'closed';
  else text = 'connecting…';
  ui.connStatus.textContent = text;
  ui.connStatus.dataset.state = state;
  ui.conn.dataset.state = state;
  ui.connStatus.title = lastClose
    ? `Last close: code ${lastClose.code}${lastClose.reason ? ` (${lastClose.reason})` : ''}`
    : '';
  ui.reconnectNow.hidden = state !== 'reconnecting';
  document.body.classList.toggle('stale', state !== 'live');
}

// Resume (README "Resume"): the last history position seen per server; the positions of the
// servers whose state was current when the page lost its socket go on the next connection's URL.

/** Server id -> {epoch, offset} of the last broadcast frame seen. */
const positions = new Map();
/** What the next connection resumes from (set when the socket drops). */
let resumeFrom = new Map();
let resumeTimer = null;
/** A hub that never answers the resume (an older amihub) gets snapshots after this long. */
const RESUME_REPLY_TIMEOUT_MS = 5000;

function resumeDone(server, resumed) {
  server.resuming = false;
  const again = server.snapAfterResume || !resumed;
  server.snapAfterResume = false;
  // A server that went down meanwhile stays stale (the replay said so) until it is ready again.
  if (server.status !== 'Connected') return;
  if (again) {
    requestSnapshot(server);
    return;
  }
  server.stale = false;
  server.staleWhy = '';
  if (server.row) renderServer(server);
  scheduleRender(server);
}

/** amihub's answer to the page's `?resume=`: a `Servers` entry per server, replayed or a gap. */
function handleResumeReply(envelope) {
  if (firstValue(envelope.data.ProxyAction) !== 'Resume') return false;
  clearTimeout(resumeTimer);
  const result = envelope.data.Servers && typeof envelope.data.Servers === 'object' ? envelope.data.Servers : {};
  for (const server of servers.values()) {
    if (!server.resuming) continue;
    const r = result[String(server.id)];
    resumeDone(server, Boolean(r && Number.isInteger(r.Replayed)));
  }
  return true;
}

/** The socket dropped: remember where each server whose state is current was. */
function noteDisconnect() {
  resumeFrom = new Map();
  for (const server of servers.values()) {
    const at = positions.get(server.id);
    if (at && server.stateLoaded && (!server.stale || server.resuming)) resumeFrom.set(server.id, at);
    server.resuming = false;
  }
}

/** The socket is live again: servers in its `?resume=` wait for the replay, not a snapshot. */
function noteReconnect() {
  for (const id of resumeFrom.keys()) {
    const server = servers.get(id);
    if (server) server.resuming = true;
  }
  resumeFrom = new Map();
  clearTimeout(resumeTimer);
  resumeTimer = setTimeout(() => {
    for (const server of servers.values()) if (server.resuming) resumeDone(server, false);
  }, RESUME_REPLY_TIMEOUT_MS);
}

function onEnvelope(envelope) {
  const at = framePosition(envelope);
  if (at) {
    const prev = positions.get(envelope.serverId);
    envelope.repeat = Boolean(prev && prev.epoch === at.epoch && at.offset <= prev.offset);
    positions.set(envelope.serverId, at);
  }
  if (envelope.type === MessageType.SERVER_STATUS && firstValue(envelope.data.Reason) === 'resume gap') {
    // Not a status change: the missed frames are gone, so this server needs a snapshot.
    const server = servers.get(envelope.serverId);
    if (server && server.resuming) resumeDone(server, false);
    addLogEntry(envelope);
    return;
  }
  switch (envelope.type) {
    case MessageType.HUB_REPLY:
      if (handleResumeReply(envelope)) return;
      if (handleSnapshotReply(envelope)) return;
      addEnvelopeReply(envelope);
      return;
    case MessageType.RESPONSE:
    case MessageType.COMMAND_OUTPUT:
      addEnvelopeReply(envelope);
      return;
    case MessageType.SERVER_STATUS:
      applyServerStatus(envelope);
      break;
    case MessageType.EVENT:
      if (pendingActionIds.has(firstValue(envelope.data.ActionID))) addEnvelopeReply(envelope);
      applyLiveEvent(envelope);
      break;
    default:
      break;
  }
  addLogEntry(envelope);
}

const client = connect(() => wsUrl(window.location, resumeFrom), {
  onEnvelope,
  onState(state) {
    const wasLive = connState.state === 'live';
    connState = state;
    renderConnState();
    if (wasLive && state.state !== 'live') {
      noteDisconnect();
      // Events are being missed from now on: everything we hold is only the last known state.
      pendingSnapshots.length = 0;
      for (const server of servers.values()) {
        clearTimeout(server.snap.timer);
        server.snap.inFlight = null;
        markStale(server, 'page disconnected from amihub');
      }
      for (const server of servers.values()) if (server.row) renderServer(server);
    }
    // Statuses may have changed while we were away; the list is the source of truth on (re)connect,
    // and applying it asks for a fresh snapshot of every connected server.
    if (state.state === 'live' && !wasLive) {
      noteReconnect();
      loadServers();
    }
  },
});

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

let filterTimer = null;
ui.filter.addEventListener('input', () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    log.filterText = ui.filter.value.trim().toLowerCase();
    rerenderLog();
  }, 120);
});
ui.logServer.addEventListener('change', () => {
  log.serverFilter = ui.logServer.value === '' ? null : Number(ui.logServer.value);
  rerenderLog();
});
ui.pause.addEventListener('click', () => setPaused(!log.paused));
ui.clear.addEventListener('click', () => {
  log.memory = [];
  log.received = 0;
  log.pausedNew = 0;
  rerenderLog();
});
ui.log.addEventListener('click', (event) => {
  const head = event.target.closest('.event-head');
  if (head && ui.log.contains(head)) toggleEventRow(head.parentElement);
});

ui.actionForm.addEventListener('submit', (event) => {
  event.preventDefault();
  sendAction();
});
ui.actionInput.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    ui.actionForm.requestSubmit();
  }
});
ui.replyClear.addEventListener('click', () => ui.reply.replaceChildren());

ui.reconnectNow.addEventListener('click', () => client.reconnectNow());
window.addEventListener('online', () => client.reconnectNow());
window.addEventListener('hashchange', () => {
  const id = firstServerId();
  if (id !== null && id !== selectedId) selectServer(id, false);
});

setInterval(() => {
  if (connState.state === 'reconnecting') renderConnState();
  for (const server of servers.values()) if (server.parts) renderSince(server);
  tickAll();
}, 1000);

renderConnState();
renderLogCount();
renderDetails();
loadServers();
