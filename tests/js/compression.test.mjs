// permessage-deflate with real clients: Node `ws` with perMessageDeflate (compressed both ways,
// fragmented, next to a client that does not compress) and headless Chromium (the stock
// WebSocket and pusher-js), each checking what the handshake agreed and that messages arrive
// intact. A broadcast is compressed once whoever receives it (ferrocast_deflated_frames_total).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import * as h from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const AGREED = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
let server;
let browser;

before(async () => {
  server = await h.startServer();
});

after(async () => {
  h.closeAll();
  await browser?.close();
  await server?.stop();
});

/** A Laravel-style event of about 2 KB. */
function orderEvent(id) {
  const items = Array.from({ length: 20 }, (_, i) => ({ id: i, sku: `SKU-${String(i).padStart(5, '0')}`, name: 'Blue T-shirt', qty: 1 }));
  return { event: 'App\\Events\\OrderShipped', order: { id, items } };
}

async function metric(name) {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`ferrocast_${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

/** A channel-protocol client; resolves once open, with every message it receives. */
async function channelClient(opts) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, opts);
  const got = [];
  ws.on('message', (m) => got.push(m.toString()));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return { ws, got };
}

test('Node ws with perMessageDeflate: agreed, compressed both ways, fragments too', async () => {
  // ws's defaults: it offers context takeover and complies when asked not to take it over.
  const deflate = { threshold: 0 };
  const a = await channelClient({ perMessageDeflate: deflate });
  const plain = await channelClient({ perMessageDeflate: false });
  try {
    assert.equal(a.ws.extensions, 'permessage-deflate', 'ws reports the agreed extension');
    assert.equal(plain.ws.extensions, '', 'the other client did not ask');
    const channel = h.uniq('deflated-');
    // Sent compressed (threshold 0), once whole and once in two fragments.
    a.ws.send(JSON.stringify({ action: 'subscribe', channel }), { compress: true });
    const half = JSON.stringify({ action: 'subscribe', channel: `${channel}-2` });
    a.ws.send(half.slice(0, 20), { compress: true, fin: false });
    a.ws.send(half.slice(20), { compress: true, fin: true });
    plain.ws.send(JSON.stringify({ action: 'subscribe', channel }));
    // The same compressed message again: it inflates on its own (no context carried over).
    a.ws.send(JSON.stringify({ action: 'subscribe', channel }), { compress: true });
    await h.until(() => a.got.filter((m) => m.includes('"subscribed"')).length === 3, 'three subscriptions');
    await h.until(() => plain.got.some((m) => m.includes('"subscribed"')), 'the plain subscription');
    const before = await metric('deflated_frames_total');
    const data = JSON.stringify(orderEvent(1));
    h.fifoWrite(server, { channel, data });
    await h.until(() => a.got.includes(data) && plain.got.includes(data), 'the event, intact, on both');
    // With several loops, /metrics adds the others' numbers as they pinned them, a moment ago.
    await h.until(async () => (await metric('deflated_frames_total')) >= before + 1, 'counted');
    assert.equal(await metric('deflated_frames_total'), before + 1, 'compressed once');
    const bytesIn = await metric('deflated_bytes_in_total');
    const bytesOut = await metric('deflated_bytes_out_total');
    assert.ok(bytesOut * 3 < bytesIn, `${bytesIn} bytes compressed to ${bytesOut}`);
  } finally {
    a.ws.close();
    plain.ws.close();
  }
});

async function page() {
  browser ??= await h.launchChromium();
  const p = await browser.newPage();
  p.setDefaultTimeout(h.T);
  return p;
}

test('Chromium, stock WebSocket: agreed permessage-deflate, the event arrives intact', { timeout: 60_000 }, async () => {
  const p = await page();
  const channel = h.uniq('browser-');
  const url = `ws://127.0.0.1:${server.port}/ws`;
  const extensions = await p.evaluate(([url, channel]) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    window.got = [];
    ws.onmessage = (e) => window.got.push(e.data);
    ws.onerror = () => reject(new Error('WebSocket error'));
    ws.onopen = () => {
      // Long enough to be compressed by the browser too.
      ws.send(JSON.stringify({ action: 'subscribe', channel, padding: 'x'.repeat(600) }));
      resolve(ws.extensions);
    };
  }), [url, channel]);
  assert.equal(extensions, AGREED);
  await h.until(async () => (await p.evaluate(() => window.got.length)) > 0, 'the subscription');
  const data = JSON.stringify(orderEvent(2));
  h.fifoWrite(server, { channel, data });
  await h.until(async () => (await p.evaluate((d) => window.got.includes(d), data)), 'the event in the page');
  await p.close();
});

test('Chromium with pusher-js: the event arrives intact through the compressed connection', { timeout: 60_000 }, async () => {
  const p = await page();
  await p.addScriptTag({ path: path.join(here, 'node_modules/pusher-js/dist/web/pusher.min.js') });
  const channel = h.uniq('pusher-browser-');
  const key = server.apps[0].key;
  await p.evaluate(([key, port, channel]) => new Promise((resolve) => {
    const pusher = new Pusher(key, {
      wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'], disableStats: true, cluster: 'mt1',
    });
    window.pusher = pusher;
    window.got = [];
    const ch = pusher.subscribe(channel);
    ch.bind('order-shipped', (d) => window.got.push(JSON.stringify(d)));
    ch.bind('pusher:subscription_succeeded', () => resolve());
  }), [key, server.port, channel]);
  const extensions = await p.evaluate(() => window.pusher.connection.connection.transport.socket.extensions);
  assert.equal(extensions, AGREED);
  const event = orderEvent(3);
  const res = await h.sdkFor(server).trigger(channel, 'order-shipped', event);
  assert.equal(res.status, 200);
  await h.until(async () => (await p.evaluate(() => window.got.length)) === 1, 'the event in the page');
  assert.deepEqual(JSON.parse(await p.evaluate(() => window.got[0])), event);
  await p.close();
});
