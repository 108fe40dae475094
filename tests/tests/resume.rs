//! Resuming after the grace period: the member left (the others saw onLeave) and a late
//! `connector.resume` joins again: the others see onAdd, the resumed client never sees its own
//! onLeave or onAdd, and the answer (and an onGap push) report the seqs it missed.

mod support;

use std::time::Duration;

use roomcast_client::Client;
use support::{body, collect_route, next_push, Env, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_the_grace_period_rejoins_with_a_gap_and_no_own_presence() {
    let env = Env::start_with(&["edge-a"], &["chat-a"], &["--resume-grace-ms", "300"], &[]);
    let alice = env.connect_to(0, "alice").await;
    let mut arx = alice.pushes().unwrap();
    let mut opts = env.options(0);
    opts.reconnect = false;
    let bob = Client::connect_direct(opts.clone(), env.edges[0].addr, "bob")
        .await
        .unwrap();
    alice.enter("lobby").await.unwrap();
    let joined = bob.enter("lobby").await.unwrap();
    collect_route(&mut arx, "onAdd", 1).await;
    let old_session = bob.connection().welcome().session.clone();
    bob.connection()
        .quic()
        .close(quinn::VarInt::from_u32(99), b"simulated network loss");

    // After the grace period bob leaves; alice sees it, then talks to the room.
    let left = collect_route(&mut arx, "onLeave", 1).await;
    let on_leave = left.last().unwrap();
    assert_eq!(body(on_leave)["user"], "bob");
    let sent = alice.send("lobby", "while bob was away").await.unwrap();
    assert_eq!(sent.seq, Some(on_leave.seq + 1));

    let again = Client::connect_direct(opts, env.edges[0].addr, "bob")
        .await
        .unwrap();
    let mut brx = again.pushes().unwrap();
    let answer = support::resume_by_hand(&again, "bob", old_session, "lobby", joined.seq).await;
    let lobby = &answer.rooms["lobby"];
    assert_eq!(lobby.users, vec!["alice", "bob"]);
    // Missed: onLeave, the chat message and the rejoin's own onAdd.
    assert_eq!(lobby.seq, on_leave.seq + 2);
    assert_eq!(lobby.gap, Some((joined.seq + 1, lobby.seq)));

    // The others see bob join again.
    let added = collect_route(&mut arx, "onAdd", 1).await;
    let on_add = added.iter().find(|p| p.route == "onAdd").unwrap();
    assert_eq!(body(on_add)["user"], "bob");
    assert_eq!(on_add.seq, lobby.seq);

    // Bob gets the gap marker, then what follows his join: never his own onLeave/onAdd.
    let gap = next_push(&mut brx, WAIT).await.expect("an onGap push");
    assert_eq!(gap.route, "onGap", "{gap:?}");
    assert_eq!(gap.seq, lobby.seq);
    assert_eq!(body(&gap)["from"], joined.seq + 1);
    let after = alice.send("lobby", "welcome back").await.unwrap();
    let next = next_push(&mut brx, WAIT).await.expect("the next message");
    assert_eq!(
        (next.route.as_str(), next.seq),
        ("onChat", after.seq.unwrap())
    );
    assert!(
        next_push(&mut brx, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing else for bob"
    );
}
