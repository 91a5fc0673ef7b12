// No message lost across a reconnect, for stock pusher-js with clients/js/ferrocast-recovery.js:
// the connection is cut (its TCP socket destroyed, as a network drop does), 100 events are
// published over the FIFO and REST while pusher-js reconnects by itself, and all arrive once, in
// order, through the channel's normal callbacks. A gap longer than history gets
// `ferrocast:recovery_failed`, never silence.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';


import { enableRecovery } from '../../clients/js/ferrocast-recovery.js';
import * as h from './helpers.mjs';

const kept = h.app({ history: [{ prefix: 'orders-', size: 200, ttl_secs: 300 }, { prefix: 'small-', size: 5, ttl_secs: 300 }] });
let server;
let browser;

before(async () => {
  server = await h.startServer({ apps: [kept] });
});

after(async () => {
  h.closeAll();
  await browser?.close();
  await server?.stop();
});

async function metric(name) {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`ferrocast_${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

/** The channel's history stream, as REST `info=history` reports it. */
async function history(name) {
  const res = await fetch(`http://127.0.0.1:${server.port}/apps/${kept.id}/channels/${name}?info=history`, {
    headers: { authorization: `Bearer ${kept.secret}` },
  });
  return (await res.json()).history;
}

/** Destroys the client's TCP connection under pusher-js, as a network drop would. */
function cut(client) {
  client.connection.connection.transport.socket._stream.destroy();
}

/** A headless Chromium page with pusher-js, the recovery script and `extra` scripts loaded. */
async function pageWithScript(...extra) {
  browser ??= await h.launchChromium();
  return h.pageWithRecovery(browser, ...extra);
}

async function recovering(name) {
  const c = h.pusherClient(server);
  const recovery = enableRecovery(c);
  const [ch] = await h.subscribed(c, name);
  const got = [];
  ch.bind('order', (d) => got.push(d.n));
  const failed = [];
  ch.bind('ferrocast:recovery_failed', (d) => failed.push(d));
  await h.until(() => recovery.positions().has(name), 'the starting position');
  return { c, ch, got, failed, recovery };
}

test('pusher-js gets every event published while it was away, once and in order', async () => {
  const name = h.uniq('orders-');
  const { c, ch, got, failed } = await recovering(name);
  const sdk = h.sdkFor(server);
  // A client without the script, and the recovering one, see nothing new through bind_global.
  const plain = h.pusherClient(server);
  const [plainCh] = await h.subscribed(plain, name);
  const seen = new Set();
  plainCh.bind_global((event) => seen.add(event));
  ch.bind_global((event) => seen.add(event));
  for (let n = 1; n <= 3; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await h.until(() => got.length === 3, 'three live events');
  const replayedBefore = await metric('history_replayed_total');
  cut(c);
  for (let n = 4; n <= 53; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  for (let n = 54; n <= 103; n++) {
    const res = await sdk.trigger(name, 'order', { n });
    assert.equal(res.status, 200);
  }
  await h.until(() => got.length >= 103, 'all 103 events', 30_000);
  assert.deepEqual(got, Array.from({ length: 103 }, (_, i) => i + 1), 'once each, in order');
  assert.deepEqual(failed, []);
  assert.ok((await metric('history_replayed_total')) > replayedBefore, 'some came from history');
  assert.equal(c.connection.state, 'connected');
  assert.deepEqual([...seen].filter((e) => !['order', 'pusher:subscription_succeeded'].includes(e)), []);
});

test('a gap longer than history is announced, never silent', async () => {
  const name = h.uniq('small-');
  const { c, got, failed } = await recovering(name);
  h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n: 1 }) });
  await h.until(() => got.length === 1, 'one live event');
  // Keep pusher-js from coming back until the gap is made: 10 events, history keeps 5.
  const real = c.connection.connect.bind(c.connection);
  let release;
  const gate = new Promise((r) => { release = r; });
  c.connection.connect = () => gate.then(real);
  cut(c);
  for (let n = 2; n <= 11; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await h.until(async () => (await history(name))?.offset === 11, 'the 10 events in history');
  release();
  await h.until(() => failed.length === 1, 'ferrocast:recovery_failed', 30_000);
  assert.equal(typeof failed[0].epoch, 'string');
  assert.equal(failed[0].offset, 11, 'where the stream is now');
  // Live events continue after the failure.
  h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n: 12 }) });
  await h.until(() => got.includes(12), 'the next live event');
});

test('Laravel Echo gets the missed events through .listen()', async () => {
  const name = h.uniq('orders-');
  const echo = h.echoClient(server);
  const recovery = enableRecovery(echo.connector.pusher);
  const got = [];
  echo.channel(name).listen('.order', (d) => got.push(d.n));
  await h.until(() => recovery.positions().has(name), 'the starting position');
  h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n: 1 }) });
  await h.until(() => got.length === 1, 'a live event');
  cut(echo.connector.pusher);
  for (let n = 2; n <= 21; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await h.until(() => got.length >= 21, 'all 21 events', 30_000);
  assert.deepEqual(got, Array.from({ length: 21 }, (_, i) => i + 1));
});

test('headless Chromium with pusher-js and the script: nothing lost across a reconnect', { timeout: 60_000 }, async () => {
  const page = await pageWithScript();
  const name = h.uniq('orders-');
  await page.evaluate(([key, port, name]) => new Promise((resolve) => {
    const pusher = new Pusher(key, {
      wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'mt1',
    });
    window.pusher = pusher;
    window.recovery = window.enableRecovery(pusher);
    window.got = [];
    const ch = pusher.subscribe(name);
    ch.bind('order', (d) => window.got.push(d.n));
    ch.bind('pusher:subscription_succeeded', () => resolve());
  }), [kept.key, server.port, name]);
  await page.waitForFunction((name) => window.recovery.positions().has(name), name);
  h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n: 1 }) });
  await page.waitForFunction(() => window.got.length === 1);
  // The page's socket goes away; pusher-js comes back by itself.
  await page.evaluate(() => window.pusher.connection.connection.transport.socket.close());
  for (let n = 2; n <= 101; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await page.waitForFunction(() => window.got.length >= 101, null, { timeout: 30_000 });
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(got, Array.from({ length: 101 }, (_, i) => i + 1), 'once each, in order');
  await page.close();
});

test('pusher-js loses nothing across ferrocast restart (1012, history handed on)', async () => {
  const name = h.uniq('orders-');
  const { got, failed } = await recovering(name);
  for (let n = 1; n <= 3; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await h.until(() => got.length === 3, 'three live events');
  const env = { ...process.env, RUNTIME_DIRECTORY: server.dir, XDG_RUNTIME_DIR: server.dir };
  const out = spawnSync(h.binPath(), ['restart', '--fifo', server.fifo], { env, encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  // Published while the process is replaced and pusher-js reconnects.
  for (let n = 4; n <= 23; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await h.until(() => got.length >= 23, 'all 23 events', 30_000);
  assert.deepEqual(got, Array.from({ length: 23 }, (_, i) => i + 1));
  assert.deepEqual(failed, []);
});

test('headless Chromium with Laravel Echo and the script: nothing lost across a reconnect', { timeout: 60_000 }, async () => {
  const page = await pageWithScript('node_modules/laravel-echo/dist/echo.iife.js');
  const name = h.uniq('orders-');
  await page.evaluate(([key, port, name]) => {
    const EchoClass = window.Echo.default || window.Echo.Echo || window.Echo;
    const echo = new EchoClass({
      broadcaster: 'pusher', key, wsHost: '127.0.0.1', wsPort: port, forceTLS: false,
      enabledTransports: ['ws'], disableStats: true, cluster: 'mt1', Pusher: window.Pusher,
    });
    window.echo = echo;
    window.recovery = window.enableRecovery(echo.connector.pusher);
    window.got = [];
    echo.channel(name).listen('.order', (d) => window.got.push(d.n));
  }, [kept.key, server.port, name]);
  await page.waitForFunction((name) => window.recovery.positions().has(name), name);
  h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n: 1 }) });
  await page.waitForFunction(() => window.got.length === 1);
  await page.evaluate(() => window.echo.connector.pusher.connection.connection.transport.socket.close());
  for (let n = 2; n <= 51; n++) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  await page.waitForFunction(() => window.got.length >= 51, null, { timeout: 30_000 });
  assert.deepEqual(await page.evaluate(() => window.got), Array.from({ length: 51 }, (_, i) => i + 1));
  await page.close();
});

test('headless Chromium, pusher-js and Laravel Echo: nothing lost across ferrocast restart; a gap too long is announced', { timeout: 120_000 }, async () => {
  const page = await pageWithScript('node_modules/laravel-echo/dist/echo.iife.js');
  const [plain, echoed, small] = [h.uniq('orders-'), h.uniq('orders-'), h.uniq('small-')];
  await page.evaluate(([key, port, plain, echoed, small]) => {
    const options = { wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'mt1' };
    const pusher = new Pusher(key, options);
    window.recovery = window.enableRecovery(pusher);
    window.got = [];
    pusher.subscribe(plain).bind('order', (d) => window.got.push(d.n));
    const EchoClass = window.Echo.default || window.Echo.Echo || window.Echo;
    window.echo = new EchoClass({ broadcaster: 'pusher', key, Pusher: window.Pusher, ...options });
    window.echoRecovery = window.enableRecovery(window.echo.connector.pusher);
    window.echoed = [];
    window.small = [];
    window.failed = [];
    window.echo.channel(echoed).listen('.order', (d) => window.echoed.push(d.n));
    window.echo.channel(small)
      .listen('.order', (d) => window.small.push(d.n))
      .listen('.ferrocast:recovery_failed', (d) => window.failed.push(d));
  }, [kept.key, server.port, plain, echoed, small]);
  await page.waitForFunction(([p, e, s]) => window.recovery.positions().has(p)
    && window.echoRecovery.positions().has(e) && window.echoRecovery.positions().has(s), [plain, echoed, small]);
  for (const name of [plain, echoed, small]) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n: 1 }) });
  await page.waitForFunction(() => window.got.length === 1 && window.echoed.length === 1 && window.small.length === 1);

  // A deploy: the process is replaced (1012), history handed on, both clients come back by themselves.
  const env = { ...process.env, RUNTIME_DIRECTORY: server.dir, XDG_RUNTIME_DIR: server.dir };
  const out = spawnSync(h.binPath(), ['restart', '--fifo', server.fifo], { env, encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  for (let n = 2; n <= 31; n++) {
    for (const name of [plain, echoed]) h.fifoWrite(server, { channel: name, event: 'order', data: JSON.stringify({ n }) });
  }
  await page.waitForFunction(() => window.got.length >= 31 && window.echoed.length >= 31, null, { timeout: 60_000 });
  assert.deepEqual(await page.evaluate(() => window.got), Array.from({ length: 31 }, (_, i) => i + 1), 'pusher-js');
  assert.deepEqual(await page.evaluate(() => window.echoed), Array.from({ length: 31 }, (_, i) => i + 1), 'Echo');

  // Echo is kept away while 10 events go by on a channel that keeps 5: told, never silent.
  await page.waitForFunction(() => window.echo.connector.pusher.connection.connection?.transport);
  await page.evaluate(() => {
    const connection = window.echo.connector.pusher.connection;
    const real = connection.connect.bind(connection);
    window.release = null;
    connection.connect = () => new Promise((resolve) => { window.release = resolve; }).then(real);
    connection.connection.transport.socket.close();
  });
  await page.waitForFunction(() => typeof window.release === 'function');
  for (let n = 2; n <= 11; n++) h.fifoWrite(server, { channel: small, event: 'order', data: JSON.stringify({ n }) });
  await h.until(async () => (await history(small))?.offset === 11, 'the 10 events in history');
  await page.evaluate(() => window.release());
  await page.waitForFunction(() => window.failed.length === 1, null, { timeout: 30_000 });
  assert.equal((await page.evaluate(() => window.failed))[0].offset, 11, 'where the stream is now');
  assert.deepEqual(await page.evaluate(() => window.small), [1], 'nothing given as if complete');
  await page.close();
});
