// Watchlist events (pusher-js >= 7.5: pusher.user.watchlist.bind('online' | 'offline')), from
// the `watchlist` of the signed-in user's user_data, on one node and across two nodes through a
// real redis-server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as h from './helpers.mjs';

const watching = h.app({ watchlist_events: true });
let server;
let auth;
let redis;
const nodes = [];
const auths = [];

before(async () => {
  server = await h.startServer({ apps: [watching] });
  auth = await h.startAuthServer(h.sdkFor(server));
});

after(async () => {
  h.closeAll();
  await auth?.close();
  for (const a of auths) await a.close();
  await server?.stop();
  for (const n of nodes) await n.stop();
  redis?.stop();
});

/** A pusher-js client signed in as `userId` watching `watchlist`; records its watchlist events. */
async function watcher(srv, authSrv, userId, watchlist) {
  const c = h.pusherClient(srv, authSrv, { userId, watchlist });
  const events = [];
  for (const name of ['online', 'offline']) {
    c.user.watchlist.bind(name, (e) => events.push({ name: e.name, ids: [...e.user_ids].sort() }));
  }
  c.signin();
  await h.until(() => c.user.user_data?.id === userId, `signin of ${userId}`);
  return [c, events];
}

/** Whether `ids` are online (or offline) by the latest event naming each. */
function state(events, id) {
  const last = events.filter((e) => e.ids.includes(id)).pop();
  return last?.name;
}

test('a watcher is told the initial state, then each user coming online and going offline', async () => {
  const [u1, u2] = [h.uniq('u'), h.uniq('u')];
  const [, events] = await watcher(server, auth, h.uniq('w'), [u1, u2]);
  await h.until(() => state(events, u1) === 'offline' && state(events, u2) === 'offline', 'initial offline');
  assert.deepEqual(events[0], { name: 'offline', ids: [u1, u2].sort() }, 'one event for the initial state');
  const [a] = await watcher(server, auth, u1, []);
  await h.until(() => state(events, u1) === 'online', `${u1} online`);
  // A second connection of the same user is no news; its last one leaving is.
  const [a2] = await watcher(server, auth, u1, []);
  a.disconnect();
  const count = events.length;
  a2.disconnect();
  await h.until(() => state(events, u1) === 'offline' && events.length > count, `${u1} offline`);
  assert.equal(events.filter((e) => e.name === 'online').length, 1, JSON.stringify(events));
  // A watcher signing in while a user is online sees it online at once.
  await watcher(server, auth, u2, []);
  const [, late] = await watcher(server, auth, h.uniq('w'), [u2, u1]);
  await h.until(() => late.length >= 2, 'the late watcher’s initial state');
  assert.deepEqual(late.slice(0, 2), [{ name: 'online', ids: [u2] }, { name: 'offline', ids: [u1] }]);
});

test('a watchlist longer than the app allows is refused with a pusher:error', async () => {
  const small = await h.startServer({ apps: [h.app({ watchlist_events: true, max_watchlist_users: 2 })] });
  const smallAuth = await h.startAuthServer(h.sdkFor(small));
  try {
    const c = h.pusherClient(small, smallAuth, { userId: 'big', watchlist: ['a', 'b', 'c'] });
    const errors = [];
    c.connection.bind('error', (e) => errors.push(e));
    await h.connected(c);
    c.signin();
    await h.until(
      () => errors.some((e) => JSON.stringify(e).includes('allows 2')),
      'pusher:error naming the limit',
    );
  } finally {
    await smallAuth.close();
    await small.stop();
  }
});

test('online and offline cross nodes through Redis, once', async () => {
  redis = await h.startRedis();
  const scaling = { scaling: { driver: 'redis', redis_url: redis.url } };
  for (let i = 0; i < 2; i++) {
    const n = await h.startServer({ apps: [watching], config: scaling });
    nodes.push(n);
    auths.push(await h.startAuthServer(h.sdkFor(n)));
  }
  const user = h.uniq('u');
  const [, events] = await watcher(nodes[0], auths[0], h.uniq('w'), [user]);
  await h.until(() => state(events, user) === 'offline', 'initial offline');
  // The user signs in on node 2, then also on node 1, then leaves both: one online, one offline.
  const [onNode2] = await watcher(nodes[1], auths[1], user, []);
  await h.until(() => state(events, user) === 'online', `${user} online through node 2`);
  const [again] = await watcher(nodes[0], auths[0], user, []);
  onNode2.disconnect();
  const count = events.length;
  again.disconnect();
  await h.until(() => state(events, user) === 'offline' && events.length > count, `${user} offline`);
  assert.equal(events.filter((e) => e.name === 'online').length, 1, JSON.stringify(events));
});
