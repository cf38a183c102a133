// app.js — the live page: connection status, servers, event log and a small action form.
//
// Every piece of text that came from the network is put into the page with `textContent`,
// `new Option()` or `setAttribute`, never parsed as HTML.

import {
  MessageType, connect, firstValue, headerValues, pageToken, wsUrl,
} from './protocol.js';

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
/** Headers left out of the summary: the name is already shown, Privilege is noise. */
const SUMMARY_SKIP = new Set(['Event', 'Privilege']);
const KNOWN_STATUSES = new Set(['Connecting', 'Connected', 'Disconnected', 'AuthFailed']);

const token = pageToken();
const byId = (id) => document.getElementById(id);

const ui = {
  conn: byId('conn'),
  connStatus: byId('conn-status'),
  reconnectNow: byId('reconnect-now'),
  serversMessage: byId('servers-message'),
  serverList: byId('server-list'),
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

/**
 * Creates an element. `attrs` are set with setAttribute, except `text` (textContent) and
 * `class`; children are nodes or strings (appended as text).
 */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === 'text') node.textContent = value;
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

function clockTime(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/** id -> {id, name, host, port, status, reason, sinceAt, connects, liveAt, row, parts} */
const servers = new Map();

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
      id, name: `#${id}`, host: '', port: null, status: 'Connecting', reason: '',
      sinceAt: Date.now(), connects: null, liveAt: 0, row: null, parts: null,
    };
    servers.set(id, server);
  }
  return server;
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
    if (Number.isInteger(item.connects)) server.connects = item.connects;
    if (server.liveAt <= requestedAt) {
      if (typeof item.status === 'string') server.status = item.status;
      server.reason = typeof item.reason === 'string' ? item.reason : '';
      if (typeof item.since_ms === 'number' && Number.isFinite(item.since_ms)) {
        // Either a wall-clock time (epoch ms) or how long the server has been in this status.
        server.sinceAt = item.since_ms > 1e12 ? item.since_ms : Date.now() - item.since_ms;
      }
    }
  }
  for (const id of [...servers.keys()]) {
    if (!seen.has(id)) {
      servers.get(id).row?.remove();
      servers.delete(id);
    }
  }
  renderServers();
}

function applyServerStatus(envelope) {
  if (envelope.serverId === null) return;
  const server = upsertServer(envelope.serverId);
  if (envelope.serverName) server.name = envelope.serverName;
  const status = firstValue(envelope.data.Status);
  if (status && status !== server.status) {
    server.sinceAt = Date.now();
    if (status === 'Connected' && server.connects !== null) server.connects += 1;
  }
  if (status) server.status = status;
  server.reason = firstValue(envelope.data.Reason);
  server.liveAt = performance.now();
  renderServers();
}

function buildServerRow(server) {
  const parts = {
    name: el('span', { class: 'server-name' }),
    addr: el('span', { class: 'server-addr muted' }),
    status: el('span', { class: 'badge', 'data-testid': 'server-status' }),
    reason: el('span', { class: 'server-reason' }),
    since: el('span', { class: 'server-since muted' }),
    connects: el('span', { class: 'server-connects muted' }),
  };
  const row = el('li', { class: 'server-row', 'data-testid': 'server-row', 'data-server-id': server.id },
    el('div', { class: 'server-line' }, parts.name, parts.addr, parts.status),
    el('div', { class: 'server-line server-meta' }, parts.since, parts.connects, parts.reason));
  server.row = row;
  server.parts = parts;
}

function renderServer(server) {
  if (!server.row) buildServerRow(server);
  const { parts } = server;
  const statusClass = KNOWN_STATUSES.has(server.status) ? server.status.toLowerCase() : 'unknown';
  server.row.dataset.status = server.status;
  parts.name.textContent = server.name;
  parts.addr.textContent = server.host ? `${server.host}${server.port ? `:${server.port}` : ''}` : '';
  parts.status.textContent = server.status;
  parts.status.className = `badge status-${statusClass}`;
  parts.status.dataset.status = server.status;
  parts.reason.textContent = server.reason;
  parts.reason.hidden = !server.reason;
  parts.connects.textContent = server.connects === null ? '' : `${server.connects} connect${server.connects === 1 ? '' : 's'}`;
  renderSince(server);
}

function renderSince(server) {
  server.parts.since.textContent = `for ${duration(Date.now() - server.sinceAt)}`;
}

function renderServers() {
  const sorted = [...servers.values()].sort((a, b) => a.id - b.id);
  for (const server of sorted) {
    renderServer(server);
    ui.serverList.append(server.row); // re-appending keeps id order without rebuilding rows
  }
  fillServerSelect(ui.logServer, sorted);
  fillServerSelect(ui.actionServer, sorted);
}

function showServersMessage(text, kind = 'info') {
  ui.serversMessage.textContent = text;
  ui.serversMessage.className = kind === 'error' ? 'message-error' : 'muted';
  ui.serversMessage.hidden = false;
}

function fillServerSelect(select, sorted) {
  const current = select.value;
  const options = [new Option('All servers', '')];
  for (const server of sorted) options.push(new Option(`${server.name} (#${server.id})`, String(server.id)));
  select.replaceChildren(...options);
  select.value = sorted.some((s) => String(s.id) === current) ? current : '';
}

async function loadServers() {
  const requestedAt = performance.now();
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(new URL('api/v1/servers', document.baseURI), { headers, cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
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

const sessionTag = Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => pad(b.toString(16))).join('');
let actionCounter = 0;
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
    for (const v of headerValues(value)) lines.push(`${key}: ${v}`);
  }
  if ('Output' in data) {
    if (lines.length > 0) lines.push('');
    lines.push(...headerValues(data.Output));
  }
  return lines.join('\n');
}

function addReply({ kind, label, server, body, time = new Date() }) {
  const item = el('div', { class: `reply reply-${kind}`, 'data-testid': 'reply-item', 'data-kind': kind },
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
  if ('Action' in action && action.ActionID === undefined) {
    actionCounter += 1;
    action.ActionID = `web-${sessionTag}-${actionCounter}`;
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

function onEnvelope(envelope) {
  switch (envelope.type) {
    case MessageType.RESPONSE:
    case MessageType.COMMAND_OUTPUT:
    case MessageType.HUB_REPLY:
      addEnvelopeReply(envelope);
      return;
    case MessageType.SERVER_STATUS:
      applyServerStatus(envelope);
      break;
    case MessageType.EVENT:
      if (pendingActionIds.has(firstValue(envelope.data.ActionID))) addEnvelopeReply(envelope);
      break;
    default:
      break;
  }
  addLogEntry(envelope);
}

const client = connect(wsUrl(), {
  onEnvelope,
  onState(state) {
    const wasLive = connState.state === 'live';
    connState = state;
    renderConnState();
    // Statuses may have changed while we were away; the list is the source of truth on (re)connect.
    if (state.state === 'live' && !wasLive) loadServers();
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

setInterval(() => {
  if (connState.state === 'reconnecting') renderConnState();
  for (const server of servers.values()) if (server.parts) renderSince(server);
}, 1000);

renderConnState();
renderLogCount();
loadServers();
