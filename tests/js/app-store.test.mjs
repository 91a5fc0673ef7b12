// Apps from a database with the real clients: a private PostgreSQL (started here, on a loopback
// port) holds the apps table of migrations/postgres; an app INSERTed while ferrocast runs is
// served at once to pusher-js, the official pusher SDK publishes with its secret, and an UPDATE
// that disables it reaches the client as 4003 through PostgreSQL's NOTIFY, without SIGHUP.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import * as h from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const migration = path.join(here, '../../migrations/postgres/001_ferrocast_apps.sql');
let pg;
let server;

/** initdb and postgres refuse root: as root they run as the package's `postgres` user. */
function asPostgres(cmd, args) {
  return process.getuid() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

async function startPostgres() {
  const versions = fs.readdirSync('/usr/lib/postgresql').map(Number).filter(Boolean).sort((a, b) => b - a);
  const bin = `/usr/lib/postgresql/${versions[0]}/bin`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocast-pg-'));
  if (process.getuid() === 0) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout);
    fs.chownSync(dir, uid, uid);
  }
  const init = spawnSync(...asPostgres(`${bin}/initdb`, ['-D', `${dir}/data`, '-U', 'ferro', '--auth=trust']), { encoding: 'utf8' });
  assert.equal(init.status, 0, init.stderr);
  const port = await h.freePort();
  const child = spawn(...asPostgres(`${bin}/postgres`, ['-D', `${dir}/data`, '-k', dir, '-h', '127.0.0.1', '-p', String(port), '-c', 'fsync=off']), { stdio: 'ignore' });
  const sql = (text) => {
    const out = spawnSync('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'ferro', '-d', 'postgres', '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', text], { encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    return out.stdout;
  };
  await h.until(() => spawnSync('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'ferro', '-d', 'postgres', '-c', 'SELECT 1']).status === 0, 'postgres to start');
  sql(fs.readFileSync(migration, 'utf8'));
  return {
    url: `postgres://ferro@127.0.0.1:${port}/postgres`,
    sql,
    stop() {
      child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

before(async () => {
  pg = await startPostgres();
  server = await h.startServer({ config: { app_store: { driver: 'postgres', url: pg.url, cache_ttl_secs: 3600 } } });
});

after(async () => {
  h.closeAll();
  await server?.stop();
  pg?.stop();
});

test('an app INSERTed while ferrocast runs serves pusher-js and the pusher SDK at once; disabling it closes with 4003', async () => {
  pg.sql("INSERT INTO ferrocast_apps (id, app_key, secret, name) VALUES ('db-1', 'db-key-1', 'db-secret-1', 'from SQL')");
  const app = { id: 'db-1', key: 'db-key-1', secret: 'db-secret-1' };
  const client = h.pusherClient({ ...server, apps: [app] });
  const errors = [];
  client.connection.bind('error', (e) => errors.push(e));
  const [channel] = await h.subscribed(client, 'orders');
  const got = [];
  channel.bind('shipped', (d) => got.push(d));
  const res = await h.sdkFor(server, app).trigger('orders', 'shipped', { id: 7 });
  assert.equal(res.status, 200, 'the SDK signs with the secret from the table');
  await h.until(() => got.length === 1, 'the event through pusher-js');
  assert.deepEqual(got, [{ id: 7 }]);

  // Disabled in the table: PostgreSQL's NOTIFY reaches ferrocast, the client gets 4003.
  pg.sql("UPDATE ferrocast_apps SET enabled = FALSE WHERE id = 'db-1'");
  await h.until(() => errors.some((e) => e?.data?.code === 4003), 'pusher:error 4003', 30_000);
});
