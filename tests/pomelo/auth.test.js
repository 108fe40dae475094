'use strict';
// Production mode (no --dev-tokens): the JWT travels as `token` in the enter body.
const test = require('node:test');
const assert = require('node:assert/strict');
const { closeAll, login, newClient, init, request, env } = require('./lib/pomelo');

test.after(closeAll);

test('enter needs a JWT in the body; its subject must be the username', async () => {
  const gate = env('POMELO_GATE');
  const token = env('POMELO_TOKEN_ERIN');

  // The demo's unmodified login (no token) is refused with a reason.
  const anon = await login(gate, 'erin', 'secure');
  assert.equal(anon.answer.code, 401, JSON.stringify(anon.answer));
  assert.equal(anon.answer.error, true);
  assert.match(anon.answer.message, /token/);

  const c = newClient();
  await init(c, anon.host, anon.port);
  const wrong = await request(c, 'connector.entryHandler.enter', { username: 'frank', rid: 'secure', token });
  assert.equal(wrong.code, 403, JSON.stringify(wrong));
  assert.equal(wrong.error, true);
  const bad = await request(c, 'connector.entryHandler.enter', { username: 'erin', rid: 'secure', token: 'not.a.jwt' });
  assert.equal(bad.code, 401, JSON.stringify(bad));
  const ok = await request(c, 'connector.entryHandler.enter', { username: 'erin', rid: 'secure', token });
  assert.deepEqual(ok, { users: ['erin'] });
  c.disconnect();
  anon.pomelo.disconnect();
});
