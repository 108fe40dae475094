// Browser side of the end-to-end browser tests (`tests/tests/browser.rs` runs it).
//
//   node web/tests/browser.mjs <scenario> '<json>'
//
// Drives headless Chromium (Debian's `chromium`, through playwright-core) on the chat page of a
// running stack. Lines starting with `@` go to the Rust test (`@ready`, `@dropped`,
// `@result {json}`); the Rust test answers on stdin when a scenario has to wait for it. Every
// wait is bounded; any failure prints `@error …` and exits non-zero.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [scenario, json] = process.argv.slice(2);
const cfg = JSON.parse(json ?? '{}');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = 30000;

const say = (/** @type {string} */ tag, /** @type {any} */ value) =>
  console.log(value === undefined ? `@${tag}` : `@${tag} ${JSON.stringify(value)}`);

const lines = createInterface({ input: process.stdin });
/** @type {string[]} */
const inbox = [];
/** @type {((l: string) => void) | null} */
let waiter = null;
lines.on('line', (l) => {
  if (waiter) { const w = waiter; waiter = null; w(l.trim()); } else inbox.push(l.trim());
});
/** Waits for the Rust test to send a line starting with `word` on stdin; the rest of it. @param {string} word */
async function expectLine(word) {
  const l = inbox.length ? inbox.shift() : await new Promise((r) => { waiter = r; });
  const [first, ...rest] = String(l).split(' ');
  if (first !== word) throw new Error(`expected \`${word}\` from the test, got \`${l}\``);
  return rest.join(' ');
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

/** A user in their own browser context (own connections, own storage). @param {string} name */
async function open(name) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.log(`[${name}] console: ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`));
  await page.goto(cfg.page);
  return page;
}

/** Joins `room` through the page's form. @param {string} name @param {string} room */
async function join(name, room = 'lobby') {
  const page = await open(name);
  await page.fill('#login input[name=name]', name);
  await page.fill('#login input[name=room]', room);
  await page.click('#login button');
  try {
    await page.waitForSelector('#chat', { state: 'visible', timeout: WAIT });
  } catch (e) {
    throw new Error(`${name} could not join: ${await page.textContent('#error')}`);
  }
  return page;
}

/** Sends through the page's form. @param {import('playwright-core').Page} page @param {string} text @param {string} [to] */
async function send(page, text, to = '*') {
  await page.selectOption('#send select', to);
  await page.fill('#send input[name=text]', text);
  await page.click('#send button');
}

/** @param {import('playwright-core').Page} page */
const chatLog = (page) => page.evaluate(() => /** @type {any} */ (window).chatLog);

/** Waits until `pred(chatLog)` holds. @param {import('playwright-core').Page} page @param {string} pred */
async function waitLog(page, pred, what) {
  try {
    await page.waitForFunction(`(() => { const log = window.chatLog; return ${pred}; })()`, null, { timeout: WAIT });
  } catch {
    throw new Error(`timed out waiting for ${what}; log: ${JSON.stringify(await chatLog(page))}`);
  }
}

/** Waits until the page's member list is exactly `users`. */
async function waitMembers(/** @type {import('playwright-core').Page} */ page, /** @type {string[]} */ users) {
  const want = JSON.stringify([...users].sort());
  try {
    await page.waitForFunction(
      (w) => JSON.stringify([...document.querySelectorAll('#members li')].map((li) => li.dataset.user).sort()) === w,
      want, { timeout: WAIT });
  } catch {
    throw new Error(`members never became ${want}`);
  }
}

const roomChats = (/** @type {any[]} */ log) => log.filter((m) => !m.private).map((m) => [m.seq, m.from, m.msg]);

const scenarios = {
  /** Two browsers (on two edges) and the Rust user `cfg.rust` chat; everyone records the order. */
  async order() {
    const [a, b] = cfg.names;
    const pa = await join(a);
    const pb = await join(b);
    const all = [a, b, cfg.rust];
    await waitMembers(pa, all);
    await waitMembers(pb, all);
    const edges = [await pa.evaluate(() => window.roomcastClient.edge), await pb.evaluate(() => window.roomcastClient.edge)];
    say('ready', { edges });
    // The Rust user sends at the same time.
    for (let i = 0; i < cfg.n; i++) {
      await Promise.all([send(pa, `${a} ${i}`), send(pb, `${b} ${i}`)]);
    }
    const total = 3 * cfg.n;
    await waitLog(pa, `log.filter(m => !m.private).length >= ${total}`, `${total} messages at ${a}`);
    await waitLog(pb, `log.filter(m => !m.private).length >= ${total}`, `${total} messages at ${b}`);
    say('result', { [a]: roomChats(await chatLog(pa)), [b]: roomChats(await chatLog(pb)) });
  },

  /** One browser in a room with users of other kinds (`cfg.others`: a native user, a Pomelo
   *  user): once all are members it sends `cfg.n` messages and records the room's order until
   *  `cfg.total` messages arrived. */
  async mixed() {
    const pa = await join(cfg.name);
    await waitMembers(pa, [cfg.name, ...cfg.others]);
    say('ready');
    await expectLine('go');
    for (let i = 0; i < cfg.n; i++) await send(pa, `${cfg.name} ${i}`);
    await waitLog(pa, `log.filter(m => !m.private).length >= ${cfg.total}`, `${cfg.total} messages`);
    say('result', roomChats(await chatLog(pa)));
    await expectLine('done');
  },

  /** A browser's connection is cut; messages are sent while it is away; it resumes. */
  async resume() {
    const [a] = cfg.names;
    const pa = await join(a);
    await waitMembers(pa, [a, cfg.rust]);
    say('ready');
    await waitLog(pa, `log.length >= ${cfg.before}`, `${cfg.before} messages before the cut`);
    const seqAtCut = await pa.evaluate(() => window.roomcastClient.lastSeq('lobby'));
    await pa.evaluate(() => { window.roomcastClient.holdReconnect(); window.roomcastClient.dropConnection(); });
    await pa.waitForSelector('#banner', { state: 'visible', timeout: WAIT });
    say('dropped', { seqAtCut });
    // `sent <seq>`: the room's last seq; what the browser missed may be beyond the history.
    const until = Number(await expectLine('sent'));
    await pa.evaluate(() => window.roomcastClient.releaseReconnect());
    try {
      await pa.waitForFunction((u) => window.roomcastClient.lastSeq('lobby') >= u, until, { timeout: WAIT });
    } catch {
      throw new Error(`never reached seq ${until}; log: ${JSON.stringify(await chatLog(pa))}`);
    }
    await pa.waitForSelector('#banner', { state: 'hidden', timeout: WAIT });
    await waitMembers(pa, [a, cfg.rust]);
    say('result', {
      chats: roomChats(await chatLog(pa)),
      states: await pa.evaluate(() => window.stateLog),
      reconnects: await pa.evaluate(() => window.roomcastClient.reconnects),
      restoredShown: await pa.locator('#messages li.system', { hasText: 'connection restored' }).count(),
      gapShown: await pa.locator('#messages li.system', { hasText: 'missed messages' }).allTextContents(),
    });
    // Stay in the room until the test has checked what the others saw.
    await expectLine('done');
  },

  /** Private messages reach their target only. */
  async private() {
    const [a, b, c] = cfg.names;
    const pa = await join(a);
    const pb = await join(b);
    const pc = await join(c);
    for (const p of [pa, pb, pc]) await waitMembers(p, [a, b, c, cfg.rust]);
    say('ready');
    await send(pa, `secret for ${b}`, b);
    await waitLog(pb, `log.some(m => m.private && m.msg === 'secret for ${b}')`, `the secret at ${b}`);
    // Later on the same session streams: had the secret gone astray, it would be before these.
    await send(pa, `ping for ${c}`, c);
    await waitLog(pc, `log.some(m => m.private && m.msg === 'ping for ${c}')`, `the ping at ${c}`);
    await send(pa, `marker for ${cfg.rust}`, cfg.rust);
    await waitLog(pa, `log.some(m => m.private && m.msg === 'from rust to ${a}')`, `the Rust user's message at ${a}`);
    say('result', { [a]: await chatLog(pa), [b]: await chatLog(pb), [c]: await chatLog(pc) });
    // Closing on purpose (close code 0) leaves the room at once, without the grace period.
    await pc.evaluate(() => window.roomcastClient.close());
    // Seen by the others before the next step: otherwise Bob's leave below can overtake it.
    await waitMembers(pa, [a, b, cfg.rust]);
    say('closed');
    // Leaving a room: the others see it in their member lists.
    await pb.evaluate(() => window.roomcastClient.leave('lobby'));
    await waitMembers(pa, [a, cfg.rust]);
    say('left');
  },

  /**
   * The browser's edge goes away (drained with SIGTERM, or killed): the browser moves to the
   * other edge and resumes. `cfg.moveWaitMs` bounds the move (off loopback, a killed edge is
   * noticed only by the QUIC idle timeout).
   */
  async move() {
    const [a] = cfg.names;
    const pa = await join(a);
    await waitMembers(pa, [a, cfg.rust]);
    say('ready', { edge: await pa.evaluate(() => window.roomcastClient.edge) });
    await waitLog(pa, `log.length >= ${cfg.before}`, `${cfg.before} messages before the move`);
    say('counted');
    const total = cfg.before + cfg.after;
    const wait = cfg.moveWaitMs ?? WAIT;
    try {
      await pa.waitForFunction(() => window.roomcastClient.state === 'open' && window.roomcastClient.reconnects === 1,
        null, { timeout: wait });
    } catch {
      throw new Error(`not moved within ${wait} ms: ${JSON.stringify(await pa.evaluate(() => window.stateLog))}`);
    }
    await waitLog(pa, `log.length >= ${total}`, `${total} messages after the move`);
    say('result', {
      chats: roomChats(await chatLog(pa)),
      states: await pa.evaluate(() => window.stateLog),
      edge: await pa.evaluate(() => window.roomcastClient.edge),
      status: await pa.textContent('#status'),
    });
    // Stay in the room until the test has checked what the others saw.
    await expectLine('done');
  },

  /** Bad input from one browser: documented errors for it, nothing for the others. */
  async bad() {
    const [a, b] = cfg.names;
    const pb = await join(b);
    const pa = await open(a);
    say('ready');
    const answers = await pa.evaluate(async ({ a }) => {
      const rc = await import('/client/roomcast.js');
      const config = await (await fetch('/config.json')).json();
      const c = await rc.RoomcastClient.connect({ ...config, uid: a });
      window.bad = c;
      const te = new TextEncoder();
      const answer = (f) => ({ code: f.type === 'Response' ? f.code : -1, message: f.message ?? '' });
      const out = {};
      // A request before login.
      out.beforeLogin = answer(await c.sendRaw(rc.encode({ type: 'Request', id: 1, route: 'chat.send', body: te.encode('{"rid":"lobby","content":"x"}') })));
      // An unknown route.
      try { await c.request('nope.nothing', {}); out.unknownRoute = { code: 200 }; } catch (e) { out.unknownRoute = { code: e.code, message: e.message }; }
      // An oversize frame (70 000 bytes of body).
      out.oversize = answer(await c.sendRaw(rc.encode({ type: 'Request', id: 2, route: 'chat.send', body: new Uint8Array(70000) })));
      // An unknown frame type.
      out.unknownType = answer(await c.sendRaw(Uint8Array.of(0, 0, 0, 1, 0x7f)));
      // A frame the client may not send on a request stream.
      out.wrongFrame = answer(await c.sendRaw(rc.encode({ type: 'Push', route: 'onChat', rid: 'lobby', seq: 1n, body: new Uint8Array(0) })));
      // The same connection still works.
      await c.enter('lobby');
      const sent = await c.send('lobby', 'still here');
      out.after = { sent: sent.seq, state: c.state, edge: c.edge };
      return out;
    }, { a });
    await waitLog(pb, `log.some(m => m.msg === 'still here')`, `${a}'s message at ${b}`);
    await expectLine('rust-sent');
    await waitLog(pb, `log.some(m => m.msg === 'rust is fine')`, `the Rust user's message at ${b}`);
    say('result', { answers, [b]: roomChats(await chatLog(pb)) });
  },
};

/**
 * Not a test: README's screenshot, two users side by side (two frames of one page, each its
 * own client). With a stack running:
 *   node web/tests/browser.mjs screenshot '{"page":"http://127.0.0.1:7080/","shot":"web/chat/screenshot.png"}'
 */
scenarios.screenshot = async () => {
  const page = await open('screenshot');
  await page.setViewportSize({ width: 1400, height: 540 });
  await page.evaluate((url) => {
    document.head.innerHTML = '<style>body{margin:0;display:flex;gap:6px;background:#999}iframe{flex:1;height:100vh;border:0}</style>';
    document.body.innerHTML = `<iframe name="alice" src="${url}"></iframe><iframe name="bob" src="${url}"></iframe>`;
  }, cfg.page);
  const frame = async (/** @type {string} */ name) => {
    for (let i = 0; i < 100; i++) {
      const f = page.frame({ name });
      if (f && (await f.$('#login input[name=name]').catch(() => null))) return f;
      await page.waitForTimeout(50);
    }
    throw new Error(`frame ${name} did not load`);
  };
  const [fa, fb] = [await frame('alice'), await frame('bob')];
  for (const [f, name] of [[fa, 'alice'], [fb, 'bob']]) {
    await f.fill('#login input[name=name]', /** @type {string} */ (name));
    await f.click('#login button');
    await f.waitForSelector('#chat', { state: 'visible', timeout: WAIT });
  }
  const post = async (/** @type {any} */ f, /** @type {string} */ text, to = '*') => {
    await f.selectOption('#send select', to);
    await f.fill('#send input[name=text]', text);
    await f.click('#send button');
    if (to === '*') await f.waitForFunction((t) => window.chatLog.some((m) => m.msg === t), text, { timeout: WAIT });
  };
  await post(fa, 'hi bob, this is a browser on WebTransport');
  await post(fb, 'hello alice! same room, maybe another edge');
  await post(fa, 'psst, this one is for you only', 'bob');
  await fb.waitForFunction(() => window.chatLog.some((m) => m.private), null, { timeout: WAIT });
  await post(fb, 'got it');
  await fa.fill('#send input[name=text]', 'see you later');
  await page.screenshot({ path: cfg.shot });
  say('result', { shot: cfg.shot });
};

const run = scenarios[/** @type {keyof typeof scenarios} */ (scenario)];
let code = 0;
try {
  if (!run) throw new Error(`unknown scenario \`${scenario}\``);
  await run();
} catch (e) {
  say('error', String(e?.stack ?? e));
  code = 1;
} finally {
  await browser.close().catch(() => {});
  lines.close();
}
process.exit(code);
