//! Settings every process must share: a process whose history, presence or id settings differ
//! from the deployment's (the `rc:settings` hash the first process wrote) refuses to start and
//! says which setting differs and both values.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roomcast_e2e::cluster::{Certs, ClusterConfig};
use roomcast_e2e::redis_server::RedisServer;

/// Runs `roomcast-dev <role> …` to completion (it must exit by itself) and returns
/// (success, stderr).
fn run_to_exit(bin: &str, role: &str, args: &[String]) -> (bool, String) {
    let mut child = Command::new(bin)
        .arg(role)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.success(),
                String::from_utf8_lossy(&out.stderr).into(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{role} did not exit within 30 s (it should refuse to start)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_process_with_other_shared_settings_refuses_to_start() {
    let redis = RedisServer::start().expect("redis-server");
    let cluster = ClusterConfig {
        bin: env!("CARGO_BIN_EXE_roomcast-dev").into(),
        redis_url: redis.url(),
        prefix: "rc".into(),
        certs: Certs::for_tests().expect("certificates"),
        jwt_secret: "secret".into(),
        dev_tokens: false,
    };
    // The first process writes the settings.
    let _chat = cluster.chat("chat-a", &[]).expect("first backend starts");
    let _edge = cluster
        .edge("edge-a", &[])
        .expect("an edge with the same settings starts");
    let c = &cluster.certs;
    let edge_args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "--id",
            "edge-b",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &cluster.redis_url,
            "--cert",
            &c.edge_cert.display().to_string(),
            "--key",
            &c.edge_key.display().to_string(),
            "--ca",
            &c.ca.display().to_string(),
            "--jwt-secret",
            "secret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (ok, err) = run_to_exit(
        env!("CARGO_BIN_EXE_roomcast-dev"),
        "edge",
        &edge_args(&["--history-len", "5"]),
    );
    assert!(!ok, "an edge with another history length started");
    assert!(
        err.contains("history_len") && err.contains("is 5") && err.contains("1000"),
        "the error names the setting and both values: {err}"
    );
    let (ok, err) = run_to_exit(
        env!("CARGO_BIN_EXE_roomcast-dev"),
        "edge",
        &edge_args(&["--ascii-ids"]),
    );
    assert!(!ok && err.contains("ascii_ids"), "{err}");
    let chat_args: Vec<String> = [
        "--id",
        "chat-b",
        "--redis-url",
        &cluster.redis_url,
        "--cert",
        &c.backend_cert.display().to_string(),
        "--key",
        &c.backend_key.display().to_string(),
        "--ca",
        &c.ca.display().to_string(),
        "--presence-max-members",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, err) = run_to_exit(env!("CARGO_BIN_EXE_roomcast-dev"), "chat", &chat_args);
    assert!(!ok && err.contains("presence_max_members"), "{err}");
}
