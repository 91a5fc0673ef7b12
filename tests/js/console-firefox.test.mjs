// The debug console in Firefox: Debian's firefox-esr, driven over WebDriver BiDi by
// puppeteer-core (Playwright's Firefox needs its own patched build; stock Firefox speaks BiDi).
// The same journey as console.test.mjs in Chromium: log in, see the feed connect, see a client
// and a FIFO line appear, publish from the form to a subscriber.
//
// Leaves a screenshot in tests/js/output/console-firefox.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';
import WebSocket from 'ws';

import { T, app, startServer, until, fifoWrite } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIREFOX = process.env.FIREFOX_BIN || '/usr/bin/firefox-esr';
const SCREENSHOT = path.join(here, 'output', 'console-firefox.png');
const APP = app();

let server;
let browser;
let page;
let profile;
let client;
const messages = [];
const pageErrors = [];

before(async () => {
  fs.rmSync(SCREENSHOT, { force: true });
  server = await startServer({ config: { console: { enabled: true } } });
});

after(async () => {
  try { client?.terminate(); } catch { /* gone */ }
  try { await browser?.close(); } catch { /* gone */ }
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  await server?.stop();
});

/** Waits for `fn` to be true in the page; the error names `what`. */
async function inPage(fn, what, ...args) {
  await page.waitForFunction(fn, { timeout: T, polling: 50 }, ...args).catch((e) => {
    throw new Error(`timed out waiting in Firefox for ${what}: ${e.message}`);
  });
}

const visible = (selector) => {
  const el = document.querySelector(selector);
  return !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
};

test('Firefox logs in and the console feed connects', { timeout: 90_000 }, async () => {
  if (!fs.existsSync(FIREFOX)) throw new Error(`${FIREFOX} not found (apt-get install firefox-esr, or set FIREFOX_BIN)`);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrocast-firefox-'));
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    userDataDir: profile,
    timeout: 60_000,
    protocolTimeout: 60_000,
    extraPrefsFirefox: { 'network.http.http3.enable': false },
  });
  page = await browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack || e)));
  await page.setViewport({ width: 1366, height: 768 });
  await page.authenticate({ username: APP.key, password: APP.secret });
  const res = await page.goto(`http://127.0.0.1:${server.port}/console`, { timeout: T });
  assert.equal(res.status(), 200);
  const ua = await page.evaluate(() => navigator.userAgent);
  assert.match(ua, /Firefox\//, `the page runs in Firefox (${ua})`);
  await inPage(() => document.querySelector('#status')?.textContent.trim() === 'connected', '#status "connected"');
  await inPage(() => document.querySelectorAll('#publish-app option').length > 0, 'the hello frame (app options)');
  await inPage(() => /^\d/.test(document.querySelector('#connections')?.textContent.trim() || ''), 'a stats frame');
});

test('Firefox shows a client, its subscription and a FIFO line', { timeout: 60_000 }, async () => {
  assert.ok(page, 'the page is open');
  client = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
  client.on('message', (data, isBinary) => { if (!isBinary) messages.push(data.toString('utf8')); });
  await new Promise((resolve, reject) => {
    client.once('open', resolve);
    client.once('error', reject);
  });
  client.send(JSON.stringify({ action: 'subscribe', channel: 'orders' }));
  await until(() => messages.some((m) => m.includes('"subscribed"')), 'the test client to be subscribed');
  await inPage(() => !!document.querySelector('#log [data-kind="connection_opened"]'), 'a connection_opened row');
  await inPage(visible, 'the subscribed row', '#log [data-kind="subscribed"][data-channel="orders"]');
  await inPage(
    () => /orders\s+1\b/.test(document.querySelector('#channels [data-channel="orders"]')?.innerText || ''),
    'the orders channel with 1 subscriber',
  );
  fifoWrite(server, { channel: 'orders', data: 'hello from fifo' });
  await until(() => messages.includes('hello from fifo'), 'the client to receive the FIFO line');
  await inPage(visible, 'the FIFO publish row', '#log [data-kind="publish"][data-channel="orders"]');
});

test('Firefox publishes from the form to a subscriber', { timeout: 60_000 }, async () => {
  assert.ok(page && client, 'the page and the client are up');
  for (const [sel, value] of [['#publish-channel', 'orders'], ['#publish-event', 'test'], ['#publish-data', 'from firefox']]) {
    await page.$eval(sel, (el) => { el.value = ''; });
    await page.type(sel, value);
  }
  await page.click('#publish-submit');
  await until(() => messages.includes('from firefox'), 'the client to receive "from firefox"');
  await inPage(() => document.querySelector('#publish-result')?.classList.contains('ok'), '#publish-result ok');
  await inPage(visible, 'the form publish row', '#log [data-kind="publish"][data-channel="orders"][data-event="test"]');
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});
