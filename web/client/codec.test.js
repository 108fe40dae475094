// Unit tests of the JavaScript codec (node's test runner): `node --test web/client/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { CodecError, Decoder, decodeBody, encode } from './codec.js';

const te = new TextEncoder();
const hex = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('hex').replace(/(..)/g, '$1 ').trim();

test('Request encodes as the example bytes of PROTOCOL.md', () => {
  const b = encode({ type: 'Request', id: 0x01020304, route: 'a.b', body: te.encode('{}') });
  assert.equal(hex(b), '00 00 00 0c 03 01 02 03 04 00 03 61 2e 62 7b 7d');
});

test('every frame type round-trips through the decoder', () => {
  /** @type {import('./codec.js').Frame[]} */
  const frames = [
    { type: 'Hello', version: 1, client: 'roomcast-js/0.1' },
    { type: 'Welcome', version: 1, edge: 'edge-1', session: 'edge-1.7.abcdef01', maxFrame: 65536 },
    { type: 'Request', id: 4294967295, route: 'chat.send', body: te.encode('{"rid":"lobby"}') },
    { type: 'Response', id: 7, code: 404, message: 'unknown route `x`', body: new Uint8Array(0) },
    { type: 'Notify', route: 'chat.typing', body: te.encode('{}') },
    { type: 'Push', route: 'onChat', rid: 'lobby ünïcode', seq: 2n ** 60n + 5n, body: te.encode('{"msg":"hi"}') },
    { type: 'Error', code: 426, message: 'protocol version 9 is not supported' },
  ];
  const dec = new Decoder();
  for (const f of frames) dec.push(encode(f));
  for (const f of frames) assert.deepEqual(dec.next(), f);
  assert.equal(dec.next(), undefined);
  assert.equal(dec.partial, false);
});

test('a frame split across chunks at every byte is decoded once complete', () => {
  const push = { type: 'Push', route: 'onAdd', rid: 'r', seq: 42n, body: te.encode('{"user":"bob"}') };
  const b = encode(/** @type {any} */ (push));
  for (let cut = 1; cut < b.length; cut++) {
    const dec = new Decoder();
    dec.push(b.slice(0, cut));
    assert.equal(dec.next(), undefined, `cut at ${cut}`);
    assert.equal(dec.partial, true);
    dec.push(b.slice(cut));
    assert.deepEqual(dec.next(), push);
  }
});

test('an oversize length is refused (413) as soon as its 4 bytes arrive', () => {
  const dec = new Decoder(65536);
  dec.push(Uint8Array.of(0, 1, 0x11, 0x70)); // 70000
  assert.throws(() => dec.next(), (e) => e instanceof CodecError && e.status === 413 &&
    e.message === 'frame of 70000 bytes exceeds the maximum of 65536 bytes');
});

test('length 0, unknown types and truncated fields are malformed (422)', () => {
  const cases = [
    [Uint8Array.of(0, 0, 0, 0), 'empty frame (length 0)'],
    [Uint8Array.of(0, 0, 0, 1, 0x7f), 'unknown frame type 0x7f'],
    // Response whose message claims 5 bytes but has 1.
    [Uint8Array.of(0, 0, 0, 9, 0x04, 0, 0, 0, 1, 0, 200, 0, 5), 'a field runs past the end of the frame'],
  ];
  for (const [bytes, message] of cases) {
    const dec = new Decoder();
    dec.push(/** @type {Uint8Array} */ (bytes));
    assert.throws(() => dec.next(), (e) => e instanceof CodecError && e.status === 422 && e.message === message);
  }
});

test('strings longer than a u16 cannot be encoded', () => {
  assert.throws(() => encode({ type: 'Notify', route: 'x'.repeat(70000), body: new Uint8Array(0) }),
    (e) => e instanceof CodecError && e.status === 422);
});

test('decodeBody reads a Push with a big seq exactly', () => {
  const b = encode({ type: 'Push', route: 'onChat', rid: '', seq: 0n, body: new Uint8Array(0) });
  assert.deepEqual(decodeBody(b.subarray(4)), { type: 'Push', route: 'onChat', rid: '', seq: 0n, body: new Uint8Array(0) });
});
