//! Pomelo compatibility, end to end: a real redis-server, two edges with the Pomelo listener on,
//! a chat backend, Pomelo's own unmodified client (`pomelo-jsclient-websocket`) and encoders
//! (`pomelo-protocol`, `pomelo-protobuf`) run by Node's test runner (`tests/pomelo/*.test.js`),
//! and a native roomcast client in the same room.
//!
//! Needs `node` and `tests/pomelo/node_modules` (`.ci/run` runs `npm ci` there); without them
//! these tests fail, saying so.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use roomcast_client::Push;
use support::{body, Env};

/// The heartbeat the test edges announce; Pomelo's timeout is twice that. Short, so the timeout
/// test is quick; not shorter, so Pomelo's client (which gives up after twice the interval
/// without hearing from the edge) stays connected on a busy machine.
const HEARTBEAT_SECS: u64 = 2;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pomelo")
}

/// Fails (never skips) when Node.js or the npm packages are missing.
fn require_node() {
    let version = std::process::Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("`node` cannot be run ({e}): the Pomelo tests need Node.js >= 18 (.ci/run installs it)")
        });
    assert!(version.status.success(), "`node --version` failed");
    for package in [
        "pomelo-jsclient-websocket",
        "pomelo-protocol",
        "pomelo-protobuf",
        "ws",
    ] {
        let dir = node_dir().join("node_modules").join(package);
        assert!(
            dir.is_dir(),
            "{} is missing: run `npm ci` in tests/pomelo (.ci/run does)",
            dir.display()
        );
    }
}

fn start_env() -> Env {
    start_env_with(&[])
}

fn start_env_with(extra: &[&str]) -> Env {
    require_node();
    let hb = HEARTBEAT_SECS.to_string();
    let mut args = vec![
        "--pomelo-listen",
        "127.0.0.1:0",
        "--pomelo-heartbeat-secs",
        &hb,
        "--handshake-timeout-ms",
        "2000",
    ];
    args.extend_from_slice(extra);
    let env = Env::start_with(&["edge-a", "edge-b"], &["chat-1"], &args, &[]);
    for e in &env.edges {
        assert!(
            e.pomelo.is_some(),
            "edge {} reported no Pomelo address",
            e.id
        );
    }
    env
}

/// A running `node --test`, its output read as it comes (a full pipe would stall it).
struct NodeRun {
    child: tokio::process::Child,
    output: tokio::task::JoinHandle<String>,
}

/// `node --test <file>` in tests/pomelo with the stack's addresses in the environment.
fn node_test(env: &Env, file: &str, extra: &[(&str, String)]) -> NodeRun {
    let mut cmd = tokio::process::Command::new("node");
    // TAP whatever Node's default reporter: `finish` reads its `# fail 0`.
    cmd.arg("--test")
        .arg("--test-reporter=tap")
        .arg(file)
        .current_dir(node_dir())
        .env("POMELO_GATE", env.edges[0].pomelo.unwrap().to_string())
        .env(
            "POMELO_HEARTBEAT_TIMEOUT_MS",
            (HEARTBEAT_SECS * 2000).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start node --test");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut a, mut b) = (String::new(), String::new());
        let _ = tokio::join!(out.read_to_string(&mut a), err.read_to_string(&mut b));
        format!("{a}\n{b}")
    });
    NodeRun { child, output }
}

/// Waits (bounded) for the node run; panics with its output unless every test passed.
async fn finish(mut run: NodeRun, what: &str) {
    let status = tokio::time::timeout(Duration::from_secs(180), run.child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what}: node --test did not finish within 180 s"))
        .expect("node --test exit status");
    let text = run.output.await.expect("node output");
    println!("{text}");
    assert!(status.success(), "{what}: node tests failed:\n{text}");
    assert!(
        text.contains("# fail 0"),
        "{what}: unexpected output:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pomelo_demo_flow_mixed_with_a_native_client() {
    let env = start_env();
    let carol = env.connect("carol").await;
    let mut rx = carol.pushes().expect("pushes");
    carol.enter("lobby").await.expect("enter");
    let out = std::env::temp_dir().join(format!("roomcast-pomelo-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut run = node_test(
        &env,
        "demo.test.js",
        &[
            ("ROOMCAST_NATIVE_UID", "carol".into()),
            ("POMELO_ROOM", "lobby".into()),
            ("POMELO_OUT", out.display().to_string()),
        ],
    );

    // Carol answers Alice's first message with her own burst, interleaving with Alice's.
    let mut seen: Vec<Push> = Vec::new();
    let mut answered = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { panic!("carol's connection ended") };
                let hello = p.route == "onChat" && body(&p)["msg"] == "hello from alice";
                seen.push(p);
                if hello && !answered {
                    answered = true;
                    carol.send("lobby", "native hello").await.expect("send");
                    for i in 0..20 {
                        carol.send("lobby", &format!("n{i}")).await.expect("send");
                    }
                }
            }
            s = run.child.wait() => {
                s.expect("node exit status");
                break;
            }
            _ = tokio::time::sleep_until(deadline) => panic!("node --test did not finish within 180 s"),
        }
    }
    // What arrived meanwhile (Bob's onLeave may still be on its way).
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        seen.push(p);
    }
    // Asserts the node run passed (the child keeps its exit status).
    finish(run, "demo.test.js").await;

    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("bob's recording")).unwrap();
    let _ = std::fs::remove_file(&out);
    let bob = recorded["bob"].as_str().unwrap().to_string();

    // Carol saw the Pomelo users join, chat (sender is the session's uid) and leave, in one
    // strictly increasing seq order.
    let lobby: Vec<&Push> = seen.iter().filter(|p| p.rid == "lobby").collect();
    let seqs: Vec<u64> = lobby.iter().map(|p| p.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs not increasing: {seqs:?}"
    );
    let events: Vec<String> = lobby
        .iter()
        .map(|p| {
            let b = body(p);
            match p.route.as_str() {
                "onChat" => format!(
                    "{}:{}",
                    b["from"].as_str().unwrap(),
                    b["msg"].as_str().unwrap()
                ),
                r => format!("{r} {}", b["user"].as_str().unwrap_or("")),
            }
        })
        .collect();
    for want in [
        "onAdd alice".to_string(),
        format!("onAdd {bob}"),
        "alice:hello from alice".to_string(),
        format!("onLeave {bob}"),
    ] {
        assert!(
            events.contains(&want),
            "carol never saw `{want}`: {events:?}"
        );
    }
    assert!(
        !events.iter().any(|e| e.contains("psst")),
        "a private message reached a third member"
    );
    // One order: the room's messages reached Bob (Pomelo, other edge) in Carol's seq order.
    let burst: Vec<String> = events
        .iter()
        .filter(|e| {
            e.split_once(':').is_some_and(|(_, m)| {
                m.len() > 1
                    && (m.starts_with('a') || m.starts_with('n'))
                    && m[1..].bytes().all(|b| b.is_ascii_digit())
            })
        })
        .cloned()
        .collect();
    let at_bob: Vec<String> = recorded["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(burst.len(), 40, "carol's burst messages: {burst:?}");
    assert_eq!(
        at_bob, burst,
        "Bob (Pomelo) and Carol (native) disagree on the order"
    );
    // The two bursts really interleaved at least once (else the order check proves little).
    let switches = burst
        .windows(2)
        .filter(|w| w[0].starts_with("alice") != w[1].starts_with("alice"))
        .count();
    println!("burst order switches between senders: {switches}");
    carol.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pomelo_heartbeats_tcp_and_bad_packages() {
    let env = start_env();
    let run = node_test(&env, "misc.test.js", &[]);
    finish(run, "misc.test.js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pomelo_production_enter_needs_a_jwt_in_the_body() {
    let env = start_env_with(&["--no-dev-tokens"]);
    let token = support::token("erin", &["secure"]);
    let run = node_test(&env, "auth.test.js", &[("POMELO_TOKEN_ERIN", token)]);
    finish(run, "auth.test.js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pomelo_slow_consumer_is_closed_and_others_get_everything() {
    // A small queue, so that a few thousand 4 KiB pushes overflow it once the socket buffers
    // are full; rate limits out of the way of the sender.
    let env = start_env_with(&[
        "--push-queue",
        "64",
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
    ]);
    let run = node_test(
        &env,
        "slow.test.js",
        &[("POMELO_SLOW_MESSAGES", "4000".to_string())],
    );
    finish(run, "slow.test.js").await;
}
