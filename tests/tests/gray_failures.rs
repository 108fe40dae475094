//! Gray failures, injected into real processes: Redis restarted empty while clients keep
//! entering and sending, and an edge paused (SIGSTOP) past its lease, then resumed (SIGCONT).
//! Each test checks the promises an outside tester found broken: seqs are never reused, failed
//! requests say what happened (503 with a reason, never "not a member" of a room the client is
//! in, never 502 because the registry was wiped), and presence has one truth after a pause.
//! Times are printed (`--nocapture`) for ARCHITECTURE.md's Guarantees table.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use roomcast_client::Push;
use support::{body, next_push, Env, WAIT};
use tokio::sync::mpsc::Receiver;

/// Polls `check` until it holds; fails the test after `wait`.
async fn wait_until<F, Fut>(what: &str, wait: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + wait;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every push that arrives within `wait` after the last one (at most `wait` in total per push).
async fn drain(rx: &mut Receiver<Push>, wait: Duration) -> Vec<Push> {
    let mut out = Vec::new();
    while let Some(p) = next_push(rx, wait).await {
        out.push(p);
    }
    out
}

/// Redis restarts empty while a room is at seq N: a client entering right after it is back
/// gets a seq above N (never one others saw for another push), the full member list, and no
/// gap from before its join; meanwhile a sender gets 503/504 with a reason, never 403 or 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_empty_never_reuses_a_seq_nor_says_not_a_member() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = Arc::new(env.connect_to(0, "alice").await);
    let bob = env.connect_to(1, "bob").await;
    let carol = env.connect_to(0, "carol").await;
    let mut brx = bob.pushes().unwrap();
    let mut crx = carol.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    let mut last = 0;
    for i in 0..20 {
        last = alice
            .send("lobby", &format!("m{i}"))
            .await
            .unwrap()
            .seq
            .unwrap();
    }
    // Bob saw everything up to `last`.
    let deadline = Instant::now() + WAIT;
    let mut seen = BTreeSet::new();
    while seen.last() != Some(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_push(&mut brx, left)
            .await
            .expect("bob's pushes before the restart");
        seen.insert(p.seq);
    }

    let sending = tokio::spawn(send_through_the_outage(alice.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.redis.restart().unwrap();
    let back = Instant::now();

    // Carol enters as soon as Redis is back, retrying what the edge asks her to retry.
    let mut refusals = Vec::new();
    let entered = loop {
        match carol.enter("lobby").await {
            Ok(e) => break e,
            Err(e) => {
                assert_eq!(e.code(), Some(503), "enter during recovery: {e}");
                refusals.push(e.to_string());
                assert!(
                    back.elapsed() < WAIT * 2,
                    "carol never got in: {refusals:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    println!(
        "carol entered {:?} after redis came back (seq {}, {} refusals, first: {:?})",
        back.elapsed(),
        entered.seq,
        refusals.len(),
        refusals.first()
    );
    assert!(
        refusals.iter().all(|r| r.contains("recovering")
            || r.contains("unavailable")
            || r.contains("re-registering")),
        "{refusals:?}"
    );
    assert!(
        entered.seq > last,
        "carol's join got seq {} although bob already saw up to {last}",
        entered.seq
    );
    assert_eq!(
        entered.users,
        ["alice", "bob", "carol"],
        "the enter answer lists every member"
    );
    // Bob sees carol's onAdd with a seq he never saw for anything else.
    let mut gaps = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_push(&mut brx, left)
            .await
            .expect("carol's onAdd reaches bob");
        if p.route == "onAdd" {
            assert_eq!(body(&p)["user"], "carol");
            assert!(!seen.contains(&p.seq), "onAdd reused seq {}", p.seq);
            break;
        }
        if p.route == "onGap" {
            gaps.push((body(&p)["from"].as_u64().unwrap(), p.seq));
        }
        assert!(seen.insert(p.seq), "bob got seq {} twice", p.seq);
    }
    // The room's new numbering starts above the old one; bob, who was in the room, is told of
    // the jump by an onGap (the history from before the restart is gone), which names no seq
    // he had.
    assert!(!gaps.is_empty(), "no onGap for the new numbering");
    for (from, to) in gaps {
        assert!(
            seen.range(from..=to).all(|s| *s == to),
            "the gap {from}..={to} covers seqs bob got: {seen:?}"
        );
    }
    // Carol gets nothing from before her join.
    for p in drain(&mut crx, Duration::from_millis(500)).await {
        assert!(
            p.route != "onGap" && (p.seq == 0 || p.seq > entered.seq),
            "carol got {p:?} from before her join at {}",
            entered.seq
        );
    }

    check_sends(&sending.await.unwrap(), last);
}

/// Sends at 20 msg/s for 16 s (through a Redis outage and the recovery after it), recording
/// each failure (status, text) and each accepted (time into the run, seq).
async fn send_through_the_outage(alice: Arc<roomcast_client::Client>) -> Sent {
    let mut failures: Vec<(Option<u16>, String)> = Vec::new();
    let mut accepted = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    // Until well after the recovery window, whatever the machine's speed.
    while start.elapsed() < Duration::from_secs(16) {
        match alice.send("lobby", &format!("s{i}")).await {
            Ok(s) => accepted.push((start.elapsed(), s.seq.unwrap())),
            Err(e) => failures.push((e.code(), e.to_string())),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (failures, accepted)
}

type Sent = (Vec<(Option<u16>, String)>, Vec<(Duration, u64)>);

/// Checks what a sender through the outage got: every failure a 503 or 504 with a reason
/// (never 403 "not a member", never 502 "no live backend"), seqs increasing and above `last`,
/// and sending working again after the recovery.
fn check_sends((failures, accepted): &Sent, last: u64) {
    println!(
        "sender: {} accepted, {} failed: {:?}",
        accepted.len(),
        failures.len(),
        failures.iter().map(|f| f.0).collect::<BTreeSet<_>>()
    );
    let unavailable = accepted
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    println!("longest stretch without an accepted send: {unavailable:?}");
    for (code, msg) in failures {
        assert!(
            matches!(code, Some(503) | Some(504)),
            "a send failed with {code:?} {msg}"
        );
    }
    let seqs: Vec<u64> = accepted.iter().map(|(_, s)| *s).collect();
    assert!(
        seqs.iter().all(|s| *s > last),
        "a send reused a seq: {seqs:?}"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "seqs not increasing: {seqs:?}"
    );
    assert!(
        accepted
            .last()
            .is_some_and(|(t, _)| *t > Duration::from_secs(12)),
        "sending works again after the recovery"
    );
}

/// Redis down 1.5 s, then back empty: a member sending at 20 msg/s through it is answered
/// 503/504 with a reason — never 403 "not a member" (the store forgot it, the edge still has
/// it), never 502 (the backend registry was wiped too) — and continues afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_through_a_redis_restart_fail_with_503_never_403_or_502() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = Arc::new(env.connect_to(0, "alice").await);
    let bob = env.connect_to(1, "bob").await;
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    let last = alice.send("lobby", "before").await.unwrap().seq.unwrap();
    let sending = tokio::spawn(send_through_the_outage(alice.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.redis.restart().unwrap();
    check_sends(&sending.await.unwrap(), last);
}

/// An edge paused past its lease: another edge reaps its members (others get onLeave). On
/// SIGCONT they come back *visibly* (others get onAdd with a seq), the store and everyone's
/// view agree, nobody gets an onLeave about itself, and their requests queued during the
/// pause never get "not a member".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_edge_does_not_resurrect_its_members_silently() {
    let env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    // Bob and carol on edge-b, with edge-a as their gate for reconnects.
    let bob = Arc::new(env.connect_via(1, 0, "bob").await);
    let carol = env.connect_via(1, 0, "carol").await;
    let mut arx = alice.pushes().unwrap();
    let mut brx = bob.pushes().unwrap();
    let mut crx = carol.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();
    carol.enter("lobby").await.unwrap();

    // Alice's view of the room, maintained from her pushes only.
    let mut view: BTreeSet<String> = ["alice", "bob", "carol"].map(String::from).into();
    let mut alice_seqs = Vec::new();
    let mut apply = |p: &Push, view: &mut BTreeSet<String>| {
        let user = body(p)["user"].as_str().unwrap_or_default().to_string();
        match p.route.as_str() {
            "onAdd" => {
                view.insert(user);
            }
            "onLeave" => {
                view.remove(&user);
            }
            _ => {}
        }
        if p.seq > 0 {
            alice_seqs.push(p.seq);
        }
    };
    for p in drain(&mut arx, Duration::from_millis(300)).await {
        apply(&p, &mut view);
    }

    let paused = Instant::now();
    support::signal(env.edges[1].pid(), "STOP");
    // A request queued while the edge is stopped.
    let queued = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.send("lobby", "queued").await })
    };
    // Reaped: alice sees both leave.
    let deadline = Instant::now() + WAIT * 2;
    while view.contains("bob") || view.contains("carol") {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_push(&mut arx, left)
            .await
            .expect("the paused edge's members are reaped");
        apply(&p, &mut view);
    }
    let reaped = paused.elapsed();
    println!("paused edge's members reaped {reaped:?} after SIGSTOP");
    support::signal(env.edges[1].pid(), "CONT");
    let resumed = Instant::now();

    // They come back visibly: alice's view and the store agree on all three.
    let deadline = Instant::now() + WAIT * 3;
    while !(view.contains("bob") && view.contains("carol")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_push(&mut arx, left)
            .await
            .unwrap_or_else(|| panic!("bob and carol never came back in alice's view: {view:?}"));
        apply(&p, &mut view);
    }
    println!(
        "members visible again {:?} after SIGCONT",
        resumed.elapsed()
    );
    let mut r = env.redis().await;
    wait_until("the store lists all three", WAIT, || {
        let mut r = r.clone();
        async move {
            let m: HashMap<String, String> = r
                .hgetall("rc:room:{lobby}:members")
                .await
                .unwrap_or_default();
            m.len() == 3
        }
    })
    .await;
    // Settle, then the views agree for good.
    for p in drain(&mut arx, Duration::from_millis(1500)).await {
        apply(&p, &mut view);
    }
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    let stored: BTreeSet<String> = members.keys().cloned().collect();
    assert_eq!(view, stored, "alice's view and the store disagree");
    assert!(
        alice_seqs.windows(2).all(|w| w[1] > w[0]),
        "alice saw seqs out of order: {alice_seqs:?}"
    );

    // Nobody got an onLeave about itself.
    for (who, rx) in [("bob", &mut brx), ("carol", &mut crx)] {
        for p in drain(rx, Duration::from_millis(300)).await {
            assert!(
                !(p.route == "onLeave" && body(&p)["user"] == who),
                "{who} was told it left: {p:?}"
            );
        }
    }
    // The request queued during the pause was not answered "not a member".
    match queued.await.unwrap() {
        Ok(s) => println!("queued send accepted with seq {:?}", s.seq),
        Err(e) => {
            println!("queued send failed: {e}");
            assert_ne!(e.code(), Some(403), "queued send: {e}");
        }
    }
    // And the conversation continues for everyone.
    let sent = bob.send("lobby", "back").await.unwrap().seq.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = next_push(&mut arx, left)
            .await
            .expect("bob's message reaches alice");
        if p.route == "onChat" && p.seq == sent {
            break;
        }
    }
}

/// An edge killed and restarted (same id) while the store recovers from a reset: its previous
/// run's members, written back after the reset, are stale, and their onLeave is refused until
/// the recovery window closes. The edge waits that out instead of failing to start (the chaos
/// runner's "restart-failed"), then reaps them: the others see them leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restarted_during_the_recovery_window_starts_and_reaps_its_old_members() {
    let mut env = Env::start(&["edge-a", "edge-b"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let mut opts = env.options(1);
    opts.reconnect = false;
    let bob = roomcast_client::Client::connect_direct(opts, env.edges[1].addr, "bob")
        .await
        .unwrap();
    let mut arx = alice.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    bob.enter("lobby").await.unwrap();

    env.redis.kill();
    env.redis.restart().unwrap();
    let back = Instant::now();
    let mut r = env.redis().await;
    // edge-b writes bob back (silently) within a refresh.
    wait_until("bob written back", WAIT, || {
        let mut r = r.clone();
        async move {
            let m: Option<String> = r
                .hget("rc:room:{lobby}:members", "bob")
                .await
                .unwrap_or(None);
            m.is_some()
        }
    })
    .await;
    let addr = env.edges[1].addr.to_string();
    env.edges[1].kill();
    let restarted = env
        .cluster
        .edge_on("edge-b", &addr, &[])
        .expect("edge-b starts again during the recovery window");
    println!(
        "edge-b restarted {:?} after redis came back",
        back.elapsed()
    );
    env.edges[1] = restarted;
    let left = support::collect_route(&mut arx, "onLeave", 1).await;
    assert_eq!(body(left.last().unwrap())["user"], "bob");
    let members: HashMap<String, String> = r.hgetall("rc:room:{lobby}:members").await.unwrap();
    assert_eq!(members.keys().collect::<Vec<_>>(), ["alice"]);
    drop(bob);
}
