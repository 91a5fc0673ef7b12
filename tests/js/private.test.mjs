// Private channels authorized by a local auth endpoint that signs with the official SDK's
// authorizeChannel, used by pusher-js and laravel-echo; refused and forged authorizations.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import * as h from './helpers.mjs';

let server;
let sdk;
let auth;

before(async () => {
  server = await h.startServer();
  sdk = h.sdkFor(server);
  auth = await h.startAuthServer(sdk);
});

after(async () => {
  h.closeAll();
  await auth?.close();
  await server?.stop();
});

test('pusher-js subscribes to a private channel through the auth endpoint and receives events', async () => {
  const c = h.pusherClient(server, auth, { userId: 'p1' });
  const name = h.uniq('private-orders-');
  const before = auth.calls.length;
  const [ch] = await h.subscribed(c, name);
  const call = auth.calls.slice(before).find((x) => x.form.channel_name === name);
  assert.ok(call, 'the auth endpoint was asked for the channel');
  assert.equal(call.form.socket_id, c.connection.socket_id);
  const got = h.collect(ch, 'secret-news');
  await sdk.trigger(name, 'secret-news', { classified: true });
  await h.until(() => got.length === 1, 'the private event');
  assert.deepEqual(got[0].data, { classified: true });
  c.disconnect();
});

test('laravel-echo private() subscribes via authEndpoint', async () => {
  const echo = h.echoClient(server, auth, { userId: 'e1' });
  const name = h.uniq('orders-');
  const got = [];
  await h.waitFor((done) => {
    echo.private(name).subscribed(done).listen('.Updated', (e) => got.push(e));
  }, 'Echo private subscription');
  await sdk.trigger(`private-${name}`, 'Updated', { v: 1 });
  await h.until(() => got.length === 1, 'Echo private event');
  assert.deepEqual(got[0], { v: 1 });
  echo.disconnect();
});

test('an auth endpoint refusal surfaces as subscription_error and the server never subscribes', async () => {
  const name = h.uniq('private-denied-');
  // The auth endpoint says 403: pusher-js reports it and never sends pusher:subscribe.
  const denied = h.pusherClient(server, null, {
    extra: {
      channelAuthorization: { endpoint: `${auth.url}/auth`, transport: 'ajax', params: { deny: '1' } },
    },
  });
  await h.connected(denied);
  const err = await h.waitFor((done) => {
    denied.subscribe(name).bind('pusher:subscription_error', done);
  }, 'subscription_error from the refused auth');
  assert.equal(err.status, 403);
  const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { occupied: false, subscription_count: 0 });
  denied.disconnect();
});

test('a forged signature gets pusher:subscription_error from the server', async () => {
  const c = h.pusherClient(server, null, {
    extra: {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) => {
          // Signed with the wrong secret.
          const wrong = new h.PusherSDK({ appId: 'app-1', key: 'key-1', secret: 'not-the-secret' });
          cb(null, wrong.authorizeChannel(socketId, channelName));
        },
      },
    },
  });
  await h.connected(c);
  const name = h.uniq('private-forged-');
  const err = await h.waitFor((done) => {
    c.subscribe(name).bind('pusher:subscription_error', done);
  }, 'subscription_error for the forged signature');
  assert.equal(err.type, 'AuthError');
  assert.equal(err.status, 401);
  const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
  assert.deepEqual(await res.json(), { occupied: false, subscription_count: 0 });
  c.disconnect();
});

test('a signature for another socket id is refused (raw WebSocket)', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/key-1?protocol=7&client=js&version=8.6.0`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await h.until(() => frames.length >= 1, 'connection_established');
  assert.equal(frames[0].event, 'pusher:connection_established');
  const name = h.uniq('private-stolen-');
  const sig = sdk.authorizeChannel('1234.5678', name);
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name, auth: sig.auth } }));
  await h.until(() => frames.length >= 2, 'an answer to the subscribe');
  assert.equal(frames[1].event, 'pusher:subscription_error');
  assert.equal(frames[1].channel, name);
  ws.close();
});

test('subscribing to a private channel without any auth is refused', async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/key-1?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await h.until(() => frames.length >= 1, 'connection_established');
  const name = h.uniq('private-noauth-');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name } }));
  await h.until(() => frames.length >= 2, 'an answer to the subscribe');
  assert.equal(frames[1].event, 'pusher:subscription_error');
  ws.close();
});
