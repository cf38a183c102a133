// Browser scenarios for the amihub dashboard: Playwright (playwright-core) driving Debian's
// chromium, headless. Run by integration/browser.rs, which starts amihub (and the simulated
// PBXs) and answers the steps a browser cannot perform itself.
//
// Environment:
//   AMIHUB_URL         base URL of the dashboard, e.g. http://127.0.0.1:40123/ (required)
//   AMIHUB_TOKEN       token for ?token= (optional)
//   SCENARIOS          comma-separated: calls,queue,outage (simulated PBXs), demo or quality
//   RTCP_INTERVAL_MS   the demo's RTCP interval, for the quality scenario's deadline
//   QUALITY_SCREENSHOT where the quality scenario writes its 1280x800 screenshot (PNG)
//   SCREENSHOT         where the demo scenario writes the 1280x800 screenshot (PNG)
//   PHONE_SCREENSHOT   where the demo scenario writes a 390 px wide screenshot (optional)
//   ARTIFACTS          directory for failure screenshots (optional)
//   CHROMIUM           browser executable [/usr/bin/chromium]
//
// Line protocol on stdout/stdin: `STEP <name> [args]` asks the Rust side to do something (stop
// or restart a PBX) and waits for one line back, `ok …` or `err …`. Other output lines start
// with `#` (progress), `PASS`, `FAIL`; the last line is `browser: N passed, M failed`. Exit code
// 0 only if every scenario passed.
//
// Everything is awaited against a deadline; nothing sleeps to synchronise.

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const BASE = process.env.AMIHUB_URL;
const TOKEN = process.env.AMIHUB_TOKEN || '';
const SCENARIOS = (process.env.SCENARIOS || 'calls,queue,outage').split(',').map((s) => s.trim()).filter(Boolean);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS || '';
// Cluster: after the cut, the resume scenario's page reconnects to this other node (as a load
// balancer may move it), e.g. http://127.0.0.1:PORT/.
const RESUME_ON = process.env.RESUME_ON || '';

if (!BASE) {
  console.log('FAIL setup: AMIHUB_URL is not set');
  process.exit(2);
}

const say = (line) => process.stdout.write(`${line}\n`);
const info = (line) => say(`# ${line}`);

// ---- the step protocol ----------------------------------------------------------------------

const stdinLines = createInterface({ input: process.stdin });
const replies = [];
const waiters = [];
stdinLines.on('line', (line) => {
  const waiter = waiters.shift();
  if (waiter) waiter(line);
  else replies.push(line);
});
stdinLines.on('close', () => {
  while (waiters.length) waiters.shift()('err stdin closed');
});

/** Asks the Rust side to perform `name`; resolves with its `ok …` text, throws on `err …`. */
async function step(name, args = '', timeoutMs = 30000) {
  say(`STEP ${name}${args ? ` ${args}` : ''}`);
  const line = await new Promise((resolve, reject) => {
    if (replies.length) {
      resolve(replies.shift());
      return;
    }
    const timer = setTimeout(() => reject(new Error(`step ${name}: no answer within ${timeoutMs} ms`)), timeoutMs);
    waiters.push((l) => {
      clearTimeout(timer);
      resolve(l);
    });
  });
  if (!line.startsWith('ok')) throw new Error(`step ${name} failed: ${line}`);
  return line.slice(2).trim();
}

// ---- waiting with deadlines -----------------------------------------------------------------

const q = (testid, extra = '') => `[data-testid="${testid}"]${extra}`;

/**
 * Waits until `predicate(arg)`, evaluated in the page on every animation frame, returns a truthy
 * value; returns it. Fails with `what` and the last value of `describe` (if given).
 */
async function until(page, what, predicate, arg, timeout = 10000) {
  try {
    const handle = await page.waitForFunction(predicate, arg, { timeout, polling: 'raf' });
    return await handle.jsonValue();
  } catch (err) {
    if (!/Timeout/i.test(String(err && err.message))) throw err;
    throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
  }
}

/** Text of the first element matching `selector` matches `re` (a RegExp source string). */
function textMatches(page, what, selector, re, timeout) {
  return until(page, what, ([sel, source]) => {
    const node = document.querySelector(sel);
    return node && new RegExp(source).test(node.textContent) ? node.textContent : null;
  }, [selector, re], timeout);
}

/** An element matching `selector` whose text contains `text` is shown (or, with `gone`, none is). */
function rowWithText(page, what, selector, text, { gone = false, timeout = 10000 } = {}) {
  return until(page, what, ([sel, needle, absent]) => {
    const rows = [...document.querySelectorAll(sel)].filter((r) => r.textContent.includes(needle) && r.getClientRects().length > 0);
    if (absent) return rows.length === 0;
    return rows.length ? rows[0].outerHTML.length : null;
  }, [selector, text, gone], timeout);
}

function visible(page, what, selector, shown = true, timeout = 10000) {
  return until(page, what, ([sel, want]) => {
    const node = document.querySelector(sel);
    const isShown = Boolean(node && !node.hidden && node.getClientRects().length > 0);
    return isShown === want;
  }, [selector, shown], timeout);
}

function countAtLeast(page, what, selector, n, timeout = 10000) {
  return until(page, what, ([sel, min]) => {
    const count = document.querySelectorAll(sel).length;
    return count >= min ? count : null;
  }, [selector, n], timeout);
}

// ---- page helpers ---------------------------------------------------------------------------

function dashboardUrl(serverId = 1, token = TOKEN) {
  const url = new URL(BASE);
  if (token) url.searchParams.set('token', token);
  url.hash = `server=${serverId}`;
  return url.toString();
}

const serverRow = (id) => `${q('server-row')}[data-server-id="${id}"]`;

async function openDashboard(context, { serverId = 1, token = TOKEN } = {}) {
  const page = await context.newPage();
  page.on('pageerror', (err) => say(`# page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') say(`# console ${msg.type()}: ${msg.text()}`);
  });
  await page.goto(dashboardUrl(serverId, token), { waitUntil: 'load', timeout: 15000 });
  return page;
}

/** The dashboard is live and server `id` is Connected with its state loaded (not stale). */
async function ready(page, id, timeout = 15000) {
  await textMatches(page, 'the page WebSocket to be live', q('conn-status'), '^live$', timeout);
  await textMatches(page, `server ${id} Connected`, `${serverRow(id)} ${q('server-status')}`, 'Connected', timeout);
  await visible(page, `server ${id} state not stale`, `${serverRow(id)} ${q('state-stale')}`, false, timeout);
  await countAtLeast(page, `server ${id}'s queues and members from the snapshot`,
    `${q('queue')}[data-queue="support"] ${q('queue-member')}`, 1, timeout);
}

let actionCounter = 0;

/**
 * Sends `action` to server `serverId` through the dashboard's action form; waits for amihub's
 * reply in the reply panel and returns its text. `ok: true` requires a success reply.
 */
async function sendAction(page, action, serverId, { ok = true, timeout = 10000 } = {}) {
  actionCounter += 1;
  const actionId = `browser-${actionCounter}`;
  await page.fill(q('action-input'), JSON.stringify({ ...action, ActionID: actionId }));
  await page.selectOption(q('action-server'), String(serverId));
  await page.click(q('action-send'));
  const reply = `${q('reply-item')}[data-action-id="${actionId}"]`;
  const text = await until(page, `a reply to ${action.Action} (${actionId})`, (sel) => {
    const node = document.querySelector(sel);
    return node ? `${node.dataset.kind}|${node.textContent}` : null;
  }, reply, timeout);
  if (ok && text.startsWith('error|')) throw new Error(`${action.Action} failed: ${text}`);
  return text;
}

const callRow = (text) => [q('call-row'), text];

// ---- scenarios ------------------------------------------------------------------------------

/** A call appears in `calls` with a live duration, shows in the event log, and disappears after Hangup. */
async function scenarioCalls(context) {
  const page = await openDashboard(context);
  await ready(page, 1);
  await sendAction(page, {
    Action: 'Originate', Channel: 'Local/100@demo', Application: 'Wait', Data: '600',
    CallerID: 'Browser Call <5550101>',
  }, 1);
  await rowWithText(page, 'the originated call in the calls list', ...callRow('5550101'));
  const row = page.locator(q('call-row'), { hasText: '5550101' });
  const from = await row.locator(q('call-from')).textContent();
  if (!from.includes('Browser Call')) throw new Error(`call-from shows ${JSON.stringify(from)}`);
  const channel = await row.getAttribute('data-channel');
  if (!/^Local\/100@demo-[0-9a-f]+;1$/.test(channel || '')) throw new Error(`call-row data-channel is ${JSON.stringify(channel)}`);
  info(`call up on ${channel}`);

  // The duration ticks in the browser.
  const durationSel = `${q('call-row')}[data-channel="${channel}"] ${q('call-duration')}`;
  const first = await page.textContent(durationSel);
  await until(page, 'the call duration to tick', ([sel, before]) => {
    const node = document.querySelector(sel);
    return node && node.textContent !== before ? node.textContent : null;
  }, [durationSel, first], 4000);
  await textMatches(page, 'the server row to count the call', `${serverRow(1)} ${q('server-counts')}`, '^1 call', 5000);

  // The event log has the call's events, and its filter narrows them.
  await countAtLeast(page, 'a Newchannel row in the event log', `${q('event-row')}[data-event="Newchannel"]`, 1);
  await page.fill(q('filter'), '5550101');
  await until(page, 'the filter to show only the call\'s events', (sel) => {
    const rows = [...document.querySelectorAll(sel)];
    return rows.length > 0 && rows.every((r) => r.dataset.event !== 'ServerStatus') ? rows.length : null;
  }, q('event-row'), 5000);
  await page.fill(q('filter'), 'no-such-thing-at-all');
  await until(page, 'the filter to hide every row', (sel) => document.querySelectorAll(sel).length === 0, q('event-row'), 5000);
  await page.fill(q('filter'), '');
  await countAtLeast(page, 'rows back after clearing the filter', q('event-row'), 3, 5000);

  await sendAction(page, { Action: 'Hangup', Channel: channel }, 1);
  await rowWithText(page, 'the call to leave the calls list after Hangup', ...callRow('5550101'), { gone: true });
  await countAtLeast(page, 'a Hangup row in the event log', `${q('event-row')}[data-event="Hangup"]`, 1);
  await textMatches(page, 'the server row to count no calls', `${serverRow(1)} ${q('server-counts')}`, '^0 calls', 5000);
  await page.close();
}

/** A caller arrives in queue `support` with a live wait time, and leaves it. */
async function scenarioQueue(context) {
  const page = await openDashboard(context);
  await ready(page, 1);
  const queueSel = `${q('queue')}[data-queue="support"]`;
  const members = await page.locator(`${queueSel} ${q('queue-member')}`).count();
  info(`queue support has ${members} members`);
  // A Local call to the queue's name joins it (src/sim/originate.rs); a free agent is rung at
  // once and answers 1–5 s later, which takes the caller out of the queue.
  await sendAction(page, {
    Action: 'Originate', Channel: 'Local/support@from-trunk', Application: 'Wait', Data: '600',
    CallerID: 'Queue Caller <5550202>',
  }, 1);
  await rowWithText(page, 'the caller waiting in queue support', `${queueSel} ${q('queue-caller')}`, '5550202', { timeout: 5000 });
  const caller = page.locator(`${queueSel} ${q('queue-caller')}`, { hasText: '5550202' });
  const channel = await caller.getAttribute('data-channel');
  info(`caller ${channel} waiting`);
  await textMatches(page, 'the waiting count', `${queueSel} ${q('queue-waiting')}`, '^1 waiting', 5000);
  // An agent is being rung for it (QueueMemberStatus applied live).
  await until(page, 'a member of support ringing or in use', (sel) => [...document.querySelectorAll(sel)]
    .some((m) => ['2', '6', '7'].includes(m.dataset.status)), `${queueSel} ${q('queue-member')}`, 5000);

  // The caller hangs up (or has already been answered): either way it leaves the queue.
  await sendAction(page, { Action: 'Hangup', Channel: channel }, 1, { ok: false });
  await rowWithText(page, 'the caller to leave queue support', `${queueSel} ${q('queue-caller')}`, '5550202', { gone: true });
  await textMatches(page, 'no one waiting', `${queueSel} ${q('queue-waiting')}`, '^0 waiting', 5000);
  await rowWithText(page, 'the queue call to end', ...callRow('5550202'), { gone: true });
  await countAtLeast(page, 'QueueCallerJoin in the event log', `${q('event-row')}[data-event="QueueCallerJoin"]`, 1);
  await countAtLeast(page, 'QueueCallerLeave in the event log', `${q('event-row')}[data-event="QueueCallerLeave"]`, 1);
  await page.close();
}

/** amihub itself restarts: the page notices, marks its state stale, reconnects and reloads it. */
async function scenarioHubRestart(context) {
  const page = await openDashboard(context);
  await ready(page, 1);
  await sendAction(page, {
    Action: 'Originate', Channel: 'Local/100@demo', Application: 'Wait', Data: '600',
    CallerID: 'Restart Call <5550404>',
  }, 1);
  await rowWithText(page, 'a call before the restart', ...callRow('5550404'));
  const channel = await page.locator(q('call-row'), { hasText: '5550404' }).getAttribute('data-channel');

  await step('hub-down');
  await textMatches(page, 'the page to notice amihub is gone', q('conn-status'), '^(reconnecting|connecting)', 10000);
  await visible(page, 'server 1 state stale while the page is cut off', `${serverRow(1)} ${q('state-stale')}`, true, 5000);
  await rowWithText(page, 'the last known call to stay visible', ...callRow('5550404'), { timeout: 2000 });

  await step('hub-up');
  // Backoff from 0.5 s doubling with jitter: a few attempts fit in well under 15 s.
  await textMatches(page, 'the page to reconnect by itself', q('conn-status'), '^live$', 15000);
  await ready(page, 1, 15000);
  // The PBX kept the call; the new amihub rebuilt its state, and the page reloaded it.
  await rowWithText(page, 'the call in the reloaded state', ...callRow('5550404'), { timeout: 10000 });
  await sendAction(page, { Action: 'Hangup', Channel: channel }, 1);
  await rowWithText(page, 'the call to end', ...callRow('5550404'), { gone: true });
  await page.close();
}

/** An action through amihub's HTTP API (the page's own socket may be cut meanwhile). */
async function apiAction(serverId, action) {
  const res = await fetch(new URL(`/api/v1/servers/${serverId}/actions`, BASE), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}) },
    body: JSON.stringify(action),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${action.Action}: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** The `;1` channel of the call with caller id number `num`, from CoreShowChannels. */
async function channelOf(num) {
  const { events = [] } = await apiAction(1, { Action: 'CoreShowChannels' });
  const hit = events.find((e) => e.CallerIDNum === num && /;1$/.test(e.Channel || ''));
  if (!hit) throw new Error(`no channel with caller ${num}: ${JSON.stringify(events.map((e) => e.Channel))}`);
  return hit.Channel;
}

/** The calls table as data: one sorted line per row (channel, from, to, status). */
function callsTable(page) {
  return page.evaluate((sel) => [...document.querySelectorAll(sel)].map((r) => [
    r.dataset.channel,
    ...['call-from', 'call-to', 'call-status'].map((t) => r.querySelector(`[data-testid="${t}"]`)?.textContent ?? ''),
  ].join(' | ')).sort(), q('call-row'));
}

/** `url` (the page's WebSocket URL) with the host of the `RESUME_ON` node. */
function onOtherNode(url) {
  const u = new URL(url);
  u.host = new URL(RESUME_ON).host;
  return u.toString();
}

/**
 * Carries the page's routed socket `ws` to `url` over Node's own WebSocket (the page still
 * believes it talks to its origin); the same `send`/`onMessage`/`close` as `connectToServer()`.
 */
function bridge(ws, url) {
  if (typeof WebSocket === 'undefined') throw new Error('RESUME_ON needs a node with WebSocket (node 22, or 20 with --experimental-websocket)');
  const sock = new WebSocket(url);
  const early = [];
  let deliver = () => {};
  sock.addEventListener('open', () => { for (const m of early.splice(0)) sock.send(m); });
  sock.addEventListener('message', (e) => deliver(String(e.data)));
  sock.addEventListener('close', () => ws.close({ code: 4000, reason: 'the other node closed' }));
  return {
    send: (m) => (sock.readyState === WebSocket.OPEN ? sock.send(m) : early.push(m)),
    onMessage: (fn) => { deliver = fn; },
    close: () => sock.close(),
  };
}

/**
 * The page's WebSocket is cut for a few seconds (Playwright's routeWebSocket: the test closes it
 * and refuses reconnects) while calls start and end; the page resumes (`?resume=`, no snapshot)
 * and its calls table then equals a freshly loaded page's. With `RESUME_ON` (cluster) the page
 * comes back on another node, which must replay what it missed from the shared positions.
 */
async function scenarioResume(context) {
  const page = await context.newPage();
  page.on('pageerror', (err) => say(`# page error: ${err.message}`));
  let cut = false;
  const conns = [];
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    if (cut) {
      ws.close({ code: 4000, reason: 'test: network cut' });
      return;
    }
    const moved = RESUME_ON && conns.length > 0;
    const server = moved ? bridge(ws, onOtherNode(ws.url())) : ws.connectToServer();
    const conn = { url: ws.url(), node: moved ? RESUME_ON : BASE, sent: [], got: [], ws, server };
    ws.onMessage((m) => {
      conn.sent.push(String(m));
      server.send(m);
    });
    server.onMessage((m) => {
      if (conn.got.length < 40) conn.got.push(String(m).slice(0, 300));
      ws.send(m);
    });
    conns.push(conn);
  });
  await page.goto(dashboardUrl(1), { waitUntil: 'load', timeout: 15000 });
  await ready(page, 1);
  await apiAction(1, { Action: 'Originate', Channel: 'Local/100@demo', Application: 'Wait', Data: '600', CallerID: 'Before Cut <5550601>' });
  await rowWithText(page, 'the call before the cut', ...callRow('5550601'));
  const before = await channelOf('5550601');

  cut = true;
  for (const c of conns) {
    c.ws.close({ code: 4000, reason: 'test: network cut' });
    c.server.close();
  }
  const cutAt = Date.now();
  await textMatches(page, 'the page to notice the cut', q('conn-status'), '^(reconnecting|connecting)', 5000);
  // While the page is cut off: one call starts and stays, one ends, one starts and ends.
  await apiAction(1, { Action: 'Originate', Channel: 'Local/100@demo', Application: 'Wait', Data: '600', CallerID: 'During Cut <5550602>' });
  await apiAction(1, { Action: 'Hangup', Channel: before });
  await apiAction(1, { Action: 'Originate', Channel: 'Local/100@demo', Application: 'Wait', Data: '600', CallerID: 'Brief Call <5550603>' });
  await apiAction(1, { Action: 'Hangup', Channel: await channelOf('5550603') });
  const during = await channelOf('5550602');
  // The outage itself lasts three seconds, whatever the page tries meanwhile.
  await new Promise((r) => setTimeout(r, Math.max(0, 3000 - (Date.now() - cutAt))));
  const connsBefore = conns.length;
  cut = false;

  await textMatches(page, 'the page to reconnect by itself', q('conn-status'), '^live$', 20000);
  await visible(page, 'server 1 not stale after the resume', `${serverRow(1)} ${q('state-stale')}`, false, 10000);
  await rowWithText(page, 'the call started during the cut', ...callRow('5550602'));
  await rowWithText(page, 'the call ended during the cut to be gone', ...callRow('5550601'), { gone: true });
  await rowWithText(page, 'the brief call never to show', ...callRow('5550603'), { gone: true });
  const resumed = conns.slice(connsBefore);
  const last = resumed[resumed.length - 1];
  if (!last || !/[?&]resume=1%3A/.test(last.url)) throw new Error(`the reconnect did not resume: ${last && last.url}`);
  if (RESUME_ON && last.node !== RESUME_ON) throw new Error(`the page resumed on ${last.node}, not ${RESUME_ON}`);
  if (last.sent.some((m) => m.includes('"Snapshot"'))) {
    throw new Error(`the resumed page asked for a snapshot: ${last.sent.join(' ')}; it got: ${last.got.join('\n')}`);
  }

  const fresh = await context.newPage();
  await fresh.goto(dashboardUrl(1), { waitUntil: 'load', timeout: 15000 });
  await ready(fresh, 1);
  await rowWithText(fresh, 'the fresh page to show the call', ...callRow('5550602'));
  const [a, b] = [await callsTable(page), await callsTable(fresh)];
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`resumed ${JSON.stringify(a)} != fresh ${JSON.stringify(b)}`);
  info(`resumed and fresh pages agree: ${JSON.stringify(a)}`);
  await apiAction(1, { Action: 'Hangup', Channel: during });
  await rowWithText(page, 'the last call to end', ...callRow('5550602'), { gone: true });
  await fresh.close();
  await page.close();
}

/** The PBX goes down: Disconnected and stale; it comes back: Connected, state refreshed. */
async function scenarioOutage(context) {
  const page = await openDashboard(context);
  await ready(page, 1);
  await sendAction(page, {
    Action: 'Originate', Channel: 'Local/100@demo', Application: 'Wait', Data: '600',
    CallerID: 'Outage Call <5550303>',
  }, 1);
  await rowWithText(page, 'a call before the outage', ...callRow('5550303'));

  await step('pbx-down');
  const status = `${serverRow(1)} ${q('server-status')}`;
  await textMatches(page, 'server 1 to say Disconnected', status, 'Disconnected', 15000);
  await visible(page, 'the state-stale indicator of server 1', `${serverRow(1)} ${q('state-stale')}`, true, 5000);
  await visible(page, 'the continuity-lost banner', '.calls-panel [data-role="detail-stale"].is-stale', true, 5000);
  // The last known state stays on screen, marked stale; the other PBX is unaffected.
  await rowWithText(page, 'the last known call to stay visible', ...callRow('5550303'), { timeout: 2000 });
  if (await page.locator(serverRow(2)).count()) {
    await textMatches(page, 'server 2 to stay Connected', `${serverRow(2)} ${q('server-status')}`, 'Connected', 2000);
    await visible(page, 'server 2 not stale', `${serverRow(2)} ${q('state-stale')}`, false, 2000);
  }
  if (!(await page.textContent(q('conn-status'))).includes('live')) throw new Error('the page WebSocket dropped during a PBX outage');

  await step('pbx-up');
  await textMatches(page, 'server 1 Connected again', status, 'Connected', 30000);
  await visible(page, 'the state-stale indicator to clear', `${serverRow(1)} ${q('state-stale')}`, false, 15000);
  // The restarted PBX has no such call: the refreshed state no longer shows it.
  await rowWithText(page, 'the refreshed state to drop the old call', ...callRow('5550303'), { gone: true, timeout: 10000 });
  await countAtLeast(page, 'queues back from the new snapshot', `${q('queue')}[data-queue="support"] ${q('queue-member')}`, 1, 10000);
  await page.close();
}

/** With a wrong token the API and the WebSocket refuse the page, and the page says so. */
async function scenarioBadToken(context) {
  const page = await openDashboard(context, { token: 'not-the-right-token-0123456789' });
  await textMatches(page, 'the page to report the refused token', q('servers-message'), '401.*token was refused', 10000);
  await textMatches(page, 'the page WebSocket to be retrying', q('conn-status'), '^(reconnecting|connecting)', 10000);
  if (await page.locator(q('server-row')).count()) throw new Error('servers listed without a valid token');
  await page.close();
}

/** Served over HTTPS with a token: live over wss://, the state loads, an action round-trips. */
async function scenarioTls(context) {
  if (!BASE.startsWith('https:')) throw new Error(`the tls scenario needs an https:// AMIHUB_URL, not ${BASE}`);
  const sockets = [];
  const page = await context.newPage();
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('pageerror', (err) => say(`# page error: ${err.message}`));
  await page.goto(dashboardUrl(1), { waitUntil: 'load', timeout: 15000 });
  await ready(page, 1);
  const url = sockets.find((u) => u.includes('/ws'));
  if (!url || !url.startsWith('wss://') || !url.includes(`token=${encodeURIComponent(TOKEN)}`)) {
    throw new Error(`the page WebSocket should be wss:// with the token, saw ${JSON.stringify(sockets)}`);
  }
  info(`page WebSocket ${url.replace(/token=[^&]+/, 'token=…')}`);
  await sendAction(page, { Action: 'Ping' }, 1);
  await page.close();
}

/** `amihub --demo`: both servers up, live events, calls and queues; the README screenshot. */
async function scenarioDemo(context) {
  const page = await openDashboard(context);
  await textMatches(page, 'the page WebSocket to be live', q('conn-status'), '^live$', 15000);
  for (const id of [1, 2]) {
    await textMatches(page, `demo server ${id} Connected`, `${serverRow(id)} ${q('server-status')}`, 'Connected', 10000);
  }
  await countAtLeast(page, 'live event rows', q('event-row'), 5, 10000);
  await countAtLeast(page, 'queues from the snapshot', q('queue'), 1, 10000);
  await countAtLeast(page, 'endpoints', q('endpoint-row'), 1, 10000);
  await countAtLeast(page, 'an active call', q('call-row'), 1, 15000);
  // Best effort for a livelier picture: a few calls and a waiting caller, if they come soon.
  await countAtLeast(page, 'three calls', q('call-row'), 3, 8000).catch(() => {});
  await countAtLeast(page, 'a waiting caller', q('queue-caller'), 1, 8000).catch(() => {});
  if (process.env.SCREENSHOT) {
    mkdirSync(dirname(process.env.SCREENSHOT), { recursive: true });
    await page.screenshot({ path: process.env.SCREENSHOT });
    info(`screenshot written to ${process.env.SCREENSHOT}`);
  }

  // Selecting the other server shows its calls and queues.
  await page.click(`${serverRow(2)} button`);
  await textMatches(page, 'the detail panels to follow the selection', '.calls-panel [data-role="detail-server"]', 'demo-pbx2', 5000);
  await page.close();

  // A phone: one column, nothing wider than the screen, the panels reachable.
  const phonePage = await context.newPage();
  await phonePage.setViewportSize({ width: 390, height: 844 });
  await phonePage.goto(dashboardUrl(1), { waitUntil: 'load', timeout: 15000 });
  await textMatches(phonePage, 'the phone page live', q('conn-status'), '^live$', 15000);
  await countAtLeast(phonePage, 'queues on the phone', q('queue'), 1, 10000);
  const widths = await phonePage.evaluate(() => ({
    doc: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
    viewport: window.innerWidth,
  }));
  if (widths.doc > widths.viewport || widths.body > widths.viewport) {
    throw new Error(`the page is wider than a 390 px phone: ${JSON.stringify(widths)}`);
  }
  for (const id of ['calls', 'queues', 'event-log', 'action-input']) {
    const box = await phonePage.locator(q(id)).boundingBox();
    if (!box || box.width < 300) throw new Error(`${id} is not usable at 390 px: ${JSON.stringify(box)}`);
  }
  if (process.env.PHONE_SCREENSHOT) {
    mkdirSync(dirname(process.env.PHONE_SCREENSHOT), { recursive: true });
    await phonePage.screenshot({ path: process.env.PHONE_SCREENSHOT, fullPage: true });
  }
  await phonePage.close();
}

/**
 * Call quality in the demo: a call row shows good figures, then, once its RTCP reports turn bad,
 * shows bad ones no later than one RTCP interval after the first bad report reached the page;
 * the endpoint panel of PJSIP/117 shows its user-agent change (Linphone → Zoiper).
 */
async function scenarioQuality(context) {
  const interval = Number(process.env.RTCP_INTERVAL_MS || 5000);
  const page = await context.newPage();
  page.on('pageerror', (err) => say(`# page error: ${err.message}`));
  // When the first bad report (loss at or past 5 %) of each channel reached the page.
  const firstBadAt = new Map();
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => {
    let env;
    try { env = JSON.parse(String(payload)); } catch { return; }
    const d = env && env.server_id === 1 && env.data;
    if (!d || (d.Event !== 'RTCPSent' && d.Event !== 'RTCPReceived')) return;
    const loss = Number(d.Report0FractionLost) / 256 * 100;
    if (loss >= 5 && !firstBadAt.has(d.Channel)) firstBadAt.set(d.Channel, Date.now());
  }));
  // Every grade each call row was rendered with, and when (rows are rebuilt when they change).
  await page.addInitScript(() => {
    window.qualityHistory = new Map();
    const record = () => {
      for (const row of document.querySelectorAll('[data-testid="call-row"]')) {
        const key = row.dataset.linkedid;
        const grade = row.dataset.quality;
        const list = window.qualityHistory.get(key) || [];
        if (!list.length || list[list.length - 1].grade !== grade) {
          const channels = (row.querySelector('.call-channels')?.textContent || '').split(' ⇄ ');
          list.push({ grade, at: Date.now(), channels });
          window.qualityHistory.set(key, list);
        }
      }
    };
    new MutationObserver(record).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-quality'] });
  });
  await page.goto(dashboardUrl(1), { waitUntil: 'load', timeout: 15000 });
  await textMatches(page, 'the page WebSocket to be live', q('conn-status'), '^live$', 15000);
  await textMatches(page, 'demo server 1 Connected', `${serverRow(1)} ${q('server-status')}`, 'Connected', 10000);
  await countAtLeast(page, 'a call row with good quality', `${q('call-row')}[data-quality="good"]`, 1, 30000);
  // A row seen good, then bad: and bad no later than one interval after its first bad report.
  const turned = await until(page, 'a call row turning from good to bad', () => {
    for (const [key, list] of window.qualityHistory) {
      const good = list.findIndex((h) => h.grade === 'good');
      const bad = list.findIndex((h, i) => i > good && h.grade === 'bad');
      if (good >= 0 && bad > good) return { key, goodAt: list[good].at, badAt: list[bad].at, channels: list[bad].channels };
    }
    return null;
  }, null, 90000);
  const reported = turned.channels.map((c) => firstBadAt.get(c)).filter((t) => t !== undefined);
  if (!reported.length) throw new Error(`no bad RTCP report seen for ${turned.channels.join(', ')}`);
  const lag = turned.badAt - Math.min(...reported);
  info(`call ${turned.key} turned bad ${lag} ms after its first bad report (interval ${interval} ms)`);
  if (lag > interval) throw new Error(`the row turned bad ${lag} ms after the report, more than one interval (${interval} ms)`);
  const badRow = `${q('call-row')}[data-linkedid="${turned.key}"]`;
  await textMatches(page, 'the bad row\'s figures', `${badRow} ${q('call-quality')}`, 'loss \\d+\\.\\d %.*jitter \\d+ ms.*MOS \\d\\.\\d\\d', 5000);
  // The endpoint panel of 117 shows the user agent it re-registered with.
  await page.click(`${q('endpoint-row')}[data-endpoint="PJSIP/117"]`);
  await textMatches(page, 'the panel on PJSIP/117', q('eq-name'), '^PJSIP/117$', 10000);
  await rowWithText(page, '117\'s user-agent change to Zoiper', `${q('eq-change')}[data-field="user_agent"]`, 'Zoiper', { timeout: 60000 });
  await textMatches(page, 'the change from Linphone', `${q('eq-change')}[data-field="user_agent"] .eq-from`, 'Linphone', 5000);
  await textMatches(page, '117\'s current user agent', q('eq-user_agent'), 'Zoiper', 10000);
  await countAtLeast(page, 'the endpoint chart', q('quality-chart'), 1, 5000);
  // A call's figures open its endpoint's panel: the degrading one's chart has bad loss bars.
  const endpoint = await page.getAttribute(`${badRow} ${q('call-quality')}[data-grade="bad"]`, 'data-endpoint');
  await page.click(`${badRow} ${q('call-quality')}`);
  await textMatches(page, `the panel on ${endpoint}`, q('eq-name'), `^${endpoint}$`, 10000);
  await countAtLeast(page, `bad loss bars in ${endpoint}'s chart`, `${q('quality-chart')} .q-bar.q-bad`, 1, 10000);
  if (process.env.QUALITY_SCREENSHOT) {
    mkdirSync(dirname(process.env.QUALITY_SCREENSHOT), { recursive: true });
    await page.screenshot({ path: process.env.QUALITY_SCREENSHOT });
    info(`screenshot written to ${process.env.QUALITY_SCREENSHOT}`);
  }
  await page.close();
}

const ALL = {
  calls: scenarioCalls,
  queue: scenarioQueue,
  'hub-restart': scenarioHubRestart,
  resume: scenarioResume,
  outage: scenarioOutage,
  'bad-token': scenarioBadToken,
  tls: scenarioTls,
  demo: scenarioDemo,
  quality: scenarioQuality,
};

// ---- main -----------------------------------------------------------------------------------

const userDataDir = mkdtempSync(join(tmpdir(), 'amihub-chromium-'));
let context;
let passed = 0;
let failed = 0;
try {
  const started = Date.now();
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    // The tls scenario's amihub has a self-signed certificate made by the test.
    ignoreHTTPSErrors: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
      '--disable-quic', '--disable-component-update', '--disable-sync',
    ],
    timeout: 30000,
  });
  info(`chromium ${context.browser()?.version() ?? ''} up in ${Date.now() - started} ms`);
  for (const name of SCENARIOS) {
    const run = ALL[name];
    if (!run) {
      say(`FAIL ${name}: no such scenario`);
      failed += 1;
      continue;
    }
    const t0 = Date.now();
    try {
      await run(context);
      say(`PASS ${name} (${Date.now() - t0} ms)`);
      passed += 1;
    } catch (err) {
      failed += 1;
      say(`FAIL ${name} (${Date.now() - t0} ms): ${err && err.message ? err.message : err}`);
      for (const page of context.pages()) {
        if (ARTIFACTS) {
          mkdirSync(ARTIFACTS, { recursive: true });
          const path = join(ARTIFACTS, `failure-${name}-${context.pages().indexOf(page)}.png`);
          await page.screenshot({ path, fullPage: true }).catch(() => {});
          say(`# failure screenshot: ${path}`);
        }
        await page.close().catch(() => {});
      }
    }
  }
} catch (err) {
  failed += 1;
  say(`FAIL setup: ${err && err.message ? err.message : err}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  say(`browser: ${passed} passed, ${failed} failed`);
  stdinLines.close();
}
process.exit(failed === 0 && passed > 0 ? 0 : 1);
