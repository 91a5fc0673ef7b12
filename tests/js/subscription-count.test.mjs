// pusher_internal:subscription_count (pusher-js >= 7.2: channel.bind('pusher:subscription_count')
// and channel.subscriptionCount), on one node and across two nodes through a real redis-server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import * as h from './helpers.mjs';

const counting = h.app({ subscription_count_events: true, subscription_count_interval_ms: 100 });
let server;
let quiet;
let redis;
let nodes = [];

before(async () => {
  server = await h.startServer({ apps: [counting] });
  quiet = await h.startServer();
});

after(async () => {
  h.closeAll();
  await server?.stop();
  await quiet?.stop();
  for (const n of nodes) await n.stop();
  redis?.stop();
});

/** Subscribes with the count bound before the first frame can arrive; returns [channel, counts]. */
async function counted(client, name) {
  const ch = client.subscribe(name);
  const counts = [];
  ch.bind('pusher:subscription_count', (data) => counts.push(data.subscription_count));
  await h.until(() => ch.subscribed, `subscription to ${name}`);
  return [ch, counts];
}

const last = (counts) => counts[counts.length - 1];

test('subscribers are told the count as it changes, and subscriptionCount follows', async () => {
  const name = h.uniq('counted-');
  const a = h.pusherClient(server);
  const [chA, countsA] = await counted(a, name);
  await h.until(() => last(countsA) === 1, 'the first subscriber told 1');
  assert.equal(chA.subscriptionCount, 1);
  const b = h.pusherClient(server);
  const [chB, countsB] = await counted(b, name);
  await h.until(() => last(countsA) === 2 && last(countsB) === 2, 'both told 2');
  assert.equal(chB.subscriptionCount, 2);
  b.unsubscribe(name);
  await h.until(() => last(countsA) === 1, 'the one left told 1');
  const c = h.pusherClient(server);
  await counted(c, name);
  c.disconnect();
  await h.until(() => last(countsA) === 1 && countsA.length >= 4, 'a disconnect counts too');
  assert.deepEqual(countsA.slice(0, 3), [1, 2, 1]);
  assert.ok(countsA.every((n) => n >= 1 && n <= 3), JSON.stringify(countsA));
});

test('a burst of subscriptions is told in a few frames, ending on the true count', async () => {
  const name = h.uniq('burst-');
  const watcher = h.pusherClient(server);
  const [, counts] = await counted(watcher, name);
  const crowd = Array.from({ length: 20 }, () => h.pusherClient(server));
  await Promise.all(crowd.map((c) => counted(c, name)));
  await h.until(() => last(counts) === 21, 'the watcher told 21');
  // Throttled: far fewer frames than changes (20 joins), each a count the channel really had.
  assert.ok(counts.length < 15, `told ${counts.length} times: ${JSON.stringify(counts)}`);
  for (const c of crowd) c.disconnect();
  await h.until(() => last(counts) === 1, 'the watcher told 1 after the crowd left');
});

/** Two subscribers of `name` on `srv`; then an event sent after both subscriptions, which
 *  arrives after any count would have. Returns the first subscriber's channel and counts. */
async function twoThenMarker(srv, name, auth) {
  const a = h.pusherClient(srv, auth, { userId: 'a' });
  const [chA, countsA] = await counted(a, name);
  const b = h.pusherClient(srv, auth, { userId: 'b' });
  await counted(b, name);
  const got = h.collect(chA, 'marker');
  await h.sdkFor(srv).trigger(name, 'marker', {});
  await h.until(() => got.length === 1, `the marker event on ${name}`);
  return [chA, countsA];
}

test('no count where the app does not enable it', async () => {
  const [ch, counts] = await twoThenMarker(quiet, h.uniq('quiet-'));
  assert.deepEqual(counts, []);
  assert.ok(!ch.subscriptionCount, `subscriptionCount ${ch.subscriptionCount}`);
});

test('no count on presence channels, which have their members instead', async () => {
  const auth = await h.startAuthServer(h.sdkFor(server));
  try {
    const [ch, counts] = await twoThenMarker(server, h.uniq('presence-room-'), auth);
    assert.deepEqual(counts, []);
    assert.equal(ch.members.count, 2);
  } finally {
    await auth.close();
  }
});

test('counts are cluster-wide across two nodes through Redis', async () => {
  redis = await h.startRedis();
  const scaling = { scaling: { driver: 'redis', redis_url: redis.url } };
  for (let i = 0; i < 2; i++) nodes.push(await h.startServer({ apps: [counting], config: scaling }));
  const name = h.uniq('cluster-');
  const a = h.pusherClient(nodes[0]);
  const [, countsA] = await counted(a, name);
  const b = h.pusherClient(nodes[1]);
  const [, countsB] = await counted(b, name);
  await h.until(() => last(countsA) === 2 && last(countsB) === 2, 'both nodes told 2');
  b.disconnect();
  await h.until(() => last(countsA) === 1, 'node 1 told 1 after node 2 lost its subscriber');
});
