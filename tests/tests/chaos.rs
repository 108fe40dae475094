//! The chaos runner end to end, short: real processes, edges and backends killed (`kill -9`) and
//! restarted under traffic and churn — faults the system is known to survive — and the history
//! checker must find no violation. This keeps the runner and the checker exercised in CI; the
//! long runs with every fault kind are `cargo scenario chaos` (see ARCHITECTURE.md § Guarantees).

use std::time::Duration;

use roomcast_e2e::chaos::{self, ChaosConfig, Fault};
use roomcast_e2e::cluster::Certs;

#[test]
fn killed_edges_and_backends_break_no_promise_the_checker_knows() {
    let dir = std::env::temp_dir().join(format!("roomcast-chaos-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ChaosConfig {
        bin: env!("CARGO_BIN_EXE_roomcast-dev").into(),
        certs: Certs::for_tests().expect("certificates"),
        duration: Duration::from_secs(10),
        // Draws kill-backend, then kill-edge (the choices depend only on the seed).
        seed: 3,
        edges: 2,
        backends: 2,
        rooms: 2,
        senders: 2,
        observers: 2,
        churners: 2,
        rate: 10.0,
        faults: vec![Fault::KillEdge, Fault::KillBackend],
        fault_gap_ms: (1500, 2500),
        settle: Duration::from_secs(25),
        history: dir.join("history.jsonl"),
    };
    let outcome = chaos::run(&cfg).expect("the chaos run itself");
    let r = &outcome.report;
    println!("{}", r.summary());
    assert!(
        r.ok(),
        "violations (history kept in {}):\n{}",
        outcome.history.display(),
        r.summary()
    );
    // The run did something worth checking.
    assert!(
        r.faults.get("kill-edge").copied().unwrap_or(0) >= 1,
        "{}",
        r.summary()
    );
    assert!(
        r.faults.get("kill-backend").copied().unwrap_or(0) >= 1,
        "{}",
        r.summary()
    );
    assert!(r.accepted >= 30, "{}", r.summary());
    // Both observers are in both rooms: every accepted send is checked against each of them,
    // and some of those deliveries were actually compared (not all excused by a gap).
    assert!(r.expected >= 2 * r.accepted, "{}", r.summary());
    assert!(r.expected > r.excused_by_gap + 10, "{}", r.summary());
    assert!(r.presence_checked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let base = ChaosConfig {
        bin: "/nonexistent".into(),
        certs: Certs::for_tests().expect("certificates"),
        duration: Duration::from_secs(1),
        seed: 1,
        edges: 2,
        backends: 1,
        rooms: 1,
        senders: 1,
        observers: 1,
        churners: 0,
        rate: 1.0,
        faults: vec![],
        fault_gap_ms: (1000, 2000),
        settle: Duration::from_secs(1),
        history: std::env::temp_dir().join("unused.jsonl"),
    };
    assert!(base.validate().is_ok());
    for (change, says) in [
        (
            ChaosConfig {
                edges: 1,
                ..base.clone()
            },
            "--edges",
        ),
        (
            ChaosConfig {
                rooms: 65,
                ..base.clone()
            },
            "--rooms",
        ),
        (
            ChaosConfig {
                rate: 0.0,
                ..base.clone()
            },
            "--rate",
        ),
        (
            ChaosConfig {
                rate: f64::NAN,
                ..base.clone()
            },
            "--rate",
        ),
        (
            ChaosConfig {
                observers: 0,
                ..base.clone()
            },
            "--observers",
        ),
    ] {
        let e = chaos::run(&change).err().expect("refused");
        assert!(e.to_string().contains(says), "{e:#}");
    }
    let e = Fault::parse_list("kill-edge,explode").unwrap_err();
    assert!(e.to_string().contains("unknown fault `explode`"), "{e}");
    assert_eq!(Fault::parse_list("all").unwrap(), Fault::ALL.to_vec());
}
