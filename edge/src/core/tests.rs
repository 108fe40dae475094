//! Deterministic tests of the edge core, in the manner of quinn-proto's simulated tests: a fake
//! clock, a small in-memory model of the store's room scripts and of the bus, and a driver that
//! records what each session's streams would carry. No sockets, no Redis, no tokio.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomcast_protocol::protocol::close;

use super::*;

const GRACE: Duration = Duration::from_secs(10);
const DRAIN: Duration = Duration::from_secs(5);

/// One room as the store's scripts keep it.
#[derive(Default)]
struct Room {
    seq: u64,
    members: BTreeMap<String, ()>,
    history: BTreeMap<u64, String>,
}

/// The edge core with a recording driver, a fake store and a fake bus.
struct Sim {
    core: EdgeCore<SessionId>,
    now: Instant,
    next_sid: SessionId,
    rooms: HashMap<String, Room>,
    /// Published but not yet delivered by the bus: (rid, seq, text).
    bus: Vec<(String, u64, String)>,
    /// What each session's room stream carried: "seq:text" or "gap a-b".
    streams: HashMap<(SessionId, String), Vec<String>>,
    session_stream: HashMap<SessionId, Vec<String>>,
    fetches: Vec<(Fetched, u64)>,
    closed: Vec<(SessionId, u32)>,
    finished: Vec<(SessionId, String)>,
    unsubscribed: Vec<String>,
    checks: Vec<(String, String)>,
    leaves: Vec<(String, String, Vec<String>)>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            core: EdgeCore::new(CoreConfig {
                resume_grace: GRACE,
                drain: DRAIN,
                rate_limit: 100,
                rate_burst: 200,
                max_rooms_per_session: 4,
            }),
            now: Instant::now(),
            next_sid: 1,
            rooms: HashMap::new(),
            bus: Vec::new(),
            streams: HashMap::new(),
            session_stream: HashMap::new(),
            fetches: Vec::new(),
            closed: Vec::new(),
            finished: Vec::new(),
            unsubscribed: Vec::new(),
            checks: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// Runs one core input and carries out its effects the way the QUIC driver does.
    fn run<R>(&mut self, f: impl FnOnce(&mut EdgeCore<SessionId>, &mut Vec<Effect>) -> R) -> R {
        let mut out = Vec::new();
        let r = f(&mut self.core, &mut out);
        for effect in out {
            match effect {
                Effect::Feed { rid, actions } => {
                    for action in actions {
                        self.action(&rid, action);
                    }
                }
                Effect::ToSession { sid, frame } => {
                    self.session_stream
                        .entry(sid)
                        .or_default()
                        .push(text(&frame));
                }
                Effect::ToAll { frame } => {
                    let all: Vec<SessionId> = self.core.handles().copied().collect();
                    for sid in all {
                        self.session_stream
                            .entry(sid)
                            .or_default()
                            .push(text(&frame));
                    }
                }
                Effect::Finish { sid, rid } => self.finished.push((sid, rid)),
                Effect::Close { sid, code, .. } => self.closed.push((sid, code)),
                Effect::Unsubscribe { rid } => self.unsubscribed.push(rid),
                Effect::CheckClaim { uid, token } => self.checks.push((uid, token)),
                Effect::Leave { uid, token, rooms } => {
                    // The driver runs the leave script for each room (onLeave to the others).
                    for rid in &rooms {
                        self.store_leave(rid, &uid);
                    }
                    self.leaves.push((uid, token, rooms));
                }
            }
        }
        r
    }

    fn action(&mut self, rid: &str, action: Action) {
        match action {
            Action::Deliver { sid, frame, .. } => self
                .streams
                .entry((sid, rid.to_string()))
                .or_default()
                .push(text(&frame)),
            Action::Gap { sid, from, to, .. } => self
                .streams
                .entry((sid, rid.to_string()))
                .or_default()
                .push(format!("gap {from}-{to}")),
            Action::Fill { rid, after, upto } => {
                self.fetches.push((Fetched::Fill { rid, upto }, after))
            }
            Action::CatchUp {
                rid,
                sid,
                after,
                upto,
            } => self
                .fetches
                .push((Fetched::CatchUp { rid, sid, upto }, after)),
            Action::Disconnect { sid } => self.closed.push((sid, close::SLOW_CONSUMER)),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        self.run(|c, out| c.handle_timeout(now, out));
    }

    // ---- the fake store and bus ---------------------------------------------------------

    fn publish(&mut self, rid: &str, what: &str) -> u64 {
        let room = self.rooms.entry(rid.to_string()).or_default();
        room.seq += 1;
        room.history.insert(room.seq, what.to_string());
        self.bus.push((rid.to_string(), room.seq, what.to_string()));
        room.seq
    }

    /// The join script: a new member pushes onAdd; a member already there (resume) is moved
    /// silently. Returns (seq, added).
    fn store_join(&mut self, rid: &str, uid: &str) -> (u64, bool) {
        let room = self.rooms.entry(rid.to_string()).or_default();
        if room.members.insert(uid.to_string(), ()).is_some() {
            return (room.seq, false);
        }
        (self.publish(rid, &format!("onAdd {uid}")), true)
    }

    fn store_leave(&mut self, rid: &str, uid: &str) {
        let room = self.rooms.entry(rid.to_string()).or_default();
        if room.members.remove(uid).is_some() {
            self.publish(rid, &format!("onLeave {uid}"));
        }
    }

    /// Delivers what the bus carries, in order.
    fn deliver_bus(&mut self) {
        for (rid, seq, what) in std::mem::take(&mut self.bus) {
            let frame = Bytes::from(format!("{seq}:{what}"));
            // The driver hands an onLeave over with its uid (bus.rs decodes the body).
            match what.strip_prefix("onLeave ") {
                Some(uid) => self.run(|c, out| c.member_left_push(&rid, seq, uid, frame, out)),
                None => self.run(|c, out| c.room_push(&rid, seq, frame, out)),
            }
        }
    }

    /// Loses what the bus carries (pub/sub is at-most-once).
    fn lose_bus(&mut self) {
        self.bus.clear();
    }

    /// Answers the history fetches from the store's history.
    fn answer_fetches(&mut self) -> Vec<Option<(u64, u64)>> {
        let mut gaps = Vec::new();
        while !self.fetches.is_empty() {
            for (fetched, after) in std::mem::take(&mut self.fetches) {
                let (rid, upto) = match &fetched {
                    Fetched::Fill { rid, upto } | Fetched::CatchUp { rid, upto, .. } => {
                        (rid.clone(), *upto)
                    }
                };
                let entries: Vec<(u64, Bytes)> = self
                    .rooms
                    .get(&rid)
                    .map(|r| {
                        r.history
                            .range(after + 1..=upto)
                            .map(|(s, w)| (*s, Bytes::from(format!("{s}:{w}"))))
                            .collect()
                    })
                    .unwrap_or_default();
                gaps.push(self.run(|c, out| c.history_fetched(fetched, entries, out)));
            }
        }
        gaps
    }

    // ---- a client's requests, as the routes drive them ------------------------------------

    fn connect(&mut self) -> SessionId {
        let sid = self.next_sid;
        self.next_sid += 1;
        let now = self.now;
        self.run(|c, out| c.open(sid, format!("edge-1.{sid}"), sid, now, out));
        sid
    }

    fn login(&mut self, sid: SessionId, uid: &str, resumes: Option<&str>) {
        assert!(self.run(|c, out| c.bind(sid, uid, resumes, out)));
    }

    /// `connector.enter`: count, subscribe, join script, record. Returns the join seq.
    fn enter(&mut self, sid: SessionId, rid: &str) -> u64 {
        match self.core.begin_join(sid, rid).unwrap() {
            JoinStart::Subscribe => self.core.subscribed(rid),
            JoinStart::Ready => {}
            JoinStart::Already => panic!("already in {rid}"),
        }
        let uid = self.core.uid(sid).unwrap().to_string();
        let (seq, _) = self.store_join(rid, &uid);
        self.run(|c, out| c.joined(sid, rid, seq, JoinKind::Enter, out));
        seq
    }

    /// `connector.resume` of one room after seq `since`. Returns the answer's gap.
    fn resume(&mut self, sid: SessionId, rid: &str, since: u64) -> Option<(u64, u64)> {
        if self.core.begin_join(sid, rid).unwrap() == JoinStart::Subscribe {
            self.core.subscribed(rid);
        }
        let uid = self.core.uid(sid).unwrap().to_string();
        let was_member = self.rooms[rid].members.contains_key(&uid);
        let (seq, added) = self.store_join(rid, &uid);
        let kind = if added || !was_member {
            JoinKind::Rejoin { since }
        } else {
            JoinKind::Resume { since }
        };
        let gap = self.run(|c, out| c.joined(sid, rid, seq, kind, out));
        let replayed = self.answer_fetches();
        gap.or(replayed.into_iter().flatten().next())
    }

    fn lose_connection(&mut self, sid: SessionId) {
        let now = self.now;
        self.run(|c, out| c.closed(sid, false, now, out));
    }

    fn stream(&self, sid: SessionId, rid: &str) -> Vec<String> {
        self.streams
            .get(&(sid, rid.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The seqs of the room pushes a session's stream carried.
    fn seqs(&self, sid: SessionId, rid: &str) -> Vec<u64> {
        self.stream(sid, rid)
            .iter()
            .filter_map(|s| s.split_once(':')?.0.parse().ok())
            .collect()
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// alice and bob in `lobby`, three messages delivered to both.
fn lobby() -> (Sim, SessionId, SessionId) {
    let mut sim = Sim::new();
    let alice = sim.connect();
    sim.login(alice, "alice", None);
    sim.enter(alice, "lobby");
    let bob = sim.connect();
    sim.login(bob, "bob", None);
    sim.enter(bob, "lobby");
    for i in 1..=3 {
        sim.publish("lobby", &format!("m{i}"));
    }
    sim.deliver_bus();
    assert_eq!(
        sim.stream(bob, "lobby"),
        vec!["3:m1", "4:m2", "5:m3"],
        "bob gets what follows his join, not his own onAdd (2)"
    );
    (sim, alice, bob)
}

#[test]
fn resume_inside_the_grace_period_is_silent_and_replays_without_gap_or_duplicate() {
    let (mut sim, alice, bob) = lobby();
    let seen_by_alice = sim.stream(alice, "lobby").len();
    sim.lose_connection(bob);
    assert!(
        sim.leaves.is_empty(),
        "a lost connection must not leave at once"
    );
    assert_eq!(sim.core.poll_timeout(), Some(sim.now + GRACE));
    assert!(sim.unsubscribed.is_empty(), "alice still needs the room");

    for i in 4..=6 {
        sim.publish("lobby", &format!("m{i}"));
    }
    sim.deliver_bus();
    sim.advance(Duration::from_secs(5));
    assert!(sim.checks.is_empty());

    // Bob resumes on a new connection, having seen up to seq 5.
    let again = sim.connect();
    sim.login(again, "bob", Some("edge-1.2"));
    assert!(sim.closed.is_empty(), "the old connection is gone already");
    assert_eq!(
        sim.core.poll_timeout(),
        None,
        "the detached session is over"
    );
    // Live pushes arrive while the replay is being fetched: held, then delivered in order.
    sim.publish("lobby", "m7");
    let gap = {
        assert_eq!(
            sim.core.begin_join(again, "lobby").unwrap(),
            JoinStart::Ready,
            "the room's channel is still subscribed"
        );
        let (seq, added) = sim.store_join("lobby", "bob");
        assert!(!added, "a resume inside the grace period moves the member");
        let gap =
            sim.run(|c, out| c.joined(again, "lobby", seq, JoinKind::Resume { since: 5 }, out));
        sim.deliver_bus(); // m7 arrives before the history does
        gap.or(sim.answer_fetches().into_iter().flatten().next())
    };
    assert_eq!(gap, None);
    assert_eq!(
        sim.stream(again, "lobby"),
        vec!["6:m4", "7:m5", "8:m6", "9:m7"]
    );
    sim.publish("lobby", "m8");
    sim.deliver_bus();
    assert_eq!(sim.seqs(again, "lobby"), (6..=10).collect::<Vec<_>>());

    // The grace deadline passes: nothing happens, nobody saw bob leave or come back.
    sim.advance(GRACE);
    assert!(sim.checks.is_empty() && sim.leaves.is_empty());
    let presence: Vec<String> = sim.stream(alice, "lobby")[seen_by_alice..]
        .iter()
        .filter(|s| s.contains("onLeave") || s.contains("onAdd"))
        .cloned()
        .collect();
    assert!(presence.is_empty(), "alice saw {presence:?}");
}

#[test]
fn after_the_grace_period_the_member_leaves_and_a_late_resume_rejoins_with_a_gap() {
    let (mut sim, alice, bob) = lobby();
    sim.lose_connection(bob);
    sim.advance(GRACE - Duration::from_millis(1));
    assert!(sim.checks.is_empty(), "not before the deadline");
    sim.advance(Duration::from_millis(1));
    assert_eq!(
        sim.checks,
        vec![("bob".to_string(), "edge-1.2".to_string())]
    );
    assert_eq!(
        sim.core.poll_timeout(),
        None,
        "no deadline while the store is asked"
    );
    // The store still names bob's session: the detached session leaves and releases its claim.
    sim.run(|c, out| c.claim_checked("bob", "edge-1.2", true, out));
    assert_eq!(
        sim.leaves,
        vec![("bob".into(), "edge-1.2".into(), vec!["lobby".into()])]
    );
    sim.deliver_bus();
    assert_eq!(sim.stream(alice, "lobby").last().unwrap(), "6:onLeave bob");

    // A late resume: bob joins again (alice sees onAdd); bob never sees his own onLeave (6)
    // nor onAdd (7); the answer and an onGap push report 6..=7.
    let again = sim.connect();
    sim.login(again, "bob", Some("edge-1.2"));
    let gap = sim.resume(again, "lobby", 5);
    assert_eq!(gap, Some((6, 7)));
    sim.deliver_bus(); // the onAdd push races the join's answer and arrives after it
    sim.publish("lobby", "m4");
    sim.deliver_bus();
    assert_eq!(sim.stream(again, "lobby"), vec!["gap 6-7", "8:m4"]);
    assert!(sim
        .stream(alice, "lobby")
        .contains(&"7:onAdd bob".to_string()));
}

#[test]
fn a_resume_elsewhere_kicks_the_old_connection_and_its_cleanup_leaves_nothing() {
    let (mut sim, alice, bob) = lobby();
    // Another edge took over bob's claim and asks this edge to close the old session.
    sim.run(|c, out| c.kick("bob", "edge-1.2", out));
    assert_eq!(sim.closed, vec![(bob, close::REPLACED)]);
    // The connection ends as a lost one would (it was closed by us, not by the client).
    sim.lose_connection(bob);
    assert!(sim.leaves.is_empty(), "the rooms belong to the new session");
    assert_eq!(
        sim.core.poll_timeout(),
        None,
        "no grace period for a replaced session"
    );
    assert!(sim.core.detached().is_empty());
    sim.advance(GRACE * 2);
    assert!(sim.checks.is_empty() && sim.leaves.is_empty());
    // The same on this edge: a resume of alice's live session closes the old connection.
    let again = sim.connect();
    sim.login(again, "alice", Some("edge-1.1"));
    assert_eq!(sim.closed.last(), Some(&(alice, close::REPLACED)));
    sim.lose_connection(alice);
    assert!(sim.leaves.is_empty() && sim.core.detached().is_empty());
    // A kick naming another session (stale) closes nothing.
    sim.run(|c, out| c.kick("alice", "edge-9.1", out));
    assert_eq!(sim.closed.len(), 2);
}

#[test]
fn drain_closes_every_session_and_leaves_the_unresumed_at_the_drain_deadline() {
    let (mut sim, alice, bob) = lobby();
    let carol = sim.connect(); // not logged in
    let now = sim.now;
    sim.run(|c, out| c.drain(now, out));
    assert!(sim.core.draining());
    let mut closed = sim.closed.clone();
    closed.sort();
    assert_eq!(
        closed,
        vec![
            (alice, close::SHUTDOWN),
            (bob, close::SHUTDOWN),
            (carol, close::SHUTDOWN)
        ]
    );
    for sid in [alice, bob, carol] {
        sim.lose_connection(sid);
    }
    assert!(
        sim.leaves.is_empty(),
        "clients get the drain time to resume elsewhere"
    );
    assert_eq!(
        sim.core.poll_timeout(),
        Some(sim.now + DRAIN),
        "drain is shorter than grace"
    );
    assert_eq!(sim.unsubscribed, vec!["lobby".to_string()]);
    // Alice resumed on another edge, which kicks her old session here.
    sim.run(|c, out| c.kick("alice", "edge-1.1", out));
    assert!(!sim.core.drained());
    sim.advance(DRAIN);
    assert_eq!(
        sim.checks,
        vec![("bob".to_string(), "edge-1.2".to_string())]
    );
    sim.run(|c, out| c.claim_checked("bob", "edge-1.2", true, out));
    assert_eq!(sim.leaves.len(), 1);
    assert_eq!(sim.leaves[0].0, "bob");
    assert!(sim.core.drained());
    // A connection opened while the edge drains stays open, gate-only (see below).
    let late = sim.connect();
    assert!(sim.core.gate_only(late));
    assert!(!sim.closed.iter().any(|(sid, _)| *sid == late));
}

#[test]
fn a_connection_opened_while_draining_may_ask_the_gate_but_never_log_in() {
    let (mut sim, alice, _bob) = lobby();
    let before = sim.connect(); // opened before the drain, not logged in
    assert!(sim.core.may_log_in(before) && !sim.core.gate_only(before));
    // The drain is announced first (the gate stops choosing this edge), then sessions move.
    sim.core.start_draining();
    assert!(
        !sim.core.may_log_in(before),
        "no login on a draining edge, whatever the connection"
    );
    let gate = sim.connect();
    assert!(sim.core.gate_only(gate), "opened while draining: gate-only");
    assert!(!sim.core.may_log_in(gate));
    assert!(
        sim.closed.is_empty(),
        "a gate-only connection is not closed"
    );
    let now = sim.now;
    sim.run(|c, out| c.drain(now, out));
    let closed: Vec<SessionId> = sim.closed.iter().map(|(sid, _)| *sid).collect();
    assert!(closed.contains(&alice) && closed.contains(&before));
    assert!(
        !closed.contains(&gate),
        "the drain leaves gate-only connections alone: {closed:?}"
    );
    let after = sim.connect(); // opened after the drain began
    assert!(sim.core.gate_only(after) && !sim.closed.iter().any(|(s, _)| *s == after));
    // Everyone who held state leaves or resumes; the gate-only connections do not delay the
    // end of the drain.
    for sid in closed {
        sim.lose_connection(sid);
    }
    sim.advance(DRAIN);
    let checks = sim.checks.clone();
    for (uid, token) in checks {
        sim.run(|c, out| c.claim_checked(&uid, &token, true, out));
    }
    assert_eq!(
        sim.core.session_count(),
        2,
        "the gate-only ones are still open"
    );
    assert!(sim.core.drained());
    // Closing a gate-only connection leaves nothing behind.
    let leaves = sim.leaves.len();
    sim.lose_connection(gate);
    assert_eq!(sim.leaves.len(), leaves);
    assert!(sim.core.detached().is_empty());
    assert_eq!(sim.core.poll_timeout(), None);
}

#[test]
fn a_gap_is_filled_from_history_in_order_and_what_history_lacks_is_reported() {
    let (mut sim, alice, _bob) = lobby();
    sim.publish("lobby", "m4"); // 6
    sim.publish("lobby", "m5"); // 7
    sim.lose_bus(); // both lost on the way
    sim.publish("lobby", "m6"); // 8: arrives, revealing the gap
    sim.deliver_bus();
    assert_eq!(sim.fetches.len(), 1, "one fill for the gap");
    sim.publish("lobby", "m7"); // 9: held behind the gap, no second fill
    sim.deliver_bus();
    assert_eq!(sim.fetches.len(), 1);
    // History has lost seq 6 (trimmed), still holds 7.
    sim.rooms.get_mut("lobby").unwrap().history.remove(&6);
    sim.answer_fetches();
    let tail: Vec<String> = sim.stream(alice, "lobby")[4..].to_vec();
    assert_eq!(tail, vec!["gap 6-6", "7:m5", "8:m6", "9:m7"]);
}

#[test]
fn a_member_that_cannot_catch_up_is_disconnected_as_a_slow_consumer() {
    let (mut sim, _alice, bob) = lobby();
    sim.lose_connection(bob);
    let again = sim.connect();
    sim.login(again, "bob", Some("edge-1.2"));
    sim.core.begin_join(again, "lobby").unwrap();
    let (seq, _) = sim.store_join("lobby", "bob");
    sim.run(|c, out| c.joined(again, "lobby", seq, JoinKind::Resume { since: 2 }, out));
    assert_eq!(sim.fetches.len(), 1, "a catch-up from history");
    // The history fetch never returns; live pushes pile up for bob.
    for i in 0..rooms::MAX_BUFFERED {
        sim.publish("lobby", &format!("x{i}"));
    }
    sim.deliver_bus();
    assert!(sim.closed.is_empty(), "up to the bound, pushes are held");
    sim.publish("lobby", "one too many");
    sim.deliver_bus();
    assert_eq!(sim.closed, vec![(again, close::SLOW_CONSUMER)]);
}

#[test]
fn an_edge_reaped_while_a_session_is_detached_sends_no_leave_for_it() {
    let (mut sim, _alice, bob) = lobby();
    sim.lose_connection(bob);
    sim.advance(GRACE);
    assert_eq!(sim.checks.len(), 1);
    // Meanwhile this edge was considered dead and reaped: the store no longer names the
    // session (its claim was released, its members removed by the reaper).
    sim.run(|c, out| c.claim_checked("bob", "edge-1.2", false, out));
    assert!(sim.leaves.is_empty());
    assert!(sim.core.detached().is_empty() && sim.core.poll_timeout().is_none());
    // A late answer for a session that is no longer detached does nothing either.
    sim.run(|c, out| c.claim_checked("bob", "edge-1.2", true, out));
    assert!(sim.leaves.is_empty());
}

#[test]
fn a_resume_on_this_edge_during_the_claim_check_wins_over_the_leave() {
    let (mut sim, _alice, bob) = lobby();
    sim.lose_connection(bob);
    sim.advance(GRACE);
    assert_eq!(sim.checks.len(), 1);
    let again = sim.connect();
    sim.login(again, "bob", Some("edge-1.2"));
    sim.run(|c, out| c.claim_checked("bob", "edge-1.2", true, out));
    assert!(sim.leaves.is_empty(), "the resumed session keeps its rooms");
}

#[test]
fn a_close_on_purpose_leaves_at_once_and_the_last_member_unsubscribes() {
    let (mut sim, alice, bob) = lobby();
    let now = sim.now;
    sim.run(|c, out| c.closed(bob, true, now, out));
    assert_eq!(
        sim.leaves,
        vec![("bob".into(), "edge-1.2".into(), vec!["lobby".into()])]
    );
    assert!(sim.unsubscribed.is_empty());
    assert_eq!(sim.core.poll_timeout(), None);
    // connector.leave of the last member: stream finished, channel released.
    sim.store_leave("lobby", "alice");
    sim.run(|c, out| c.left(alice, "lobby", out));
    assert_eq!(sim.finished, vec![(alice, "lobby".to_string())]);
    assert_eq!(sim.unsubscribed, vec!["lobby".to_string()]);
    assert!(!sim.core.wants_room("lobby"));
}

#[test]
fn bus_subscription_counts_follow_joins_failures_and_destroyed_rooms() {
    let mut sim = Sim::new();
    let a = sim.connect();
    sim.login(a, "a", None);
    let b = sim.connect();
    sim.login(b, "b", None);
    assert_eq!(sim.core.begin_join(a, "r").unwrap(), JoinStart::Subscribe);
    // A second join before the subscription is confirmed subscribes too (idempotent on the
    // bus) rather than joining before pushes can arrive.
    assert_eq!(sim.core.begin_join(b, "r").unwrap(), JoinStart::Subscribe);
    sim.core.subscribed("r");
    sim.run(|c, out| c.join_failed(b, "r", out));
    assert!(sim.unsubscribed.is_empty(), "a still joins");
    let (seq, _) = sim.store_join("r", "a");
    sim.run(|c, out| c.joined(a, "r", seq, JoinKind::Enter, out));
    assert_eq!(sim.core.begin_join(b, "r").unwrap(), JoinStart::Ready);
    let (seq, _) = sim.store_join("r", "b");
    sim.run(|c, out| c.joined(b, "r", seq, JoinKind::Enter, out));
    // Too many rooms.
    for rid in ["s", "t", "u"] {
        sim.core.begin_join(a, rid).unwrap();
    }
    assert_eq!(
        sim.core.begin_join(a, "v"),
        Err(JoinRefused::TooManyRooms { max: 4 })
    );
    // The room is destroyed: both get onDestroy as the last push, streams finish, the channel
    // is released once.
    sim.run(|c, out| c.room_destroyed("r", 9, Bytes::from_static(b"9:onDestroy"), out));
    assert_eq!(sim.stream(a, "r").last().unwrap(), "9:onDestroy");
    assert_eq!(sim.stream(b, "r").last().unwrap(), "9:onDestroy");
    assert_eq!(sim.finished.len(), 2);
    assert_eq!(sim.unsubscribed, vec!["r".to_string()]);
    assert!(!sim.core.in_room(a, "r"));
}

#[test]
fn pushes_to_uids_and_broadcasts_reach_the_session_streams() {
    let (mut sim, alice, bob) = lobby();
    let frame = Bytes::from_static(b"private");
    sim.run(|c, out| c.users_push(&["bob".into(), "nobody".into()], &frame, out));
    sim.run(|c, out| c.broadcast(Bytes::from_static(b"all"), out));
    assert_eq!(sim.session_stream[&bob], vec!["private", "all"]);
    assert_eq!(sim.session_stream[&alice], vec!["all"]);
}

#[test]
fn a_flood_is_closed_for_abuse() {
    let mut sim = Sim::new();
    let s = sim.connect();
    let t0 = sim.now;
    let mut admissions = Vec::new();
    for i in 0..8_000u32 {
        let at = t0 + Duration::from_micros(250) * i; // 4,000 requests/s
        admissions.push(sim.run(|c, out| c.admit(s, at, out)));
        if !sim.closed.is_empty() {
            break;
        }
    }
    assert_eq!(sim.closed, vec![(s, close::ABUSE)]);
    assert_eq!(admissions.last(), Some(&Admission::Drop));
    assert!(admissions.contains(&Admission::Refuse));
}

/// An edge paused past its lease: another edge reaped its members (onLeave for each). They
/// never get an onLeave about themselves, are told to resume, and come back visibly.
#[test]
fn members_reaped_behind_the_edges_back_resume_and_rejoin_visibly() {
    let (mut sim, alice, bob) = lobby();
    // Another edge's reaper removes both (the leave script publishes onLeave for each).
    sim.store_leave("lobby", "alice");
    sim.store_leave("lobby", "bob");
    sim.deliver_bus();
    for (sid, uid) in [(alice, "alice"), (bob, "bob")] {
        assert!(
            sim.stream(sid, "lobby")
                .iter()
                .all(|p| !p.ends_with(&format!("onLeave {uid}"))),
            "{uid} got an onLeave about itself: {:?}",
            sim.stream(sid, "lobby")
        );
        assert!(
            sim.closed.contains(&(sid, close::SHUTDOWN)),
            "{uid} told to resume"
        );
    }
    assert!(sim.finished.contains(&(alice, "lobby".to_string())));
    assert!(!sim.core.in_room(alice, "lobby"));
    assert_eq!(sim.stream(bob, "lobby").last().unwrap(), "6:onLeave alice");

    // Alice's client resumes: the store no longer has her, so she joins again visibly.
    sim.lose_connection(alice);
    let again = sim.connect();
    sim.login(again, "alice", Some("edge-1.1"));
    let gap = sim.resume(again, "lobby", 5);
    assert_eq!(gap, Some((6, 8)), "her removal and return are a gap to her");
    assert_eq!(
        sim.rooms["lobby"].history[&8], "onAdd alice",
        "others see her come back"
    );
    assert!(sim.rooms["lobby"].members.contains_key("alice"));
}

/// A member's own `connector.leave` is not mistaken for a reap.
#[test]
fn a_deliberate_leave_is_not_taken_for_a_reap() {
    let (mut sim, alice, _bob) = lobby();
    sim.core.begin_leave(alice, "lobby");
    sim.store_leave("lobby", "alice");
    sim.deliver_bus();
    assert!(sim.closed.is_empty());
    sim.run(|c, out| c.left(alice, "lobby", out));
    assert!(!sim.core.in_room(alice, "lobby"));
}

/// The registry refresh: a new store generation inside its recovery window means the store
/// lost its state (write back silently); the same generation with the lease gone means this
/// edge was presumed dead, and a reset whose window is over means others numbered pushes
/// since: then sessions resume, nothing is resurrected silently.
#[test]
fn a_lost_lease_is_told_apart_from_a_store_reset() {
    let (mut sim, alice, bob) = lobby();
    let check = |sim: &mut Sim, generation: &str, recovering: bool, existed: bool| {
        sim.run(|c, out| c.registration_checked(generation, recovering, existed, out))
    };
    assert_eq!(
        check(&mut sim, "g1", false, false),
        Registration::Ok,
        "first registration"
    );
    assert_eq!(check(&mut sim, "g1", false, true), Registration::Ok);
    assert_eq!(check(&mut sim, "g2", true, false), Registration::Reregister);
    assert!(sim.closed.is_empty(), "a store reset closes nobody");
    assert_eq!(check(&mut sim, "g2", true, true), Registration::Ok);
    assert_eq!(check(&mut sim, "g2", false, false), Registration::Resume);
    let mut closed = sim.closed.clone();
    closed.sort();
    assert_eq!(
        closed,
        vec![(alice, close::SHUTDOWN), (bob, close::SHUTDOWN)]
    );
    // Paused through a whole reset: the window closed before this edge could write back.
    sim.closed.clear();
    assert_eq!(check(&mut sim, "g3", false, false), Registration::Resume);
    assert_eq!(sim.closed.len(), 2);
}

#[test]
fn a_push_that_beats_the_join_answer_to_a_new_feed_is_not_lost() {
    // Two sessions of an edge that has nobody in the room yet join at the same instant (both
    // resumed onto a restarted edge): the second join's onAdd comes off the bus before the
    // first join's answer has created the room's feed here.
    let mut sim = Sim::new();
    let alice = sim.connect();
    sim.login(alice, "alice", None);
    let bob = sim.connect();
    sim.login(bob, "bob", None);
    for sid in [alice, bob] {
        sim.core.begin_join(sid, "lobby").unwrap();
        sim.core.subscribed("lobby");
    }
    let (a_seq, _) = sim.store_join("lobby", "alice");
    let (b_seq, _) = sim.store_join("lobby", "bob");
    sim.deliver_bus(); // both onAdds arrive before either join is reported
    sim.run(|c, out| c.joined(alice, "lobby", a_seq, JoinKind::Enter, out));
    sim.run(|c, out| c.joined(bob, "lobby", b_seq, JoinKind::Enter, out));
    assert_eq!(
        sim.stream(alice, "lobby"),
        vec![format!("{b_seq}:onAdd bob")]
    );
    assert!(sim.stream(bob, "lobby").is_empty(), "never its own onAdd");
    assert!(
        sim.fetches.is_empty(),
        "nothing to fetch: the push was kept"
    );
    // Later pushes follow in order.
    sim.publish("lobby", "m1");
    sim.deliver_bus();
    assert_eq!(sim.stream(bob, "lobby"), vec![format!("{}:m1", b_seq + 1)]);
}
