// clients/js/ferrocast-recovery.js on its own, with the real pusher-js: a scripted WebSocket
// server sends the positions a cluster can produce (a repeat of an offset the client already
// has, offsets skipped, a new epoch while subscribed) and the channel's callbacks must get
// each event once, with `ferrocast:recovery_failed` before any event that follows a gap.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WebSocketServer } from 'ws';

import { enableRecovery } from '../../clients/js/ferrocast-recovery.js';
import * as h from './helpers.mjs';

const POSITION = 'pusher_internal:ferrocast_position';

test('repeats are dropped and gaps are announced before the event that follows them', async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const subscribes = [];
  let peer;
  wss.on('connection', (ws) => {
    peer = ws;
    ws.send(JSON.stringify({ event: 'pusher:connection_established', data: JSON.stringify({ socket_id: '1.1', activity_timeout: 120 }) }));
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString());
      if (msg.event !== 'pusher:subscribe') return;
      subscribes.push(msg.data);
      const channel = msg.data.channel;
      ws.send(JSON.stringify({ event: 'pusher_internal:subscription_succeeded', channel, data: '{}' }));
      ws.send(JSON.stringify({ event: POSITION, channel, data: JSON.stringify({ epoch: 'e.1', at: 5 }) }));
    });
  });
  const server = { port: wss.address().port, apps: [h.app()] };
  const c = h.pusherClient(server);
  const recovery = enableRecovery(c);
  const [ch] = await h.subscribed(c, 'orders');
  await h.until(() => recovery.positions().get('orders')?.offset === 5, 'the starting position');
  assert.equal(subscribes[0].positions, true, 'the script asks for positions');
  const seen = [];
  ch.bind('order', (d) => seen.push(['order', d.n]));
  ch.bind('ferrocast:recovery_failed', (d) => seen.push(['failed', d.epoch, d.offset]));
  const send = (epoch, next, n) => {
    peer.send(JSON.stringify({ event: POSITION, channel: 'orders', data: JSON.stringify({ epoch, next }) }));
    peer.send(JSON.stringify({ event: 'order', channel: 'orders', data: JSON.stringify({ n }) }));
  };
  send('e.1', 5, 'repeat of 5');
  send('e.1', 6, 6);
  send('e.1', 9, 9);
  send('e.2', 1, 'new epoch');
  send('e.2', 2, 'after');
  await h.until(() => seen.length >= 6, 'the events');
  assert.deepEqual(seen, [
    ['order', 6],
    ['failed', 'e.1', 8],
    ['order', 9],
    ['failed', 'e.2', 0],
    ['order', 'new epoch'],
    ['order', 'after'],
  ]);
  assert.deepEqual(recovery.positions().get('orders'), { epoch: 'e.2', offset: 2 });
  // An `at` behind what the client has, in the same epoch, does not move it back.
  peer.send(JSON.stringify({ event: POSITION, channel: 'orders', data: JSON.stringify({ epoch: 'e.2', at: 1 }) }));
  send('e.2', 3, 'last');
  await h.until(() => seen.length === 7, 'the last event');
  assert.deepEqual(recovery.positions().get('orders'), { epoch: 'e.2', offset: 3 });
  // Coming back, it resumes from there.
  peer.terminate();
  await h.until(() => subscribes.length === 2, 'the resubscription', 30_000);
  assert.deepEqual(subscribes[1].recover, { epoch: 'e.2', offset: 3 });
  c.disconnect();
  wss.close();
});
