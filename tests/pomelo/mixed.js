'use strict';
// One Pomelo user (Pomelo's own, unmodified client) in a room with users of other kinds, driven
// by tests/tests/browser.rs: logs in through the gate ($POMELO_GATE) into $POMELO_ROOM as
// $POMELO_NAME, says `@ready`, waits for `go` on stdin, sends $POMELO_N messages, records the
// room's onChat pushes in arrival order until $POMELO_TOTAL arrived, says `@result [[from, msg]…]`,
// and stays until `done`.
const readline = require('node:readline');
const { closeAll, login, request, env } = require('./lib/pomelo');

const say = (tag, value) => console.log(value === undefined ? `@${tag}` : `@${tag} ${JSON.stringify(value)}`);
const lines = readline.createInterface({ input: process.stdin });
const inbox = [];
let waiter = null;
lines.on('line', (l) => (waiter ? (waiter(l.trim()), (waiter = null)) : inbox.push(l.trim())));
const expectLine = async (word) => {
  const l = inbox.length ? inbox.shift() : await new Promise((r) => (waiter = r));
  if (l !== word) throw new Error(`expected \`${word}\`, got \`${l}\``);
};

async function main() {
  const [gate, name, rid] = [env('POMELO_GATE'), env('POMELO_NAME'), env('POMELO_ROOM')];
  const n = Number(env('POMELO_N'));
  const total = Number(env('POMELO_TOTAL'));
  const seen = [];
  let done;
  const all = new Promise((r) => (done = r));
  const { pomelo } = await login(gate, name, rid);
  pomelo.on('onChat', (m) => {
    if (m.target === '*') seen.push([m.from, m.msg]);
    if (seen.length >= total) done();
  });
  say('ready');
  await expectLine('go');
  for (let i = 0; i < n; i++) {
    const a = await request(pomelo, 'chat.chatHandler.send', { rid, content: `${name} ${i}`, from: name, target: '*' });
    if (a.error) throw new Error(`send: ${JSON.stringify(a)}`);
  }
  const timer = setTimeout(() => {
    say('error', `only ${seen.length} of ${total} messages: ${JSON.stringify(seen)}`);
    process.exit(1);
  }, 60000);
  await all;
  clearTimeout(timer);
  say('result', seen);
  await expectLine('done');
  closeAll();
  process.exit(0);
}

main().catch((e) => {
  say('error', String(e && e.stack ? e.stack : e));
  closeAll();
  process.exit(1);
});
