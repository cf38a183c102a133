// views.js — builds the rows of the state panels (calls, queues, endpoints) from the client state
// (state.js). Pure builders: given data, return elements; app.js decides when and where.

import { el, ticker } from './dom.js';
import { channelInterface, party } from './state.js';
import { buildCallQuality, qualitySignature } from './quality.js';

const CALL_STATUS_CLASS = {
  Talking: 'tone-ok',
  Up: 'tone-ok',
  Ringing: 'tone-warn',
  Ring: 'tone-warn',
  Queued: 'tone-info',
  Down: 'tone-muted',
};

/** Signature of a call: everything its row shows except the ticking time. */
export function callSignature(call) {
  return JSON.stringify([call.from, call.to, call.status, call.queue, Math.round(call.startedAt),
    call.channels.map((c) => [c.channel, c.state, c.application, c.bridge ? 1 : 0]),
    qualitySignature(call.quality), call.thresholds || null]);
}

export function buildCallRow(call) {
  const app = call.caller.application || call.channels.map((c) => c.application).find(Boolean) || '';
  const where = [call.caller.context, call.caller.exten].filter(Boolean).join('/');
  return el('li', {
    class: 'call-row',
    'data-testid': 'call-row',
    'data-linkedid': call.linkedid,
    'data-uniqueid': call.uniqueid,
    'data-channel': call.caller.channel,
    'data-status': call.status,
    'data-quality': call.quality ? call.quality.grade : 'none',
  },
  el('div', { class: 'call-main' },
    el('span', { class: 'call-parties' },
      el('span', { class: 'call-from', 'data-testid': 'call-from', text: call.from }),
      el('span', { class: 'call-arrow', 'aria-label': 'calls', text: '→' }),
      el('span', { class: 'call-to', 'data-testid': 'call-to', text: call.to })),
    el('span', { class: `badge ${CALL_STATUS_CLASS[call.status] || 'tone-muted'}`, 'data-testid': 'call-status', text: call.status }),
    ticker('span', call.startedAt, { class: 'call-duration', 'data-testid': 'call-duration', title: 'Duration' })),
  el('div', { class: 'call-sub muted' },
    el('span', { class: 'call-channels', text: call.channels.map((c) => c.channel).join(' ⇄ ') }),
    app || where ? el('span', { class: 'call-app', text: [app, where].filter(Boolean).join(' · ') }) : null),
  call.quality || call.status === 'Talking' || call.status === 'Up'
    ? el('div', { class: 'call-q' }, buildCallQuality(call.quality, call.thresholds))
    : null);
}

const MEMBER_TONE = {
  1: 'tone-ok', // not in use
  2: 'tone-busy', // in use
  3: 'tone-busy',
  6: 'tone-warn', // ringing
  7: 'tone-warn',
  8: 'tone-busy',
  4: 'tone-bad',
  5: 'tone-bad',
};

function memberRows(queue) {
  const members = [...queue.members.values()].sort((a, b) => a.name.localeCompare(b.name));
  return members.map((m) => el('li', {
    class: `queue-member${m.paused ? ' paused' : ''}`,
    'data-testid': 'queue-member',
    'data-interface': m.interface,
    'data-status': m.status,
    'data-paused': m.paused ? 'true' : 'false',
  },
  el('span', { class: 'member-name', text: m.name, title: m.interface }),
  el('span', { class: 'member-badges' },
    m.paused ? el('span', { class: 'badge tone-pause', 'data-testid': 'member-paused', text: m.pausedReason ? `Paused: ${m.pausedReason}` : 'Paused' }) : null,
    el('span', { class: `badge ${MEMBER_TONE[m.status] || 'tone-muted'}`, 'data-testid': 'member-status', text: m.inCall && m.status === '1' ? 'In call' : m.statusText })),
  el('span', { class: 'member-calls muted', title: 'Calls taken', text: `${m.callsTaken} taken` })));
}

function callerRows(queue) {
  const callers = [...queue.callers.values()].sort((a, b) => a.position - b.position);
  return callers.map((c) => el('li', {
    class: 'queue-caller',
    'data-testid': 'queue-caller',
    'data-uniqueid': c.uniqueid,
    'data-channel': c.channel,
  },
  el('span', { class: 'caller-pos', text: String(c.position) }),
  el('span', { class: 'caller-party', text: party(c.cidName, c.cidNum) || channelInterface(c.channel) }),
  ticker('span', c.joinedAt, { class: 'caller-wait', 'data-testid': 'caller-wait', title: 'Waiting for' })));
}

export function queueSignature(queue) {
  return JSON.stringify([queue.strategy, queue.completed, queue.abandoned, queue.holdtime,
    [...queue.members.values()].map((m) => [m.interface, m.name, m.status, m.paused, m.pausedReason, m.inCall, m.callsTaken]),
    [...queue.callers.values()].map((c) => [c.key, c.position, c.cidNum, c.cidName, Math.round(c.joinedAt)])]);
}

export function buildQueue(queue) {
  const members = [...queue.members.values()];
  const available = members.filter((m) => !m.paused && m.status === '1' && !m.inCall).length;
  const paused = members.filter((m) => m.paused).length;
  const waiting = queue.callers.size;
  const stats = [
    el('span', { class: `chip ${waiting ? 'chip-warn' : ''}`, 'data-testid': 'queue-waiting', text: `${waiting} waiting` }),
    el('span', { class: 'chip', text: `${available}/${members.length} available` }),
    paused ? el('span', { class: 'chip', text: `${paused} paused` }) : null,
    el('span', { class: 'chip', title: 'Completed calls', text: `${queue.completed} done` }),
    queue.abandoned ? el('span', { class: 'chip', title: 'Abandoned calls', text: `${queue.abandoned} abandoned` }) : null,
  ];
  const callers = callerRows(queue);
  return el('article', { class: 'queue', 'data-testid': 'queue', 'data-queue': queue.name },
    el('div', { class: 'queue-head' },
      el('h3', { class: 'queue-name', text: queue.name }),
      queue.strategy ? el('span', { class: 'muted queue-strategy', text: queue.strategy }) : null,
      el('span', { class: 'queue-stats' }, ...stats)),
    el('div', { class: 'queue-body' },
      el('div', { class: 'queue-callers' },
        el('h4', { text: 'Waiting' }),
        callers.length
          ? el('ol', { class: 'caller-list' }, ...callers)
          : el('p', { class: 'muted empty-small', text: 'Nobody waiting.' })),
      el('div', { class: 'queue-members' },
        el('h4', { text: 'Members' }),
        members.length
          ? el('ul', { class: 'member-list' }, ...memberRows(queue))
          : el('p', { class: 'muted empty-small', text: 'No members.' }))));
}

const DEVICE_TONE = {
  NOT_INUSE: 'tone-ok',
  INUSE: 'tone-busy',
  BUSY: 'tone-busy',
  ONHOLD: 'tone-busy',
  RINGING: 'tone-warn',
  RINGINUSE: 'tone-warn',
  UNAVAILABLE: 'tone-bad',
  INVALID: 'tone-bad',
};

const DEVICE_TEXT = {
  NOT_INUSE: 'idle',
  INUSE: 'in use',
  BUSY: 'busy',
  ONHOLD: 'on hold',
  RINGING: 'ringing',
  RINGINUSE: 'ringing',
  UNAVAILABLE: 'unavailable',
  INVALID: 'invalid',
  UNKNOWN: 'unknown',
};

export function endpointSignature(e) {
  return JSON.stringify([e.name, e.deviceState, e.status, e.contacts]);
}

export function buildEndpoint(e) {
  const stateKey = (e.deviceState || 'UNKNOWN').toUpperCase();
  const title = [e.name, e.deviceState, e.status, e.contacts].filter(Boolean).join(' · ');
  return el('li', {
    class: `endpoint-row ${DEVICE_TONE[stateKey] || 'tone-muted'}`,
    'data-testid': 'endpoint-row',
    'data-endpoint': e.name,
    'data-state': e.deviceState,
    title,
  },
  el('span', { class: 'endpoint-dot', 'aria-hidden': 'true' }),
  el('span', { class: 'endpoint-name', text: e.name }),
  el('span', { class: 'endpoint-state', 'data-testid': 'endpoint-state', text: DEVICE_TEXT[stateKey] || e.deviceState.toLowerCase() }),
  e.status && !/^(reachable|ok)$/i.test(e.status) ? el('span', { class: 'endpoint-status', text: e.status }) : null);
}
