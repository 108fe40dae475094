//! Browsers in rooms: the chat page and the JavaScript client in real headless Chromium
//! (Debian's `chromium`, driven by `web/tests/browser.mjs` through playwright-core), over
//! WebTransport to real edge processes, with a real redis-server, and a Rust SDK user in the
//! same room. Also runs the JavaScript client's unit tests (`node --test web/client/`).
//!
//! One test puts a Pomelo client (Pomelo's own, `tests/pomelo/mixed.js`) in the room too.
//!
//! Needs `chromium`, `node`, `web/node_modules` and `tests/pomelo/node_modules` (`npm ci` in
//! each); `.ci/run` installs them. Without them these tests fail and say what is missing: they
//! never skip.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::OnceLock;
use std::time::Duration;

use roomcast_client::Client;
use roomcast_e2e::web::{web_dir, PageConfig, WebServer};
use serde_json::{json, Value};
use support::{collect_route, Env};

/// Bound for one step of a browser scenario (Chromium starts slowly on a busy machine).
const STEP: Duration = Duration::from_secs(90);

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "Chromium not found at {path}: install Debian's `chromium` (`apt-get install chromium`; \
         .ci/run does) or set CHROMIUM"
    );
    path
}

fn check_node_modules() {
    let pw = web_dir().join("node_modules/playwright-core");
    assert!(
        pw.exists(),
        "{} is missing: run `npm ci` in web/ (.ci/run does)",
        pw.display()
    );
}

/// The WebTransport certificate of this test process's edges (made once: edges read it).
fn webtransport_cert() -> (PathBuf, PathBuf) {
    static CERT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("roomcast-wt-certs-{}", std::process::id()));
        roomcast_certs::generate_webtransport(&dir, &roomcast_certs::default_hosts())
            .expect("WebTransport certificate")
    })
    .clone()
}

/// One browser test at a time: each runs Chromium, two edges, a backend and Redis, and several
/// at once on a 2-core machine would only make each slower and less predictable.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two edges, one chat backend, Redis, and the chat page.
struct Stack {
    env: Env,
    web: WebServer,
    /// Last: released after everything above has stopped.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Stack {
    async fn start() -> Stack {
        Stack::start_with(&[], &[]).await
    }

    /// With `extra` flags for both edges and `backend` flags for the chat backend.
    async fn start_with(extra: &[&str], backend: &[&str]) -> Stack {
        chromium();
        check_node_modules();
        let serial = SERIAL.lock().await;
        let (cert, key) = webtransport_cert();
        let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
        let mut edge_args = vec![
            "--webtransport-cert",
            &cert_s,
            "--webtransport-key",
            &key_s,
            "--webtransport-pin",
        ];
        edge_args.extend_from_slice(extra);
        let env = tokio::task::block_in_place(|| {
            Env::start_with(&["edge-1", "edge-2"], &["chat-1"], &edge_args, backend)
        });
        let addrs: Vec<_> = env.edges.iter().map(|e| e.addr).collect();
        let page = PageConfig::for_edges(&addrs, &cert).expect("page config");
        let web = WebServer::start("127.0.0.1:0".parse().unwrap(), page)
            .await
            .expect("chat page server");
        Stack {
            env,
            web,
            _serial: serial,
        }
    }

    /// A uid that the gate sends to `edge` (rendezvous hashing, as the edges compute it).
    fn uid_on(&self, prefix: &str, edge: &str) -> String {
        let ids: Vec<&str> = self.env.edges.iter().map(|e| e.id.as_str()).collect();
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|uid| {
                ids.iter()
                    .max_by_key(|id| roomcast_edge::gate::score(uid, id))
                    .is_some_and(|best| *best == edge)
            })
            .unwrap()
    }

    /// Starts `scenario` of `web/tests/browser.mjs` with `cfg` (plus the page's address).
    fn browser(&self, scenario: &str, mut cfg: Value) -> Script {
        cfg["page"] = json!(self.web.url());
        Script::spawn(
            Command::new("node")
                .arg(web_dir().join("tests/browser.mjs"))
                .arg(scenario)
                .arg(cfg.to_string())
                .env("CHROMIUM", chromium())
                .current_dir(web_dir()),
            "browser",
        )
    }
}

/// The running browser script.
struct Script {
    child: Child,
    lines: Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Script {
    /// Runs `cmd` (a node script speaking in `@tag value` lines on stdout, reading words on
    /// stdin), tied to this process's life.
    fn spawn(cmd: &mut Command, label: &'static str) -> Script {
        let mut child = roomcast_e2e::child::die_with_parent(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node (install nodejs)");
        let lines = roomcast_e2e::child::stdout_lines(&mut child, label);
        let stdin = child.stdin.take();
        Script {
            child,
            lines,
            stdin,
        }
    }

    /// Waits for the script's `@tag` line; its JSON value (`null` if none). Panics on `@error`.
    fn expect(&mut self, tag: &str) -> Value {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = tokio::task::block_in_place(|| self.lines.recv_timeout(left))
                .unwrap_or_else(|_| panic!("the browser script did not say @{tag} in time"));
            if let Some(err) = line.strip_prefix("@error ") {
                panic!("browser script failed: {err}");
            }
            let Some(rest) = line.strip_prefix('@') else {
                continue;
            };
            let (t, value) = rest.split_once(' ').unwrap_or((rest, "null"));
            if t == tag {
                return serde_json::from_str(value).expect("JSON after the tag");
            }
            panic!("expected @{tag} from the browser script, got `{line}`");
        }
    }

    fn tell(&mut self, word: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{word}").expect("write to the browser script");
    }

    /// Waits (bounded) for the script to exit; it must succeed.
    fn finish(mut self) {
        let deadline = std::time::Instant::now() + STEP;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for node") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the browser script did not exit in time"
            );
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(50)));
        };
        assert!(status.success(), "browser script exited with {status}");
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[seq, from, msg]` of the room chats a Rust user received.
fn rust_chats(pushes: &[roomcast_client::Push]) -> Vec<Value> {
    pushes
        .iter()
        .filter(|p| p.route == "onChat" && !p.rid.is_empty())
        .map(|p| {
            let b = support::body(p);
            json!([p.seq, b["from"], b["msg"]])
        })
        .collect()
}

/// Carol sends a last message; her pushes up to it (`n` chats in all) must all be chat
/// messages: a browser's leave and re-join would have come before it, in seq order.
async fn only_chats_up_to_a_final_message(
    carol: &Client,
    rx: &mut tokio::sync::mpsc::Receiver<roomcast_client::Push>,
    n: usize,
) {
    carol.send("lobby", "final").await.unwrap();
    let pushes = collect_route(rx, "onChat", n).await;
    let routes: Vec<String> = pushes
        .iter()
        .map(|p| format!("{} {}", p.route, support::body(p)))
        .collect();
    assert!(routes.iter().all(|r| r.starts_with("onChat")), "{routes:?}");
}

async fn rust_user(
    stack: &Stack,
    edge: usize,
    uid: &str,
) -> (Client, tokio::sync::mpsc::Receiver<roomcast_client::Push>) {
    let c = stack.env.connect_to(edge, uid).await;
    let rx = c.pushes().expect("pushes");
    c.enter("lobby").await.expect("enter");
    (c, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_a_rust_user_on_two_edges_see_one_order() {
    let stack = Stack::start().await;
    let (a, b) = (stack.uid_on("web", "edge-1"), stack.uid_on("web", "edge-2"));
    let (carol, mut rx) = rust_user(&stack, 0, "carol").await;
    let n = 10;
    let mut script = stack.browser("order", json!({"names": [a, b], "rust": "carol", "n": n}));
    let ready = script.expect("ready");
    assert_eq!(
        ready["edges"],
        json!(["edge-1", "edge-2"]),
        "the browsers are on two edges"
    );
    for i in 0..n {
        carol.send("lobby", &format!("carol {i}")).await.unwrap();
    }
    let result = script.expect("result");
    script.finish();
    let pushes = collect_route(&mut rx, "onChat", 3 * n).await;
    let mine = rust_chats(&pushes);
    assert_eq!(mine.len(), 3 * n);
    let seqs: Vec<u64> = mine.iter().map(|m| m[0].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs {seqs:?}");
    for user in [&a, &b] {
        assert_eq!(
            result[user.as_str()].as_array().unwrap(),
            &mine,
            "{user} saw another order than carol"
        );
    }
    for from in [&a, &b, &"carol".to_string()] {
        let got: Vec<_> = mine.iter().filter(|m| m[1] == json!(from)).collect();
        assert_eq!(got.len(), n, "messages from {from}");
    }
    carol.close().await;
}

/// A browser (WebTransport), a Pomelo client (Pomelo's own client over WebSocket) and a native
/// QUIC user in one room, the browser and the Pomelo user on different edges, all sending at
/// once: everyone sees the same messages in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_a_pomelo_client_and_a_rust_user_see_one_order() {
    let stack = Stack::start_with(&["--pomelo-listen", "127.0.0.1:0"], &[]).await;
    let web = stack.uid_on("web", "edge-1");
    let pom = stack.uid_on("pom", "edge-2");
    let (carol, mut rx) = rust_user(&stack, 0, "carol").await;
    let n = 10;
    let total = 3 * n;
    let gate = stack.env.edges[0].pomelo.expect("a Pomelo listener");
    let pomelo_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pomelo");
    assert!(
        pomelo_dir
            .join("node_modules/pomelo-jsclient-websocket")
            .is_dir(),
        "tests/pomelo/node_modules is missing: run `npm ci` in tests/pomelo (.ci/run does)"
    );
    let mut pomelo = Script::spawn(
        Command::new("node")
            .arg("mixed.js")
            .current_dir(&pomelo_dir)
            .env("POMELO_GATE", gate.to_string())
            .env("POMELO_NAME", &pom)
            .env("POMELO_ROOM", "lobby")
            .env("POMELO_N", n.to_string())
            .env("POMELO_TOTAL", total.to_string()),
        "pomelo",
    );
    pomelo.expect("ready");
    let mut browser = stack.browser(
        "mixed",
        json!({"name": web, "others": ["carol", pom], "n": n, "total": total}),
    );
    browser.expect("ready");
    pomelo.tell("go");
    browser.tell("go");
    for i in 0..n {
        carol.send("lobby", &format!("carol {i}")).await.unwrap();
    }
    let pushes = collect_route(&mut rx, "onChat", total).await;
    let mine = rust_chats(&pushes);
    let seqs: Vec<u64> = mine.iter().map(|m| m[0].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs {seqs:?}");
    let order: Vec<Value> = mine.iter().map(|m| json!([m[1], m[2]])).collect();
    let in_browser: Vec<Value> = browser
        .expect("result")
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m[1], m[2]]))
        .collect();
    let in_pomelo = pomelo.expect("result");
    assert_eq!(
        in_browser, order,
        "the browser saw another order than carol"
    );
    assert_eq!(
        in_pomelo.as_array().unwrap(),
        &order,
        "the Pomelo user saw another order than carol"
    );
    for from in [&web, &pom, &"carol".to_string()] {
        let got = order.iter().filter(|m| m[0] == json!(from)).count();
        assert_eq!(got, n, "messages from {from}");
    }
    pomelo.tell("done");
    browser.tell("done");
    pomelo.finish();
    browser.finish();
    carol.close().await;
}

/// The browser script `resume` as `uid`, with `carol` sending `before` messages, the browser's
/// connection cut, then `during` more: the script, the seqs sent, its `dropped` and `result`.
async fn resume_run(
    stack: &Stack,
    uid: &str,
    carol: &Client,
    rx: &mut tokio::sync::mpsc::Receiver<roomcast_client::Push>,
    before: usize,
    during: usize,
) -> (Script, Vec<u64>, Value, Value) {
    let mut script = stack.browser(
        "resume",
        json!({"names": [uid], "rust": "carol", "before": before, "during": during}),
    );
    script.expect("ready");
    // The browser's onAdd.
    collect_route(rx, "onAdd", 1).await;
    let mut sent = Vec::new();
    for i in 0..before {
        sent.push(send(carol, &format!("before {i}")).await);
    }
    let dropped = script.expect("dropped");
    // The browser is away (its reconnect is held): these reach it only through the resume.
    for i in 0..during {
        sent.push(send(carol, &format!("during {i}")).await);
    }
    script.tell(&format!("sent {}", sent.last().unwrap()));
    let result = script.expect("result");
    (script, sent, dropped, result)
}

/// The seqs of the chats a browser script reports, in the order it received them.
fn chat_seqs(result: &Value) -> Vec<u64> {
    result["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whose_connection_is_cut_resumes_with_no_gap_and_no_duplicate() {
    let stack = Stack::start().await;
    let a = stack.uid_on("web", "edge-2");
    let (carol, mut rx) = rust_user(&stack, 0, "carol").await;
    let (before, during) = (5, 10);
    let (mut script, sent, _, result) =
        resume_run(&stack, &a, &carol, &mut rx, before, during).await;
    let seqs = chat_seqs(&result);
    assert_eq!(seqs, sent, "no gap, no duplicate, in order");
    assert_eq!(result["reconnects"], json!(1));
    let states: Vec<&str> = result["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["reconnecting", "open"], "and no gap event");
    assert_eq!(result["restoredShown"], json!(1), "the page said so");
    // The resume was invisible to the room: carol saw her own messages and nothing else, up to
    // one sent after the resume (a leave and re-join would have come before it, in seq order).
    only_chats_up_to_a_final_message(&carol, &mut rx, before + during + 1).await;
    // Only now may the browser leave (closing it leaves the room).
    script.tell("done");
    script.finish();
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_is_told_exactly_what_it_missed_beyond_the_history() {
    // The rooms keep 3 pushes; the browser misses 10.
    let history = ["--history-len", "3"];
    let stack = Stack::start_with(&history, &history).await;
    let a = stack.uid_on("gap", "edge-2");
    let (carol, mut rx) = rust_user(&stack, 0, "carol").await;
    let (before, during) = (2, 10);
    let (mut script, sent, dropped, result) =
        resume_run(&stack, &a, &carol, &mut rx, before, during).await;
    let seq_at_cut = dropped["seqAtCut"].as_u64().unwrap();
    let last = *sent.last().unwrap();
    let got = chat_seqs(&result);
    let gaps: Vec<&Value> = result["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == json!("gap"))
        .collect();
    assert_eq!(gaps.len(), 1, "one gap event: {:?}", result["states"]);
    let (from, to) = (
        gaps[0]["from"].as_u64().unwrap(),
        gaps[0]["to"].as_u64().unwrap(),
    );
    // Everything before the cut, then the gap right after it, then the rest: every seq sent
    // is either received or inside the gap, once, in order.
    assert_eq!(from, seq_at_cut + 1, "the gap starts right after the cut");
    let received_after: Vec<u64> = got.iter().copied().filter(|s| *s > seq_at_cut).collect();
    assert!(
        !received_after.is_empty(),
        "the history's pushes were replayed"
    );
    assert_eq!(
        received_after[0],
        to + 1,
        "replay continues right after the gap"
    );
    assert!(
        received_after.windows(2).all(|w| w[1] == w[0] + 1),
        "{received_after:?}"
    );
    assert_eq!(*received_after.last().unwrap(), last);
    let before_cut: Vec<u64> = got.iter().copied().filter(|s| *s <= seq_at_cut).collect();
    assert_eq!(before_cut, sent[..before], "before the cut: all of it");
    assert_eq!(
        result["gapShown"],
        json!([format!("missed messages {from}–{to}")]),
        "the page says what was missed"
    );
    script.tell("done");
    script.finish();
    carol.close().await;
}

/// `chat.send` to the lobby from `c`; its seq.
async fn send(c: &Client, text: &str) -> u64 {
    c.send("lobby", text).await.unwrap().seq.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_reaches_the_right_browser_only() {
    // A lost session would keep its rooms this long: only a close on purpose leaves at once.
    let stack = Stack::start_with(&["--resume-grace-ms", "600000"], &[]).await;
    let (a, b, c) = (
        stack.uid_on("pa", "edge-1"),
        stack.uid_on("pb", "edge-2"),
        stack.uid_on("pc", "edge-2"),
    );
    let (carol, mut rx) = rust_user(&stack, 0, "carol").await;
    let mut script = stack.browser("private", json!({"names": [a, b, c], "rust": "carol"}));
    script.expect("ready");
    // Carol receives the browser's marker on her session stream; a misdelivered secret or
    // ping would have come before it on the same stream.
    loop {
        let p = support::next_push(&mut rx, STEP)
            .await
            .expect("the marker reaches carol");
        if p.rid.is_empty() {
            let body = support::body(&p);
            assert_eq!(body["msg"], json!("marker for carol"), "carol got {body}");
            assert_eq!(body["from"], json!(a));
            break;
        }
    }
    carol
        .send_to("lobby", &a, &format!("from rust to {a}"))
        .await
        .unwrap();
    let result = script.expect("result");
    let privates = |user: &str| -> Vec<String> {
        result[user]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["private"] == json!(true))
            .map(|m| format!("{}>{}:{}", m["from"], m["target"], m["msg"]))
            .collect()
    };
    assert_eq!(
        privates(&a),
        [format!("\"carol\">\"{a}\":\"from rust to {a}\"")],
        "the sender gets no copy"
    );
    assert_eq!(
        privates(&b),
        [format!("\"{a}\">\"{b}\":\"secret for {b}\"")]
    );
    assert_eq!(privates(&c), [format!("\"{a}\">\"{c}\":\"ping for {c}\"")]);
    // A browser closing on purpose leaves the room at once (no grace period).
    script.expect("closed");
    let left = collect_route(&mut rx, "onLeave", 1).await;
    assert_eq!(support::body(left.last().unwrap())["user"], json!(c));
    // And `leave`: carol is told, and the page's member list shows it (checked by the script).
    script.expect("left");
    let left = collect_route(&mut rx, "onLeave", 1).await;
    assert_eq!(support::body(left.last().unwrap())["user"], json!(b));
    script.finish();
    carol.close().await;
}

/// How the browser's edge goes away in [`a_browser_moves_when_its_edge_goes`].
#[derive(Clone, Copy, Debug)]
enum Goes {
    /// SIGTERM: the edge drains (closes its sessions with code 3) and exits once they moved.
    Drained,
    /// `kill -9`: nothing is said to the browser (on loopback it notices at once through ICMP
    /// port-unreachable; on a real network through the client's watchdog, as for a pause).
    Killed,
    /// SIGSTOP: the edge's socket stays open and silent, as a dead edge looks off loopback (no
    /// ICMP). The JavaScript client's watchdog (a gate query every 2 s; 8 s without an answer
    /// or a push is death) makes the browser move long before WebTransport's 30 s idle timeout.
    Paused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_moves_to_another_edge_when_its_edge_drains_and_misses_nothing() {
    a_browser_moves_when_its_edge_goes(Goes::Drained).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_moves_to_another_edge_when_its_edge_is_killed_and_misses_nothing() {
    a_browser_moves_when_its_edge_goes(Goes::Killed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_moves_to_another_edge_when_its_edge_falls_silent_and_misses_nothing() {
    a_browser_moves_when_its_edge_goes(Goes::Paused).await;
}

async fn a_browser_moves_when_its_edge_goes(goes: Goes) {
    // A killed edge's lease outlives the test: the gates keep naming it, so the browser can
    // only move by the SDK's rule (a gate that answered, as the edge), and it must move before
    // the dead edge's members are reaped (no onLeave, no gap).
    let lease = ["--lease-ttl-ms", "60000"];
    let mut stack = match goes {
        Goes::Drained => Stack::start().await,
        Goes::Killed | Goes::Paused => Stack::start_with(&lease, &[]).await,
    };
    let a = stack.uid_on("dr", "edge-1");
    let (carol, mut rx) = rust_user(&stack, 1, "carol").await;
    let (before, after) = (3, 6);
    // A silent edge must be left well before the browser's own detection (measured: moved
    // 21.4 s after the pause without the client's watchdog, 8.4 s with it: 8 s of silence, the
    // check every 2 s, then the move).
    let move_wait_ms = match goes {
        Goes::Paused => 17_000,
        _ => 30_000,
    };
    let mut script = stack.browser(
        "move",
        json!({
            "names": [a], "rust": "carol", "before": before, "after": after,
            "moveWaitMs": move_wait_ms,
        }),
    );
    assert_eq!(script.expect("ready")["edge"], json!("edge-1"));
    collect_route(&mut rx, "onAdd", 1).await;
    let mut sent = Vec::new();
    for i in 0..before {
        sent.push(send(&carol, &format!("before {i}")).await);
    }
    script.expect("counted");
    let gone = std::time::Instant::now();
    match goes {
        Goes::Drained => {
            let pid = stack.env.edges[0].pid().to_string();
            assert!(Command::new("kill").arg(&pid).status().unwrap().success());
        }
        Goes::Killed => stack.env.edges[0].kill(),
        Goes::Paused => support::signal(stack.env.edges[0].pid(), "STOP"),
    }
    for i in 0..after {
        sent.push(send(&carol, &format!("after {i}")).await);
    }
    let result = script.expect("result");
    println!(
        "{goes:?}: the browser resumed on {} {:.1} s after its edge went",
        result["edge"],
        gone.elapsed().as_secs_f64()
    );
    assert_eq!(result["edge"], json!("edge-2"));
    let seqs = chat_seqs(&result);
    let states = result["states"].as_array().unwrap();
    assert_eq!(seqs, sent, "no gap, no duplicate, in order");
    assert_eq!(states.len(), 2, "{states:?}");
    let reason = states[0]["reason"].as_str().unwrap();
    match goes {
        Goes::Drained => assert!(reason.starts_with("closed by the edge: 3 "), "{states:?}"),
        Goes::Killed => assert!(reason.starts_with("connection lost"), "{states:?}"),
        // The watchdog's requests get no ACK: Chromium may give up on the connection itself
        // ("Connection lost.") just before the watchdog does. Either way well before the 30 s
        // idle timeout (the script waits 30 s at most for the move).
        Goes::Paused => assert!(reason.starts_with("connection lost"), "{states:?}"),
    }
    if let Goes::Paused = goes {
        support::signal(stack.env.edges[0].pid(), "CONT");
    }
    assert_eq!(states[1]["state"], json!("open"));
    if let Goes::Drained = goes {
        let exited = tokio::task::block_in_place(|| stack.env.edges[0].wait_exit(STEP));
        assert!(exited.is_some(), "edge-1 exited after its drain");
    }
    // The move was invisible to the room (no onLeave/onAdd before a message sent after it).
    only_chats_up_to_a_final_message(&carol, &mut rx, before + after + 1).await;
    script.tell("done");
    script.finish();
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_a_browser_gets_documented_errors_and_harms_no_one() {
    let stack = Stack::start().await;
    let (a, b) = (stack.uid_on("bad", "edge-1"), stack.uid_on("ok", "edge-2"));
    let (carol, mut rx) = rust_user(&stack, 0, "carol").await;
    let mut script = stack.browser("bad", json!({"names": [a, b], "rust": "carol"}));
    script.expect("ready");
    // The misbehaving browser's message after its errors reaches carol.
    let pushes = collect_route(&mut rx, "onChat", 1).await;
    let last = pushes.last().unwrap();
    assert_eq!(support::body(last)["msg"], json!("still here"));
    assert_eq!(support::body(last)["from"], json!(a));
    carol.send("lobby", "rust is fine").await.unwrap();
    script.tell("rust-sent");
    let result = script.expect("result");
    script.finish();
    let ans = &result["answers"];
    assert_eq!(
        ans["beforeLogin"],
        json!({"code": 401, "message": "route `chat.send` needs a logged-in session: call connector.enter first"})
    );
    assert_eq!(
        ans["unknownRoute"],
        json!({"code": 404, "message": "unknown route `nope.nothing`"})
    );
    assert_eq!(ans["oversize"]["code"], json!(413));
    let oversize = ans["oversize"]["message"].as_str().unwrap();
    assert!(
        oversize.ends_with("exceeds the maximum of 65536 bytes"),
        "{oversize}"
    );
    assert_eq!(
        ans["unknownType"],
        json!({"code": 422, "message": "unknown frame type 0x7f"})
    );
    assert_eq!(
        ans["wrongFrame"],
        json!({"code": 422, "message": "expected a Request or Notify frame on a request stream, got Push"})
    );
    assert_eq!(
        ans["after"]["state"],
        json!("open"),
        "the connection lives on"
    );
    // The well-behaved browser saw both messages, in order.
    let msgs: Vec<&str> = result[b.as_str()]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[2].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["still here", "rust is fine"]);
    carol.close().await;
}

/// The JavaScript client's codec tests (node's test runner), so `cargo test` runs them too.
#[test]
fn javascript_client_unit_tests_pass() {
    let out = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=tap")
        .arg("client/")
        .current_dir(web_dir())
        .output()
        .expect("run node (install nodejs)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "node --test web/client/ failed");
    assert!(text.contains("# fail 0"), "{text}");
    assert!(!text.contains("# pass 0"), "no JavaScript test ran");
}

/// The JavaScript client's JSDoc types, checked by TypeScript (`tsc -p web/client`, strict).
#[test]
fn javascript_client_types_check() {
    check_node_modules();
    let tsc = web_dir().join("node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing: run `npm ci` in web/ (.ci/run does)",
        tsc.display()
    );
    let out = Command::new("node")
        .arg(tsc)
        .args(["-p", "client"])
        .current_dir(web_dir())
        .output()
        .expect("run node (install nodejs)");
    assert!(
        out.status.success(),
        "type errors in web/client:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
