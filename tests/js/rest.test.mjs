// The HTTP API as the official SDK's get() sees it: /channels (with filter_by_prefix and
// info=user_count), /channels/{name} (info=subscription_count,user_count), /channels/{name}/users,
// trigger with info, and the error statuses the SDK surfaces.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

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

async function getJson(path, params) {
  const res = await sdk.get({ path, params });
  assert.equal(res.status, 200, `GET ${path}`);
  return res.json();
}

test('GET /channels with no channels is an empty object', async () => {
  assert.deepEqual(await getJson('/channels'), { channels: {} });
});

test('GET /channels lists occupied channels; filter_by_prefix and info=user_count', async () => {
  const pub = h.uniq('list-pub-');
  const pres = h.uniq('presence-list-');
  const a = h.pusherClient(server, auth, { userId: 'la' });
  const b = h.pusherClient(server, auth, { userId: 'lb' });
  const b2 = h.pusherClient(server, auth, { userId: 'lb' });
  await h.subscribed(a, pub);
  await h.subscribed(a, pres);
  await h.subscribed(b, pres);
  await h.subscribed(b2, pres);
  const all = await getJson('/channels');
  assert.deepEqual(all.channels[pub], {});
  assert.deepEqual(all.channels[pres], {});
  const presence = await getJson('/channels', { filter_by_prefix: 'presence-', info: 'user_count' });
  assert.deepEqual(presence.channels, { [pres]: { user_count: 2 } });
  const filtered = await getJson('/channels', { filter_by_prefix: 'list-pub-' });
  assert.deepEqual(Object.keys(filtered.channels), [pub]);
  [a, b, b2].forEach((c) => c.disconnect());
  await h.until(async () => Object.keys((await getJson('/channels')).channels).length === 0, 'channels to empty');
});

test('GET /channels/{name} with subscription_count and user_count', async () => {
  const pub = h.uniq('info-pub-');
  const pres = h.uniq('presence-info-');
  assert.deepEqual(await getJson(`/channels/${pub}`, { info: 'subscription_count' }), { occupied: false, subscription_count: 0 });
  const clients = [1, 2, 3].map((i) => h.pusherClient(server, auth, { userId: i === 3 ? 'u1' : `u${i}` }));
  for (const c of clients) {
    await h.subscribed(c, pub);
    await h.subscribed(c, pres);
  }
  assert.deepEqual(await getJson(`/channels/${pub}`, { info: 'subscription_count' }), { occupied: true, subscription_count: 3 });
  assert.deepEqual(await getJson(`/channels/${pub}`), { occupied: true });
  assert.deepEqual(
    await getJson(`/channels/${pres}`, { info: 'user_count,subscription_count' }),
    { occupied: true, user_count: 2, subscription_count: 3 },
  );
  const users = await getJson(`/channels/${pres}/users`);
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['u1', 'u2']);
  clients.forEach((c) => c.disconnect());
});

test('user_count on a non-presence channel and users of a public channel are 400', async () => {
  // The SDK rejects non-2xx answers with a RequestError carrying the status.
  await assert.rejects(sdk.get({ path: '/channels/not-presence', params: { info: 'user_count' } }), (e) => e.status === 400);
  await assert.rejects(sdk.get({ path: '/channels/not-presence/users' }), (e) => e.status === 400);
  await assert.rejects(sdk.get({ path: '/channels', params: { info: 'user_count' } }), (e) => e.status === 400);
});

test('trigger with info returns the channels\' attributes', async () => {
  const name = h.uniq('presence-trig-');
  const c = h.pusherClient(server, auth, { userId: 'ti' });
  await h.subscribed(c, name);
  const res = await sdk.trigger(name, 'e', 'x', { info: 'subscription_count,user_count' });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { channels: { [name]: { subscription_count: 1, user_count: 1 } } });
  c.disconnect();
});

test('the SDK reports a wrong secret as a 401 RequestError', async () => {
  const bad = h.sdkFor(server, { ...server.apps[0], secret: 'wrong' });
  await assert.rejects(bad.trigger('x', 'e', 'd'), (e) => e.status === 401);
  await assert.rejects(bad.get({ path: '/channels' }), (e) => e.status === 401);
});

test('the SDK reports an unknown app id as 404', async () => {
  const other = h.sdkFor(server, { ...server.apps[0], id: 'no-such-app' });
  await assert.rejects(other.trigger('x', 'e', 'd'), (e) => e.status === 404);
});
