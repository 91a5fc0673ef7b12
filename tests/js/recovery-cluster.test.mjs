// No message lost when pusher-js comes back on another node of a cluster (two ferrocast nodes
// and a real redis-server): the client connects through a small TCP proxy to node A, the
// connection is cut (a network drop), 100 events are published through both nodes' FIFOs and
// REST while the proxy holds the reconnect, then the proxy sends it to node B. pusher-js resumes
// by itself, with clients/js/ferrocast-recovery.js, and every event arrives once, in order,
// through the channel's normal callbacks: in Node and in headless Chromium, with pusher-js and
// with Laravel Echo.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';

import { enableRecovery } from '../../clients/js/ferrocast-recovery.js';
import * as h from './helpers.mjs';

const kept = h.app({ history: [{ prefix: 'orders-', size: 200, ttl_secs: 300 }] });
let redis;
let a;
let b;
let proxy;
const proxies = [];
let browser;

/**
 * A loopback TCP proxy to `target`'s port. `cut()` drops every connection through it (as a
 * network failure does); while held, new connections wait, then go to the target of the time.
 */
async function startProxy(target) {
  const open = new Set();
  let held = [];
  const state = { target, holding: false };
  const pipe = (client) => {
    const up = net.connect(state.target.port, '127.0.0.1');
    for (const s of [client, up]) open.add(s);
    const end = () => {
      for (const s of [client, up]) {
        s.destroy();
        open.delete(s);
      }
    };
    for (const s of [client, up]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(up);
    up.pipe(client);
  };
  const srv = net.createServer((client) => {
    client.pause();
    if (state.holding) held.push(client);
    else pipe(client);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const handle = {
    port: srv.address().port,
    cutAndHold() {
      state.holding = true;
      for (const s of open) s.destroy();
      open.clear();
    },
    releaseTo(next) {
      state.target = next;
      state.holding = false;
      for (const c of held) pipe(c);
      held = [];
    },
    close() {
      for (const s of open) s.destroy();
      for (const c of held) c.destroy();
      srv.close();
    },
  };
  proxies.push(handle);
  return handle;
}

before(async () => {
  redis = await h.startRedis();
  const config = { scaling: { driver: 'redis', redis_url: redis.url } };
  a = await h.startServer({ apps: [kept], config });
  b = await h.startServer({ apps: [kept], config });
  for (const node of [a, b]) await h.until(() => node.logs.some((l) => l.includes('redis link up')), 'the Redis link');
});

after(async () => {
  h.closeAll();
  await browser?.close();
  for (const p of proxies) p.close();
  await a?.stop();
  await b?.stop();
  redis?.stop();
});

/** The channel's stream on a node, as REST `info=history` reports it. */
async function history(node, name) {
  const res = await fetch(`http://127.0.0.1:${node.port}/apps/${kept.id}/channels/${name}?info=history`, {
    headers: { authorization: `Bearer ${kept.secret}` },
  });
  return (await res.json()).history;
}

async function metric(node, name) {
  const res = await fetch(`http://127.0.0.1:${node.port}/metrics`);
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`ferrocast_${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

const order = (name, n) => ({ channel: name, event: 'order', data: JSON.stringify({ n }) });

/**
 * Events `from`..`to` on `name`, while the client is away: through A's and B's FIFOs and REST
 * in turn, one at a time so their order is known; then the reconnect goes to B.
 */
async function publishAwayThenLandOnB(name, from, to) {
  const sdks = [h.sdkFor(a), h.sdkFor(b)];
  for (let n = from; n <= to; n++) {
    if (n % 2) h.fifoWrite(n % 4 === 1 ? a : b, order(name, n));
    else assert.equal((await sdks[(n / 2) % 2].trigger(name, 'order', { n })).status, 200);
    await h.until(async () => (await history(b, name))?.offset === n, `event ${n} on B`);
  }
  proxy.releaseTo(b);
}

/** One node's clients as if they were another's: pusher-js connects to the proxy. */
const viaProxy = () => ({ ...a, port: proxy.port });

async function pageWithScript(...extra) {
  browser ??= await h.launchChromium();
  return h.pageWithRecovery(browser, ...extra);
}

const upTo = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('pusher-js that comes back on another node gets every event once, in order', async () => {
  proxy = await startProxy(a);
  const name = h.uniq('orders-');
  const c = h.pusherClient(viaProxy());
  const recovery = enableRecovery(c);
  const [ch] = await h.subscribed(c, name);
  const got = [];
  const failed = [];
  ch.bind('order', (d) => got.push(d.n));
  ch.bind('ferrocast:recovery_failed', (d) => failed.push(d));
  await h.until(() => recovery.positions().has(name), 'the starting position');
  assert.match(recovery.positions().get(name).epoch, /\./, 'a cluster epoch');
  for (let n = 1; n <= 3; n++) {
    // Two nodes are two independent sources: one at a time keeps the order known.
    h.fifoWrite(n % 2 ? a : b, order(name, n));
    await h.until(() => got.length === n, `live event ${n}`);
  }
  proxy.cutAndHold();
  await publishAwayThenLandOnB(name, 4, 103);
  await h.until(() => got.length >= 103, 'all 103 events', 30_000);
  assert.deepEqual(got, upTo(103), 'once each, in order');
  assert.deepEqual(failed, []);
  assert.ok((await metric(b, 'history_replayed_total')) >= 100, 'B replayed them from its history');
  h.fifoWrite(a, order(name, 104));
  await h.until(() => got.length === 104, 'the next live event, from A to the client on B');
  proxy.close();
});

test('Laravel Echo that comes back on another node gets the missed events through .listen()', async () => {
  proxy = await startProxy(a);
  const name = h.uniq('orders-');
  const echo = h.echoClient(viaProxy());
  const recovery = enableRecovery(echo.connector.pusher);
  const got = [];
  echo.channel(name).listen('.order', (d) => got.push(d.n));
  await h.until(() => recovery.positions().has(name), 'the starting position');
  h.fifoWrite(a, order(name, 1));
  await h.until(() => got.length === 1, 'a live event');
  proxy.cutAndHold();
  await publishAwayThenLandOnB(name, 2, 101);
  await h.until(() => got.length >= 101, 'all 101 events', 30_000);
  assert.deepEqual(got, upTo(101));
  proxy.close();
});

test('headless Chromium, pusher-js and Laravel Echo: nothing lost landing on another node', { timeout: 120_000 }, async () => {
  proxy = await startProxy(a);
  const page = await pageWithScript('node_modules/laravel-echo/dist/echo.iife.js');
  const [plain, echoed] = [h.uniq('orders-'), h.uniq('orders-')];
  await page.evaluate(([key, port, plain, echoed]) => {
    const options = { wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'mt1' };
    const pusher = new Pusher(key, options);
    window.recovery = window.enableRecovery(pusher);
    window.got = [];
    pusher.subscribe(plain).bind('order', (d) => window.got.push(d.n));
    const EchoClass = window.Echo.default || window.Echo.Echo || window.Echo;
    const echo = new EchoClass({ broadcaster: 'pusher', key, Pusher: window.Pusher, ...options });
    window.echoRecovery = window.enableRecovery(echo.connector.pusher);
    window.echoed = [];
    echo.channel(echoed).listen('.order', (d) => window.echoed.push(d.n));
  }, [kept.key, proxy.port, plain, echoed]);
  await page.waitForFunction(([p, e]) => window.recovery.positions().has(p) && window.echoRecovery.positions().has(e), [plain, echoed]);
  h.fifoWrite(a, order(plain, 1));
  h.fifoWrite(a, order(echoed, 1));
  await page.waitForFunction(() => window.got.length === 1 && window.echoed.length === 1);
  proxy.cutAndHold();
  for (let n = 2; n <= 101; n++) {
    h.fifoWrite(n % 2 ? a : b, order(plain, n));
    h.fifoWrite(n % 2 ? b : a, order(echoed, n));
    await h.until(async () => (await history(b, plain))?.offset === n && (await history(b, echoed))?.offset === n, `event ${n} on B`);
  }
  proxy.releaseTo(b);
  await page.waitForFunction(() => window.got.length >= 101 && window.echoed.length >= 101, null, { timeout: 60_000 });
  assert.deepEqual(await page.evaluate(() => window.got), upTo(101), 'pusher-js: once each, in order');
  assert.deepEqual(await page.evaluate(() => window.echoed), upTo(101), 'Echo: once each, in order');
  await page.close();
  proxy.close();
});
