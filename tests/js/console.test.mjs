// The live debug console (/console) end to end: login, the page in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core), the feed, filters and the publish form, against
// a real `ferrocast websocket --console` process.
//
// Every wait has a deadline (15 s) and says what it waited for; nothing asserts on elapsed time.
// Leaves a screenshot in tests/js/output/console.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const T = 15_000;
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const KEY = 'app-key';
const SECRET = 'app-secret';
const SCREENSHOT = path.join(here, 'output', 'console.png');

function binPath() {
  const fromEnv = process.env.FERROCAST_BIN;
  return fromEnv ? path.resolve(fromEnv) : path.resolve(here, '../../target/debug/ferrocast');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `pred` until truthy; throws after `ms` naming `what`. */
async function until(pred, what, ms = T) {
  const deadline = Date.now() + ms;
  for (;;) {
    let v;
    try {
      v = await pred();
    } catch {
      v = undefined;
    }
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Starts `ferrocast websocket --console --port 0 --fifo DIR/b.fifo`; resolves once it logs its port. */
async function startServer() {
  const bin = binPath();
  if (!fs.existsSync(bin)) throw new Error(`ferrocast binary not found at ${bin} (run cargo build or set FERROCAST_BIN)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocast-console-'));
  const fifo = path.join(dir, 'b.fifo');
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FERROCAST_')) env[k] = v;
  env.RUNTIME_DIRECTORY = dir;
  env.XDG_RUNTIME_DIR = dir;
  // The suite runs once with one loop and once with two (tests/run.sh).
  if (process.env.FERROCAST_TEST_LOOPS) env.FERROCAST_LOOPS = process.env.FERROCAST_TEST_LOOPS;
  // `orders` keeps a history, which the channel table shows.
  const apps = JSON.stringify([{ id: 'app-id', key: KEY, secret: SECRET, history: [{ prefix: 'orders', size: 10, ttl_secs: 300 }] }]);
  const child = spawn(bin, ['websocket', '--console', '--port', '0', '--fifo', fifo, '--set', `apps=${apps}`], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs = [];
  let exited = null;
  child.once('exit', (code, signal) => { exited = { code, signal }; });
  const port = await new Promise((resolve, reject) => {
    let partial = '';
    const timer = setTimeout(() => reject(new Error(`no "listening on" line within ${T} ms; stderr:\n${logs.join('\n')}`)), T);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      partial += chunk;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        // eslint-disable-next-line no-control-regex
        const line = partial.slice(0, nl).replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
        partial = partial.slice(nl + 1);
        logs.push(line);
        const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`ferrocast exited (${code ?? signal}) before listening; stderr:\n${logs.join('\n')}`));
    });
  });
  return {
    port,
    fifo,
    logs,
    base: `http://127.0.0.1:${port}`,
    async stop() {
      if (!exited) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        let timer;
        const late = new Promise((resolve) => { timer = setTimeout(() => resolve('late'), 5000); });
        if ((await Promise.race([gone, late])) === 'late') {
          child.kill('SIGKILL');
          await Promise.race([gone, sleep(5000)]);
        }
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A channel-protocol client on /ws that records every text message. */
async function channelClient(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  const messages = [];
  ws.on('message', (data, isBinary) => { if (!isBinary) messages.push(data.toString('utf8')); });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('test client did not connect to /ws')), T);
    ws.once('open', () => { clearTimeout(timer); resolve(); });
    ws.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
  return { ws, messages };
}

/** Writes one line to the server's FIFO. */
function fifoWrite(fifo, obj) {
  const fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    fs.writeSync(fd, `${JSON.stringify(obj)}\n`);
  } finally {
    fs.closeSync(fd);
  }
}

/** The status an HTTP WebSocket handshake to `pathAndQuery` is answered with. */
function handshakeStatus(port, pathAndQuery) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path: pathAndQuery,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
      timeout: T,
    });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('timeout', () => req.destroy(new Error('handshake timed out')));
    req.on('error', reject);
    req.end();
  });
}

const basic = (user, pass) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

let server;
let context;
let page;
let userDataDir;
let client;
const pageErrors = [];

before(async () => {
  fs.rmSync(SCREENSHOT, { force: true });
  fs.rmSync(SCREENSHOT.replace(/\.png$/, '-failure.png'), { force: true });
  server = await startServer();
});

after(async () => {
  // On failure, keep a picture of what the page showed.
  if (page && !fs.existsSync(SCREENSHOT)) {
    try {
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, '-failure.png'), timeout: 5000 });
    } catch { /* best effort */ }
  }
  // Each step on its own so one failure does not leave the others running.
  try { client?.ws.terminate(); } catch { /* gone */ }
  try { await context?.close(); } catch { /* gone */ }
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  await server?.stop();
});

test('GET /console without credentials is 401 with a Basic challenge', async () => {
  const res = await fetch(`${server.base}/console`, { signal: AbortSignal.timeout(T) });
  await res.arrayBuffer();
  assert.equal(res.status, 401);
  const challenge = res.headers.get('www-authenticate') || '';
  assert.match(challenge, /^Basic realm="ferrocast console"/, `WWW-Authenticate was ${JSON.stringify(challenge)}`);
});

test('GET /console with wrong credentials is 401', async () => {
  for (const auth of [basic(KEY, 'wrong-secret'), basic('wrong-key', SECRET), basic('token', 'anything')]) {
    const res = await fetch(`${server.base}/console`, { headers: { Authorization: auth }, signal: AbortSignal.timeout(T) });
    await res.arrayBuffer();
    assert.equal(res.status, 401, `credentials ${auth}`);
  }
});

test('the feed and the publish endpoint refuse a bad session with 401', async () => {
  assert.equal(await handshakeStatus(server.port, '/console/feed?session=not-a-session'), 401);
  assert.equal(await handshakeStatus(server.port, '/console/feed'), 401);
  const res = await fetch(`${server.base}/console/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Console-Session': 'not-a-session' },
    body: JSON.stringify({ app: 'app-id', channel: 'orders', event: 'test', data: 'x' }),
    signal: AbortSignal.timeout(T),
  });
  await res.arrayBuffer();
  assert.equal(res.status, 401);
});

test('the page logs in and its feed connects', { timeout: 60_000 }, async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_BIN)`);
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocast-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1366, height: 768 },
    httpCredentials: { username: KEY, password: SECRET },
    timeout: 30_000,
  });
  context.setDefaultTimeout(T);
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack || e)));
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  const res = await page.goto(`${server.base}/console`, { timeout: T });
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'] || '', /^text\/html/);
  const html = await res.text();
  assert.ok(!html.includes('{{SESSION}}') && !html.includes('{{PREFIX}}'), 'placeholders were substituted');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent.trim() === 'connected', null, { timeout: T })
    .catch(async (e) => {
      const status = await page.evaluate(() => `${document.querySelector('#status')?.textContent} ${document.querySelector('#status-detail')?.textContent}`);
      throw new Error(`#status never read "connected" (last: ${status}): ${e.message}`);
    });
  // The hello frame fills the app select.
  await page.waitForFunction(() => document.querySelectorAll('#publish-app option').length > 0, null, { timeout: T })
    .catch((e) => { throw new Error(`no hello frame on the feed (#publish-app has no options; the page opened ${JSON.stringify(sockets)}): ${e.message}`); });
  // Stats frames arrive every second and fill the connection count.
  await page.waitForFunction(() => /^\d/.test(document.querySelector('#connections')?.textContent.trim() || ''), null, { timeout: T })
    .catch((e) => { throw new Error(`no stats frame on the feed (#connections is empty): ${e.message}`); });
});

test('a client that connects and subscribes shows up in the log and the channel table', { timeout: 60_000 }, async () => {
  assert.ok(page, 'the page is open');
  client = await channelClient(server.port);
  client.ws.send(JSON.stringify({ action: 'subscribe', channel: 'orders' }));
  await until(
    () => client.messages.some((m) => { try { const j = JSON.parse(m); return j.event === 'subscribed' && j.channel === 'orders'; } catch { return false; } }),
    'the test client to be subscribed to orders',
  );
  await page.waitForSelector('#log [data-kind="connection_opened"]', { state: 'attached', timeout: T });
  await page.waitForSelector('#log [data-kind="subscribed"][data-channel="orders"]', { state: 'visible', timeout: T });
  await page.waitForSelector('#channels [data-channel="orders"]', { state: 'visible', timeout: T });
  const subscribers = await page.innerText('#channels [data-channel="orders"]');
  assert.match(subscribers, /orders\s+1\b/, `channel row: ${JSON.stringify(subscribers)}`);
});

test('a FIFO line appears as a publish row; the channel filter hides and shows it', { timeout: 60_000 }, async () => {
  assert.ok(page && client, 'the page and the test client are up');
  fifoWrite(server.fifo, { channel: 'orders', data: 'hello from fifo' });
  await until(() => client.messages.includes('hello from fifo'), 'the test client to receive "hello from fifo"');
  const row = '#log [data-kind="publish"][data-channel="orders"]';
  await page.waitForSelector(row, { state: 'visible', timeout: T });
  assert.match(await page.textContent(row), /fifo/, 'the publish row names its source');
  // The channel table shows the stream: last offset 1, one publication kept.
  await page.waitForFunction(
    () => /1 · 1/.test(document.querySelector('#channels [data-channel="orders"]')?.innerText || ''),
    null,
    { timeout: T },
  );

  await page.fill('#filter-channel', 'nomatch');
  await page.waitForSelector(row, { state: 'hidden', timeout: T });
  // Substring, case-insensitive.
  await page.fill('#filter-channel', 'ORD');
  await page.waitForSelector(row, { state: 'visible', timeout: T });
  await page.fill('#filter-event', 'nomatch');
  await page.waitForSelector(row, { state: 'hidden', timeout: T });
  await page.fill('#filter-event', '');
  await page.fill('#filter-channel', '');
  await page.waitForSelector(row, { state: 'visible', timeout: T });
});

test('the publish form shows a refusal, then reaches a subscriber', { timeout: 60_000 }, async () => {
  assert.ok(page && client, 'the page and the test client are up');
  // A bad request shows the server's error.
  await page.fill('#publish-channel', 'not a valid channel!');
  await page.fill('#publish-event', 'test');
  await page.click('#publish-submit');
  await page.waitForFunction(() => document.querySelector('#publish-result')?.classList.contains('err'), null, { timeout: T });
  assert.match(await page.textContent('#publish-result'), /^400/);

  await page.fill('#publish-channel', 'orders');
  await page.fill('#publish-event', 'test');
  await page.fill('#publish-data', 'from the form');
  await page.click('#publish-submit');
  await until(() => client.messages.includes('from the form'), 'the test client to receive "from the form"');
  await page.waitForFunction(
    () => document.querySelector('#publish-result')?.classList.contains('ok'),
    null,
    { timeout: T },
  ).catch(async (e) => {
    throw new Error(`#publish-result: ${await page.textContent('#publish-result')} (${e.message})`);
  });
  await page.waitForSelector('#log [data-kind="publish"][data-channel="orders"][data-event="test"]', { state: 'visible', timeout: T });

  await page.waitForFunction(() => document.querySelectorAll('#log [data-kind]').length >= 4, null, { timeout: T });
  // The once-a-second stats have counted the FIFO line.
  await page.waitForFunction(() => Number(document.querySelector('#fifo-total')?.textContent.replace(/,/g, '')) >= 1, null, { timeout: T })
    .catch(async (e) => { throw new Error(`#fifo-total stayed ${await page.textContent('#fifo-total')}: ${e.message}`); });
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});
