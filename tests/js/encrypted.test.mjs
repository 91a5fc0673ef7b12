// End-to-end encrypted channels: the SDK (with encryptionMasterKeyBase64) hands the client a
// shared_secret at authorization and encrypts on trigger; pusher-js / laravel-echo decrypt.
// The server only ever relays ciphertext.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import * as h from './helpers.mjs';

const MASTER_KEY = crypto.randomBytes(32).toString('base64');
const SECRET_TEXT = 'attack at dawn ' + crypto.randomBytes(6).toString('hex');

let server;
let sdk;
let auth;

before(async () => {
  // Client events enabled, so the refusal below is about the channel kind.
  server = await h.startServer({ apps: [h.app({ enable_client_messages: true })] });
  sdk = h.sdkFor(server, undefined, { encryptionMasterKeyBase64: MASTER_KEY });
  auth = await h.startAuthServer(sdk);
});

after(async () => {
  h.closeAll();
  await auth?.close();
  await server?.stop();
});

test('pusher-js decrypts an event the SDK encrypted; the wire carries only ciphertext', async () => {
  const name = h.uniq('private-encrypted-vault-');
  const c = h.pusherClient(server, auth, { userId: 'enc' });
  const [ch] = await h.subscribed(c, name);
  const got = h.collect(ch, 'sealed');

  // A plain WebSocket subscriber with a valid signature sees what the server relays.
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/key-1?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await h.until(() => frames.length >= 1, 'raw connection_established');
  const socketId = JSON.parse(frames[0].data).socket_id;
  const sig = sdk.authorizeChannel(socketId, name);
  assert.ok(sig.shared_secret, 'the SDK returns a shared_secret for encrypted channels');
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name, auth: sig.auth } }));
  await h.until(() => frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'), 'raw subscription');

  const res = await sdk.trigger(name, 'sealed', { text: SECRET_TEXT });
  assert.equal(res.status, 200);
  await h.until(() => got.length === 1, 'the decrypted event on pusher-js');
  assert.deepEqual(got[0].data, { text: SECRET_TEXT });

  await h.until(() => frames.some((f) => f.event === 'sealed'), 'the relayed event on the raw socket');
  const relayed = frames.find((f) => f.event === 'sealed');
  assert.equal(typeof relayed.data, 'string');
  const payload = JSON.parse(relayed.data);
  assert.ok(payload.nonce && payload.ciphertext, `relayed data is {nonce, ciphertext}: ${relayed.data}`);
  assert.ok(!relayed.data.includes(SECRET_TEXT), 'the plaintext is not on the wire');
  assert.ok(!server.logText().includes(SECRET_TEXT), 'the plaintext is not in the server log');
  ws.close();
  c.disconnect();
});

test('laravel-echo encryptedPrivate() receives the decrypted payload', async () => {
  const name = h.uniq('vault-');
  const echo = h.echoClient(server, auth, { userId: 'echo-enc' });
  const got = [];
  await h.waitFor((done) => {
    echo.encryptedPrivate(name).subscribed(done).listen('.Sealed', (e) => got.push(e));
  }, 'Echo encrypted subscription');
  await sdk.trigger(`private-encrypted-${name}`, 'Sealed', { secret: SECRET_TEXT, n: [1, 2, 3] });
  await h.until(() => got.length === 1, 'the decrypted Echo event');
  assert.deepEqual(got[0], { secret: SECRET_TEXT, n: [1, 2, 3] });
  echo.disconnect();
});

test('client events are refused on encrypted channels', async () => {
  // Pusher: client events are not supported on private-encrypted channels. pusher-js refuses
  // locally, so send the frame by hand.
  const name = h.uniq('private-encrypted-noclient-');
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/app/key-1?protocol=7`);
  const frames = [];
  ws.on('message', (m) => frames.push(JSON.parse(m.toString())));
  await h.until(() => frames.length >= 1, 'raw connection_established');
  const socketId = JSON.parse(frames[0].data).socket_id;
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: name, auth: sdk.authorizeChannel(socketId, name).auth } }));
  await h.until(() => frames.some((f) => f.event === 'pusher_internal:subscription_succeeded'), 'raw subscription');
  ws.send(JSON.stringify({ event: 'client-x', channel: name, data: { a: 1 } }));
  await h.until(() => frames.some((f) => f.event === 'pusher:error'), 'a pusher:error for the client event');
  ws.close();
});
