// asterisk-manager (a real AMI client library, npm) against amihub's AMI listener: login, Ping,
// Command, QueueStatus with its events, an event from an Originate, and Logoff, each checked.
// With `collide`, a second raw client sends Pings through the PBX with the very ActionIDs this
// client uses, at the same time. Prints OK when every check passed.
//
// Usage: node asterisk_manager_check.js HOST PORT USER SECRET alone|collide
'use strict';
const net = require('net');
const assert = require('assert');
const AsteriskManager = require('asterisk-manager');

const [host, port, user, secret, mode] = process.argv.slice(2);
const IDS = ['lib-1', 'lib-2', 'lib-3', 'lib-4', 'lib-5'];

function collider() {
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), host);
    const wanted = [...IDS, ...IDS, ...IDS];
    let buf = '';
    let banner = false;
    const got = [];
    sock.on('data', (d) => {
      buf += d.toString();
      if (!banner) {
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        buf = buf.slice(nl + 2);
        banner = true;
      }
      let end;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const text = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const p = Object.fromEntries(text.split('\r\n').map((l) => [l.split(': ')[0], l.split(': ').slice(1).join(': ')]));
        if (p.ActionID === 'c-login') continue;
        if (p.Ping !== 'Pong') return reject(new Error('collider got a reply not its own: ' + text));
        got.push(p.ActionID);
        if (got.length === wanted.length) {
          try {
            assert.deepStrictEqual(got.slice().sort(), wanted.slice().sort());
          } catch (e) { return reject(e); }
          sock.end();
          resolve();
        }
      }
    });
    sock.on('error', reject);
    let out = `Action: Login\r\nActionID: c-login\r\nUsername: ${user}\r\nSecret: ${secret}\r\nEvents: off\r\n\r\n`;
    for (const id of wanted) out += `Action: Ping\r\nActionID: ${id}\r\nServer: pbx1\r\n\r\n`;
    sock.write(out);
  });
}

async function library() {
  const ami = new AsteriskManager(Number(port), host, user, secret, true);
  const events = [];
  ami.on('managerevent', (e) => events.push(e));
  const act = (a) => new Promise((resolve, reject) => ami.action(a, (err, res) => (err ? reject(err) : resolve(res))));
  await new Promise((resolve, reject) => {
    ami.on('connect', () => setTimeout(resolve, 200));
    ami.on('error', reject);
  });

  const pong = await act({ action: 'Ping', actionid: IDS[0] });
  assert.strictEqual(pong.response, 'Success');
  assert.strictEqual(pong.ping, 'Pong');

  const out = await act({ action: 'Command', command: 'core show uptime', actionid: IDS[1] });
  assert.strictEqual(out.response, 'Success');
  assert.ok(JSON.stringify(out).includes('System uptime'), JSON.stringify(out));

  const queue = await act({ action: 'QueueStatus', actionid: IDS[2] });
  assert.strictEqual(queue.response, 'Success');
  assert.strictEqual(queue.eventlist, 'start');
  const deadline = Date.now() + 5000;
  while (!events.some((e) => e.event === 'QueueStatusComplete' && e.actionid === IDS[2])) {
    if (Date.now() > deadline) throw new Error('no QueueStatusComplete');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(events.some((e) => e.event === 'QueueParams' && e.actionid === IDS[2]));

  const orig = await act({ action: 'Originate', channel: 'Local/100@demo', application: 'Wait', data: '1', async: 'true', actionid: IDS[3] });
  assert.strictEqual(orig.response, 'Success');
  while (!events.some((e) => e.event === 'Newchannel' && String(e.channel).startsWith('Local/100@demo'))) {
    if (Date.now() > deadline + 5000) throw new Error('no Newchannel from the Originate');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(events.every((e) => e.server === 'pbx1'), 'events carry Server');

  const bye = await act({ action: 'Logoff', actionid: IDS[4] });
  assert.strictEqual(bye.response, 'Goodbye');
  ami.disconnect();
}

const jobs = [library()];
if (mode === 'collide') jobs.push(collider());
const timer = setTimeout(() => { console.log('timeout'); process.exit(1); }, 40000);
Promise.all(jobs).then(() => { clearTimeout(timer); console.log('OK'); process.exit(0); })
  .catch((e) => { console.log('FAIL', e); process.exit(1); });
