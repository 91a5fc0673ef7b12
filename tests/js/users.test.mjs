// User authentication: pusher.signin() through a userAuthentication endpoint signing with the
// SDK's authenticateUser, sendToUser delivery, and terminateUserConnections.

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

/** A pusher-js client signed in as `userId`, with its #server-to-user channel subscribed. */
async function signedIn(userId) {
  const c = h.pusherClient(server, auth, { userId });
  await h.connected(c);
  c.signin();
  await h.until(() => c.user.user_data && c.user.user_data.id === userId, `signin_success for ${userId}`);
  await h.until(() => c.user.serverToUserChannel?.subscribed, `#server-to-user-${userId} subscribed`);
  return c;
}

test('signin succeeds and sendToUser reaches every connection of that user only', async () => {
  const u1a = await signedIn('user-1');
  const u1b = await signedIn('user-1');
  const u2 = await signedIn('user-2');
  const got = { u1a: [], u1b: [], u2: [] };
  u1a.user.bind('notice', (d) => got.u1a.push(d));
  u1b.user.bind('notice', (d) => got.u1b.push(d));
  u2.user.bind('notice', (d) => got.u2.push(d));
  const res = await sdk.sendToUser('user-1', 'notice', { hello: 'user-1' });
  assert.equal(res.status, 200);
  await h.until(() => got.u1a.length === 1 && got.u1b.length === 1, 'both user-1 connections');
  assert.deepEqual(got.u1a[0], { hello: 'user-1' });
  await sdk.sendToUser('user-2', 'notice', { hello: 'user-2' });
  await h.until(() => got.u2.length === 1, 'user-2');
  assert.deepEqual(got.u2, [{ hello: 'user-2' }], 'user-2 got only its own event');
  assert.equal(got.u1a.length, 1);
  // #server-to-user channels are not listed by the channels API.
  const channels = await (await sdk.get({ path: '/channels' })).json();
  assert.ok(!Object.keys(channels.channels).some((n) => n.startsWith('#')), JSON.stringify(channels));
  [u1a, u1b, u2].forEach((c) => c.disconnect());
});

test('another user cannot subscribe to someone else\'s #server-to-user channel', async () => {
  // pusher-js refuses '#' channel names locally, so speak the protocol by hand.
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/key-1?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await h.until(() => frames.length >= 1, 'connection_established');
  const socketId = JSON.parse(frames[0].data).socket_id;
  const signin = sdk.authenticateUser(socketId, { id: 'mallory' });
  ws.send(JSON.stringify({ event: 'pusher:signin', data: signin }));
  await h.until(() => frames.some((f) => f.event === 'pusher:signin_success'), 'signin_success');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: '#server-to-user-victim' } }));
  await h.until(() => frames.some((f) => f.event === 'pusher:subscription_error'), 'subscription_error');
  assert.ok(!frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'));
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: '#server-to-user-mallory' } }));
  await h.until(() => frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'), 'own channel subscribed');
  ws.close();
});

test('terminateUserConnections closes that user\'s connections (4009) and leaves others open', async () => {
  const victim1 = await signedIn('doomed');
  const victim2 = await signedIn('doomed');
  const bystander = await signedIn('bystander');
  const watch = (c) => {
    const s = { errors: [], states: [] };
    c.connection.bind('error', (e) => s.errors.push(e));
    c.connection.bind('state_change', ({ current }) => s.states.push(current));
    return s;
  };
  const s1 = watch(victim1);
  const s2 = watch(victim2);
  const sb = watch(bystander);
  const res = await sdk.terminateUserConnections('doomed');
  assert.equal(res.status, 200);
  for (const [c, s, label] of [[victim1, s1, 'first'], [victim2, s2, 'second']]) {
    await h.until(() => s.errors.some((e) => e.data?.code === 4009), `${label} connection to get pusher:error 4009`);
    await h.until(() => c.connection.state !== 'connected', `${label} connection to leave the connected state`);
  }
  // 4000-4099 tells pusher-js not to reconnect.
  await h.until(() => s1.states.includes('disconnected'), 'disconnected state');
  // The bystander is untouched: it still receives its own user events.
  const got = [];
  bystander.user.bind('still-here', (d) => got.push(d));
  await sdk.sendToUser('bystander', 'still-here', { ok: true });
  await h.until(() => got.length === 1, 'bystander event');
  assert.equal(bystander.connection.state, 'connected');
  assert.equal(sb.errors.length, 0);
  bystander.disconnect();
});

test('terminateUserConnections leaves presence-only (not signed-in) connections open', async () => {
  // Pusher docs, "Terminating user connections": "this will only terminate connections that have
  // successfully completed the user authentication flow. Connections for users subscribed to
  // presence channels but that have not been authenticated via this flow will not be terminated."
  const name = h.uniq('presence-term-');
  const signedInTab = await signedIn('presence-user');
  const presenceOnly = h.pusherClient(server, auth, { userId: 'presence-user' });
  await h.subscribed(presenceOnly, name);
  const errorsSigned = [];
  const errorsPresence = [];
  signedInTab.connection.bind('error', (e) => errorsSigned.push(e));
  presenceOnly.connection.bind('error', (e) => errorsPresence.push(e));
  await sdk.terminateUserConnections('presence-user');
  await h.until(() => errorsSigned.some((e) => e.data?.code === 4009), 'the signed-in connection to get 4009');
  // The presence-only connection is still subscribed: it receives an event sent after the
  // termination was processed.
  const got = h.collect(presenceOnly.channel(name), 'after');
  await sdk.trigger(name, 'after', { n: 1 });
  await h.until(() => got.length === 1 || presenceOnly.connection.state !== 'connected',
    'the presence-only connection to get the event (or be closed)');
  assert.deepEqual(errorsPresence, [], 'no pusher:error on the presence-only connection');
  assert.equal(presenceOnly.connection.state, 'connected');
  assert.equal(got.length, 1);
  const users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users, { users: [{ id: 'presence-user' }] });
  presenceOnly.disconnect();
});

test('a failed signin (endpoint refuses) emits pusher:signin_error and keeps the connection', async () => {
  const c = h.pusherClient(server, null, {
    extra: { userAuthentication: { endpoint: `${auth.url}/user-auth`, transport: 'ajax', params: { deny: '1' } } },
  });
  await h.connected(c);
  const err = await h.waitFor((done) => {
    c.user.bind('pusher:signin_error', done);
    c.signin();
  }, 'signin_error');
  assert.equal(err.status, 403);
  assert.equal(c.connection.state, 'connected');
  c.disconnect();
});
