'use strict';
// The chat demo's whole flow with Pomelo's own, unmodified client (pomelo-jsclient-websocket):
// gate → connector → enter → chat → private message → leave, with two Pomelo users on two
// different edges and a native roomcast client (driven by tests/tests/pomelo.rs) in the same
// room. Bob records the order of the room's messages in $POMELO_OUT; the Rust side checks it is
// the native client's seq order.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { closeAll, login, request, waitFor, env } = require('./lib/pomelo');

test.after(closeAll);

const BURST = 20;

test('demo flow across two edges, mixed with a native client', async () => {
  const gate = env('POMELO_GATE');
  const native = env('ROOMCAST_NATIVE_UID');
  const rid = env('POMELO_ROOM');
  const out = env('POMELO_OUT');

  const alice = await login(gate, 'alice', rid);
  assert.ok(Array.isArray(alice.answer.users), JSON.stringify(alice.answer));
  assert.deepEqual([...alice.answer.users].sort(), ['alice', native].sort());
  const adds = [];
  alice.pomelo.on('onAdd', (m) => adds.push(m.user));

  // A second user whom the gate puts on the other edge.
  let bobName = null;
  let bob = null;
  for (let i = 0; i < 50 && !bob; i++) {
    const name = i === 0 ? 'bob' : `bob${i}`;
    const { pomelo, answer, port } = await login(gate, name, rid);
    if (port !== alice.port) {
      bob = { pomelo, answer, port };
      bobName = name;
    } else {
      pomelo.disconnect(); // same edge: leave (onLeave) and try another name
    }
  }
  assert.ok(bob, 'the gate put 50 names on the same edge');
  assert.notEqual(bob.port, alice.port);
  assert.ok(bob.answer.users.includes(native) && bob.answer.users.includes('alice'), JSON.stringify(bob.answer));

  // Alice saw Bob arrive (onAdd, a JSON push).
  if (!adds.includes(bobName)) await waitFor(alice.pomelo, 'onAdd', (m) => m.user === bobName, 'onAdd of bob');

  // Bob records every message of the room, in arrival order.
  const seen = [];
  bob.pomelo.on('onChat', (m) => seen.push(m));
  const leaves = [];
  alice.pomelo.on('onLeave', (m) => leaves.push(m.user));

  // Alice → everyone (onChat is decoded with pomelo-protobuf from the handshake's protos).
  const aliceEcho = waitFor(alice.pomelo, 'onChat', (m) => m.msg === 'hello from alice', 'alice own echo');
  // Listening before sending: the native client answers at once, and its answer can arrive in
  // the same read as Alice's echo (a listener added after the echo would miss it).
  const nativeHello = waitFor(alice.pomelo, 'onChat', (m) => m.from === native && m.msg === 'native hello', 'native hello');
  const sent = await request(alice.pomelo, 'chat.chatHandler.send', { rid, content: 'hello from alice', from: 'alice', target: '*' });
  assert.equal(sent.error, undefined, JSON.stringify(sent));
  const echo = await aliceEcho;
  assert.deepEqual({ ...echo }, { msg: 'hello from alice', from: 'alice', target: '*' });

  // The native client answers, then sends a burst while Alice sends hers: both interleave.
  await nativeHello;
  const burst = [];
  for (let i = 0; i < BURST; i++) {
    burst.push(request(alice.pomelo, 'chat.chatHandler.send', { rid, content: `a${i}`, from: 'alice', target: '*' }));
  }
  for (const r of await Promise.all(burst)) assert.equal(r.error, undefined, JSON.stringify(r));
  const isBurst = (m) => /^[an]\d+$/.test(m.msg);
  if (seen.filter(isBurst).length < 2 * BURST) {
    await waitFor(bob.pomelo, 'onChat', () => seen.filter(isBurst).length >= 2 * BURST, 'both bursts at bob', 20000)
      .catch(() => assert.fail(`bob saw ${seen.filter(isBurst).length} of ${2 * BURST} burst messages`));
  }

  // Private message: only its target gets it; `from` is the session's uid, not the body's.
  const priv = waitFor(bob.pomelo, 'onChat', (m) => m.target === bobName, 'private message');
  const r = await request(alice.pomelo, 'chat.chatHandler.send', { rid, content: 'psst', from: 'mallory', target: bobName });
  assert.equal(r.error, undefined, JSON.stringify(r));
  assert.deepEqual({ ...(await priv) }, { msg: 'psst', from: 'alice', target: bobName });

  fs.writeFileSync(out, JSON.stringify({ bob: bobName, seen: seen.filter(isBurst).map((m) => `${m.from}:${m.msg}`) }));

  // Leave = disconnect: Alice gets onLeave for Bob.
  const left = waitFor(alice.pomelo, 'onLeave', (m) => m.user === bobName, 'onLeave of bob');
  bob.pomelo.disconnect();
  await left;
  alice.pomelo.disconnect();
});

test('duplicate login gets the demo answer {code: 500, error: true}', async () => {
  const gate = env('POMELO_GATE');
  const first = await login(gate, 'dave', 'dup-room');
  assert.deepEqual(first.answer.users, ['dave']);
  const second = await login(gate, 'dave', 'dup-room');
  assert.deepEqual(second.answer, { code: 500, error: true });
  second.pomelo.disconnect();
  first.pomelo.disconnect();
});
