// Presence channels with laravel-echo (join/here/joining/leaving) and pusher-js: member lists,
// one member per user however many connections it has, and the REST view of members.

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

async function subscriptionCount(name) {
  const res = await sdk.get({ path: `/channels/${name}`, params: { info: 'subscription_count' } });
  assert.equal(res.status, 200);
  return (await res.json()).subscription_count;
}

test('Echo.join: here, joining and leaving with two clients', async () => {
  const room = h.uniq('room-');
  const alice = h.echoClient(server, auth, { userId: 'alice', userName: 'Alice' });
  const aliceJoining = [];
  const aliceLeaving = [];
  const aliceHere = await h.waitFor((done) => {
    alice.join(room)
      .here(done)
      .joining((u) => aliceJoining.push(u))
      .leaving((u) => aliceLeaving.push(u));
  }, 'alice here()');
  assert.deepEqual(aliceHere, [{ name: 'Alice' }]);

  const bob = h.echoClient(server, auth, { userId: 'bob', userName: 'Bob' });
  const bobHere = await h.waitFor((done) => {
    bob.join(room).here(done);
  }, 'bob here()');
  assert.deepEqual(
    [...bobHere].sort((x, y) => x.name.localeCompare(y.name)),
    [{ name: 'Alice' }, { name: 'Bob' }],
  );
  await h.until(() => aliceJoining.length === 1, 'alice to see bob joining');
  assert.deepEqual(aliceJoining, [{ name: 'Bob' }]);

  // pusher-js keeps the member list: both see two members with the right ids.
  const members = alice.connector.pusher.channel(`presence-${room}`).members;
  assert.equal(members.count, 2);
  assert.deepEqual(members.get('bob'), { id: 'bob', info: { name: 'Bob' } });
  assert.equal(members.me.id, 'alice');

  bob.disconnect();
  await h.until(() => aliceLeaving.length === 1, 'alice to see bob leaving');
  assert.deepEqual(aliceLeaving, [{ name: 'Bob' }]);
  assert.equal(members.count, 1);
  alice.disconnect();
});

test('two connections of one user: one member_added, member_removed only after both close', async () => {
  const name = h.uniq('presence-dup-');
  const observer = h.pusherClient(server, auth, { userId: 'observer' });
  const [och, odata] = await h.subscribed(observer, name);
  assert.equal(odata.count, 1);
  const added = h.collect(och, 'pusher:member_added');
  const removed = h.collect(och, 'pusher:member_removed');
  const markers = h.collect(och, 'marker');

  const tab1 = h.pusherClient(server, auth, { userId: 'dup', userName: 'Dup' });
  const [, d1] = await h.subscribed(tab1, name);
  assert.equal(d1.count, 2);
  await h.until(() => added.length === 1, 'member_added for the first connection');
  assert.equal(added[0].data.id, 'dup');
  assert.deepEqual(added[0].data.info, { name: 'Dup' });

  const tab2 = h.pusherClient(server, auth, { userId: 'dup', userName: 'Dup' });
  const [, d2] = await h.subscribed(tab2, name);
  assert.equal(d2.count, 2, 'the second connection of a user is not a new member');
  assert.deepEqual(Object.keys(tab2.channel(name).members.members).sort(), ['dup', 'observer']);

  // Everything the server sent the observer before this marker has arrived once the marker has.
  await sdk.trigger(name, 'marker', { n: 1 });
  await h.until(() => markers.length === 1, 'marker 1');
  assert.equal(added.length, 1, 'exactly one member_added for a user with two connections');

  let users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['dup', 'observer']);

  tab1.disconnect();
  await h.until(async () => (await subscriptionCount(name)) === 2, 'the server to drop the first connection');
  await sdk.trigger(name, 'marker', { n: 2 });
  await h.until(() => markers.length === 2, 'marker 2');
  assert.equal(removed.length, 0, 'no member_removed while the user still has a connection');
  users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['dup', 'observer']);

  tab2.disconnect();
  await h.until(() => removed.length === 1, 'member_removed after the last connection closed');
  assert.equal(removed[0].data.id, 'dup');
  await sdk.trigger(name, 'marker', { n: 3 });
  await h.until(() => markers.length === 3, 'marker 3');
  assert.equal(removed.length, 1);
  users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users, { users: [{ id: 'observer' }] });
  observer.disconnect();
});

test('unsubscribing from a presence channel removes the member', async () => {
  const name = h.uniq('presence-unsub-');
  const a = h.pusherClient(server, auth, { userId: 'a' });
  const b = h.pusherClient(server, auth, { userId: 'b' });
  const [cha] = await h.subscribed(a, name);
  const removed = h.collect(cha, 'pusher:member_removed');
  await h.subscribed(b, name);
  b.unsubscribe(name);
  await h.until(() => removed.length === 1, 'member_removed after unsubscribe');
  assert.equal(removed[0].data.id, 'b');
  assert.equal(a.channel(name).members.count, 1);
  a.disconnect();
  b.disconnect();
});

test('numeric user ids come back as strings in the member list', async () => {
  const name = h.uniq('presence-num-');
  // The auth endpoint signs user_id as a string; a custom handler signs a number.
  const c = h.pusherClient(server, null, {
    extra: {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) => {
          cb(null, sdk.authorizeChannel(socketId, channelName, { user_id: 7, user_info: { n: 7 } }));
        },
      },
    },
  });
  const [, data] = await h.subscribed(c, name);
  assert.equal(data.count, 1);
  assert.deepEqual(Object.keys(data.members), ['7']);
  const users = await (await sdk.get({ path: `/channels/${name}/users` })).json();
  assert.deepEqual(users, { users: [{ id: '7' }] });
  c.disconnect();
});
