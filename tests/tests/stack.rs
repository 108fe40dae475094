//! `roomcast-dev up` (the dev stack) leaves nothing behind: the real binary is started on free
//! ports, signalled, and every child it started (redis-server, chat backend, edges) must be gone
//! within a bound — after SIGTERM and SIGHUP (handled: children stopped, then the stack exits 0)
//! and after SIGKILL of the stack (not handleable: the kernel's parent-death signal stops them).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start-up of a debug-build stack on a busy machine can be slow.
const READY_WAIT: Duration = Duration::from_secs(90);
/// The stack's own bound is 6 s for the nodes (edges drain 2 s); generous on a loaded machine.
const STOP_WAIT: Duration = Duration::from_secs(25);

/// A process identified by pid *and* start time, so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: u32,
    start: u64,
}

/// (state, start time) from `/proc/<pid>/stat`, or `None` if there is no such process.
fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    Some((fields[0].chars().next()?, fields[19].parse().ok()?))
}

fn proc_of(pid: u32) -> Proc {
    let (_, start) = stat(pid).unwrap_or_else(|| panic!("process {pid} does not exist"));
    Proc { pid, start }
}

/// Still running: exists, is the same process, and is not a zombie.
fn running(p: Proc) -> bool {
    matches!(stat(p.pid), Some((state, start)) if start == p.start && state != 'Z' && state != 'X')
}

/// The direct children of `pid`, from `/proc/<pid>/task/*/children`.
fn children_of(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        for c in std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
        {
            out.insert(c.parse().unwrap());
        }
    }
    out
}

/// The running stack and the children it reported.
struct Stack {
    child: Child,
    children: Vec<Proc>,
    certs: std::path::PathBuf,
    /// The chat page's address, as printed.
    page: Option<String>,
}

impl Stack {
    fn start(name: &str) -> Stack {
        let certs =
            std::env::temp_dir().join(format!("roomcast-stack-test-{}-{name}", std::process::id()));
        let port = roomcast_e2e::stack::free_port_pair().expect("free ports");
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast-dev"))
            .args(["up", "--edges", "2", "--first-port", &port.to_string()])
            // Any free port for the chat page: stack tests run side by side.
            .args(["--web-port", "0"])
            .arg("--certs")
            .arg(&certs)
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start roomcast-dev up");
        let rx = roomcast_e2e::child::stdout_lines(&mut child, "stack");
        let deadline = Instant::now() + READY_WAIT;
        let mut pids = BTreeSet::new();
        let mut page = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    panic!(
                        "the stack printed no ready line within {READY_WAIT:?} ({e}; exit status {status:?})"
                    );
                }
            };
            if let Some((_, pid)) = line.rsplit_once(" pid ") {
                pids.insert(pid.trim().parse::<u32>().expect("pid after `pid `"));
            }
            if line.trim_start().starts_with("http://127.0.0.1:") {
                page = Some(line.trim().to_string());
            }
            if line.contains("stops everything") {
                break;
            }
        }
        // redis-server, chat-1, edge-1, edge-2 — and they are all the stack's children.
        assert_eq!(pids.len(), 4, "the stack reported {pids:?}");
        assert_eq!(
            children_of(child.id()),
            pids,
            "the reported pids are not the stack's children"
        );
        let children = pids.iter().map(|&p| proc_of(p)).collect();
        Stack {
            child,
            children,
            certs,
            page,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the stack to exit; its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the stack did not exit within {STOP_WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts that every child is gone within `wait`.
    fn assert_children_gone(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left: Vec<Proc> = self
                .children
                .iter()
                .copied()
                .filter(|&p| running(p))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "children still running {wait:?} after the stack stopped: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Never leave anything behind, even when an assertion failed.
        for p in &self.children {
            if running(*p) {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.pid.to_string()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

/// SIGTERM or SIGHUP: the stack stops its children itself, waits for them, and exits 0.
fn stops_everything_on(sig: &str) {
    let mut stack = Stack::start(sig);
    let started = Instant::now();
    stack.signal(sig);
    let status = stack.wait_exit();
    println!(
        "stack exited with {status} {:?} after {sig}",
        started.elapsed()
    );
    assert!(
        status.success(),
        "the stack exited with {status} after {sig}"
    );
    // It waited for its children before exiting: nothing may be left at all.
    stack.assert_children_gone(Duration::from_millis(500));
}

/// `GET path` from the page server at `page` (`http://127.0.0.1:port/`): status line and body.
fn http_get(page: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let addr = page.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the chat page");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn the_stack_serves_the_chat_page_and_what_browsers_need() {
    let mut stack = Stack::start("PAGE");
    let page = stack
        .page
        .clone()
        .expect("the stack printed the chat page's address");
    let (status, body) = http_get(&page, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("<title>roomcast chat</title>"), "{body}");
    let (status, body) = http_get(&page, "/client/roomcast.js");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("export class RoomcastClient"));
    let (_, body) = http_get(&page, "/config.json");
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON config");
    let gates = config["gates"].as_array().expect("gates");
    assert_eq!(gates.len(), 2, "{config}");
    assert!(
        gates[0].as_str().unwrap().ends_with("/roomcast"),
        "{config}"
    );
    let hash = config["certificateHashes"][0].as_str().expect("a hash");
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        http_get(&page, "/../Cargo.toml").0,
        "HTTP/1.1 404 Not Found"
    );
    stack.signal("TERM");
    assert!(stack.wait_exit().success());
}

#[test]
fn sigterm_stops_every_child() {
    stops_everything_on("TERM");
}

#[test]
fn sighup_stops_every_child() {
    stops_everything_on("HUP");
}

#[test]
fn sigint_to_the_stack_alone_stops_every_child() {
    // Ctrl-C signals the whole process group; `kill -INT <pid>` reaches only the stack.
    stops_everything_on("INT");
}

#[test]
fn a_stack_killed_hard_takes_its_children_along() {
    let mut stack = Stack::start("KILL");
    stack.signal("KILL");
    let status = stack.wait_exit();
    assert!(!status.success());
    // Parent-death signal (SIGTERM): edges drain (2 s) and exit, redis-server exits.
    stack.assert_children_gone(STOP_WAIT);
}
