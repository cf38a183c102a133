// Hostile-page and login scenarios in a real Chromium (Playwright, playwright-core), run by
// integration/browser.rs, which starts amihub and the simulated PBX and then asks the PBX what
// reached it.
//
// Environment:
//   AMIHUB_URL    base URL of amihub, e.g. http://127.0.0.1:40123/ (required)
//   AMIHUB_USER   Basic user the browser holds credentials for (required)
//   AMIHUB_PASS   its password (required)
//   SCENARIO      csrf | login
//   CHROMIUM      browser executable [/usr/bin/chromium]
//
// csrf: the user logs in at amihub (the browser answers its 401 with her Basic credentials),
// checks that her own page can POST a JSON Ping, then visits a page served from another loopback
// port that tries a `no-cors` fetch with a text/plain Originate and a text/plain form POST. The
// Rust side asserts that only the Ping reached the PBX.
// login: the browser answers amihub's challenge itself (a user of either source must get in).
//
// Output: `#` progress lines, `PASS …` or `FAIL …`; exit code 0 only on PASS.

import http from 'node:http';
import { chromium } from 'playwright-core';

const BASE = process.env.AMIHUB_URL;
const USER = process.env.AMIHUB_USER;
const PASS = process.env.AMIHUB_PASS;
const SCENARIO = process.env.SCENARIO || 'csrf';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const say = (line) => process.stdout.write(`${line}\n`);
const info = (line) => say(`# ${line}`);

if (!BASE || !USER || !PASS) {
  say('FAIL setup: AMIHUB_URL, AMIHUB_USER and AMIHUB_PASS must be set');
  process.exit(2);
}

const ACTIONS = new URL('api/v1/servers/1/actions', BASE).href;
const ORIGINATE = '{"Action":"Originate","Channel":"Local/100@default","Application":"Wait","Data":"1"}';

/** The attacker's site, on another loopback port: a text/plain form aimed at amihub. */
function attackerPage() {
  // enctype=text/plain sends `name=value`: the name carries the JSON, the value closes it.
  const name = ORIGINATE.slice(0, -1) + ',"x":"';
  const html = `<!doctype html><meta charset="utf-8"><title>cute cats</title>
<form id="f" method="POST" enctype="text/plain" action="${ACTIONS}">
<input type="hidden" name='${name}' value='"}'></form>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function csrf(page) {
  const login = await page.goto(new URL('api/v1/servers', BASE).href);
  if (login.status() !== 200) throw new Error(`login at amihub: ${login.status()}`);
  const own = await page.evaluate(async (url) => {
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"Action":"Ping"}',
    });
    return r.status;
  }, ACTIONS);
  if (own !== 200) throw new Error(`amihub's own page could not POST JSON: ${own}`);
  info('same-origin JSON POST: 200');

  const server = await attackerPage();
  const evil = `http://127.0.0.1:${server.address().port}/`;
  const seen = [];
  page.on('response', (r) => {
    if (r.url() === ACTIONS) seen.push(`${r.request().method()} ${r.status()}`);
  });
  try {
    await page.goto(evil);
    const fetched = await page.evaluate(async ({ url, body }) => {
      const out = [];
      try {
        await fetch(url, { method: 'POST', mode: 'no-cors', credentials: 'include', headers: { 'Content-Type': 'text/plain' }, body });
        out.push('no-cors fetch sent');
      } catch (e) {
        out.push(`no-cors fetch failed: ${e}`);
      }
      try {
        const r = await fetch(url, { method: 'POST', credentials: 'include', headers: { 'Content-Type': 'application/json' }, body });
        out.push(`cors json fetch: ${r.status}`);
      } catch (e) {
        out.push(`cors json fetch blocked: ${e}`);
      }
      return out;
    }, { url: ACTIONS, body: ORIGINATE });
    info(`attacker fetches: ${fetched.join('; ')}`);
    const [nav] = await Promise.all([
      page.waitForNavigation({ timeout: 15000 }),
      page.evaluate(() => document.getElementById('f').submit()),
    ]);
    info(`attacker form POST: ${nav ? nav.status() : 'no response'}`);
    info(`amihub answered the attacker with: ${seen.join(', ') || 'nothing'}`);
  } finally {
    server.close();
  }
}

async function login(page) {
  const r = await page.goto(new URL('api/v1/servers', BASE).href);
  const auth = (await r.request().allHeaders()).authorization || '';
  info(`answered the challenge with ${auth.split(' ')[0] || 'nothing'}: ${r.status()}`);
  if (r.status() !== 200) throw new Error(`${USER} could not log in from the browser: ${r.status()}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  timeout: 30000,
});
let code = 0;
try {
  const context = await browser.newContext({ httpCredentials: { username: USER, password: PASS } });
  const page = await context.newPage();
  await (SCENARIO === 'login' ? login : csrf)(page);
  say(`PASS ${SCENARIO}`);
} catch (e) {
  say(`FAIL ${SCENARIO}: ${e && e.stack ? e.stack.split('\n')[0] : e}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
