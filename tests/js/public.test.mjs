// Public channels: events from the official server SDK (trigger, multi-channel trigger,
// triggerBatch) and from the FIFO reach pusher-js and laravel-echo subscribers.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as h from './helpers.mjs';

let server;
let sdk;

before(async () => {
  server = await h.startServer();
  sdk = h.sdkFor(server);
});

after(async () => {
  h.closeAll();
  await server?.stop();
});

test('pusher:connection_established gives pusher-js a socket id', async () => {
  const c = h.pusherClient(server);
  const socketId = await h.connected(c);
  assert.match(socketId, /^\d+\.\d+$/);
  c.disconnect();
});

test('SDK trigger to one public channel reaches a pusher-js subscriber', async () => {
  const c = h.pusherClient(server);
  const name = h.uniq('orders-');
  const [ch] = await h.subscribed(c, name);
  const got = h.collect(ch, 'order-created');
  const res = await sdk.trigger(name, 'order-created', { id: 42, item: 'tea' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {});
  await h.until(() => got.length === 1, 'order-created on the subscriber');
  assert.deepEqual(got[0].data, { id: 42, item: 'tea' });
  c.disconnect();
});

test('SDK trigger with a string payload is delivered as that string', async () => {
  const c = h.pusherClient(server);
  const name = h.uniq('strings-');
  const [ch] = await h.subscribed(c, name);
  const got = h.collect(ch, 'note');
  await sdk.trigger(name, 'note', 'just text, not JSON');
  await h.until(() => got.length === 1, 'note');
  assert.equal(got[0].data, 'just text, not JSON');
  c.disconnect();
});

test('SDK trigger to an array of channels reaches each subscriber once', async () => {
  const names = [h.uniq('multi-a-'), h.uniq('multi-b-'), h.uniq('multi-c-')];
  const clients = names.map(() => h.pusherClient(server));
  const got = [];
  for (let i = 0; i < names.length; i++) {
    const [ch] = await h.subscribed(clients[i], names[i]);
    got.push(h.collect(ch, 'fanout'));
  }
  const res = await sdk.trigger(names, 'fanout', { n: 3 });
  assert.equal(res.status, 200);
  await h.until(() => got.every((g) => g.length >= 1), 'fanout on all three channels');
  // A marker after the fan-out proves no duplicate arrived in between.
  const marks = got.map(() => []);
  for (let i = 0; i < names.length; i++) {
    clients[i].channel(names[i]).bind('marker', (d) => marks[i].push(d));
  }
  await sdk.trigger(names, 'marker', {});
  await h.until(() => marks.every((m) => m.length === 1), 'marker on all three channels');
  for (const g of got) {
    assert.equal(g.length, 1);
    assert.deepEqual(g[0].data, { n: 3 });
  }
  clients.forEach((c) => c.disconnect());
});

test('SDK trigger excludes the connection named by socket_id', async () => {
  const name = h.uniq('exclude-');
  const a = h.pusherClient(server);
  const b = h.pusherClient(server);
  const [cha] = await h.subscribed(a, name);
  const [chb] = await h.subscribed(b, name);
  const gotA = h.collect(cha, 'e');
  const gotB = h.collect(chb, 'e');
  await sdk.trigger(name, 'e', { skip: 'a' }, { socket_id: a.connection.socket_id });
  await h.until(() => gotB.length === 1, 'b to receive the event');
  const markA = h.collect(cha, 'marker');
  await sdk.trigger(name, 'marker', {});
  await h.until(() => markA.length === 1, 'a to receive the marker');
  assert.equal(gotA.length, 0, 'the excluded socket must not receive the event');
  a.disconnect();
  b.disconnect();
});

test('SDK triggerBatch delivers every event of the batch', async () => {
  const c1 = h.pusherClient(server);
  const c2 = h.pusherClient(server);
  const n1 = h.uniq('batch-1-');
  const n2 = h.uniq('batch-2-');
  const [ch1] = await h.subscribed(c1, n1);
  const [ch2] = await h.subscribed(c2, n2);
  const got1 = [];
  const got2 = [];
  ch1.bind_global((event, data) => { if (!event.startsWith('pusher')) got1.push([event, data]); });
  ch2.bind_global((event, data) => { if (!event.startsWith('pusher')) got2.push([event, data]); });
  const res = await sdk.triggerBatch([
    { channel: n1, name: 'first', data: { i: 1 } },
    { channel: n2, name: 'second', data: { i: 2 } },
    { channel: n1, name: 'third', data: 'three' },
  ]);
  assert.equal(res.status, 200);
  await h.until(() => got1.length === 2 && got2.length === 1, 'all batch events');
  assert.deepEqual(got1, [['first', { i: 1 }], ['third', 'three']]);
  assert.deepEqual(got2, [['second', { i: 2 }]]);
  c1.disconnect();
  c2.disconnect();
});

test('a FIFO line reaches a pusher-js subscriber as the named event', async () => {
  const c = h.pusherClient(server);
  const name = h.uniq('fifo-');
  const [ch] = await h.subscribed(c, name);
  const got = h.collect(ch, 'from-fifo');
  h.fifoWrite(server, { channel: name, event: 'from-fifo', data: JSON.stringify({ via: 'fifo' }) });
  await h.until(() => got.length === 1, 'the FIFO event');
  assert.deepEqual(got[0].data, { via: 'fifo' });
  h.fifoWrite(server, { channel: name, event: 'from-fifo', data: 'plain text' });
  await h.until(() => got.length === 2, 'the second FIFO event');
  assert.equal(got[1].data, 'plain text');
  c.disconnect();
});

test('laravel-echo listens on a public channel', async () => {
  const echo = h.echoClient(server, null);
  const name = h.uniq('echo-public-');
  const got = [];
  const subscribedOk = h.waitFor((done) => {
    echo.channel(name).subscribed(done).listen('.OrderShipped', (e) => got.push(e));
  }, 'Echo subscribed');
  await subscribedOk;
  // Laravel broadcasts with the event class name; a namespaced listener works too.
  echo.channel(name).listen('OrderPaid', (e) => got.push({ namespaced: e }));
  await sdk.trigger(name, 'OrderShipped', { order: 1 });
  await sdk.trigger(name, 'App\\Events\\OrderPaid', { order: 2 });
  await h.until(() => got.length === 2, 'both Echo events');
  assert.deepEqual(got, [{ order: 1 }, { namespaced: { order: 2 } }]);
  echo.disconnect();
});
