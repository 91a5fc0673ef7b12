// Shared harness for the Pusher-compatibility tests: a real ferrocast server per test file, a tiny
// local auth endpoint that signs with the official `pusher` server SDK, pusher-js / laravel-echo
// clients pointed at the server, and polling helpers with generous deadlines.
//
// Nothing here asserts on elapsed time: every wait has a deadline (default 15 s) and fails with a
// description of what it was waiting for.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';
import PusherClient from 'pusher-js';
import PusherSDK from 'pusher';
import Echo from 'laravel-echo';

export { PusherClient, PusherSDK, Echo };

// pusher-js bundles faye-websocket, whose close() arms a 30 s close-handshake timer even when the
// socket is already closed (pusher-js calls it after the server closed the connection, e.g. on
// 4009) and never clears it. That only keeps a finished test process alive for 30 s, so such
// timers are unref'd. No other timer is touched.
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = function patchedSetTimeout(fn, ms, ...args) {
  const t = realSetTimeout(fn, ms, ...args);
  if (ms === 30_000 && /pusher-js/.test(new Error().stack || '')) t.unref?.();
  return t;
};

const here = path.dirname(fileURLToPath(import.meta.url));

/** Deadline for anything that should happen "soon". */
export const T = 15_000;

/** The binary under test. */
export function binPath() {
  const fromEnv = process.env.FERROCAST_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(here, '../../target/debug/ferrocast');
}

/** An app entry for the config file, with test credentials unless overridden. */
export function app(overrides = {}) {
  return {
    id: 'app-1',
    key: 'key-1',
    secret: 'secret-1',
    name: 'js-tests',
    enabled: true,
    ...overrides,
  };
}

/**
 * Starts `ferrocast websocket --port 0 --fifo DIR/b.fifo --config DIR/config.json`.
 * Resolves once stderr shows `listening on ws://HOST:PORT/`. stderr keeps being drained into
 * `server.logs` so the pipe never fills.
 */
export async function startServer({ apps = [app()], config = {} } = {}) {
  const bin = binPath();
  if (!fs.existsSync(bin)) {
    throw new Error(`ferrocast binary not found at ${bin} (run cargo build or set FERROCAST_BIN)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocast-js-'));
  const fifo = path.join(dir, 'b.fifo');
  const cfgPath = path.join(dir, 'config.json');
  fs.writeFileSync(cfgPath, JSON.stringify({ apps, ...config }, null, 2));
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('FERROCAST_')) env[k] = v;
  }
  env.RUNTIME_DIRECTORY = dir;
  env.XDG_RUNTIME_DIR = dir;
  env.RUST_LOG = 'ferrocast=debug';
  // The suite runs once with one loop and once with two (tests/run.sh).
  if (process.env.FERROCAST_TEST_LOOPS) env.FERROCAST_LOOPS = process.env.FERROCAST_TEST_LOOPS;
  const child = spawn(bin, ['websocket', '--port', '0', '--fifo', fifo, '--config', cfgPath], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs = [];
  let partial = '';
  let exited = null;
  const server = {
    child,
    dir,
    fifo,
    logs,
    host: '127.0.0.1',
    port: 0,
    apps,
    get exited() {
      return exited;
    },
    async stop() {
      if (exited === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        let timer;
        await Promise.race([gone, new Promise((r) => { timer = setTimeout(r, 5000); })]);
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
    logText() {
      return logs.join('\n');
    },
  };
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not log its port within 20 s; stderr:\n${logs.join('\n')}`)),
      20_000,
    );
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      partial += chunk;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        // eslint-disable-next-line no-control-regex
        const line = partial.slice(0, nl).replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
        partial = partial.slice(nl + 1);
        logs.push(line);
        const m = /listening on wss?:\/\/[^\s/]+:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      }
    });
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening; stderr:\n${logs.join('\n')}`));
    });
  });
  server.port = port;
  return server;
}

/** The official server SDK pointed at `server` for app `a`. */
export function sdkFor(server, a = server.apps[0], extra = {}) {
  return new PusherSDK({
    appId: a.id,
    key: a.key,
    secret: a.secret,
    host: '127.0.0.1',
    port: String(server.port),
    useTLS: false,
    timeout: 10_000,
    ...extra,
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => (body += c));
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

function parseBody(req, text) {
  const type = req.headers['content-type'] || '';
  if (type.includes('application/json')) {
    try {
      return JSON.parse(text || '{}');
    } catch {
      return {};
    }
  }
  return Object.fromEntries(new URLSearchParams(text));
}

/**
 * A local auth endpoint (what a Laravel/Express app would serve), signing with the official SDK:
 *   POST /auth       socket_id, channel_name [, user_id, user_name] → sdk.authorizeChannel
 *   POST /user-auth  socket_id [, user_id, user_name, watchlist]  → sdk.authenticateUser
 *                    (watchlist: comma-separated user ids)
 * The user comes from the `user_id` form field (pusher-js `params`) or the `X-User-Id` header.
 * `deny: true` in the form (or X-Deny header) answers 403.
 */
export async function startAuthServer(sdk) {
  const calls = [];
  const srv = http.createServer(async (req, res) => {
    const text = await readBody(req);
    const form = parseBody(req, text);
    const url = new URL(req.url, 'http://x');
    const userId = form.user_id || req.headers['x-user-id'] || 'anonymous';
    const userName = form.user_name || req.headers['x-user-name'] || `User ${userId}`;
    calls.push({ path: url.pathname, form, headers: req.headers });
    const reply = (status, obj) => {
      res.writeHead(status, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
      res.end(JSON.stringify(obj));
    };
    try {
      if (form.deny || req.headers['x-deny']) return reply(403, { error: 'denied' });
      if (url.pathname === '/auth') {
        const channel = form.channel_name;
        const socketId = form.socket_id;
        if (channel.startsWith('presence-')) {
          return reply(200, sdk.authorizeChannel(socketId, channel, {
            user_id: String(userId),
            user_info: { name: userName },
          }));
        }
        return reply(200, sdk.authorizeChannel(socketId, channel));
      }
      if (url.pathname === '/user-auth') {
        const user = { id: String(userId), name: userName };
        if (form.watchlist) user.watchlist = form.watchlist.split(',');
        return reply(200, sdk.authenticateUser(form.socket_id, user));
      }
      return reply(404, { error: 'not found' });
    } catch (e) {
      return reply(500, { error: String(e && e.message) });
    }
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = srv.address().port;
  return {
    calls,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => { srv.closeAllConnections?.(); srv.close(() => resolve()); }),
  };
}

/** pusher-js options for a ferrocast server (ws only, no stats, no TLS). */
export function clientOptions(server, auth, { userId, userName, watchlist, extra = {} } = {}) {
  const params = {};
  if (userId !== undefined) params.user_id = String(userId);
  if (userName !== undefined) params.user_name = userName;
  if (watchlist !== undefined) params.watchlist = watchlist.join(',');
  const opts = {
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
    ...extra,
  };
  if (auth) {
    opts.channelAuthorization = { endpoint: `${auth.url}/auth`, transport: 'ajax', params };
    opts.userAuthentication = { endpoint: `${auth.url}/user-auth`, transport: 'ajax', params };
  }
  return opts;
}

const opened = new Set();

/** A pusher-js client; `closeAll()` disconnects every client made here. */
export function pusherClient(server, auth, opts = {}) {
  const key = opts.key ?? server.apps[0].key;
  const c = new PusherClient(key, clientOptions(server, auth, opts));
  opened.add(c);
  return c;
}

/** A laravel-echo instance using pusher-js (passed as `Pusher` since Node has no window). */
export function echoClient(server, auth, { userId, userName, extra = {} } = {}) {
  const params = {};
  if (userId !== undefined) params.user_id = String(userId);
  if (userName !== undefined) params.user_name = userName;
  const echo = new Echo({
    broadcaster: 'pusher',
    Pusher: PusherClient,
    key: server.apps[0].key,
    wsHost: '127.0.0.1',
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    cluster: 'mt1',
    authEndpoint: auth ? `${auth.url}/auth` : undefined,
    auth: { headers: {}, params },
    userAuthentication: auth
      ? { endpoint: `${auth.url}/user-auth`, headers: {}, params }
      : undefined,
    ...extra,
  });
  opened.add(echo.connector.pusher);
  return echo;
}

export function closeAll() {
  for (const c of opened) {
    try {
      c.disconnect();
    } catch {
      // already gone
    }
  }
  opened.clear();
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `pred` (sync or async) until truthy; returns its value; throws after `ms`. */
export async function until(pred, what, ms = T) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await pred();
    } catch (e) {
      last = undefined;
      if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}: ${e}`);
    }
    if (last) return last;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Resolves with the first value `register(resolve)` delivers, or rejects after `ms`. */
export function waitFor(register, what, ms = T) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

/** Waits until a pusher-js client is `connected`; returns its socket id. */
export async function connected(client, ms = T) {
  if (client.connection.state !== 'connected') {
    await waitFor((done) => client.connection.bind('connected', done), 'pusher-js to connect', ms);
  }
  return client.connection.socket_id;
}

/** Subscribes and waits for `pusher:subscription_succeeded`; returns [channel, data]. */
export async function subscribed(client, name, ms = T) {
  const ch = client.subscribe(name);
  const data = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms subscribing to ${name}`)), ms);
    ch.bind('pusher:subscription_succeeded', (d) => {
      clearTimeout(timer);
      resolve(d);
    });
    ch.bind('pusher:subscription_error', (e) => {
      clearTimeout(timer);
      reject(new Error(`subscription_error on ${name}: ${JSON.stringify(e)}`));
    });
  });
  return [ch, data];
}

/** Collects events named `event` on a channel into an array. */
export function collect(channel, event) {
  const got = [];
  channel.bind(event, (data, meta) => got.push({ data, meta }));
  return got;
}

/** Writes one line to the server's FIFO. */
export function fifoWrite(server, obj) {
  const line = (typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n';
  const fd = fs.openSync(server.fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    fs.writeSync(fd, line);
  } finally {
    fs.closeSync(fd);
  }
}

/** Unique names so tests in one file never share channels. */
let seq = 0;
export function uniq(prefix) {
  seq += 1;
  return `${prefix}${process.pid}-${seq}`;
}

/** A free loopback TCP port (released before use: good enough for one test process). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** A private redis-server on a loopback port, no persistence; `stop()` kills it. */
export async function startRedis() {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  let failed = null;
  child.once('error', (e) => (failed = e));
  await until(() => {
    if (failed) throw new Error(`redis-server: ${failed.message} (tests/run.sh installs it)`);
    return canConnect(port);
  }, 'redis-server to listen');
  return {
    url: `redis://127.0.0.1:${port}/0`,
    stop() {
      child.kill('SIGKILL');
    },
  };
}

/**
 * A new page of `browser` with pusher-js, clients/js/ferrocast-recovery.js (as
 * `window.enableRecovery`) and the `extra` scripts (paths under tests/js) loaded.
 */
export async function pageWithRecovery(browser, ...extra) {
  const dir = path.dirname(fileURLToPath(import.meta.url));
  const page = await browser.newPage();
  page.setDefaultTimeout(T);
  for (const file of ['node_modules/pusher-js/dist/web/pusher.min.js', ...extra]) {
    await page.addScriptTag({ path: path.join(dir, file) });
  }
  const script = fs.readFileSync(path.join(dir, '../../clients/js/ferrocast-recovery.js'), 'utf8');
  await page.addScriptTag({ type: 'module', content: `${script}\nwindow.enableRecovery = enableRecovery;` });
  await page.waitForFunction(() => typeof window.enableRecovery === 'function');
  return page;
}

/** Headless Chromium (CHROMIUM_BIN, default /usr/bin/chromium) for the browser tests. */
export async function launchChromium() {
  const bin = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
  if (!fs.existsSync(bin)) throw new Error(`${bin} not found (apt-get install chromium, or set CHROMIUM_BIN)`);
  return chromium.launch({
    executablePath: bin,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'],
    timeout: 30_000,
  });
}
