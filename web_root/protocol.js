// protocol.js — the amihub WebSocket protocol as seen from a browser.
//
// Owns: the envelope shape (SPEC §4), the WebSocket URL, history positions for resume (SPEC §10),
// and a connection that reconnects with exponential backoff and jitter. Knows nothing about the DOM, so later dashboards can reuse it
// as is.

/** Envelope `type` values (amiws-compatible 0–6, plus amihub's 7 and 8). */
export const MessageType = Object.freeze({
  UNKNOWN: 0,
  PROMPT: 1,
  ACTION: 2,
  EVENT: 3,
  RESPONSE: 4,
  COMMAND_OUTPUT: 5,
  LEGACY_TEXT: 6,
  SERVER_STATUS: 7,
  HUB_REPLY: 8,
});

/** Reconnect policy; the same defaults as amihub's own `[reconnect]` section. */
export const DEFAULT_BACKOFF = Object.freeze({
  initialMs: 500,
  maxMs: 30000,
  multiplier: 2,
  jitter: 0.2,
});

/** A connection that has stayed open this long resets the backoff to its first step. */
const STABLE_AFTER_MS = 10000;

/** An opening handshake that takes longer than this is abandoned and retried. */
const CONNECT_TIMEOUT_MS = 10000;

/** The `?token=` of the page URL, or null. Used for the WebSocket and as an HTTP Bearer token. */
export function pageToken(loc = window.location) {
  const token = new URLSearchParams(loc.search).get('token');
  return token ? token : null;
}

/**
 * The WebSocket URL: `ws(s)://<same host>/ws`, resolved against the page so a dashboard served
 * under a reverse-proxy prefix still finds its own hub. Carries `?token=` when the page has one,
 * and `?resume=` for `positions` (a Map server id -> {epoch, offset}) when there are any.
 */
export function wsUrl(loc = window.location, positions = new Map()) {
  const url = new URL('ws', loc.href);
  url.protocol = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  url.hash = '';
  // Percent-encoding (not URLSearchParams' `+` for space) reads the same to every decoder.
  const params = [];
  const token = pageToken(loc);
  if (token) params.push(`token=${encodeURIComponent(token)}`);
  const resume = [...positions].map(([id, p]) => `${id}:${p.epoch}:${p.offset}`).join(',');
  if (resume) params.push(`resume=${encodeURIComponent(resume)}`);
  url.search = params.length ? `?${params.join('&')}` : '';
  return url.toString();
}

/**
 * The place of a broadcast frame in its server's history (`epoch`, `offset`: SPEC §10), or null
 * for frames that have none (replies to this page, the statuses sent on connect).
 */
export function framePosition(envelope) {
  const { raw } = envelope;
  if (envelope.serverId === null || typeof raw.epoch !== 'string') return null;
  if (!Number.isSafeInteger(raw.offset) || raw.offset < 0) return null;
  return { epoch: raw.epoch, offset: raw.offset };
}

/**
 * Delay before reconnect attempt number `attempt` (0-based): `initialMs * multiplier^attempt`,
 * capped at `maxMs`, then spread by ±`jitter` so many browsers do not return in lockstep.
 * Pure: pass `random` to test it.
 */
export function backoffDelay(attempt, policy = DEFAULT_BACKOFF, random = Math.random) {
  const base = Math.min(policy.maxMs, policy.initialMs * Math.pow(policy.multiplier, attempt));
  const spread = base * policy.jitter * (2 * random() - 1);
  return Math.max(0, Math.round(base + spread));
}

/**
 * Parses one text frame into `{type, serverId, serverName, ssl, data, raw}`, or returns null when
 * the frame is not an envelope. `data` is always a plain object; `raw` is the object as received.
 */
export function parseEnvelope(text) {
  if (typeof text !== 'string') return null;
  let raw;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return null;
  if (!Number.isInteger(raw.type)) return null;
  const data = raw.data !== null && typeof raw.data === 'object' && !Array.isArray(raw.data)
    ? raw.data
    : {};
  return {
    type: raw.type,
    serverId: Number.isInteger(raw.server_id) ? raw.server_id : null,
    serverName: typeof raw.server_name === 'string' ? raw.server_name : '',
    ssl: raw.ssl === true,
    data,
    raw,
  };
}

/** A header value as a list of strings (values are strings or arrays of strings). */
export function headerValues(value) {
  if (Array.isArray(value)) return value.map(String);
  if (value === null || value === undefined) return [];
  return [String(value)];
}

/** The first string of a header value, or ''. */
export function firstValue(value) {
  const values = headerValues(value);
  return values.length > 0 ? values[0] : '';
}

/**
 * Opens a WebSocket to `url` and keeps it open; `url` may be a function, asked again before each
 * attempt (a reconnect resumes from where the page was).
 *
 * `onEnvelope(envelope)` gets every parsed frame; `onInvalid(frame)` every frame that is not an
 * envelope; `onState(state)` every change, where `state` is
 * `{state: 'connecting'|'live'|'reconnecting'|'closed', attempt, retryAt, lastClose}`
 * (`retryAt` is a `Date.now()` time while reconnecting; `lastClose` is `{code, reason}` or null).
 *
 * Returns `{send(text) -> bool, reconnectNow(), close()}`.
 */
export function connect(url, { onEnvelope, onInvalid = () => {}, onState = () => {}, policy = DEFAULT_BACKOFF } = {}) {
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let stableTimer = null;
  let connectTimer = null;
  let closedByUser = false;
  let lastClose = null;

  const report = (state, retryAt = null) => onState({ state, attempt, retryAt, lastClose });

  function clearTimers() {
    clearTimeout(retryTimer);
    clearTimeout(stableTimer);
    clearTimeout(connectTimer);
    retryTimer = stableTimer = connectTimer = null;
  }

  function open() {
    clearTimers();
    report('connecting');
    let ws;
    try {
      ws = new WebSocket(typeof url === 'function' ? url() : url);
    } catch (err) {
      lastClose = { code: 0, reason: String(err && err.message ? err.message : err) };
      scheduleRetry();
      return;
    }
    socket = ws;
    connectTimer = setTimeout(() => {
      if (socket === ws && ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);

    ws.addEventListener('open', () => {
      if (socket !== ws) return;
      clearTimeout(connectTimer);
      lastClose = null;
      report('live');
      stableTimer = setTimeout(() => { attempt = 0; }, STABLE_AFTER_MS);
    });
    ws.addEventListener('message', (event) => {
      if (socket !== ws || typeof event.data !== 'string') return;
      const envelope = parseEnvelope(event.data);
      if (envelope) onEnvelope(envelope);
      else onInvalid(event.data);
    });
    ws.addEventListener('close', (event) => {
      if (socket !== ws) return;
      socket = null;
      lastClose = { code: event.code, reason: event.reason };
      if (closedByUser) {
        clearTimers();
        report('closed');
      } else {
        scheduleRetry();
      }
    });
  }

  function scheduleRetry() {
    clearTimers();
    const delay = backoffDelay(attempt, policy);
    attempt += 1;
    retryTimer = setTimeout(open, delay);
    report('reconnecting', Date.now() + delay);
  }

  open();

  return {
    send(text) {
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(text);
      return true;
    },
    reconnectNow() {
      if (retryTimer !== null && !closedByUser) open();
    },
    close() {
      closedByUser = true;
      clearTimers();
      if (socket) socket.close(1000, 'page closed');
      else report('closed');
    },
  };
}
