//! Resuming: after the grace period the member left (the others saw onLeave) and a late
//! `connector.resume` joins again: the others see onAdd, the resumed client never sees its own
//! onLeave or onAdd, and the answer (and an onGap push) report the seqs it missed. The SDK hands
//! each resume's answer to the application among the pushes, in seq order. A client's `since`
//! never moves a room's numbering.

mod support;

use std::time::Duration;

use roomcast_client::{Client, ON_RESUME};
use roomcast_protocol::protocol::Resumed;
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

/// A client's `since` is its own business: a resume claiming seqs the room never reached must
/// not move the room's numbering (it once became the room's seq floor, and a `since` near
/// 2^64 left the room's counter unable to count for everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_claiming_seqs_the_room_never_reached_does_not_move_its_numbering() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let alice = env.connect_to(0, "alice").await;
    let mut arx = alice.pushes().unwrap();
    alice.enter("lobby").await.unwrap();
    let before = alice.send("lobby", "before").await.unwrap().seq.unwrap();

    let mallory = env.connect_to(0, "mallory").await;
    let answer = support::resume_by_hand(
        &mallory,
        "mallory",
        "made-up-session".into(),
        "lobby",
        u64::MAX - 5,
    )
    .await;
    let lobby = &answer.rooms["lobby"];
    assert_eq!(lobby.seq, before + 1, "mallory's onAdd is the next seq");
    let added = collect_route(&mut arx, "onAdd", 1).await;
    assert_eq!(added.last().unwrap().seq, before + 1);

    let after = alice.send("lobby", "after").await.unwrap();
    assert_eq!(after.seq, Some(before + 2));
    let mut redis = env.redis().await;
    let seq: u64 = redis::cmd("GET")
        .arg("rc:room:{lobby}:seq")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(seq, before + 2);
}

/// The SDK resumes by itself after a loss and hands the edge's answer to the application as an
/// `onResume` push, placed by seq: the replayed pushes up to the answer's seq before it, the
/// later ones after it, every chat message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_hands_the_resume_answer_to_the_application_in_seq_order() {
    let env = Env::start(&["edge-a"], &["chat-a"]);
    let (alice, bob, mut brx) = env.alice_and_bob_in_lobby(0, 0).await;
    let alice = std::sync::Arc::new(alice);
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40 {
                let sent = alice.send("lobby", &format!("m{i}")).await.unwrap();
                seqs.push(sent.seq.unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seqs
        })
    };
    collect_route(&mut brx, "onChat", 5).await;
    bob.connection()
        .quic()
        .close(quinn::VarInt::from_u32(99), b"simulated network loss");
    assert_eq!(bob.reconnected(0, WAIT).await.unwrap(), 1);
    let sent = sender.await.unwrap();
    let last = *sent.last().unwrap();

    let mut after_loss = Vec::new();
    while after_loss.last().map(|p: &roomcast_client::Push| p.seq) != Some(last)
        || after_loss.iter().all(|p| p.route != ON_RESUME)
    {
        let p = next_push(&mut brx, WAIT)
            .await
            .expect("bob's pushes arrive");
        assert_ne!(p.route, "onGap", "{p:?}");
        after_loss.push(p);
    }
    let at: Vec<usize> = (0..after_loss.len())
        .filter(|&i| after_loss[i].route == ON_RESUME)
        .collect();
    assert_eq!(at.len(), 1, "one resume, one onResume: {after_loss:?}");
    let resume = &after_loss[at[0]];
    assert_eq!(resume.rid, "lobby");
    let answer: Resumed = resume.json().unwrap();
    assert_eq!(answer.users, vec!["alice", "bob"]);
    assert_eq!(answer.seq, resume.seq);
    assert_eq!(answer.gap, None);
    assert!(after_loss[..at[0]].iter().all(|p| p.seq <= resume.seq));
    assert!(after_loss[at[0] + 1..].iter().all(|p| p.seq > resume.seq));
    // Every chat message once, in order, across the loss.
    let chats: Vec<u64> = after_loss
        .iter()
        .filter(|p| p.route == "onChat")
        .map(|p| p.seq)
        .collect();
    assert!(chats.windows(2).all(|w| w[0] < w[1]), "{chats:?}");
    assert_eq!(chats.last(), Some(&last));
}
