'use strict';
// A hand-driven Pomelo connection for tests that must misbehave (or stay silent): packages and
// messages are built with Pomelo's own encoders (pomelo-protocol), sent over ws or raw TCP.
const net = require('node:net');
const WebSocket = require('ws');
const Protocol = require('pomelo-protocol');
const { Package, Message } = Protocol;
const { withTimeout, made } = require('./pomelo');

const HANDSHAKE = { sys: { type: 'js-websocket', version: '0.0.1', rsa: {}, protoVersion: 0 }, user: {} };

class Raw {
  /** Opens a WebSocket (`ws`) or raw TCP (`tcp`) connection to host:port. */
  static async open(transport, host, port) {
    const r = new Raw();
    r.packages = [];
    r.waiters = [];
    r.closed = false;
    r.closeInfo = null;
    if (transport === 'ws') {
      const ws = new WebSocket(`ws://${host}:${port}`);
      ws.binaryType = 'nodebuffer';
      await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 'ws open');
      ws.on('message', (data) => r.onBytes(data, true));
      ws.on('close', (code, reason) => r.onClose({ code, reason: reason.toString() }));
      ws.on('error', () => {});
      r.sendBytes = (b) => ws.send(b);
      r.end = () => ws.close();
      r.pause = () => ws._socket.pause();
    } else {
      const sock = net.connect(port, host);
      await withTimeout(new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); }), 'tcp connect');
      let buf = Buffer.alloc(0);
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 4) {
          const len = (buf[1] << 16) | (buf[2] << 8) | buf[3];
          if (buf.length < 4 + len) break;
          r.onBytes(buf.subarray(0, 4 + len), false);
          buf = buf.subarray(4 + len);
        }
      });
      sock.on('close', () => r.onClose({ code: null, reason: '' }));
      sock.on('error', () => {});
      r.sendBytes = (b) => sock.write(b);
      r.end = () => sock.end();
      r.pause = () => sock.pause(); // stop reading: the edge's writes back up
    }
    made.push(r);
    return r;
  }

  onBytes(data, _ws) {
    let pkgs = Package.decode(data);
    if (!Array.isArray(pkgs)) pkgs = [pkgs];
    for (const p of pkgs) this.packages.push(p);
    this.wake();
  }

  onClose(info) {
    this.closed = true;
    this.closeInfo = info;
    this.wake();
  }

  wake() {
    const ws = this.waiters;
    this.waiters = [];
    ws.forEach((w) => w());
  }

  /** Waits for a package of `type` (removing it and what came before it). */
  async next(type, what = `package type ${type}`) {
    return withTimeout(new Promise((resolve, reject) => {
      const check = () => {
        const i = this.packages.findIndex((p) => p.type === type);
        if (i >= 0) {
          const p = this.packages[i];
          this.packages.splice(0, i + 1);
          return resolve(p);
        }
        if (this.closed) return reject(new Error(`connection closed while waiting for ${what}`));
        this.waiters.push(check);
      };
      check();
    }), what);
  }

  /** Waits for the server to close; returns {kick: reason of the KICK package or null, close}. */
  async waitClosed(ms) {
    await withTimeout(new Promise((resolve) => {
      const check = () => (this.closed ? resolve() : this.waiters.push(check));
      check();
    }), 'server closes the connection', ms);
    const kick = this.packages.find((p) => p.type === Package.TYPE_KICK);
    return { kick: kick ? JSON.parse(Protocol.strdecode(kick.body)).reason : null, close: this.closeInfo };
  }

  send(type, body) {
    if (!this.closed) this.sendBytes(Package.encode(type, body));
  }

  /** Sends a HEARTBEAT every `ms` until the connection closes (reading or not). */
  heartbeatEvery(ms) {
    const t = setInterval(() => (this.closed ? clearInterval(t) : this.send(Package.TYPE_HEARTBEAT)), ms);
    t.unref();
  }

  /** Handshake and ack; returns the handshake answer. */
  async handshake() {
    this.send(Package.TYPE_HANDSHAKE, Protocol.strencode(JSON.stringify(HANDSHAKE)));
    const p = await this.next(Package.TYPE_HANDSHAKE, 'handshake answer');
    const answer = JSON.parse(Protocol.strdecode(p.body));
    this.send(Package.TYPE_HANDSHAKE_ACK);
    return answer;
  }

  /** A request with a plain route and JSON body; returns the decoded JSON answer. */
  async request(id, route, body) {
    const msg = Message.encode(id, Message.TYPE_REQUEST, 0, route, Protocol.strencode(JSON.stringify(body)));
    this.send(Package.TYPE_DATA, msg);
    for (;;) {
      const p = await this.next(Package.TYPE_DATA, `answer to ${route}`);
      const m = Message.decode(p.body);
      if (m.type === Message.TYPE_RESPONSE && m.id === id) return JSON.parse(Protocol.strdecode(m.body));
    }
  }
}

module.exports = { Raw, Package, Message, Protocol };
