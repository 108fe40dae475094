// roomcast frame codec (PROTOCOL.md, "Frames"): big-endian, length-prefixed.
//
//   frame = length:u32 type:u8 payload      length = 1 + len(payload)
//   str   = n:u16 n bytes of UTF-8
//   body  = all remaining bytes of the frame
//
// Plain functions, no I/O: the client uses them on WebTransport streams, node's test runner
// checks them against the byte examples of PROTOCOL.md.

/** Frame type bytes. */
export const TYPE = Object.freeze({
  Hello: 0x01,
  Welcome: 0x02,
  Request: 0x03,
  Response: 0x04,
  Notify: 0x05,
  Push: 0x06,
  Error: 0x07,
});

const NAMES = Object.fromEntries(Object.entries(TYPE).map(([k, v]) => [v, k]));

/** Largest frame the client accepts from an edge (responses can list a whole room). */
export const MAX_INCOMING_FRAME = 16 << 20;

/**
 * @typedef {{type: 'Hello', version: number, client: string}
 *   | {type: 'Welcome', version: number, edge: string, session: string, maxFrame: number}
 *   | {type: 'Request', id: number, route: string, body: Uint8Array}
 *   | {type: 'Response', id: number, code: number, message: string, body: Uint8Array}
 *   | {type: 'Notify', route: string, body: Uint8Array}
 *   | {type: 'Push', route: string, rid: string, seq: bigint, body: Uint8Array}
 *   | {type: 'Error', code: number, message: string}} Frame
 */

/** A malformed frame, with the status code PROTOCOL.md gives it (413 or 422). */
export class CodecError extends Error {
  /** @param {number} status @param {string} message */
  constructor(status, message) {
    super(message);
    this.name = 'CodecError';
    this.status = status;
  }
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8', { fatal: true });

/** @param {string | Uint8Array | undefined} b */
function bytes(b) {
  if (b === undefined) return new Uint8Array(0);
  return typeof b === 'string' ? utf8.encode(b) : b;
}

/**
 * Encodes one frame.
 * @param {Frame} f
 * @returns {Uint8Array}
 */
export function encode(f) {
  /** @type {Uint8Array[]} */
  const parts = [];
  const u8 = (/** @type {number} */ v) => parts.push(Uint8Array.of(v));
  const u16 = (/** @type {number} */ v) => parts.push(Uint8Array.of(v >>> 8, v & 0xff));
  const u32 = (/** @type {number} */ v) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0);
    parts.push(b);
  };
  const u64 = (/** @type {bigint} */ v) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v));
    parts.push(b);
  };
  const str = (/** @type {string} */ s) => {
    const b = utf8.encode(s);
    if (b.length > 0xffff) throw new CodecError(422, `string of ${b.length} bytes is too long`);
    u16(b.length);
    parts.push(b);
  };
  const type = TYPE[f.type];
  if (type === undefined) throw new CodecError(422, `unknown frame ${f.type}`);
  u8(type);
  switch (f.type) {
    case 'Hello': u16(f.version); str(f.client); break;
    case 'Welcome': u16(f.version); str(f.edge); str(f.session); u32(f.maxFrame); break;
    case 'Request': u32(f.id); str(f.route); parts.push(bytes(f.body)); break;
    case 'Response': u32(f.id); u16(f.code); str(f.message); parts.push(bytes(f.body)); break;
    case 'Notify': str(f.route); parts.push(bytes(f.body)); break;
    case 'Push': str(f.route); str(f.rid); u64(f.seq); parts.push(bytes(f.body)); break;
    case 'Error': u16(f.code); str(f.message); break;
  }
  const len = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(4 + len);
  new DataView(out.buffer).setUint32(0, len);
  let at = 4;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Reads fields of one frame's payload; every read is bounds-checked. */
class Reader {
  /** @param {Uint8Array} b */
  constructor(b) {
    this.b = b;
    this.v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.at = 0;
  }
  /** @param {number} n */
  need(n) {
    if (this.at + n > this.b.length) {
      throw new CodecError(422, 'a field runs past the end of the frame');
    }
  }
  u16() { this.need(2); const v = this.v.getUint16(this.at); this.at += 2; return v; }
  u32() { this.need(4); const v = this.v.getUint32(this.at); this.at += 4; return v; }
  u64() { this.need(8); const v = this.v.getBigUint64(this.at); this.at += 8; return v; }
  str() {
    const n = this.u16();
    this.need(n);
    const s = this.b.subarray(this.at, this.at + n);
    this.at += n;
    try {
      return utf8d.decode(s);
    } catch {
      throw new CodecError(422, 'a string is not valid UTF-8');
    }
  }
  rest() { const r = this.b.slice(this.at); this.at = this.b.length; return r; }
}

/**
 * Decodes one frame's type byte and payload (without the length prefix).
 * @param {Uint8Array} frame
 * @returns {Frame}
 */
export function decodeBody(frame) {
  const r = new Reader(frame.subarray(1));
  const type = frame[0];
  switch (type) {
    case TYPE.Hello: return { type: 'Hello', version: r.u16(), client: r.str() };
    case TYPE.Welcome:
      return { type: 'Welcome', version: r.u16(), edge: r.str(), session: r.str(), maxFrame: r.u32() };
    case TYPE.Request: return { type: 'Request', id: r.u32(), route: r.str(), body: r.rest() };
    case TYPE.Response:
      return { type: 'Response', id: r.u32(), code: r.u16(), message: r.str(), body: r.rest() };
    case TYPE.Notify: return { type: 'Notify', route: r.str(), body: r.rest() };
    case TYPE.Push: return { type: 'Push', route: r.str(), rid: r.str(), seq: r.u64(), body: r.rest() };
    case TYPE.Error: return { type: 'Error', code: r.u16(), message: r.str() };
    default:
      throw new CodecError(422, `unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
}

/**
 * Splits a byte stream into frames. Feed chunks with `push`, take frames with `next` until it
 * returns `undefined`. The length is checked as soon as its 4 bytes arrive, so an oversize
 * frame never makes it buffer more than one chunk.
 */
export class Decoder {
  /** @param {number} [max] largest accepted frame (type byte + payload) */
  constructor(max = MAX_INCOMING_FRAME) {
    this.max = max;
    /** @type {Uint8Array} */
    this.buf = new Uint8Array(0);
  }
  /** @param {Uint8Array} chunk */
  push(chunk) {
    if (this.buf.length === 0) {
      this.buf = chunk;
      return;
    }
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf);
    b.set(chunk, this.buf.length);
    this.buf = b;
  }
  /** @returns {Frame | undefined} */
  next() {
    if (this.buf.length < 4) return undefined;
    const len = new DataView(this.buf.buffer, this.buf.byteOffset, 4).getUint32(0);
    if (len === 0) throw new CodecError(422, 'empty frame (length 0)');
    if (len > this.max) {
      throw new CodecError(413, `frame of ${len} bytes exceeds the maximum of ${this.max} bytes`);
    }
    if (this.buf.length < 4 + len) return undefined;
    const frame = this.buf.subarray(4, 4 + len);
    this.buf = this.buf.subarray(4 + len);
    return decodeBody(frame);
  }
  /** Whether bytes of an incomplete frame are buffered. */
  get partial() {
    return this.buf.length > 0;
  }
}

/** The frame type's name, for messages. @param {number} t */
export function typeName(t) {
  return NAMES[t] ?? `0x${t.toString(16)}`;
}
