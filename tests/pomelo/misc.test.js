'use strict';
// Heartbeats, raw TCP, and bad input: each bad package closes only its own connection, with a
// KICK package saying why; a bystander on the same edge carries on.
const test = require('node:test');
const assert = require('node:assert/strict');
const { closeAll, login, request, waitFor, env, hostPort } = require('./lib/pomelo');
const { Raw, Package, Message, Protocol } = require('./lib/raw');

test.after(closeAll);

const HEARTBEAT_TIMEOUT_MS = Number(env('POMELO_HEARTBEAT_TIMEOUT_MS'));

test('a silent client is closed at the heartbeat timeout and the room gets onLeave; a real client stays', async () => {
  const gate = env('POMELO_GATE');
  const watcher = await login(gate, 'watcher', 'hb-room');
  const [host, port] = [watcher.host, watcher.port];
  const silent = await Raw.open('ws', host, port);
  const hs = await silent.handshake();
  // The ack is sent: the edge's deadline starts when it reads it, so no earlier than now.
  const t0 = Date.now();
  assert.equal(hs.code, 200);
  assert.ok(hs.sys.heartbeat >= 1);
  const entered = await silent.request(1, 'connector.entryHandler.enter', { username: 'silent', rid: 'hb-room' });
  assert.deepEqual([...entered.users].sort(), ['silent', 'watcher']);
  const left = waitFor(watcher.pomelo, 'onLeave', (m) => m.user === 'silent', 'onLeave of the silent client', HEARTBEAT_TIMEOUT_MS + 10000);
  const { kick } = await silent.waitClosed(HEARTBEAT_TIMEOUT_MS + 10000);
  assert.match(kick, /heartbeat timeout/);
  const took = Date.now() - t0;
  assert.ok(took >= HEARTBEAT_TIMEOUT_MS - 50, `closed after ${took} ms, before the timeout`);
  await left;
  // The real client heartbeats: it is still served after the same wait.
  const r = await request(watcher.pomelo, 'chat.chatHandler.send', { rid: 'hb-room', content: 'still here', from: 'watcher', target: '*' });
  assert.equal(r.error, undefined, JSON.stringify(r));
  watcher.pomelo.disconnect();
});

test('raw TCP clients (hybridconnector) chat with WebSocket clients', async () => {
  const gate = env('POMELO_GATE');
  const ws = await login(gate, 'wsuser', 'tcp-room');
  const tcp = await Raw.open('tcp', ws.host, ws.port);
  assert.equal((await tcp.handshake()).code, 200);
  await tcp.next(Package.TYPE_HEARTBEAT, 'heartbeat after the ack');
  const entered = await tcp.request(1, 'connector.entryHandler.enter', { username: 'tcpuser', rid: 'tcp-room' });
  assert.deepEqual([...entered.users].sort(), ['tcpuser', 'wsuser']);
  const got = waitFor(ws.pomelo, 'onChat', (m) => m.from === 'tcpuser', 'onChat from the TCP client');
  const sent = await tcp.request(2, 'chat.chatHandler.send', { rid: 'tcp-room', content: 'over tcp', from: 'x', target: '*' });
  assert.equal(sent.error, undefined, JSON.stringify(sent));
  assert.deepEqual({ ...(await got) }, { msg: 'over tcp', from: 'tcpuser', target: '*' });
  tcp.end();
  ws.pomelo.disconnect();
});

const enc = (s) => Protocol.strencode(s);
const dataMsg = (route, body) => Message.encode(1, Message.TYPE_REQUEST, 0, route, body);

// Each case: transport, what to send after connecting, the kick reason expected.
const CASES = [
  ['unknown package type', 'ws', async (c) => c.sendBytes(Buffer.from([9, 0, 0, 0])), /unknown package type 9/],
  ['unknown package type (tcp)', 'tcp', async (c) => c.sendBytes(Buffer.from([0, 0, 0, 0])), /unknown package type 0/],
  ['truncated package', 'ws', async (c) => c.sendBytes(Buffer.from([4, 0, 0, 10, 1, 2])), /truncated package/],
  ['truncated package (tcp, connection ends)', 'tcp', async (c) => { c.sendBytes(Buffer.from([4, 0, 0, 10, 1, 2])); c.end(); }, /ended inside a package/],
  ['oversize package', 'tcp', async (c) => c.sendBytes(Buffer.from([4, 0x10, 0, 0])), /exceeds the limit/],
  ['oversize WebSocket frame', 'ws', async (c) => c.sendBytes(Buffer.concat([Buffer.from([4, 0x01, 0x20, 0]), Buffer.alloc(0x012000)])), /exceeds the limit|message too long|Space limit|too big|bad WebSocket/i],
  ['data before the handshake', 'ws', async (c) => c.send(Package.TYPE_DATA, dataMsg('gate.gateHandler.queryEntry', enc('{"uid":"x"}'))), /unexpected data package: expected a handshake/],
  ['handshake ack before the handshake', 'tcp', async (c) => c.send(Package.TYPE_HANDSHAKE_ACK), /unexpected handshake ack package/],
  ['second handshake when working', 'ws', async (c) => { await c.handshake(); c.send(Package.TYPE_HANDSHAKE, enc('{"sys":{}}')); }, /unexpected handshake package: expected heartbeat or data/],
  ['handshake without sys', 'ws', async (c) => c.send(Package.TYPE_HANDSHAKE, enc('{}')), /bad handshake/, (c) => {
    // Pomelo's answer to it, before the close.
    const hs = c.packages.find((p) => p.type === Package.TYPE_HANDSHAKE);
    assert.ok(hs, 'no handshake answer before the close');
    assert.deepEqual(JSON.parse(Protocol.strdecode(hs.body)), { code: 500 });
  }],
  ['bad JSON body', 'ws', async (c) => { await c.handshake(); c.send(Package.TYPE_DATA, dataMsg('gate.gateHandler.queryEntry', enc('{"uid":'))); }, /bad JSON body on route `gate.gateHandler.queryEntry`/],
  ['unknown route code', 'tcp', async (c) => { await c.handshake(); c.send(Package.TYPE_DATA, Message.encode(1, Message.TYPE_REQUEST, 1, 999, enc('{}'))); }, /unknown route code 999/],
  ['no handshake at all', 'tcp', async () => {}, /no handshake within/],
];

test('bad packages close only their own connection, with a reason', async (t) => {
  const gate = env('POMELO_GATE');
  const bystander = await login(gate, 'bystander', 'bad-room');
  const [host, port] = [bystander.host, bystander.port];
  for (const [name, transport, act, reason, check] of CASES) {
    await t.test(name, async () => {
      const c = await Raw.open(transport, host, port);
      await act(c);
      const { kick, close } = await c.waitClosed(15000);
      assert.match(kick || '', reason, `kick reason (close: ${JSON.stringify(close)})`);
      if (transport === 'ws' && close && close.reason) assert.match(close.reason, reason);
      if (check) check(c);
    });
  }
  // The bystander was never disturbed.
  const r = await request(bystander.pomelo, 'chat.chatHandler.send', { rid: 'bad-room', content: 'fine', from: 'b', target: '*' });
  assert.equal(r.error, undefined, JSON.stringify(r));
  bystander.pomelo.disconnect();
});

test('handshake answer: heartbeat, route dictionary and protos as Pomelo sends them', async () => {
  const [host, port] = hostPort(env('POMELO_GATE'));
  const c = await Raw.open('ws', host, port);
  const a = await c.handshake();
  assert.equal(a.code, 200);
  assert.equal(a.sys.dict['chat.chatHandler.send'], 1);
  assert.equal(a.sys.dict['connector.entryHandler.enter'], 2);
  assert.equal(a.sys.dict['gate.gateHandler.queryEntry'], 3);
  assert.deepEqual(a.sys.protos.server.onChat.msg, { option: 'required', type: 'string', tag: 1 });
  // Server heartbeat right after the ack, and one answer per client heartbeat.
  await c.next(Package.TYPE_HEARTBEAT, 'first heartbeat');
  c.send(Package.TYPE_HEARTBEAT);
  await c.next(Package.TYPE_HEARTBEAT, 'heartbeat answer');
  // A compressed-route request (code 3 = queryEntry) is understood.
  c.send(Package.TYPE_DATA, Message.encode(7, Message.TYPE_REQUEST, 1, 3, enc('{"uid":"zed"}')));
  const p = await c.next(Package.TYPE_DATA, 'queryEntry answer');
  const m = Message.decode(p.body);
  assert.equal(m.id, 7);
  const body = JSON.parse(Protocol.strdecode(m.body));
  assert.equal(body.code, 200);
  assert.equal(typeof body.port, 'number');
  c.end();
});

test('other service.handler.method routes map to service.method', async () => {
  const gate = env('POMELO_GATE');
  const u = await login(gate, 'mapper', 'map-room');
  const other = await login(gate, 'mapwatch', 'map-room');
  // connector.entryHandler.leave → connector.leave: the room sees onLeave, the answer is {}.
  const left = waitFor(other.pomelo, 'onLeave', (m) => m.user === 'mapper', 'onLeave after connector.leave');
  assert.deepEqual(await request(u.pomelo, 'connector.entryHandler.leave', { rid: 'map-room' }), {});
  await left;
  // Leaving again: the native 403, as a Pomelo error answer.
  const again = await request(u.pomelo, 'connector.entryHandler.leave', { rid: 'map-room' });
  assert.equal(again.code, 403, JSON.stringify(again));
  assert.equal(again.error, true);
  // A service nobody serves: 404 with the native route's message.
  const unknown = await request(u.pomelo, 'area.playerHandler.move', { x: 1 });
  assert.equal(unknown.code, 404, JSON.stringify(unknown));
  assert.match(unknown.message, /area\.move/);
  // A route that is not service.handler.method.
  const bad = await request(u.pomelo, 'nodots', {});
  assert.equal(bad.code, 404, JSON.stringify(bad));
  u.pomelo.disconnect();
  other.pomelo.disconnect();
});

test('notifies and repeated message ids each publish once (ids are not request keys)', async () => {
  const gate = env('POMELO_GATE');
  const sender = await login(gate, 'notifier', 'notify-room');
  const watcher = await login(gate, 'notewatch', 'notify-room');
  const got = [];
  watcher.pomelo.on('onChat', (m) => got.push(m.msg));
  // Pomelo's notify: message id 0 every time.
  for (let i = 0; i < 5; i++) {
    sender.pomelo.notify('chat.chatHandler.send', { rid: 'notify-room', content: `n${i}`, from: 'x', target: '*' });
  }
  // A raw client reusing one message id.
  const raw = await Raw.open('tcp', sender.host, sender.port);
  await raw.handshake();
  await raw.request(1, 'connector.entryHandler.enter', { username: 'reuser', rid: 'notify-room' });
  for (let i = 0; i < 3; i++) {
    const r = await raw.request(9, 'chat.chatHandler.send', { rid: 'notify-room', content: `r${i}`, target: '*' });
    assert.equal(r.error, undefined, JSON.stringify(r));
  }
  const want = ['n0', 'n1', 'n2', 'n3', 'n4', 'r0', 'r1', 'r2'];
  const all = () => want.every((w) => got.includes(w));
  if (!all()) await waitFor(watcher.pomelo, 'onChat', all, `all of ${want} (got ${got})`).catch(() => assert.fail(`watcher got ${got}`));
  raw.end();
  sender.pomelo.disconnect();
  watcher.pomelo.disconnect();
});

test('a flooding client gets 429 answers, then is closed; the rate limit is the native one', async () => {
  const [host, port] = hostPort(env('POMELO_GATE'));
  const c = await Raw.open('tcp', host, port);
  await c.handshake();
  // A burst (200) and then more than five bursts' worth of refusals (1000), without waiting.
  for (let i = 1; i <= 2000; i++) {
    c.send(Package.TYPE_DATA, Message.encode(i % 100000, Message.TYPE_REQUEST, 0, 'gate.gateHandler.queryEntry', enc(`{"uid":"f${i}"}`)));
  }
  const { kick } = await c.waitClosed(15000);
  assert.match(kick || '', /rate limit exceeded/);
  const answers = c.packages
    .filter((p) => p.type === Package.TYPE_DATA)
    .map((p) => JSON.parse(Protocol.strdecode(Message.decode(p.body).body)));
  assert.ok(answers.some((a) => a.code === 429 && a.error === true), 'no 429 answer before the close');
  assert.ok(answers.some((a) => a.code === 200), 'nothing was served before the limit');
});
