'use strict';
// Pomelo's own browser client, `pomelo-jsclient-websocket` (lib/pomelo-client.js, the client the
// chat demo bundles), loaded UNMODIFIED. It is a browser script that keeps one connection in
// module state and reads its dependencies from `window`, so each client gets a fresh VM context
// whose `window` offers what a page of the demo offers: Pomelo's `Protocol` (pomelo-protocol),
// `protobuf` (pomelo-protobuf), an `EventEmitter`, `localStorage`, and `WebSocket` (ws).
const fs = require('node:fs');
const vm = require('node:vm');
const { EventEmitter } = require('node:events');
const WebSocket = require('ws');
const Protocol = require('pomelo-protocol');
const protobuf = require('pomelo-protobuf');

const SOURCE = fs.readFileSync(require.resolve('pomelo-jsclient-websocket'), 'utf8');
const SCRIPT = new vm.Script(SOURCE, { filename: 'pomelo-client.js' });

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => items.set(k, String(v)),
    removeItem: (k) => items.delete(k),
  };
}

// Every client made, so a failed test cannot leave heartbeat timers keeping Node alive.
const made = [];

/** Disconnects every client made (for `after` hooks). */
function closeAll() {
  for (const c of made.splice(0)) {
    try {
      c.disconnect ? c.disconnect() : c.end();
    } catch (_) {
      // already closed
    }
  }
}

/** A new, independent Pomelo client (the demo's `pomelo` object). */
function newClient() {
  const window = { Protocol, protobuf, EventEmitter, localStorage: memoryStorage() };
  const module = { exports: {} };
  const context = vm.createContext({
    window,
    module,
    WebSocket,
    console: { log() {}, error() {}, warn() {} }, // the client logs every close
    setTimeout,
    clearTimeout,
  });
  SCRIPT.runInContext(context);
  made.push(window.pomelo);
  return window.pomelo;
}

const WAIT_MS = 10000;

/** The client's objects belong to its VM context; a copy of this realm compares normally. */
function plain(v) {
  return v === undefined ? v : JSON.parse(JSON.stringify(v));
}

function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** `pomelo.init` as a promise (resolves after the handshake). */
function init(pomelo, host, port) {
  return withTimeout(
    new Promise((resolve, reject) => {
      pomelo.once('io-error', (e) => reject(new Error(`io-error connecting to ${host}:${port}: ${e && e.message}`)));
      pomelo.once('error', (e) => reject(new Error(`pomelo error: ${e}`)));
      pomelo.init({ host, port, log: true }, () => resolve());
    }),
    `pomelo.init ${host}:${port}`,
  );
}

function request(pomelo, route, msg) {
  return withTimeout(new Promise((resolve) => pomelo.request(route, msg, (a) => resolve(plain(a)))), `request ${route}`);
}

/** Resolves with the first `event` whose body satisfies `pred`. */
function waitFor(pomelo, event, pred = () => true, what = event, ms = WAIT_MS) {
  return withTimeout(
    new Promise((resolve) => {
      const on = (raw) => {
        const data = plain(raw);
        if (pred(data)) {
          pomelo.removeListener(event, on);
          resolve(data);
        }
      };
      pomelo.on(event, on);
    }),
    what,
    ms,
  );
}

/** The demo's login: gate → connector → enter. Returns {pomelo, users, host, port}. */
async function login(gate, username, rid) {
  const [gh, gp] = hostPort(gate);
  const g = newClient();
  await init(g, gh, gp);
  const entry = await request(g, 'gate.gateHandler.queryEntry', { uid: username });
  g.disconnect();
  if (entry.code !== 200) throw new Error(`queryEntry: ${JSON.stringify(entry)}`);
  const pomelo = newClient();
  await init(pomelo, entry.host, entry.port);
  const answer = await request(pomelo, 'connector.entryHandler.enter', { username, rid });
  return { pomelo, answer, host: entry.host, port: entry.port };
}

function hostPort(addr) {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

/** Environment variable `name`, or a clear failure. */
function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through tests/tests/pomelo.rs (cargo test -p roomcast-e2e --test pomelo)`);
  return v;
}

module.exports = { made, closeAll, newClient, init, request, waitFor, login, hostPort, env, withTimeout, WAIT_MS };
