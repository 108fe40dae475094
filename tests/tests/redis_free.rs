//! README's first command on a machine without Redis: `roomcast-dev up` with no `REDIS_URL` and
//! no `redis-server` on `PATH` runs the Redis-free mode (edges and the chat service in one
//! process on the in-memory engine), says so, and gives a working chat to real QUIC clients that
//! find their edge through the gate; SIGTERM stops it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roomcast_client::{Client, ClientOptions, Push};
use roomcast_e2e::cluster::Certs;

/// Start-up of a debug build on a busy machine can be slow.
const READY_WAIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(15);

async fn next_chat(rx: &mut tokio::sync::mpsc::Receiver<Push>) -> Push {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let push = tokio::time::timeout(left, rx.recv())
            .await
            .expect("an onChat push in time")
            .expect("push stream open");
        if push.route == "onChat" {
            return push;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_stack_runs_in_memory_and_chat_works() {
    let certs_dir =
        std::env::temp_dir().join(format!("roomcast-redis-free-{}", std::process::id()));
    let port = roomcast_e2e::stack::free_port_pair().expect("free ports");
    // An empty PATH: there is no redis-server to find, as on a fresh machine with only Rust.
    let empty = std::env::temp_dir().join(format!("roomcast-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast-dev"))
        .args(["up", "--first-port", &port.to_string(), "--web-port", "0"])
        .arg("--certs")
        .arg(&certs_dir)
        .env_remove("REDIS_URL")
        .env_remove("ROOMCAST_MEMORY")
        .env("PATH", &empty)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start roomcast-dev up");
    let rx = roomcast_e2e::child::stdout_lines(&mut child, "stack");
    let deadline = Instant::now() + READY_WAIT;
    let mut said_mode = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("the stack printed no ready line within {READY_WAIT:?}");
        };
        said_mode |= line.contains("running the Redis-free mode");
        if line.contains("stops everything") {
            break;
        }
    }
    assert!(said_mode, "the stack did not say it runs without Redis");

    // Real clients, through the gate (edge-1), as README's CLI does.
    let certs = Certs::ensure(&certs_dir).unwrap();
    let gate = format!("127.0.0.1:{port}").parse().unwrap();
    let mut opts = ClientOptions::new(gate, certs.ca.clone());
    opts.request_timeout = WAIT;
    let alice = Client::connect(opts.clone(), "alice").await.expect("alice");
    let bob = Client::connect(opts.clone(), "bob").await.expect("bob");
    let mut arx = alice.pushes().unwrap();
    let mut brx = bob.pushes().unwrap();
    alice.enter("lobby").await.expect("alice enters");
    let entered = bob.enter("lobby").await.expect("bob enters");
    assert_eq!(entered.users, ["alice", "bob"]);
    // Backends register once a second: the first send may find none yet (502); retry briefly.
    let send_deadline = Instant::now() + WAIT;
    let sent = loop {
        match alice.send("lobby", "hello from memory").await {
            Ok(sent) => break sent,
            Err(e) if Instant::now() < send_deadline => {
                println!("send not served yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    };
    for rx in [&mut arx, &mut brx] {
        let got = next_chat(rx).await;
        assert_eq!((got.rid.as_str(), got.seq), ("lobby", sent.seq.unwrap()));
        assert!(String::from_utf8_lossy(&got.body).contains("hello from memory"));
    }
    alice.close().await;
    bob.close().await;

    // SIGTERM stops the whole thing (one process: nothing else can be left behind).
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let stop_deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > stop_deadline {
            let _ = child.kill();
            panic!("the stack did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let _ = std::fs::remove_dir_all(&certs_dir);
    let _ = std::fs::remove_dir_all(&empty);
}
