'use strict';
// A Pomelo client that stops reading: its pushes back up into the edge's bounded queue, which
// drops the oldest behind onGap and finally closes it as a slow consumer; the room's other
// member gets every message, in order. Edges run with a small --push-queue (tests/tests/pomelo.rs).
const test = require('node:test');
const assert = require('node:assert/strict');
const { closeAll, login, waitFor, env } = require('./lib/pomelo');
const { Raw } = require('./lib/raw');

test.after(closeAll);

const N = Number(env('POMELO_SLOW_MESSAGES'));

test('a client that never reads is closed as a slow consumer; the others get everything', async () => {
  const gate = env('POMELO_GATE');
  const reader = await login(gate, 'reader', 'slow-room');
  const got = [];
  reader.pomelo.on('onChat', (m) => got.push(Number(m.msg.slice(0, m.msg.indexOf(':')))));
  const left = waitFor(reader.pomelo, 'onLeave', (m) => m.user === 'stalled', 'onLeave of the stalled client', 120000);

  const stalled = await Raw.open('tcp', reader.host, reader.port);
  await stalled.handshake();
  await stalled.request(1, 'connector.entryHandler.enter', { username: 'stalled', rid: 'slow-room' });
  // It keeps heartbeating (so no heartbeat timeout can be what closes it) but stops reading.
  stalled.heartbeatEvery(500);
  stalled.pause();

  const sender = await Raw.open('tcp', reader.host, reader.port);
  await sender.handshake();
  await sender.request(1, 'connector.entryHandler.enter', { username: 'sender', rid: 'slow-room' });
  sender.heartbeatEvery(500);
  const pad = 'x'.repeat(4000);
  for (let i = 1; i <= N; i++) {
    await sender.request(i + 1, 'chat.chatHandler.send', { rid: 'slow-room', content: `${i}:${pad}`, target: '*' });
    sender.packages.length = 0; // its own echoes: not kept
  }
  await left;
  if (got.length < N) {
    await waitFor(reader.pomelo, 'onChat', () => got.length >= N, `all ${N} messages at the reader`, 60000)
      .catch(() => assert.fail(`reader got ${got.length} of ${N}`));
  }
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1), 'every message, in order');
});
