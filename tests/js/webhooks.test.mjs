// Webhooks (Pusher "Webhooks", docs/channels/server_api/webhooks): a real HTTP receiver on
// loopback (and an exec script) gets every batch; each request is checked with the official
// `pusher` SDK's `webhook({headers, rawBody}).isValid()` / `getEvents()`.
//
// Absence ("no channel_vacated yet") is asserted after a marker: a later event on another
// channel whose webhook has arrived, after waiting past the vacate grace period. No assertion
// puts an upper bound on elapsed time; the only time checks are lower bounds (the grace period
// and the retry back-off), which slowness cannot break.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import * as h from './helpers.mjs';

const GRACE = 1000; // vacate_grace_ms used by the servers below (the documented default)

// ---- the receiver -------------------------------------------------------------------------

/**
 * A local webhook receiver. `apps`: the apps whose keys may sign requests (the signature is
 * checked with the app whose key is in X-Pusher-Key). `respond(req, nth)` → status or 'hang'
 * (never answer), `nth` counting requests to that path from 1.
 */
async function startReceiver(apps, respond = () => 200) {
  const verifiers = new Map(
    apps.map((a) => [a.key, new h.PusherSDK({ appId: a.id, key: a.key, secret: a.secret })]),
  );
  const requests = [];
  const hanging = new Set();
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const at = performance.now();
      const verifier = verifiers.get(req.headers['x-pusher-key']) ?? verifiers.values().next().value;
      const hook = verifier.webhook({ headers: req.headers, rawBody: body });
      const valid = hook.isValid();
      const r = {
        path: req.url,
        method: req.method,
        headers: req.headers,
        body,
        valid,
        at,
        events: valid ? hook.getEvents() : [],
        time: valid ? hook.getTime() : null,
      };
      requests.push(r);
      const nth = requests.filter((x) => x.path === r.path).length;
      const action = respond(r, nth);
      if (action === 'hang') {
        hanging.add(res);
        return;
      }
      res.writeHead(action, { 'content-type': 'text/plain' });
      res.end(action < 300 ? 'ok' : 'nope');
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = srv.address().port;
  return {
    requests,
    url: (p) => `http://127.0.0.1:${port}${p}`,
    /** Requests to `p`. */
    to: (p) => requests.filter((r) => r.path === p),
    /** Events (of valid requests) to `p`, each with the request's `at`, matching `pred`. */
    events(p, pred = () => true) {
      const out = [];
      for (const r of requests) {
        if (r.path !== p || !r.valid) continue;
        for (const e of r.events) if (pred(e)) out.push({ ...e, at: r.at });
      }
      return out;
    },
    close: () =>
      new Promise((resolve) => {
        for (const res of hanging) res.destroy();
        srv.closeAllConnections?.();
        srv.close(() => resolve());
      }),
  };
}

/** Every request any receiver got is a POST the official SDK accepts, in Pusher's format. */
function assertAllValid(rx, key) {
  assert.ok(rx.requests.length > 0, 'the receiver got requests');
  for (const r of rx.requests) {
    assert.equal(r.method, 'POST', `webhooks are POSTs: ${r.path}`);
    assert.equal(r.headers['content-type'], 'application/json', 'Content-Type application/json');
    assert.equal(r.headers['x-pusher-key'], key, 'X-Pusher-Key is the app key');
    assert.match(r.headers['x-pusher-signature'] ?? '', /^[0-9a-f]{64}$/, 'hex HMAC-SHA256 signature');
    assert.ok(r.valid, `pusher.webhook().isValid() for body ${r.body}`);
    const data = JSON.parse(r.body);
    assert.equal(typeof data.time_ms, 'number', `time_ms is a number: ${r.body}`);
    assert.ok(Math.abs(data.time_ms - Date.now()) < 300_000, 'time_ms is the current time');
    assert.ok(Array.isArray(data.events) && data.events.length > 0, `events is a non-empty array: ${r.body}`);
    for (const e of data.events) {
      assert.equal(typeof e.name, 'string');
      assert.equal(typeof e.channel, 'string');
    }
  }
}

/** `arr` if it has elements, else null (an empty array is truthy for h.until). */
const some = (arr) => (arr.length ? arr : null);

const named = (name, channel) => (e) => e.name === name && e.channel === channel;

async function metric(server, name) {
  const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
  const text = await res.text();
  const m = new RegExp(`^ferrocast_${name} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

// ---- the main server: every event type, filters, exec ------------------------------------

describe('webhook events', () => {
  const A = h.app({ enable_client_messages: true });
  let rx;
  let server;
  let sdk;
  let auth;
  let execDir;

  /** Subscribes a fresh client to a fresh channel and waits for its channel_occupied webhook. */
  async function marker() {
    const name = h.uniq('marker-');
    const m = h.pusherClient(server, auth);
    await h.subscribed(m, name);
    await h.until(() => rx.events('/all', named('channel_occupied', name)).length, `the marker ${name}`);
    m.disconnect();
  }

  before(async () => {
    rx = await startReceiver([A]);
    execDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocast-hook-'));
    const script = path.join(execDir, 'hook.sh');
    fs.writeFileSync(
      script,
      [
        '#!/bin/sh',
        'set -e',
        `out='${execDir}'`,
        'n="$$-$(date +%s%N)"',
        'cat > "$out/tmp-$n"',
        'printf %s "$FERROCAST_WEBHOOK_SIGNATURE" > "$out/hook-$n.sig"',
        'printf %s "$FERROCAST_WEBHOOK_KEY" > "$out/hook-$n.key"',
        'mv "$out/tmp-$n" "$out/hook-$n.json"',
        '',
      ].join('\n'),
    );
    fs.chmodSync(script, 0o755);
    server = await h.startServer({
      apps: [
        {
          ...A,
          webhooks: [
            { url: rx.url('/all') },
            {
              url: rx.url('/filtered'),
              event_types: ['channel_occupied', 'channel_vacated'],
              channel_prefix: 'wanted-',
            },
            { url: rx.url('/suffix'), event_types: ['channel_occupied'], channel_suffix: '-tail' },
            { exec: [script], channel_prefix: 'exec-' },
          ],
        },
      ],
      config: { webhooks: { batch_ms: 100, vacate_grace_ms: GRACE } },
    });
    sdk = h.sdkFor(server);
    auth = await h.startAuthServer(sdk);
  });

  after(async () => {
    h.closeAll();
    await auth?.close();
    await server?.stop();
    await rx?.close();
    if (execDir) fs.rmSync(execDir, { recursive: true, force: true });
  });

  test('channel_occupied on the first subscribe only; channel_vacated only when the last subscriber leaves, after the grace period', async () => {
    const name = h.uniq('occ-');
    const a = h.pusherClient(server, auth);
    const b = h.pusherClient(server, auth);
    await h.subscribed(a, name);
    const [occ] = await h.until(() => some(rx.events('/all', named('channel_occupied', name))), 'channel_occupied');
    assert.deepEqual(Object.keys(occ).sort(), ['at', 'channel', 'name']);
    await h.subscribed(b, name);
    // The second subscribe is reported by its subscription_count.
    await h.until(
      () => rx.events('/all', (e) => named('subscription_count', name)(e) && e.subscription_count === 2).length,
      'subscription_count 2',
    );
    a.unsubscribe(name);
    await h.until(
      () => rx.events('/all', (e) => named('subscription_count', name)(e) && e.subscription_count === 1).length,
      'subscription_count 1 after the first subscriber left',
    );
    await h.sleep(GRACE + 500);
    await marker();
    assert.equal(rx.events('/all', named('channel_occupied', name)).length, 1, 'one channel_occupied');
    assert.equal(rx.events('/all', named('channel_vacated', name)).length, 0, 'no channel_vacated while b is subscribed');

    const left = performance.now();
    b.unsubscribe(name);
    const [vac] = await h.until(() => some(rx.events('/all', named('channel_vacated', name))), 'channel_vacated');
    assert.deepEqual(Object.keys(vac).sort(), ['at', 'channel', 'name']);
    assert.ok(
      vac.at - left >= GRACE - 100,
      `channel_vacated waits out vacate_grace_ms (${GRACE} ms); came after ${Math.round(vac.at - left)} ms`,
    );
    await marker();
    assert.equal(rx.events('/all', named('channel_vacated', name)).length, 1, 'exactly one channel_vacated');
    assert.equal(rx.events('/all', named('channel_occupied', name)).length, 1, 'still one channel_occupied');
    assertAllValid(rx, A.key);
    a.disconnect();
    b.disconnect();
  });

  test('a quick unsubscribe + resubscribe within vacate_grace_ms fires neither vacated nor occupied', async () => {
    const name = h.uniq('flap-');
    const a = h.pusherClient(server, auth);
    await h.subscribed(a, name);
    await h.until(() => rx.events('/all', named('channel_occupied', name)).length, 'channel_occupied');
    a.unsubscribe(name);
    await h.subscribed(a, name);
    await h.sleep(GRACE + 500);
    await marker();
    assert.equal(rx.events('/all', named('channel_vacated', name)).length, 0, 'no channel_vacated (no flap)');
    assert.equal(rx.events('/all', named('channel_occupied', name)).length, 1, 'no second channel_occupied');
    // The channel really is occupied: leaving now is announced.
    a.disconnect();
    await h.until(() => rx.events('/all', named('channel_vacated', name)).length, 'channel_vacated on disconnect');
    assertAllValid(rx, A.key);
  });

  test('member_added on a user\'s first connection, member_removed after their last', async () => {
    const name = h.uniq('presence-hook-');
    const u1a = h.pusherClient(server, auth, { userId: 'hook-u1' });
    const u1b = h.pusherClient(server, auth, { userId: 'hook-u1' });
    const u2 = h.pusherClient(server, auth, { userId: 'hook-u2' });
    const added = (uid) => rx.events('/all', (e) => named('member_added', name)(e) && e.user_id === uid);
    const removed = (uid) => rx.events('/all', (e) => named('member_removed', name)(e) && e.user_id === uid);

    await h.subscribed(u1a, name);
    const [ev] = await h.until(() => some(added('hook-u1')), 'member_added hook-u1');
    assert.deepEqual(Object.keys(ev).sort(), ['at', 'channel', 'name', 'user_id']);
    await h.subscribed(u1b, name);
    await h.subscribed(u2, name);
    await h.until(() => added('hook-u2').length, 'member_added hook-u2');
    await h.sleep(300);
    await marker();
    assert.equal(added('hook-u1').length, 1, 'a second connection of hook-u1 is no new member');

    u1a.disconnect();
    await h.sleep(GRACE + 500);
    await marker();
    assert.equal(removed('hook-u1').length, 0, 'hook-u1 is still present through its other connection');

    u1b.disconnect();
    const [rm] = await h.until(() => some(removed('hook-u1')), 'member_removed hook-u1 after its last connection');
    assert.deepEqual(Object.keys(rm).sort(), ['at', 'channel', 'name', 'user_id']);
    assert.equal(removed('hook-u2').length, 0, 'hook-u2 did not leave');
    assert.equal(rx.events('/all', named('channel_vacated', name)).length, 0, 'hook-u2 still occupies the channel');
    u2.disconnect();
    await h.until(() => removed('hook-u2').length, 'member_removed hook-u2');
    await h.until(() => rx.events('/all', named('channel_vacated', name)).length, 'channel_vacated of the presence channel');
    assert.equal(added('hook-u1').length, 1);
    assert.equal(removed('hook-u1').length, 1);
    assertAllValid(rx, A.key);
  });

  test('client_event carries event, data and socket_id (and user_id on presence channels)', async () => {
    const priv = h.uniq('private-hook-');
    const pres = h.uniq('presence-hookc-');
    const a = h.pusherClient(server, auth, { userId: 'whisperer' });
    const b = h.pusherClient(server, auth, { userId: 'listener' });
    const sidA = await h.connected(a);
    const [pa] = await h.subscribed(a, priv);
    const [pb] = await h.subscribed(b, priv);
    const gotB = h.collect(pb, 'client-typing');
    assert.equal(pa.trigger('client-typing', { n: 1, text: 'héllo' }), true);
    await h.until(() => gotB.length, 'the client event itself');
    const [ev] = await h.until(() => some(rx.events('/all', named('client_event', priv))), 'client_event on the private channel');
    assert.equal(ev.event, 'client-typing');
    assert.equal(ev.socket_id, sidA, 'socket_id of the sender');
    assert.equal(typeof ev.data, 'string', 'client_event data is the event data as a JSON string (Pusher webhooks doc)');
    assert.deepEqual(JSON.parse(ev.data), { n: 1, text: 'héllo' });
    assert.equal(ev.user_id, undefined, 'no user_id outside presence channels');

    const [qa] = await h.subscribed(a, pres);
    const [qb] = await h.subscribed(b, pres);
    const gotQ = h.collect(qb, 'client-moved');
    assert.equal(qa.trigger('client-moved', { x: 3 }), true);
    await h.until(() => gotQ.length, 'the presence client event itself');
    const [pev] = await h.until(() => some(rx.events('/all', named('client_event', pres))), 'client_event on the presence channel');
    assert.equal(pev.event, 'client-moved');
    assert.equal(pev.socket_id, sidA);
    assert.equal(pev.user_id, 'whisperer', 'user_id of the sender on a presence channel');
    assert.deepEqual(JSON.parse(pev.data), { x: 3 });

    // Events triggered through the REST API are not client events.
    await sdk.trigger(priv, 'server-side', { s: 1 });
    await marker();
    assert.equal(rx.events('/all', (e) => e.name === 'client_event' && e.channel === priv).length, 1);
    assertAllValid(rx, A.key);
    a.disconnect();
    b.disconnect();
  });

  test('cache_miss when subscribing to an empty cache channel, not once it holds an event', async () => {
    const name = h.uniq('cache-hook-');
    const a = h.pusherClient(server, auth);
    const [ch] = await h.subscribed(a, name);
    const [ev] = await h.until(() => some(rx.events('/all', named('cache_miss', name))), 'cache_miss');
    assert.deepEqual(Object.keys(ev).sort(), ['at', 'channel', 'name']);
    const got = h.collect(ch, 'fill');
    await sdk.trigger(name, 'fill', { v: 1 });
    await h.until(() => got.length, 'the event on the cache channel');
    const b = h.pusherClient(server, auth);
    // The cached event follows subscription_succeeded at once: bind before subscribing.
    const cached = h.collect(b.subscribe(name), 'fill');
    await h.subscribed(b, name);
    await h.until(() => cached.length, 'the cached event for the second subscriber');
    await h.sleep(300);
    await marker();
    assert.equal(rx.events('/all', named('cache_miss', name)).length, 1, 'no cache_miss once the channel holds an event');
    assertAllValid(rx, A.key);
    a.disconnect();
    b.disconnect();
  });

  test('subscription_count follows the number of subscribers', async () => {
    const name = h.uniq('count-');
    const clients = [h.pusherClient(server, auth), h.pusherClient(server, auth), h.pusherClient(server, auth)];
    const counts = () => rx.events('/all', named('subscription_count', name)).map((e) => e.subscription_count);
    for (const [i, c] of clients.entries()) {
      await h.subscribed(c, name);
      await h.until(() => counts().includes(i + 1), `subscription_count ${i + 1}`);
    }
    const [ev] = rx.events('/all', (e) => named('subscription_count', name)(e) && e.subscription_count === 3);
    assert.deepEqual(Object.keys(ev).sort(), ['at', 'channel', 'name', 'subscription_count']);
    clients[0].disconnect();
    await h.until(() => counts().at(-1) === 2, 'subscription_count 2 after one left');
    assert.ok(counts().every((n) => Number.isInteger(n) && n >= 1 && n <= 3), `counts ${counts()}`);
    assertAllValid(rx, A.key);
    clients[1].disconnect();
    clients[2].disconnect();
  });

  test('event_types, channel_prefix and channel_suffix filters are respected', async () => {
    const wanted = h.uniq('wanted-');
    const other = h.uniq('other-');
    const tail = `${h.uniq('x-')}-tail`;
    const a = h.pusherClient(server, auth);
    await h.subscribed(a, wanted);
    await h.subscribed(a, other);
    await h.subscribed(a, tail);
    a.disconnect();
    for (const n of [wanted, other, tail]) {
      await h.until(() => rx.events('/all', named('channel_vacated', n)).length, `channel_vacated ${n} on /all`);
    }
    await h.until(() => rx.events('/filtered', named('channel_vacated', wanted)).length, 'channel_vacated on /filtered');
    await marker();
    const filtered = rx.events('/filtered');
    assert.ok(filtered.length > 0);
    for (const e of filtered) {
      assert.ok(['channel_occupied', 'channel_vacated'].includes(e.name), `event_types filter: got ${e.name}`);
      assert.ok(e.channel.startsWith('wanted-'), `channel_prefix filter: got ${e.channel}`);
    }
    assert.equal(rx.events('/filtered', named('channel_occupied', wanted)).length, 1);
    assert.equal(rx.events('/filtered', named('channel_vacated', wanted)).length, 1);
    // Everything the unfiltered hook got about `wanted` beyond the two types stays out.
    assert.ok(rx.events('/all', named('subscription_count', wanted)).length > 0, 'there were other events to filter out');

    const suffixed = rx.events('/suffix');
    assert.deepEqual(
      suffixed.map((e) => [e.name, e.channel]),
      [['channel_occupied', tail]],
      'only the -tail channel, only channel_occupied',
    );
    assertAllValid(rx, A.key);
  });

  test('exec webhook: the script gets the JSON batch on stdin and a valid signature in its environment', async () => {
    const name = h.uniq('exec-');
    const a = h.pusherClient(server, auth);
    await h.subscribed(a, name);
    const verifier = new h.PusherSDK({ appId: A.id, key: A.key, secret: A.secret });
    const hooks = () =>
      fs
        .readdirSync(execDir)
        .filter((f) => f.endsWith('.json'))
        .map((f) => {
          const base = path.join(execDir, f.slice(0, -'.json'.length));
          const rawBody = fs.readFileSync(`${base}.json`, 'utf8');
          const signature = fs.readFileSync(`${base}.sig`, 'utf8');
          const key = fs.readFileSync(`${base}.key`, 'utf8');
          return { rawBody, signature, key };
        });
    const found = await h.until(
      () => hooks().find((x) => JSON.parse(x.rawBody).events.some(named('channel_occupied', name))),
      'the exec webhook with channel_occupied',
    );
    assert.equal(found.key, A.key, 'FERROCAST_WEBHOOK_KEY is the app key');
    const hook = verifier.webhook({
      headers: { 'x-pusher-key': found.key, 'x-pusher-signature': found.signature, 'content-type': 'application/json' },
      rawBody: found.rawBody,
    });
    assert.ok(hook.isValid(), `FERROCAST_WEBHOOK_SIGNATURE ${found.signature} signs ${found.rawBody}`);
    assert.ok(hook.getEvents().some(named('channel_occupied', name)));
    assert.equal(typeof JSON.parse(found.rawBody).time_ms, 'number');
    // Only exec- channels reach the script.
    for (const x of hooks()) {
      for (const e of JSON.parse(x.rawBody).events) assert.ok(e.channel.startsWith('exec-'), e.channel);
    }
    assert.equal(rx.requests.filter((r) => r.events.some((e) => e.channel === name)).length > 0, true, '/all still gets it too');
    a.disconnect();
  });
});

// ---- batching -----------------------------------------------------------------------------

describe('webhook batching', () => {
  const ON = h.app({ id: 'app-on', key: 'key-on', secret: 'secret-on' });
  const OFF = h.app({ id: 'app-off', key: 'key-off', secret: 'secret-off' });
  const QUIET = h.app({ id: 'app-quiet', key: 'key-quiet', secret: 'secret-quiet' });
  const BATCH_MS = 2000;
  let rx;
  let solo; // only an app with batching
  let mixed; // an app with batching and one without

  before(async () => {
    rx = await startReceiver([ON, OFF, QUIET]);
    solo = await h.startServer({
      apps: [{ ...ON, webhooks: [{ url: rx.url('/solo'), event_types: ['channel_occupied'] }] }],
      config: { webhooks: { batch_ms: BATCH_MS } },
    });
    mixed = await h.startServer({
      apps: [
        { ...ON, webhooks: [{ url: rx.url('/mixed-on'), event_types: ['channel_occupied'] }] },
        { ...OFF, webhook_batching: false, webhooks: [{ url: rx.url('/mixed-off') }] },
        { ...QUIET, webhooks_enabled: false, webhooks: [{ url: rx.url('/quiet') }] },
      ],
      config: { webhooks: { batch_ms: BATCH_MS } },
    });
  });

  after(async () => {
    h.closeAll();
    await solo?.stop();
    await mixed?.stop();
    await rx?.close();
  });

  /** One client subscribes to `n` channels one after the other (each awaited). */
  async function subscribeSeveral(server, key, prefix, n) {
    const c = h.pusherClient(server, null, { key });
    const names = [];
    for (let i = 0; i < n; i += 1) {
      const name = h.uniq(prefix);
      names.push(name);
      await h.subscribed(c, name);
    }
    return { c, names };
  }

  test('several subscribes within batch_ms arrive as one request with several events', async () => {
    const { c, names } = await subscribeSeveral(solo, ON.key, 'batch-', 4);
    await h.until(
      () => names.every((n) => rx.events('/solo', named('channel_occupied', n)).length),
      'channel_occupied of every channel',
    );
    const reqs = rx.to('/solo');
    assert.equal(reqs.length, 1, `one request; got ${reqs.map((r) => r.body).join('\n')}`);
    assert.deepEqual(reqs[0].events.map((e) => e.channel), names, 'the events in order');
    assertAllValid({ requests: reqs }, ON.key);
    c.disconnect();
  });

  test('webhook_batching false: one request per event', async () => {
    const { c, names } = await subscribeSeveral(mixed, OFF.key, 'nobatch-', 3);
    await h.until(
      () => names.every((n) => rx.events('/mixed-off', named('channel_occupied', n)).length),
      'channel_occupied of every channel',
    );
    await h.until(
      () => names.every((n) => rx.events('/mixed-off', named('subscription_count', n)).length),
      'subscription_count of every channel',
    );
    const reqs = rx.to('/mixed-off');
    assertAllValid({ requests: reqs }, OFF.key);
    for (const r of reqs) {
      assert.equal(r.events.length, 1, `webhook_batching false ("off = one request per event"): ${r.body}`);
    }
    c.disconnect();
  });

  test('an app without batching does not turn batching off for another app', async () => {
    const { c, names } = await subscribeSeveral(mixed, ON.key, 'stillbatch-', 3);
    await h.until(
      () => names.every((n) => rx.events('/mixed-on', named('channel_occupied', n)).length),
      'channel_occupied of every channel',
    );
    const reqs = rx.to('/mixed-on');
    assertAllValid({ requests: reqs }, ON.key);
    assert.equal(
      reqs.length,
      1,
      `app-on keeps webhook_batching true (batch_ms ${BATCH_MS}) next to an app with it off; got ${reqs.length} requests: ${reqs.map((r) => r.body).join('\n')}`,
    );
    c.disconnect();
  });

  test('webhooks_enabled false: the app\'s webhooks stay silent', async () => {
    const { c, names } = await subscribeSeveral(mixed, QUIET.key, 'quiet-', 2);
    c.disconnect();
    // A later event of another app on the same server has been delivered...
    const { c: m, names: [mark] } = await subscribeSeveral(mixed, OFF.key, 'quiet-marker-', 1);
    await h.until(() => rx.events('/mixed-off', named('channel_occupied', mark)).length, 'the marker');
    await h.sleep(GRACE + 500);
    m.disconnect();
    await h.until(() => rx.events('/mixed-off', named('channel_vacated', mark)).length, 'the marker vacated');
    // ...and nothing about the quiet app's channels was sent.
    assert.deepEqual(rx.to('/quiet'), [], `no webhook for ${names}`);
  });
});

// ---- delivery: retries, a hanging receiver ------------------------------------------------

describe('webhook delivery', () => {
  test('a receiver answering 500 twice then 200 gets the same batch three times; metrics count it', async () => {
    const A = h.app();
    const rx = await startReceiver([A], (_r, nth) => (nth <= 2 ? 500 : 200));
    const server = await h.startServer({
      apps: [{ ...A, webhooks: [{ url: rx.url('/r'), event_types: ['channel_occupied'] }] }],
    });
    try {
      const name = h.uniq('retry-');
      const c = h.pusherClient(server, null);
      await h.subscribed(c, name);
      await h.until(() => rx.to('/r').length >= 3, 'three tries');
      const [r1, r2, r3] = rx.to('/r');
      assertAllValid(rx, A.key);
      assert.deepEqual(r1.events, [{ name: 'channel_occupied', channel: name }]);
      assert.equal(r2.body, r1.body, 'the retry sends the same body');
      assert.equal(r3.body, r1.body, 'the third try sends the same body');
      assert.equal(r2.headers['x-pusher-signature'], r1.headers['x-pusher-signature']);
      assert.equal(r3.headers['x-pusher-signature'], r1.headers['x-pusher-signature']);
      // Back-off lower bounds: 1 s before the second try, 2 s before the third.
      assert.ok(r2.at - r1.at >= 900, `second try ${Math.round(r2.at - r1.at)} ms after the first`);
      assert.ok(r3.at - r2.at >= 1900, `third try ${Math.round(r3.at - r2.at)} ms after the second`);
      await h.until(async () => (await metric(server, 'webhooks_sent_total')) >= 1, 'ferrocast_webhooks_sent_total >= 1');
      assert.equal(await metric(server, 'webhook_failures_total'), 2, 'ferrocast_webhook_failures_total');
      assert.equal(await metric(server, 'webhooks_dropped_total'), 0, 'ferrocast_webhooks_dropped_total');
      await h.sleep(500);
      assert.equal(rx.to('/r').length, 3, 'no fourth send after the 200');
      c.disconnect();
    } finally {
      h.closeAll();
      await server.stop();
      await rx.close();
    }
  });

  test('a receiver that never answers does not delay message delivery', async () => {
    const A = h.app();
    const rx = await startReceiver([A], () => 'hang');
    const server = await h.startServer({
      apps: [{ ...A, webhooks: [{ url: rx.url('/hang') }] }],
      config: { webhooks: { timeout_secs: 2 } },
    });
    try {
      const sdk = h.sdkFor(server);
      const name = h.uniq('hang-');
      const c = h.pusherClient(server, null);
      const [ch] = await h.subscribed(c, name);
      await h.until(() => rx.to('/hang').length >= 1, 'the webhook request to reach the hanging receiver');
      const got = h.collect(ch, 'while-hanging');
      await sdk.trigger(name, 'while-hanging', { ok: true });
      await h.until(() => got.length === 1, 'the REST event while the webhook receiver hangs');
      assert.deepEqual(got[0].data, { ok: true });
      // More subscribers and events while the sends pile up.
      const c2 = h.pusherClient(server, null);
      const [ch2] = await h.subscribed(c2, h.uniq('hang2-'));
      const got2 = h.collect(ch2, 'again');
      await sdk.trigger(ch2.name, 'again', { n: 2 });
      await h.until(() => got2.length === 1, 'a second event');
      // The hung send is given up on after timeout_secs and counted.
      await h.until(async () => (await metric(server, 'webhook_failures_total')) >= 1, 'the hung send counted as failed');
      assert.equal(await metric(server, 'webhooks_sent_total'), 0);
      c.disconnect();
      c2.disconnect();
    } finally {
      h.closeAll();
      await server.stop();
      await rx.close();
    }
  });
});
