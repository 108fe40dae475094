// roomcast JavaScript client: joins roomcast rooms from a browser over WebTransport.
//
// Shaped like the Rust SDK (`client/`): connect through a gate, enter, send, leave, private
// messages, pushes as events, and automatic reconnect that resumes every room from the last
// seq received (`connector.resume`: no gap, no duplicate; an explicit `gap` event when the
// edge's history no longer holds what was missed). No framework, no build step: an ES module
// with JSDoc types (`roomcast.d.ts`-free: editors and `tsc --checkJs` read them).
//
// Wire protocol: PROTOCOL.md. A WebTransport session carries the same frames and the same stream
// layout as a native QUIC connection (control stream, one bidirectional stream per request,
// edge-opened unidirectional push streams), and uses the same close codes.

import { Decoder, encode } from './codec.js';

export { CodecError, Decoder, encode, decodeBody, TYPE } from './codec.js';

export const PROTOCOL_VERSION = 1;

/** Application close codes (PROTOCOL.md). */
export const CLOSE = Object.freeze({
  NORMAL: 0,
  BAD_HANDSHAKE: 1,
  SLOW_CONSUMER: 2,
  DRAINING: 3,
  PROTOCOL_ERROR: 4,
  REPLACED: 5,
  ABUSE: 6,
});

/** A failed request: the edge's status code and message (or 0 for a transport failure). */
export class RoomcastError extends Error {
  /** @param {number} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'RoomcastError';
    this.code = code;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string[]} gates WebTransport URLs of gates (every edge is one), e.g.
 *   `https://127.0.0.1:7001/roomcast`; asked in order, the one that answered last first.
 * @property {string} uid the user id to log in as.
 * @property {string} [token] login JWT; without it the gate's development `gate.devToken` is used.
 * @property {string[]} [certificateHashes] SHA-256 (hex) of self-signed edge certificates to
 *   accept (development only; production edges present a certificate from a public CA).
 * @property {string} [clientName] sent in `Hello`.
 * @property {number} [requestTimeoutMs] per request (default 10000).
 * @property {number} [connectTimeoutMs] per connection attempt (default 5000).
 * @property {boolean} [reconnect] reconnect and resume when the connection is lost (default true).
 * @property {number} [heartbeatMs] how often the client asks the edge something cheap (the gate
 *   query) to learn that it is alive (default 2000; 0 turns the watchdog off).
 * @property {number} [deadAfterMs] silence (no answer, no push) after which the edge counts as
 *   gone and the client reconnects elsewhere (default 8000). A browser cannot shorten
 *   WebTransport's own idle timeout, and a killed or stopped edge sends nothing: without this a
 *   browser would wait for that timeout (30 s) before moving.
 */

/**
 * @typedef {{route: string, rid: string, seq: number, body: any}} PushEvent
 * @typedef {{rid: string, from: string, msg: string, target: string, seq: number, private: boolean}} ChatEvent
 */

const te = new TextEncoder();
const td = new TextDecoder();

/** @param {string} hex */
function hexBytes(hex) {
  const clean = hex.replace(/[^0-9a-f]/gi, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @template T
 * @param {Promise<T>} p @param {number} ms @param {string} what
 * @returns {Promise<T>}
 */
function withTimeout(p, ms, what) {
  /** @type {any} */
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new RoomcastError(0, `${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Reads frames from a ReadableStream of bytes.
 * @param {ReadableStream<Uint8Array>} readable
 * @param {(f: import('./codec.js').Frame) => void} onFrame
 * @param {number} [max]
 */
async function readFrames(readable, onFrame, max) {
  const reader = readable.getReader();
  const dec = new Decoder(max);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      dec.push(value);
      for (let f = dec.next(); f; f = dec.next()) onFrame(f);
    }
  } finally {
    reader.releaseLock();
  }
}

/** One WebTransport session that has completed Hello/Welcome. */
class Link {
  /**
   * @param {string} url @param {ClientOptions} opts @param {string[]} hashes
   * @param {(f: import('./codec.js').Frame) => void} onPush
   */
  static async open(url, opts, hashes, onPush) {
    /** @type {any} */
    const init = {};
    if (hashes.length) {
      init.serverCertificateHashes = hashes.map((h) => ({ algorithm: 'sha-256', value: hexBytes(h) }));
    }
    const transport = new WebTransport(url, init);
    const link = new Link(url, transport, opts);
    transport.closed.catch(() => {});
    try {
      await withTimeout(transport.ready, opts.connectTimeoutMs ?? 5000, `connect to ${url}`);
      // Push streams may come as soon as the session exists: read them from the start.
      link.#readPushes(onPush);
      await withTimeout(link.#hello(), opts.connectTimeoutMs ?? 5000, `handshake with ${url}`);
    } catch (e) {
      try { transport.close({ closeCode: CLOSE.NORMAL, reason: 'connect failed' }); } catch { /* closed */ }
      throw e;
    }
    return link;
  }

  /** @param {string} url @param {WebTransport} transport @param {ClientOptions} opts */
  constructor(url, transport, opts) {
    this.url = url;
    this.transport = transport;
    this.opts = opts;
    this.nextId = 1;
    this.edge = '';
    this.session = '';
    this.maxFrame = 65536;
    /** Fatal `Error` frame from the control stream, if any. */
    this.fatal = /** @type {string | null} */ (null);
  }

  async #hello() {
    const ctrl = await this.transport.createBidirectionalStream();
    const w = ctrl.writable.getWriter();
    await w.write(encode({ type: 'Hello', version: PROTOCOL_VERSION, client: this.opts.clientName ?? 'roomcast-js/0.1' }));
    w.releaseLock();
    // The control stream stays open (we never finish it); keep the writer side alive.
    this.ctrlWritable = ctrl.writable;
    /** @type {(f: any) => void} */
    let welcomed = () => {};
    /** @type {(e: any) => void} */
    let failed = () => {};
    const welcome = new Promise((res, rej) => { welcomed = res; failed = rej; });
    readFrames(ctrl.readable, (f) => {
      if (f.type === 'Welcome') welcomed(f);
      else if (f.type === 'Error') {
        this.fatal = `${f.code} ${f.message}`;
        failed(new RoomcastError(f.code, f.message));
      }
    }).catch(() => {}).finally(() => failed(new RoomcastError(0, 'control stream ended')));
    const w2 = /** @type {any} */ (await welcome);
    this.edge = w2.edge;
    this.session = w2.session;
    this.maxFrame = w2.maxFrame;
  }

  /** @param {(f: import('./codec.js').Frame) => void} onPush */
  async #readPushes(onPush) {
    const streams = this.transport.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value, done } = await streams.read();
        if (done) return;
        readFrames(value, (f) => { if (f.type === 'Push') onPush(f); }).catch(() => {});
      }
    } catch {
      // The session ended; the client notices through `transport.closed`.
    }
  }

  /**
   * Sends raw bytes on a new request stream and returns the decoded answer (none for notifies).
   * @param {Uint8Array} bytes @param {boolean} answer
   */
  async exchange(bytes, answer = true) {
    const s = await this.transport.createBidirectionalStream();
    const w = s.writable.getWriter();
    // The edge stops reading once it has one frame (STOP_SENDING), and may answer before the
    // whole request arrived (an oversize frame is refused from its length): the answer, not
    // the write, says how the request went.
    const wrote = w.write(bytes).then(() => w.close()).catch((/** @type {any} */ e) => e);
    if (!answer) {
      const e = await wrote;
      if (e instanceof Error) throw new RoomcastError(0, `cannot send: ${e.message}`);
      return undefined;
    }
    /** @type {import('./codec.js').Frame | undefined} */
    let got;
    await readFrames(s.readable, (f) => { got ??= f; });
    if (!got) throw new RoomcastError(0, 'the request stream ended without an answer');
    return got;
  }

  /** @param {string} route @param {any} body */
  async request(route, body) {
    const id = this.nextId++;
    const frame = encode({ type: 'Request', id, route, body: te.encode(JSON.stringify(body ?? {})) });
    const f = await withTimeout(this.exchange(frame), this.opts.requestTimeoutMs ?? 10000, route);
    if (!f || f.type !== 'Response') throw new RoomcastError(0, `unexpected answer to ${route}`);
    if (f.code !== 200) throw new RoomcastError(f.code, f.message);
    return f.body.length ? JSON.parse(td.decode(f.body)) : {};
  }

  /** @param {number} code @param {string} reason */
  close(code, reason) {
    try { this.transport.close({ closeCode: code, reason }); } catch { /* already closed */ }
  }
}

/**
 * A roomcast user. Events (`addEventListener(name, e => e.detail)`):
 * - `push` {@link PushEvent}: every push, after duplicates are dropped;
 * - `chat` {@link ChatEvent}: `onChat` pushes (room messages and private messages);
 * - `members` `{rid, users}`: a room's member list changed (enter, resume, onAdd, onLeave);
 * - `gap` `{rid, from, to}`: pushes `from..=to` of a room were lost (slow client, or history
 *   expired while reconnecting);
 * - `state` `{state, reason}`: `open`, `reconnecting`, `closed`.
 */
export class RoomcastClient extends EventTarget {
  /** @param {ClientOptions} opts */
  constructor(opts) {
    super();
    if (!opts?.gates?.length) throw new TypeError('at least one gate URL is needed');
    if (!opts.uid) throw new TypeError('a uid is needed');
    this.opts = { reconnect: true, ...opts };
    this.uid = opts.uid;
    this.token = opts.token ?? null;
    /** @type {Link | null} */
    this.link = null;
    /** Per room: the highest seq received, and the members. @type {Map<string, {seq: number, users: Set<string>}>} */
    this.rooms = new Map();
    /** @type {'connecting' | 'open' | 'reconnecting' | 'closed'} */
    this.state = 'connecting';
    this.reconnects = 0;
    this.gateOrder = [...opts.gates];
    this.closing = false;
    /** The session a reconnect resumes: that of the last link fully set up. */
    this.resumeSession = '';
    /** @type {Promise<unknown> | undefined} */
    this.reconnectHold = undefined;
    /** Set by {@link dropConnection}, for the reason the `state` event gives. */
    this.dropping = false;
    /** When the current link last showed life (an answer or a push), in ms. */
    this.lastHeard = Date.now();
    /** Set when the watchdog closed a silent link: the silence in ms, for the `state` reason. */
    this.silentFor = 0;
    /** The URL of the edge whose link was just lost: asked last, and not used as an edge while
     *  another gate answers (it is likely dead, and each try costs a connect timeout). */
    this.lostUrl = '';
  }

  /** Connects through the gates (and fetches a development token if none was given). */
  static async connect(/** @type {ClientOptions} */ opts) {
    const c = new RoomcastClient(opts);
    await c.#establish(false);
    c.#setState('open', 'connected');
    return c;
  }

  /** The edge this client is connected to. */
  get edge() { return this.link?.edge ?? ''; }
  /** The session name from the edge's `Welcome`. */
  get session() { return this.link?.session ?? ''; }

  /** @param {'connecting' | 'open' | 'reconnecting' | 'closed'} state @param {string} reason */
  #setState(state, reason) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, reason } }));
  }

  /** @param {string} type @param {any} detail */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** The certificate hashes to accept for `url`'s edge. @param {string[]} extra */
  #hashes(extra = []) {
    return [...new Set([...(this.opts.certificateHashes ?? []), ...extra])];
  }

  /**
   * Asks the gates in order for this uid's edge and connects to it; with `resume`, resumes
   * every room. Throws when no gate leads to a usable edge.
   * @param {boolean} resume
   */
  async #establish(resume) {
    const link = await this.#findEdge();
    const oldSession = this.resumeSession;
    if (resume && oldSession) {
      /** @type {Record<string, number>} */
      const rooms = {};
      for (const [rid, r] of this.rooms) rooms[rid] = r.seq;
      try {
        const ans = await link.request('connector.resume', { token: this.token, session: oldSession, rooms });
        for (const [rid, r] of Object.entries(ans.rooms ?? {})) {
          const room = this.#room(rid);
          room.users = new Set(r.users ?? []);
          this.#emit('members', { rid, users: [...room.users] });
        }
      } catch (e) {
        link.close(CLOSE.NORMAL, 'resume failed');
        throw e;
      }
    }
    // Only a link that is fully set up is watched: a failed attempt must not start a
    // second reconnect loop when it is closed.
    this.link = link;
    this.resumeSession = link.session;
    this.#watch(link);
  }

  /**
   * A link to this uid's edge, as the Rust SDK finds it: ask the gates in order (the one that
   * answered last first); when the edge a gate names cannot be reached (a killed edge stays in
   * the registry until its lease expires), ask the next gate; when none leads anywhere, use a
   * gate that answered as the edge (every edge serves every room).
   * @returns {Promise<Link>}
   */
  async #findEdge() {
    const onPush = (/** @type {any} */ f) => this.#onPush(f);
    let lastError = /** @type {any} */ (null);
    /** Gates that answered but named an edge that could not be reached. @type {string[]} */
    const answered = [];
    const lost = this.lostUrl;
    const order = [...this.gateOrder.filter((g) => g !== lost), ...this.gateOrder.filter((g) => g === lost)];
    for (const gate of order) {
      /** @type {Link | null} */
      let gl = null;
      try {
        gl = await Link.open(gate, this.opts, this.#hashes(), onPush);
        if (!this.token) this.token = (await gl.request('gate.devToken', { uid: this.uid })).token;
        const entry = await gl.request('gate.queryEntry', { uid: this.uid });
        const wt = entry.webtransport;
        if (!wt?.url) throw new RoomcastError(0, `gate ${gate} announced no WebTransport URL`);
        // The gate that answered goes first next time.
        this.gateOrder = [gate, ...this.gateOrder.filter((g) => g !== gate)];
        if (wt.url === gate) {
          const link = gl;
          gl = null;
          return link;
        }
        if (wt.url === lost && gate !== lost) {
          // The edge just lost is named (its lease outlives it): this gate will do as the edge.
          const link = gl;
          gl = null;
          return link;
        }
        answered.push(gate);
        const hashes = this.#hashes(wt.certificate_hash ? [wt.certificate_hash] : []);
        return await Link.open(wt.url, this.opts, hashes, onPush);
      } catch (e) {
        lastError = e;
      } finally {
        gl?.close(CLOSE.NORMAL, 'gate query done');
      }
    }
    for (const gate of answered) {
      try {
        return await Link.open(gate, this.opts, this.#hashes(), onPush);
      } catch (e) {
        lastError = e;
      }
    }
    throw lastError ?? new RoomcastError(0, 'no gate answered');
  }

  /** Reconnects when `link` ends, unless the client closed it or was replaced. @param {Link} link */
  #watch(link) {
    this.lastHeard = Date.now();
    const every = this.opts.heartbeatMs ?? 2000;
    const deadAfter = this.opts.deadAfterMs ?? 8000;
    if (every > 0) {
      const timer = setInterval(() => {
        if (this.link !== link || this.closing) {
          clearInterval(timer);
          return;
        }
        const silent = Date.now() - this.lastHeard;
        if (silent > deadAfter) {
          clearInterval(timer);
          this.silentFor = silent;
          link.close(4001, 'edge silent');
          return;
        }
        link.request('gate.queryEntry', { uid: this.uid })
          .then(() => { if (this.link === link) this.lastHeard = Date.now(); })
          .catch(() => {});
      }, every);
    }
    link.transport.closed.then(
      (/** @type {any} */ info) => this.#lost(link, info?.closeCode ?? null, info?.reason ?? ''),
      (/** @type {any} */ e) => this.#lost(link, null, String(e?.message ?? e)),
    );
  }

  /** @param {Link} link @param {number | null} code @param {string} reason */
  async #lost(link, code, reason) {
    if (this.link !== link || this.closing) return;
    const why = this.dropping
      ? 'connection dropped on purpose'
      : this.silentFor
        ? `connection lost (no answer from the edge for ${(this.silentFor / 1000).toFixed(1)} s)`
        : code === null ? `connection lost (${reason})` : `closed by the edge: ${code} ${reason}`;
    this.dropping = false;
    this.silentFor = 0;
    this.lostUrl = link.url;
    if (!this.opts.reconnect || code === CLOSE.REPLACED || code === CLOSE.BAD_HANDSHAKE) {
      this.#setState('closed', why);
      return;
    }
    this.#setState('reconnecting', why);
    await this.reconnectHold;
    let backoff = 50;
    while (!this.closing) {
      await sleep(backoff * (0.5 + Math.random()));
      backoff = Math.min(backoff * 2, 2000);
      if (this.closing) return;
      try {
        await this.#establish(true);
        this.reconnects++;
        this.#setState('open', 'resumed');
        return;
      } catch (e) {
        const err = /** @type {any} */ (e);
        // A refused resume other than "try again" (draining 503, store busy) is final.
        if (err instanceof RoomcastError && err.code !== 0 && err.code !== 503 && err.code !== 504) {
          this.#setState('closed', `resume refused: ${err.code} ${err.message}`);
          return;
        }
      }
    }
  }

  /** @param {string} rid */
  #room(rid) {
    let r = this.rooms.get(rid);
    if (!r) {
      r = { seq: 0, users: new Set() };
      this.rooms.set(rid, r);
    }
    return r;
  }

  /** @param {any} f a Push frame */
  #onPush(f) {
    this.lastHeard = Date.now();
    const seq = Number(f.seq);
    let body = null;
    try { body = f.body.length ? JSON.parse(td.decode(f.body)) : null; } catch { body = td.decode(f.body); }
    if (f.rid) {
      const room = this.#room(f.rid);
      // Drop what was already seen (a replay overlapping what arrived before a loss).
      if (seq <= room.seq) return;
      room.seq = seq;
      if (f.route === 'onGap') this.#emit('gap', { rid: f.rid, from: body.from, to: body.to });
      if (f.route === 'onAdd') { room.users.add(body.user); this.#emit('members', { rid: f.rid, users: [...room.users] }); }
      if (f.route === 'onLeave') { room.users.delete(body.user); this.#emit('members', { rid: f.rid, users: [...room.users] }); }
      if (f.route === 'onDestroy') this.rooms.delete(f.rid);
    }
    /** @type {PushEvent} */
    const push = { route: f.route, rid: f.rid, seq, body };
    this.#emit('push', push);
    if (f.route === 'onChat' && body) {
      this.#emit('chat', { rid: f.rid || body.rid || '', from: body.from, msg: body.msg, target: body.target, seq, private: !f.rid });
    }
  }

  #live() {
    if (!this.link || this.state === 'closed') throw new RoomcastError(0, 'not connected');
    return this.link;
  }

  /** Any request; resolves to the answer's JSON body, rejects with a {@link RoomcastError}. @param {string} route @param {any} [body] */
  request(route, body) {
    return this.#live().request(route, body);
  }

  /** A notify (no answer). @param {string} route @param {any} [body] */
  async notify(route, body) {
    await this.#live().exchange(encode({ type: 'Notify', route, body: te.encode(JSON.stringify(body ?? {})) }), false);
  }

  /** Joins a room: `{users, seq, members}`. @param {string} rid */
  async enter(rid) {
    const ans = await this.request('connector.enter', { token: this.token, rid, username: this.uid });
    const room = this.#room(rid);
    room.seq = Math.max(room.seq, Number(ans.seq));
    room.users = new Set(ans.users ?? []);
    this.#emit('members', { rid, users: [...room.users] });
    return ans;
  }

  /** @param {string} rid */
  async leave(rid) {
    await this.request('connector.leave', { rid });
    this.rooms.delete(rid);
  }

  /** Sends to the whole room: `{seq}`. @param {string} rid @param {string} content */
  send(rid, content) {
    return this.request('chat.send', { rid, content, target: '*' });
  }

  /** A private message to one member of the room. @param {string} rid @param {string} target @param {string} content */
  sendTo(rid, target, content) {
    return this.request('chat.send', { rid, content, target });
  }

  /** The members of a room as last known. @param {string} rid */
  members(rid) {
    return [...(this.rooms.get(rid)?.users ?? [])].sort();
  }

  /** The highest seq received in a room. @param {string} rid */
  lastSeq(rid) {
    return this.rooms.get(rid)?.seq ?? 0;
  }

  /**
   * Raw bytes on a new request stream; the edge's answer frame (tests of bad input).
   * @param {Uint8Array} bytes
   */
  sendRaw(bytes) {
    return withTimeout(this.#live().exchange(bytes), this.opts.requestTimeoutMs ?? 10000, 'raw request');
  }

  /**
   * Cuts the connection as a network failure would look to the edge (a close code that is not
   * `NORMAL`): the edge keeps the session for its grace period and the client reconnects and
   * resumes. For tests and demos of the reconnect path.
   */
  dropConnection() {
    this.dropping = true;
    this.link?.close(4000, 'connection dropped on purpose');
  }

  /**
   * Holds automatic reconnects until {@link releaseReconnect}: tests use it to make sure that
   * messages are sent while the client is away.
   */
  holdReconnect() {
    this.reconnectHold = new Promise((resolve) => { this.releaseReconnect = () => resolve(undefined); });
  }

  /** Ends {@link holdReconnect}. */
  releaseReconnect() {}

  /** Leaves every room at once (close code 0) and stops reconnecting. */
  close() {
    this.closing = true;
    this.link?.close(CLOSE.NORMAL, 'bye');
    this.#setState('closed', 'closed by the application');
  }
}
