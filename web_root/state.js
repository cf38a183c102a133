// state.js — the client copy of one PBX's live state: channels, bridges, queues (members and
// waiting callers) and endpoints. Loaded from a snapshot (`ProxyAction: Snapshot`, or
// `GET /api/v1/servers/{id}/state`) and then kept current by applying live AMI events.
//
// Knows nothing about the DOM. Every time is a local `Date.now()`-based millisecond value
// (`startedAt`, `joinedAt`), taken from the snapshot's `duration_s`/`wait_s` or the moment an
// event arrived, so a skewed PBX or server clock never shows negative durations.
//
// Applying an event is idempotent where it can be: amihub takes a snapshot in the PBX's own
// actor while live events are still on their way to this page, so an event already contained in
// the snapshot may arrive once more right after it.

/** Text of Asterisk's `ChannelState` codes. */
const CHANNEL_STATES = ['Down', 'Rsrvd', 'OffHook', 'Dialing', 'Ring', 'Ringing', 'Up', 'Busy',
  'Dialing Offhook', 'Pre-ring'];

/** Text of Asterisk's queue member `Status` (device state) codes. */
export const MEMBER_STATUS = Object.freeze({
  0: 'Unknown',
  1: 'Not in use',
  2: 'In use',
  3: 'Busy',
  4: 'Invalid',
  5: 'Unavailable',
  6: 'Ringing',
  7: 'Ringing, in use',
  8: 'On hold',
});

/** Endpoint technologies shown in the endpoint list when only device states are known. */
const ENDPOINT_TECHS = /^(PJSIP|SIP|IAX2|DAHDI|Skinny|MGCP|H323|UNISTIM|Motif)\//i;

const str = (v) => {
  if (Array.isArray(v)) return v.length ? String(v[0]) : '';
  return v === undefined || v === null ? '' : String(v);
};
const num = (v, fallback = 0) => {
  const n = Number(str(v));
  return Number.isFinite(n) ? n : fallback;
};
const truthy = (v) => {
  if (typeof v === 'boolean') return v;
  const s = str(v).toLowerCase();
  return s === '1' || s === 'true' || s === 'yes';
};
/** Asterisk writes `<unknown>` for empty caller ids. */
export const known = (v) => {
  const s = str(v);
  return s === '<unknown>' || s === '<null>' ? '' : s;
};

export function emptyState() {
  return {
    channels: new Map(),  // uniqueid -> channel
    bridges: new Map(),   // bridge id -> {id, type, technology, channels: Set<uniqueid>, startedAt}
    queues: new Map(),    // name -> queue
    endpoints: new Map(), // name -> {name, deviceState, status, contacts}
    deviceStates: new Map(),
  };
}

/** Start time (local ms) from a `*_s` age, else a `*_ms` wall-clock time, else now. */
function startFrom(ageS, wallMs, now) {
  if (typeof ageS === 'number' && Number.isFinite(ageS) && ageS >= 0) return now - ageS * 1000;
  if (typeof wallMs === 'number' && Number.isFinite(wallMs) && wallMs > 0) return Math.min(wallMs, now);
  return now;
}

function stateText(code, desc) {
  if (desc) return desc;
  const n = Number(code);
  return Number.isInteger(n) && CHANNEL_STATES[n] ? CHANNEL_STATES[n] : 'Unknown';
}

function newQueue(name) {
  return {
    name,
    strategy: '',
    max: '',
    holdtime: '',
    talktime: '',
    completed: 0,
    abandoned: 0,
    serviceLevel: '',
    members: new Map(), // interface -> member
    callers: new Map(), // uniqueid (or channel) -> caller
  };
}

function memberStatusText(status, given) {
  if (given) return given;
  return MEMBER_STATUS[num(status, -1)] ?? 'Unknown';
}

/** Builds a state from the snapshot's `state` object (SPEC contract of `/state`). */
export function stateFromSnapshot(snap, now = Date.now()) {
  const state = emptyState();
  if (!snap || typeof snap !== 'object') return state;
  for (const c of Array.isArray(snap.channels) ? snap.channels : []) {
    if (!c || typeof c !== 'object') continue;
    const uniqueid = str(c.uniqueid) || str(c.channel);
    if (!uniqueid) continue;
    state.channels.set(uniqueid, {
      uniqueid,
      channel: str(c.channel),
      linkedid: str(c.linkedid) || uniqueid,
      stateCode: str(c.state_code),
      state: stateText(c.state_code, str(c.state)),
      cidNum: known(c.caller_id_num),
      cidName: known(c.caller_id_name),
      connNum: known(c.connected_num),
      connName: known(c.connected_name),
      context: str(c.context),
      exten: str(c.exten),
      application: str(c.application),
      bridge: c.bridge ? str(c.bridge) : '',
      startedAt: startFrom(c.duration_s, c.created_ms, now),
    });
  }
  for (const b of Array.isArray(snap.bridges) ? snap.bridges : []) {
    if (!b || typeof b !== 'object' || !b.id) continue;
    const id = str(b.id);
    state.bridges.set(id, {
      id,
      type: str(b.type),
      technology: str(b.technology),
      channels: new Set((Array.isArray(b.channels) ? b.channels : []).map(str)),
      startedAt: startFrom(b.duration_s, b.created_ms, now),
    });
  }
  // A channel's `bridge` and a bridge's `channels` say the same thing; trust either.
  for (const [id, bridge] of state.bridges) {
    for (const uid of bridge.channels) {
      const chan = state.channels.get(uid) || findChannelByName(state, uid);
      if (chan && !chan.bridge) chan.bridge = id;
    }
  }
  for (const q of Array.isArray(snap.queues) ? snap.queues : []) {
    if (!q || typeof q !== 'object' || !q.name) continue;
    const queue = newQueue(str(q.name));
    queue.strategy = str(q.strategy);
    queue.max = str(q.max);
    queue.holdtime = str(q.holdtime);
    queue.talktime = str(q.talktime);
    queue.completed = num(q.completed);
    queue.abandoned = num(q.abandoned);
    queue.serviceLevel = str(q.service_level);
    for (const m of Array.isArray(q.members) ? q.members : []) {
      if (!m || typeof m !== 'object') continue;
      const iface = str(m.interface) || str(m.state_interface) || str(m.name);
      if (!iface) continue;
      queue.members.set(iface, {
        interface: iface,
        name: str(m.name) || iface,
        stateInterface: str(m.state_interface),
        membership: str(m.membership),
        penalty: str(m.penalty),
        callsTaken: num(m.calls_taken),
        status: str(m.status),
        statusText: memberStatusText(m.status, str(m.status_text)),
        paused: truthy(m.paused),
        pausedReason: str(m.paused_reason),
        inCall: truthy(m.in_call),
      });
    }
    for (const c of Array.isArray(q.callers) ? q.callers : []) {
      if (!c || typeof c !== 'object') continue;
      const key = str(c.uniqueid) || str(c.channel);
      if (!key) continue;
      queue.callers.set(key, {
        key,
        uniqueid: str(c.uniqueid),
        channel: str(c.channel),
        position: num(c.position),
        cidNum: known(c.caller_id_num),
        cidName: known(c.caller_id_name),
        joinedAt: startFrom(c.wait_s, c.joined_ms, now),
      });
    }
    state.queues.set(queue.name, queue);
  }
  if (snap.device_states && typeof snap.device_states === 'object') {
    for (const [device, value] of Object.entries(snap.device_states)) state.deviceStates.set(device, str(value));
  }
  for (const e of Array.isArray(snap.endpoints) ? snap.endpoints : []) {
    if (!e || typeof e !== 'object' || !e.name) continue;
    const name = str(e.name);
    state.endpoints.set(name, {
      name,
      deviceState: str(e.device_state) || state.deviceStates.get(name) || '',
      status: str(e.status),
      contacts: str(e.contacts),
    });
  }
  return state;
}

function findChannelByName(state, name) {
  for (const chan of state.channels.values()) if (chan.channel === name) return chan;
  return null;
}

/** The channel an event is about: by `Uniqueid`, else by `Channel` name. */
function eventChannel(state, data, prefix = '') {
  const uid = str(data[`${prefix}Uniqueid`]);
  if (uid && state.channels.has(uid)) return state.channels.get(uid);
  const name = str(data[`${prefix}Channel`]);
  return name ? findChannelByName(state, name) : null;
}

/** Updates the channel headers an event carries (Channel, ChannelState, CallerIDNum, …). */
function updateChannel(chan, data) {
  const set = (field, header, f = str) => {
    if (data[header] !== undefined) chan[field] = f(data[header]);
  };
  set('channel', 'Channel');
  if (data.ChannelState !== undefined || data.ChannelStateDesc !== undefined) {
    chan.stateCode = str(data.ChannelState);
    chan.state = stateText(data.ChannelState, str(data.ChannelStateDesc));
  }
  set('cidNum', 'CallerIDNum', known);
  set('cidName', 'CallerIDName', known);
  set('connNum', 'ConnectedLineNum', known);
  set('connName', 'ConnectedLineName', known);
  set('context', 'Context');
  set('exten', 'Exten');
  if (data.Linkedid !== undefined && str(data.Linkedid)) chan.linkedid = str(data.Linkedid);
}

function upsertChannel(state, data, now) {
  let chan = eventChannel(state, data);
  if (!chan) {
    const uniqueid = str(data.Uniqueid) || str(data.Channel);
    if (!uniqueid) return null;
    chan = {
      uniqueid,
      channel: '',
      linkedid: uniqueid,
      stateCode: '',
      state: 'Unknown',
      cidNum: '',
      cidName: '',
      connNum: '',
      connName: '',
      context: '',
      exten: '',
      application: '',
      bridge: '',
      startedAt: now,
    };
    state.channels.set(uniqueid, chan);
  }
  updateChannel(chan, data);
  return chan;
}

function removeChannel(state, chan) {
  state.channels.delete(chan.uniqueid);
  for (const bridge of state.bridges.values()) bridge.channels.delete(chan.uniqueid);
  for (const queue of state.queues.values()) {
    if (queue.callers.delete(chan.uniqueid) || queue.callers.delete(chan.channel)) renumber(queue);
  }
}

function queueOf(state, data) {
  const name = str(data.Queue);
  if (!name) return null;
  let queue = state.queues.get(name);
  if (!queue) {
    queue = newQueue(name);
    state.queues.set(name, queue);
  }
  return queue;
}

/** Waiting callers keep their order; positions are 1..n as Asterisk renumbers them. */
function renumber(queue) {
  const sorted = [...queue.callers.values()].sort((a, b) => a.position - b.position || a.joinedAt - b.joinedAt);
  sorted.forEach((caller, i) => { caller.position = i + 1; });
}

function removeCaller(queue, data) {
  const uid = str(data.Uniqueid);
  const name = str(data.Channel);
  let removed = queue.callers.delete(uid);
  if (!removed) {
    for (const [key, caller] of queue.callers) {
      if (caller.channel === name) {
        queue.callers.delete(key);
        removed = true;
        break;
      }
    }
  }
  if (removed) renumber(queue);
  return removed;
}

function upsertMember(queue, data) {
  const iface = str(data.Interface) || str(data.Location) || str(data.StateInterface) || str(data.MemberName);
  if (!iface) return null;
  let member = queue.members.get(iface);
  if (!member) {
    member = {
      interface: iface, name: iface, stateInterface: '', membership: '', penalty: '', callsTaken: 0,
      status: '', statusText: 'Unknown', paused: false, pausedReason: '', inCall: false,
    };
    queue.members.set(iface, member);
  }
  if (data.MemberName !== undefined && str(data.MemberName)) member.name = str(data.MemberName);
  if (data.StateInterface !== undefined) member.stateInterface = str(data.StateInterface);
  if (data.Membership !== undefined) member.membership = str(data.Membership);
  if (data.Penalty !== undefined) member.penalty = str(data.Penalty);
  if (data.CallsTaken !== undefined) member.callsTaken = num(data.CallsTaken);
  if (data.Status !== undefined) {
    member.status = str(data.Status);
    member.statusText = memberStatusText(data.Status, '');
  }
  if (data.Paused !== undefined) member.paused = truthy(data.Paused);
  if (data.PausedReason !== undefined) member.pausedReason = str(data.PausedReason);
  else if (data.Reason !== undefined && data.Paused !== undefined) member.pausedReason = str(data.Reason);
  if (!member.paused) member.pausedReason = '';
  if (data.InCall !== undefined) member.inCall = truthy(data.InCall);
  return member;
}

function setDeviceState(state, device, value) {
  if (!device) return;
  state.deviceStates.set(device, value);
  const endpoint = state.endpoints.get(device);
  if (endpoint) endpoint.deviceState = value;
}

function endpointFor(state, name) {
  if (!name) return null;
  let endpoint = state.endpoints.get(name);
  if (!endpoint) {
    endpoint = { name, deviceState: state.deviceStates.get(name) || '', status: '', contacts: '' };
    state.endpoints.set(name, endpoint);
  }
  return endpoint;
}

/**
 * Applies one live AMI event (`data` of a type-3 envelope) to `state`. Returns true when
 * something a dashboard shows may have changed.
 */
export function applyEvent(state, data, now = Date.now()) {
  const event = str(data.Event);
  switch (event) {
    case 'Newchannel': {
      const chan = upsertChannel(state, data, now);
      if (chan && data.Application !== undefined) chan.application = str(data.Application);
      return Boolean(chan);
    }
    case 'Newstate':
    case 'NewCallerid':
    case 'NewConnectedLine':
    case 'NewAccountCode':
    case 'DialBegin':
    case 'DialEnd':
    case 'LocalBridge': {
      // Dial events carry the caller unprefixed and the callee as Dest*; only known channels
      // are updated (a Dial event never creates a channel).
      let changed = false;
      for (const prefix of event === 'LocalBridge' ? ['LocalOne', 'LocalTwo'] : ['', 'Dest']) {
        const chan = eventChannel(state, data, prefix);
        if (!chan) continue;
        const fields = {};
        for (const [key, value] of Object.entries(data)) {
          if (prefix === '' ? !/^(Dest|LocalOne|LocalTwo)/.test(key) : key.startsWith(prefix)) {
            fields[prefix ? key.slice(prefix.length) : key] = value;
          }
        }
        updateChannel(chan, fields);
        changed = true;
      }
      return changed;
    }
    case 'Newexten': {
      const chan = eventChannel(state, data);
      if (!chan) return false;
      updateChannel(chan, data);
      if (data.Application !== undefined) chan.application = str(data.Application);
      return true;
    }
    case 'Rename': {
      const chan = eventChannel(state, data);
      if (!chan) return false;
      chan.channel = str(data.Newname) || chan.channel;
      return true;
    }
    case 'Hangup': {
      const chan = eventChannel(state, data);
      if (!chan) return false;
      removeChannel(state, chan);
      return true;
    }
    case 'BridgeCreate': {
      const id = str(data.BridgeUniqueid);
      if (!id) return false;
      if (!state.bridges.has(id)) {
        state.bridges.set(id, {
          id, type: str(data.BridgeType), technology: str(data.BridgeTechnology), channels: new Set(), startedAt: now,
        });
      }
      return true;
    }
    case 'BridgeEnter':
    case 'BridgeLeave': {
      const id = str(data.BridgeUniqueid);
      if (!id) return false;
      let bridge = state.bridges.get(id);
      if (!bridge && event === 'BridgeEnter') {
        bridge = { id, type: str(data.BridgeType), technology: str(data.BridgeTechnology), channels: new Set(), startedAt: now };
        state.bridges.set(id, bridge);
      }
      const chan = eventChannel(state, data);
      if (chan) updateChannel(chan, data);
      const uid = chan ? chan.uniqueid : str(data.Uniqueid);
      if (event === 'BridgeEnter') {
        if (bridge && uid) bridge.channels.add(uid);
        if (chan) chan.bridge = id;
      } else {
        if (bridge && uid) bridge.channels.delete(uid);
        if (chan && chan.bridge === id) chan.bridge = '';
      }
      return true;
    }
    case 'BridgeDestroy': {
      const id = str(data.BridgeUniqueid);
      if (!state.bridges.delete(id)) return false;
      for (const chan of state.channels.values()) if (chan.bridge === id) chan.bridge = '';
      return true;
    }
    case 'QueueCallerJoin': {
      const queue = queueOf(state, data);
      if (!queue) return false;
      const chan = eventChannel(state, data);
      if (chan) updateChannel(chan, data);
      const key = str(data.Uniqueid) || str(data.Channel);
      if (!key) return false;
      const existing = queue.callers.get(key);
      queue.callers.set(key, {
        key,
        uniqueid: str(data.Uniqueid),
        channel: str(data.Channel),
        position: num(data.Position, queue.callers.size + 1),
        cidNum: known(data.CallerIDNum),
        cidName: known(data.CallerIDName),
        joinedAt: existing ? existing.joinedAt : now,
      });
      return true;
    }
    case 'QueueCallerLeave': {
      const queue = queueOf(state, data);
      return queue ? removeCaller(queue, data) : false;
    }
    case 'QueueCallerAbandon': {
      const queue = queueOf(state, data);
      if (!queue) return false;
      // The caller leaves too (Asterisk sends QueueCallerLeave as well; removing twice is fine).
      if (removeCaller(queue, data)) queue.abandoned += 1;
      return true;
    }
    case 'AgentComplete': {
      const queue = queueOf(state, data);
      if (!queue) return false;
      queue.completed += 1;
      return true;
    }
    case 'QueueMemberAdded':
    case 'QueueMemberStatus':
    case 'QueueMemberPause':
    case 'QueueMemberPaused':
    case 'QueueMemberPenalty':
    case 'QueueMemberRinginuse': {
      const queue = queueOf(state, data);
      if (!queue) return false;
      return Boolean(upsertMember(queue, data));
    }
    case 'QueueMemberRemoved': {
      const queue = queueOf(state, data);
      if (!queue) return false;
      const iface = str(data.Interface) || str(data.Location) || str(data.StateInterface);
      return queue.members.delete(iface);
    }
    case 'DeviceStateChange': {
      setDeviceState(state, str(data.Device), str(data.State));
      return true;
    }
    case 'PeerStatus': {
      const endpoint = endpointFor(state, str(data.Peer));
      if (!endpoint) return false;
      endpoint.status = str(data.PeerStatus);
      return true;
    }
    case 'ContactStatus': {
      const name = str(data.EndpointName);
      const endpoint = endpointFor(state, name ? `PJSIP/${name}` : '');
      if (!endpoint) return false;
      endpoint.status = str(data.ContactStatus);
      if (data.URI !== undefined) endpoint.contacts = str(data.URI);
      return true;
    }
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Views of the state: calls (channels grouped), endpoints
// ---------------------------------------------------------------------------------------------

/** "Name <num>", "num" or "name". */
export function party(name, number) {
  if (name && number && name !== number) return `${name} <${number}>`;
  return number || name || '';
}

/** The interface (`Local/201@agents`, `PJSIP/100`) a channel name belongs to. */
export function channelInterface(name) {
  return name.replace(/-[0-9a-f]+(;\d)?$/i, '');
}

/**
 * Groups channels into calls: channels sharing a linkedid, and channels in a bridge together.
 * Returns calls oldest first, each
 * `{key, linkedid, uniqueid, channels, caller, from, to, status, startedAt, queue, bridged}`.
 */
export function groupCalls(state) {
  // Union-find over linkedids so that a bridge joining two linkedids makes one call.
  const parent = new Map();
  const find = (x) => {
    let root = x;
    while (parent.has(root) && parent.get(root) !== root) root = parent.get(root);
    parent.set(x, root);
    return root;
  };
  const union = (a, b) => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent.set(rb, ra);
  };
  for (const chan of state.channels.values()) find(chan.linkedid);
  for (const bridge of state.bridges.values()) {
    let first = null;
    for (const uid of bridge.channels) {
      const chan = state.channels.get(uid);
      if (!chan) continue;
      if (first === null) first = chan.linkedid;
      else union(first, chan.linkedid);
    }
  }
  const groups = new Map();
  for (const chan of state.channels.values()) {
    const root = find(chan.linkedid);
    if (!groups.has(root)) groups.set(root, []);
    groups.get(root).push(chan);
  }
  const waiting = new Map(); // uniqueid or channel name -> queue name
  for (const queue of state.queues.values()) {
    for (const caller of queue.callers.values()) {
      if (caller.uniqueid) waiting.set(caller.uniqueid, queue.name);
      if (caller.channel) waiting.set(caller.channel, queue.name);
    }
  }
  const members = new Map(); // interface -> member name
  for (const queue of state.queues.values()) {
    for (const member of queue.members.values()) members.set(member.interface, member.name);
  }

  const calls = [];
  for (const [root, channels] of groups) {
    channels.sort((a, b) => a.startedAt - b.startedAt || a.uniqueid.localeCompare(b.uniqueid));
    const caller = channels.find((c) => c.uniqueid === c.linkedid) || channels[0];
    const others = channels.filter((c) => c !== caller);
    const from = party(caller.cidName, caller.cidNum) || channelInterface(caller.channel);
    let queue = '';
    for (const c of channels) queue = queue || waiting.get(c.uniqueid) || waiting.get(c.channel) || '';
    const to = calleeOf(caller, others, members, queue);
    const bridged = channels.some((c) => c.bridge);
    let status;
    if (queue) status = 'Queued';
    else if (bridged) status = 'Talking';
    else if (channels.some((c) => c.state === 'Ringing' || c.state === 'Ring')) status = 'Ringing';
    else status = caller.state || 'Unknown';
    calls.push({
      key: root,
      linkedid: caller.linkedid,
      uniqueid: caller.uniqueid,
      channels,
      caller,
      from,
      to,
      status,
      startedAt: Math.min(...channels.map((c) => c.startedAt)),
      queue,
      bridged,
    });
  }
  calls.sort((a, b) => a.startedAt - b.startedAt || a.key.localeCompare(b.key));
  return calls;
}

function calleeOf(caller, others, members, queue) {
  const callerParty = party(caller.cidName, caller.cidNum);
  const named = (c) => members.get(channelInterface(c.channel)) || '';
  // A channel ringing or answering an agent names the agent; a channel with its own caller id
  // (an internal callee) names itself; else what it dialled.
  for (const c of others) {
    const agent = named(c);
    if (agent) return queue ? `${queue} → ${agent}` : agent;
  }
  for (const c of others) {
    const p = party(c.cidName, c.cidNum);
    if (p && p !== callerParty) return p;
  }
  if (queue) return `queue ${queue}`;
  const connected = party(caller.connName, caller.connNum);
  if (connected && connected !== callerParty) return connected;
  for (const c of others) if (c.exten && c.exten !== 's') return c.exten;
  if (caller.exten && caller.exten !== 's') return caller.exten;
  return others.length ? channelInterface(others[0].channel) : '—';
}

/**
 * Endpoints to list: the snapshot's and those events named, plus devices of endpoint technologies
 * not among them (a PBX that lists no endpoints still shows its phones); sorted by name.
 */
export function endpointList(state) {
  const list = new Map();
  for (const [device, value] of state.deviceStates) {
    if (ENDPOINT_TECHS.test(device)) list.set(device, { name: device, deviceState: value, status: '', contacts: '' });
  }
  for (const [name, endpoint] of state.endpoints) list.set(name, endpoint);
  return [...list.values()].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
}

/** Totals for a server row. */
export function stateCounts(state) {
  let waiting = 0;
  for (const queue of state.queues.values()) waiting += queue.callers.size;
  return { calls: groupCalls(state).length, channels: state.channels.size, waiting };
}
