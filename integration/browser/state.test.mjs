// Unit tests of the dashboard's state model (web_root/state.js) with node's test runner:
// snapshot loading, live events applied to it (idempotently), and calls grouped from channels.
// Run: node --test integration/browser/state.test.mjs (integration/browser.rs does).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  applyEvent, endpointList, groupCalls, stateCounts, stateFromSnapshot,
} from '../../web_root/state.js';

const NOW = 1_800_000_000_000;

const chan = (name, uid, linked, extra = {}) => ({
  Channel: name, ChannelState: '6', ChannelStateDesc: 'Up', CallerIDNum: '100', CallerIDName: 'Alice',
  ConnectedLineNum: '<unknown>', ConnectedLineName: '<unknown>', Context: 'demo', Exten: '200',
  Uniqueid: uid, Linkedid: linked, ...extra,
});

const snapshot = {
  channels: [
    {
      channel: 'PJSIP/100-00000001', uniqueid: '1.1', linkedid: '1.1', state: 'Up', state_code: '6',
      caller_id_num: '100', caller_id_name: 'Alice', connected_num: '200', connected_name: 'Bob',
      context: 'demo', exten: '200', application: 'Dial', bridge: 'b1', created_ms: NOW - 12000, duration_s: 12,
    },
    {
      channel: 'PJSIP/200-00000002', uniqueid: '1.2', linkedid: '1.1', state: 'Up', state_code: '6',
      caller_id_num: '200', caller_id_name: 'Bob', connected_num: '100', connected_name: 'Alice',
      context: 'demo', exten: '200', application: 'AppDial', bridge: 'b1', created_ms: NOW - 11000, duration_s: 11,
    },
  ],
  bridges: [{ id: 'b1', type: 'basic', technology: 'simple_bridge', channels: ['1.1', '1.2'], duration_s: 10 }],
  queues: [{
    name: 'support', strategy: 'ringall', calls: 1, completed: '3', abandoned: '1',
    members: [{
      name: 'Agent200', interface: 'Local/200@agents', state_interface: 'Local/200@agents', membership: 'static',
      penalty: '0', calls_taken: '2', status: '1', status_text: 'Not in use', paused: false, paused_reason: '', in_call: false,
    }],
    callers: [{ position: 1, channel: 'PJSIP/trunk-00000009', uniqueid: '1.9', caller_id_num: '555', caller_id_name: 'Carol', wait_s: 30 }],
  }],
  endpoints: [{ name: 'PJSIP/100', device_state: 'INUSE', status: 'Reachable', contacts: 'sip:100@127.0.0.1' }],
  device_states: { 'PJSIP/100': 'INUSE', 'PJSIP/200': 'INUSE' },
};

test('a snapshot becomes one call with a duration from duration_s', () => {
  const state = stateFromSnapshot(snapshot, NOW);
  const calls = groupCalls(state);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].from, 'Alice <100>');
  assert.equal(calls[0].to, 'Bob <200>');
  assert.equal(calls[0].status, 'Talking');
  assert.equal(calls[0].startedAt, NOW - 12000);
  assert.deepEqual(stateCounts(state), { calls: 1, channels: 2, waiting: 1 });
  const support = state.queues.get('support');
  assert.equal(support.completed, 3);
  assert.equal(support.callers.get('1.9').joinedAt, NOW - 30000);
  assert.equal(endpointList(state)[0].deviceState, 'INUSE');
});

test('Newchannel adds, Newstate updates, Hangup removes; replays are harmless', () => {
  const state = stateFromSnapshot({}, NOW);
  const created = chan('Local/100@demo-0001;1', '2.1', '2.1', { ChannelState: '4', ChannelStateDesc: 'Ring' });
  assert.ok(applyEvent(state, { Event: 'Newchannel', ...created }, NOW));
  assert.ok(applyEvent(state, { Event: 'Newchannel', ...created }, NOW + 5000)); // replay
  assert.equal(state.channels.size, 1);
  assert.equal(state.channels.get('2.1').startedAt, NOW, 'a replay keeps the start time');
  assert.equal(groupCalls(state)[0].status, 'Ringing');
  applyEvent(state, { Event: 'Newstate', ...created, ChannelState: '6', ChannelStateDesc: 'Up' }, NOW);
  assert.equal(state.channels.get('2.1').state, 'Up');
  applyEvent(state, { Event: 'Hangup', ...created, Cause: '16' }, NOW);
  applyEvent(state, { Event: 'Hangup', ...created, Cause: '16' }, NOW); // replay
  assert.equal(groupCalls(state).length, 0);
});

test('bridging joins channels of different linkedids into one call', () => {
  const state = stateFromSnapshot({}, NOW);
  applyEvent(state, { Event: 'Newchannel', ...chan('PJSIP/100-1', '3.1', '3.1') }, NOW);
  applyEvent(state, { Event: 'Newchannel', ...chan('PJSIP/300-2', '3.2', '3.2', { CallerIDNum: '300', CallerIDName: 'Dave' }) }, NOW);
  assert.equal(groupCalls(state).length, 2);
  applyEvent(state, { Event: 'BridgeCreate', BridgeUniqueid: 'b9', BridgeType: 'basic' }, NOW);
  applyEvent(state, { Event: 'BridgeEnter', BridgeUniqueid: 'b9', ...chan('PJSIP/100-1', '3.1', '3.1') }, NOW);
  applyEvent(state, { Event: 'BridgeEnter', BridgeUniqueid: 'b9', ...chan('PJSIP/300-2', '3.2', '3.2', { CallerIDNum: '300', CallerIDName: 'Dave' }) }, NOW);
  const calls = groupCalls(state);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].to, 'Dave <300>');
  applyEvent(state, { Event: 'BridgeLeave', BridgeUniqueid: 'b9', ...chan('PJSIP/300-2', '3.2', '3.2') }, NOW);
  applyEvent(state, { Event: 'BridgeDestroy', BridgeUniqueid: 'b9' }, NOW);
  assert.equal(groupCalls(state).length, 2);
});

test('queue callers join and leave, members change status and pause', () => {
  const state = stateFromSnapshot(snapshot, NOW);
  const support = state.queues.get('support');
  const caller = chan('Local/support@from-trunk-0007;2', '4.2', '4.1', { CallerIDNum: '5550202', CallerIDName: 'Q' });
  applyEvent(state, { Event: 'QueueCallerJoin', ...caller, Queue: 'support', Position: '2', Count: '2' }, NOW);
  applyEvent(state, { Event: 'QueueCallerJoin', ...caller, Queue: 'support', Position: '2', Count: '2' }, NOW + 9000);
  assert.equal(support.callers.size, 2);
  assert.equal(support.callers.get('4.2').joinedAt, NOW, 'a replayed join keeps the wait time');
  applyEvent(state, { Event: 'QueueCallerLeave', Queue: 'support', Channel: 'PJSIP/trunk-00000009', Uniqueid: '1.9', Position: '1', Count: '1' }, NOW);
  assert.equal(support.callers.size, 1);
  assert.equal(support.callers.get('4.2').position, 1, 'positions are renumbered');
  applyEvent(state, { Event: 'QueueCallerAbandon', ...caller, Queue: 'support', Position: '1' }, NOW);
  applyEvent(state, { Event: 'QueueCallerLeave', ...caller, Queue: 'support', Position: '1', Count: '0' }, NOW);
  assert.equal(support.callers.size, 0);
  assert.equal(support.abandoned, 2);

  applyEvent(state, {
    Event: 'QueueMemberStatus', Queue: 'support', MemberName: 'Agent200', Interface: 'Local/200@agents', Status: '6', Paused: '0', InCall: '0',
  }, NOW);
  assert.equal(support.members.get('Local/200@agents').statusText, 'Ringing');
  applyEvent(state, {
    Event: 'QueueMemberPause', Queue: 'support', MemberName: 'Agent200', Interface: 'Local/200@agents', Paused: '1', PausedReason: 'Lunch',
  }, NOW);
  assert.equal(support.members.get('Local/200@agents').paused, true);
  assert.equal(support.members.get('Local/200@agents').pausedReason, 'Lunch');
  assert.equal(support.members.size, 1);
});

test('a queued call names the queue, then the agent being rung', () => {
  const state = stateFromSnapshot(snapshot, NOW);
  const trunk = chan('PJSIP/trunk-0a', '5.1', '5.1', { CallerIDNum: '+1415', CallerIDName: 'Acme' });
  applyEvent(state, { Event: 'Newchannel', ...trunk }, NOW);
  applyEvent(state, { Event: 'QueueCallerJoin', ...trunk, Queue: 'support', Position: '2' }, NOW);
  assert.equal(groupCalls(state).find((c) => c.linkedid === '5.1').to, 'queue support');
  applyEvent(state, { Event: 'Newchannel', ...chan('Local/200@agents-0b;1', '5.2', '5.1', { CallerIDNum: '+1415', CallerIDName: 'Acme' }) }, NOW);
  const call = groupCalls(state).find((c) => c.linkedid === '5.1');
  assert.equal(call.to, 'support → Agent200');
  assert.equal(call.status, 'Queued');
});

test('device states and endpoint statuses', () => {
  const state = stateFromSnapshot(snapshot, NOW);
  applyEvent(state, { Event: 'DeviceStateChange', Device: 'PJSIP/100', State: 'NOT_INUSE' }, NOW);
  applyEvent(state, { Event: 'ContactStatus', EndpointName: '100', ContactStatus: 'Unreachable', URI: 'sip:100@10.0.0.1' }, NOW);
  const e = endpointList(state).find((x) => x.name === 'PJSIP/100');
  assert.equal(e.deviceState, 'NOT_INUSE');
  assert.equal(e.status, 'Unreachable');
  // Without endpoints, device states of endpoint technologies stand in.
  const bare = stateFromSnapshot({ device_states: { 'PJSIP/101': 'INUSE', 'Local/201@agents': 'INUSE', 'Queue:support': 'INUSE' } }, NOW);
  assert.deepEqual(endpointList(bare).map((x) => x.name), ['PJSIP/101']);
  // One endpoint named by an event (a contact registering) does not hide the other phones.
  applyEvent(bare, { Event: 'ContactStatus', EndpointName: '117', ContactStatus: 'Created', URI: 'sip:117@192.0.2.7' }, NOW);
  assert.deepEqual(endpointList(bare).map((x) => x.name), ['PJSIP/101', 'PJSIP/117']);
});
