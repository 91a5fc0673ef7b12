// Client events (whisper) with enable_client_messages: delivered to the other subscribers of a
// private or presence channel, never echoed to the sender, carrying user_id on presence channels.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import * as h from './helpers.mjs';

let server;
let sdk;
let auth;

before(async () => {
  server = await h.startServer({
    apps: [
      h.app({ enable_client_messages: true }),
      h.app({ id: 'app-quiet', key: 'key-quiet', secret: 'secret-quiet', enable_client_messages: false }),
    ],
  });
  sdk = h.sdkFor(server);
  auth = await h.startAuthServer(sdk);
});

after(async () => {
  h.closeAll();
  await auth?.close();
  await server?.stop();
});

test('Echo whisper on a private channel reaches the other client and is not echoed', async () => {
  const name = h.uniq('chat-');
  const a = h.echoClient(server, auth, { userId: 'wa' });
  const b = h.echoClient(server, auth, { userId: 'wb' });
  const gotA = [];
  const gotB = [];
  await h.waitFor((done) => a.private(name).subscribed(done).listenForWhisper('typing', (e) => gotA.push(e)), 'a subscribed');
  await h.waitFor((done) => b.private(name).subscribed(done).listenForWhisper('typing', (e) => gotB.push(e)), 'b subscribed');
  a.private(name).whisper('typing', { who: 'a', typing: true });
  await h.until(() => gotB.length === 1, 'b to receive the whisper');
  assert.deepEqual(gotB[0], { who: 'a', typing: true });
  // b answers; once a has b's whisper, a's own would have arrived before it if it were echoed.
  b.private(name).whisper('typing', { who: 'b' });
  await h.until(() => gotA.length >= 1, 'a to receive b\'s whisper');
  assert.deepEqual(gotA, [{ who: 'b' }], 'the sender never receives its own client event');
  a.disconnect();
  b.disconnect();
});

test('client events on a presence channel carry the sender user_id', async () => {
  const name = h.uniq('presence-chat-');
  const a = h.pusherClient(server, auth, { userId: 'sender-7' });
  const b = h.pusherClient(server, auth, { userId: 'receiver-8' });
  const [cha] = await h.subscribed(a, name);
  const [chb] = await h.subscribed(b, name);
  const got = h.collect(chb, 'client-ping');
  const echoed = h.collect(cha, 'client-ping');
  assert.equal(cha.trigger('client-ping', { n: 1 }), true);
  await h.until(() => got.length === 1, 'the client event on b');
  assert.deepEqual(got[0].data, { n: 1 });
  assert.equal(got[0].meta.user_id, 'sender-7');
  const marks = h.collect(cha, 'marker');
  await sdk.trigger(name, 'marker', {});
  await h.until(() => marks.length === 1, 'marker on the sender');
  assert.equal(echoed.length, 0, 'not echoed to the sender');
  a.disconnect();
  b.disconnect();
});

test('Echo whisper on a presence channel', async () => {
  const room = h.uniq('room-');
  const a = h.echoClient(server, auth, { userId: 'pa' });
  const b = h.echoClient(server, auth, { userId: 'pb' });
  const gotB = [];
  await h.waitFor((done) => a.join(room).here(done), 'a here');
  await h.waitFor((done) => b.join(room).here(done).listenForWhisper('cursor', (e) => gotB.push(e)), 'b here');
  a.join(room).whisper('cursor', { x: 1, y: 2 });
  await h.until(() => gotB.length === 1, 'b to receive the presence whisper');
  assert.deepEqual(gotB[0], { x: 1, y: 2 });
  a.disconnect();
  b.disconnect();
});

test('client events on a public channel are refused with pusher:error and not delivered', async () => {
  const name = h.uniq('public-chat-');
  const other = h.pusherClient(server);
  const [och] = await h.subscribed(other, name);
  const got = h.collect(och, 'client-x');
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/key-1?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await h.until(() => frames.length >= 1, 'connection_established');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name } }));
  await h.until(() => frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'), 'subscription');
  ws.send(JSON.stringify({ event: 'client-x', channel: name, data: { a: 1 } }));
  await h.until(() => frames.some((f) => f.event === 'pusher:error'), 'pusher:error');
  const marks = h.collect(och, 'marker');
  await sdk.trigger(name, 'marker', {});
  await h.until(() => marks.length === 1, 'marker');
  assert.equal(got.length, 0);
  assert.equal(ws.readyState, WebSocket.OPEN, 'the connection stays open');
  ws.close();
  other.disconnect();
});

test('client events are refused when the app has enable_client_messages false', async () => {
  const quiet = { ...server, apps: [server.apps[1]] };
  const quietSdk = h.sdkFor(server, server.apps[1]);
  const quietAuth = await h.startAuthServer(quietSdk);
  try {
    const name = h.uniq('private-quiet-');
    const a = h.pusherClient(quiet, quietAuth, { userId: 'q1' });
    const b = h.pusherClient(quiet, quietAuth, { userId: 'q2' });
    const errors = [];
    a.connection.bind('error', (e) => errors.push(e));
    const [cha] = await h.subscribed(a, name);
    const [chb] = await h.subscribed(b, name);
    const got = h.collect(chb, 'client-x');
    cha.trigger('client-x', { a: 1 });
    await h.until(() => errors.length >= 1, 'a pusher:error on the sender');
    const marks = h.collect(chb, 'marker');
    await quietSdk.trigger(name, 'marker', {});
    await h.until(() => marks.length === 1, 'marker');
    assert.equal(got.length, 0, 'not delivered');
    assert.equal(a.connection.state, 'connected');
    a.disconnect();
    b.disconnect();
  } finally {
    await quietAuth.close();
  }
});
