//! The history checker: reads what observers and senders saw and says which promises of
//! ARCHITECTURE.md § Guarantees and PROTOCOL.md (seqs, `onGap`, resume) were broken.
//!
//! Checked, each a violation [`Kind`]:
//! - **seq-conflict**: one (room, seq) names two different messages, across every observer's
//!   pushes and every sender's accepted answer.
//! - **lost**: an accepted send (200 with a seq) did not reach an observer that was in the room
//!   from before it until the end, and the observer was not told (no `onGap` range and no resume
//!   `gap` covering that seq).
//! - **duplicate**: one observer received the same (room, seq, message) twice.
//! - **order**: an observer received a room's seqs not strictly increasing (duplicates aside).
//! - **presence**: after the run settled, an observer's member view of a room (enter/resume
//!   answer, then `onAdd`/`onLeave` after the answer's seq) differs from the store's member list.
//!
//! Pushes are judged as they came off the wire: the checker does not apply the SDK's
//! "drop seq ≤ last" filter, because the edge promises no duplicate and no reordering itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use super::history::{faults_by_kind, Event, Record};

/// A kind of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    SeqConflict,
    Lost,
    Duplicate,
    Order,
    Presence,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SeqConflict => "seq-conflict",
            Kind::Lost => "lost",
            Kind::Duplicate => "duplicate",
            Kind::Order => "order",
            Kind::Presence => "presence",
        }
    }
}

/// Examples kept per violation kind.
const EXAMPLES: usize = 5;

/// How many violations of one kind, with the first few in words.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Violations {
    pub count: u64,
    pub examples: Vec<String>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// `chat.send` attempts, accepted ones (200 with a seq), and the others by code (0 = no answer).
    pub sent: u64,
    pub accepted: u64,
    pub refused: BTreeMap<u16, u64>,
    /// `onChat` pushes received by observers.
    pub delivered: u64,
    /// (accepted send, observer) pairs the loss check looked at; of those, excused by a gap.
    pub expected: u64,
    pub excused_by_gap: u64,
    /// Gap reports observers got (`onGap` pushes and resume `gap`s: one gap is often reported
    /// both ways), and the seqs in them.
    pub gaps: u64,
    pub gap_seqs: u64,
    /// Of the `lost` violations, those where the observer got another message with that seq
    /// (a reused seq hid the accepted one).
    pub lost_shadowed: u64,
    /// Observer connections lost (each followed by a reconnect attempt).
    pub observer_reconnects: u64,
    /// Observers that gave up (skipped by the loss and presence checks), with why.
    pub gave_up: Vec<String>,
    /// Whether the history had the store's member lists (presence was checked).
    pub presence_checked: bool,
    pub violations: BTreeMap<Kind, Violations>,
}

impl Report {
    /// No violation of any kind.
    pub fn ok(&self) -> bool {
        self.violations.values().all(|v| v.count == 0)
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.violations.get(&kind).map(|v| v.count).unwrap_or(0)
    }

    fn add(&mut self, kind: Kind, example: impl FnOnce() -> String) {
        let v = self.violations.entry(kind).or_default();
        v.count += 1;
        if v.examples.len() < EXAMPLES {
            v.examples.push(example());
        }
    }

    /// The human summary printed after a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "faults injected: {}",
            if faults.is_empty() {
                "none".to_string()
            } else {
                faults.join(", ")
            }
        );
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(c, n)| match c {
                0 => format!("no answer {n}"),
                c => format!("{c}: {n}"),
            })
            .collect();
        let _ = writeln!(
            s,
            "messages: sent {}, accepted {}, not accepted {} ({})",
            self.sent,
            self.accepted,
            self.sent - self.accepted,
            refused.join(", ")
        );
        let _ = writeln!(
            s,
            "deliveries to observers: {} onChat pushes; {} (accepted send, observer) pairs checked, {} excused by a reported gap",
            self.delivered, self.expected, self.excused_by_gap
        );
        let _ = writeln!(
            s,
            "gap reports to observers: {} (onGap pushes and resume gaps; a resume usually reports one gap both ways), {} seqs in them; observer reconnects: {}",
            self.gaps, self.gap_seqs, self.observer_reconnects
        );
        if !self.gave_up.is_empty() {
            let _ = writeln!(
                s,
                "observers skipped (gave up): {}",
                self.gave_up.join("; ")
            );
        }
        if !self.presence_checked {
            let _ = writeln!(
                s,
                "presence: not checked (no store member lists in the history)"
            );
        }
        for kind in [
            Kind::SeqConflict,
            Kind::Lost,
            Kind::Duplicate,
            Kind::Order,
            Kind::Presence,
        ] {
            let v = self.violations.get(&kind).cloned().unwrap_or_default();
            let _ = write!(s, "violations {:<13} {}", kind.name(), v.count);
            if kind == Kind::Lost && self.lost_shadowed > 0 {
                let _ = write!(
                    s,
                    " ({} of them: the observer got another message with that seq)",
                    self.lost_shadowed
                );
            }
            let _ = writeln!(s);
            for e in &v.examples {
                let _ = writeln!(s, "    e.g. {e}");
            }
        }
        let _ = write!(
            s,
            "{}",
            if self.ok() {
                "RESULT: no violation"
            } else {
                "RESULT: VIOLATIONS FOUND"
            }
        );
        s
    }
}

/// What a push or an answer says a seq is, to compare across observers and senders.
fn identity(route: &str, msg: Option<&str>, from: Option<&str>, user: Option<&str>) -> String {
    match route {
        "onChat" => format!("onChat {}: {}", from.unwrap_or("?"), msg.unwrap_or("?")),
        "onAdd" | "onLeave" => format!("{route} {}", user.unwrap_or("?")),
        other => other.to_string(),
    }
}

/// An accepted send.
struct Accepted<'a> {
    t_ms: u64,
    who: &'a str,
    room: &'a str,
    seq: u64,
    identity: String,
}

/// Per (observer, room): what it received.
#[derive(Default)]
struct Seen {
    /// seq → identities received with it.
    got: HashMap<u64, Vec<String>>,
    gaps: Vec<(u64, u64)>,
}

/// Checks a whole history.
pub fn check(records: &[Record]) -> Report {
    let mut r = Report {
        faults: faults_by_kind(records),
        ..Report::default()
    };
    let mut observers: BTreeMap<&str, &[String]> = BTreeMap::new();
    let mut gave_up: BTreeMap<&str, &str> = BTreeMap::new();
    let mut accepted: Vec<Accepted<'_>> = Vec::new();
    // (room, seq) → (identity, where it was seen first).
    let mut names: HashMap<(&str, u64), (String, String)> = HashMap::new();
    let mut conflicts: HashSet<(&str, u64)> = HashSet::new();
    // First enter seq per (observer, room).
    let mut entered: HashMap<(&str, &str), u64> = HashMap::new();
    let mut seen: HashMap<(&str, &str), Seen> = HashMap::new();
    // Per (observer, room): highest seq so far, for the order check.
    let mut last: HashMap<(&str, &str), u64> = HashMap::new();

    for rec in records {
        match &rec.ev {
            Event::Observer { who, rooms } => {
                observers.insert(who, rooms);
            }
            Event::GaveUp { who, reason } => {
                gave_up.insert(who, reason);
            }
            Event::Lost { .. } => r.observer_reconnects += 1,
            Event::Enter { who, room, seq, .. } => {
                entered.entry((who, room)).or_insert(*seq);
            }
            Event::Resume { who, room, gap, .. } => {
                if let Some((from, to)) = gap {
                    r.gaps += 1;
                    r.gap_seqs += to.saturating_sub(*from) + 1;
                    seen.entry((who, room)).or_default().gaps.push((*from, *to));
                }
            }
            Event::Send {
                who,
                room,
                msg,
                code,
                seq,
                ..
            } => {
                r.sent += 1;
                match (code, seq) {
                    (200, Some(seq)) => {
                        r.accepted += 1;
                        let id = identity("onChat", Some(msg), Some(who), None);
                        let source = format!("the answer to {who} at t={}ms", rec.t_ms);
                        name_seq(&mut r, &mut names, &mut conflicts, room, *seq, &id, source);
                        accepted.push(Accepted {
                            t_ms: rec.t_ms,
                            who,
                            room,
                            seq: *seq,
                            identity: id,
                        });
                    }
                    (code, _) => *r.refused.entry(*code).or_insert(0) += 1,
                }
            }
            Event::Push {
                who,
                conn,
                room,
                route,
                seq,
                msg,
                from,
                user,
                gap,
            } => {
                let key = (who.as_str(), room.as_str());
                let s = seen.entry(key).or_default();
                let prev = last.get(&key).copied();
                if route == "onGap" {
                    if let Some((from, to)) = gap {
                        r.gaps += 1;
                        r.gap_seqs += to.saturating_sub(*from) + 1;
                        s.gaps.push((*from, *to));
                    }
                } else {
                    let id = identity(route, msg.as_deref(), from.as_deref(), user.as_deref());
                    if route == "onChat" {
                        r.delivered += 1;
                    }
                    let ids = s.got.entry(*seq).or_default();
                    if ids.contains(&id) {
                        r.add(Kind::Duplicate, || {
                            format!(
                                "{who} got {room} seq {seq} ({id}) twice, again at t={}ms on connection {conn}",
                                rec.t_ms
                            )
                        });
                        continue;
                    }
                    ids.push(id.clone());
                    let source = format!("a push to {who} at t={}ms", rec.t_ms);
                    name_seq(&mut r, &mut names, &mut conflicts, room, *seq, &id, source);
                }
                if let Some(p) = prev {
                    if *seq <= p {
                        r.add(Kind::Order, || {
                            format!(
                                "{who} got {room} seq {seq} ({route}) after seq {p}, at t={}ms on connection {conn}",
                                rec.t_ms
                            )
                        });
                    }
                }
                last.insert(key, prev.unwrap_or(0).max(*seq));
            }
            Event::Fault { .. } | Event::Members { .. } | Event::Connected { .. } => {}
        }
    }

    // Loss: every accepted send, every observer that entered the room before it and stayed.
    for (who, rooms) in &observers {
        if gave_up.contains_key(who) {
            continue;
        }
        for room in rooms.iter() {
            let Some(&joined) = entered.get(&(*who, room.as_str())) else {
                continue;
            };
            let empty = Seen::default();
            let s = seen.get(&(*who, room.as_str())).unwrap_or(&empty);
            for a in accepted.iter().filter(|a| a.room == room && a.seq > joined) {
                r.expected += 1;
                if s.got
                    .get(&a.seq)
                    .is_some_and(|ids| ids.contains(&a.identity))
                {
                    continue;
                }
                if s.gaps.iter().any(|(f, t)| (*f..=*t).contains(&a.seq)) {
                    r.excused_by_gap += 1;
                    continue;
                }
                if s.got.contains_key(&a.seq) {
                    r.lost_shadowed += 1;
                }
                r.add(Kind::Lost, || {
                    let instead = match s.got.get(&a.seq) {
                        Some(ids) => format!("; it got {} with that seq instead", ids.join(" / ")),
                        None => String::new(),
                    };
                    format!(
                        "{who} never got {} seq {} ({}), accepted by {} at t={}ms, and was told of no gap covering it{instead}",
                        a.room, a.seq, a.identity, a.who, a.t_ms
                    )
                });
            }
        }
    }
    r.gave_up = gave_up
        .iter()
        .map(|(w, why)| format!("{w}: {why}"))
        .collect();

    // Presence: the last store member lists in the history, compared with the views as they
    // were when those lists were read. What observers record afterwards (the runner closes
    // them one by one, so the others get their onLeave) is not part of that state.
    let mut store: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut read_at = 0;
    for (i, rec) in records.iter().enumerate() {
        if let Event::Members { room, members } = &rec.ev {
            store.insert(room.clone(), members.iter().cloned().collect());
            read_at = i;
        }
    }
    if !store.is_empty() {
        r.presence_checked = true;
        for d in presence_diffs(&records[..=read_at], &store) {
            r.add(Kind::Presence, || d);
        }
    }
    r
}

/// Records that `seq` of `room` names `id`; a second, different name is a conflict (reported
/// once per (room, seq)).
fn name_seq<'a>(
    r: &mut Report,
    names: &mut HashMap<(&'a str, u64), (String, String)>,
    conflicts: &mut HashSet<(&'a str, u64)>,
    room: &'a str,
    seq: u64,
    id: &str,
    source: String,
) {
    match names.get(&(room, seq)) {
        None => {
            names.insert((room, seq), (id.to_string(), source));
        }
        Some((first, first_source)) if first != id => {
            if conflicts.insert((room, seq)) {
                let (first, first_source) = (first.clone(), first_source.clone());
                r.add(Kind::SeqConflict, || {
                    format!(
                        "{room} seq {seq} is `{first}` in {first_source} but `{id}` in {source}"
                    )
                });
            }
        }
        Some(_) => {}
    }
}

/// A member change seen by an observer: (seq, added, uid).
type Change<'a> = (u64, bool, &'a str);

/// Each observer's member view of each of its rooms, rebuilt from the history: the last
/// enter/resume answer's users, then the `onAdd`/`onLeave` pushes with a higher seq (received
/// on that connection or a later one), in seq order.
pub fn views(records: &[Record]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut gave_up: HashSet<&str> = HashSet::new();
    let mut base: HashMap<(&str, &str), (u32, u64, &[String])> = HashMap::new();
    for rec in records {
        match &rec.ev {
            Event::GaveUp { who, .. } => {
                gave_up.insert(who);
            }
            Event::Enter {
                who,
                conn,
                room,
                seq,
                users,
            }
            | Event::Resume {
                who,
                conn,
                room,
                seq,
                users,
                ..
            } => {
                base.insert((who, room), (*conn, *seq, users));
            }
            _ => {}
        }
    }
    let mut changes: HashMap<(&str, &str), Vec<Change<'_>>> = HashMap::new();
    for rec in records {
        if let Event::Push {
            who,
            conn,
            room,
            route,
            seq,
            user: Some(user),
            ..
        } = &rec.ev
        {
            let Some((bconn, bseq, _)) = base.get(&(who.as_str(), room.as_str())) else {
                continue;
            };
            if conn >= bconn && seq > bseq && (route == "onAdd" || route == "onLeave") {
                changes
                    .entry((who, room))
                    .or_default()
                    .push((*seq, route == "onAdd", user));
            }
        }
    }
    let mut out = BTreeMap::new();
    for ((who, room), (_, _, users)) in base {
        if gave_up.contains(who) {
            continue;
        }
        let mut view: BTreeSet<String> = users.iter().cloned().collect();
        let mut ch = changes.remove(&(who, room)).unwrap_or_default();
        ch.sort();
        for (_, add, user) in ch {
            if add {
                view.insert(user.to_string());
            } else {
                view.remove(user);
            }
        }
        out.insert((who.to_string(), room.to_string()), view);
    }
    out
}

/// Differences between every observer's view and `store` (room → members), in words.
pub fn presence_diffs(
    records: &[Record],
    store: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    for ((who, room), view) in views(records) {
        let members = store.get(&room).unwrap_or(&empty);
        if &view != members {
            let missing: Vec<&String> = members.difference(&view).collect();
            let extra: Vec<&String> = view.difference(members).collect();
            out.push(format!(
                "{who}'s view of {room} has {} members, the store {}: the store also has {missing:?}, the view also has {extra:?}{}",
                view.len(),
                members.len(),
                if members.contains(&who) { "" } else { " (the observer itself is not a member in the store)" }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_ms: u64, ev: Event) -> Record {
        Record { t_ms, ev }
    }

    fn observer(who: &str) -> Record {
        at(
            0,
            Event::Observer {
                who: who.into(),
                rooms: vec!["r".into()],
            },
        )
    }

    fn enter(who: &str, seq: u64, users: &[&str]) -> Record {
        at(
            1,
            Event::Enter {
                who: who.into(),
                conn: 0,
                room: "r".into(),
                seq,
                users: users.iter().map(|u| u.to_string()).collect(),
            },
        )
    }

    fn send(who: &str, msg: &str, seq: u64) -> Record {
        at(
            2,
            Event::Send {
                who: who.into(),
                room: "r".into(),
                msg: msg.into(),
                code: 200,
                seq: Some(seq),
                error: None,
            },
        )
    }

    fn chat(who: &str, conn: u32, seq: u64, from: &str, msg: &str) -> Record {
        at(
            3,
            Event::Push {
                who: who.into(),
                conn,
                room: "r".into(),
                route: "onChat".into(),
                seq,
                msg: Some(msg.into()),
                from: Some(from.into()),
                user: None,
                gap: None,
            },
        )
    }

    fn presence(who: &str, route: &str, seq: u64, user: &str) -> Record {
        at(
            3,
            Event::Push {
                who: who.into(),
                conn: 0,
                room: "r".into(),
                route: route.into(),
                seq,
                msg: None,
                from: None,
                user: Some(user.into()),
                gap: None,
            },
        )
    }

    fn members(m: &[&str]) -> Record {
        at(
            9,
            Event::Members {
                room: "r".into(),
                members: m.iter().map(|u| u.to_string()).collect(),
            },
        )
    }

    /// A clean history: one observer, two messages delivered, presence matching.
    fn clean() -> Vec<Record> {
        vec![
            observer("o"),
            enter("o", 5, &["o", "s"]),
            send("s", "s#0", 6),
            chat("o", 0, 6, "s", "s#0"),
            send("s", "s#1", 7),
            chat("o", 0, 7, "s", "s#1"),
            presence("o", "onAdd", 8, "c"),
            members(&["o", "s", "c"]),
        ]
    }

    fn only(r: &Report, kind: Kind) {
        assert_eq!(r.count(kind), 1, "{}", r.summary());
        let others: u64 = r.violations.values().map(|v| v.count).sum::<u64>() - 1;
        assert_eq!(others, 0, "other kinds reported too:\n{}", r.summary());
        assert!(!r.ok());
    }

    #[test]
    fn a_clean_history_passes() {
        let r = check(&clean());
        assert!(r.ok(), "{}", r.summary());
        assert_eq!((r.sent, r.accepted, r.delivered, r.expected), (2, 2, 2, 2));
        assert!(r.presence_checked);
        assert!(r.summary().contains("RESULT: no violation"));
    }

    #[test]
    fn a_seq_naming_two_messages_is_a_conflict() {
        // The answer says seq 7 is s#1; the observer got another message numbered 7 (and s#1
        // under 8, so nothing is lost).
        let mut h = clean();
        h[5] = chat("o", 0, 7, "x", "x#0");
        h.insert(6, chat("o", 0, 8, "s", "s#1"));
        h[7] = presence("o", "onAdd", 9, "c");
        let r = check(&h);
        assert_eq!(r.count(Kind::SeqConflict), 1, "{}", r.summary());
        assert!(r.violations[&Kind::SeqConflict].examples[0].contains("r seq 7"));
        // s#1 with seq 7 never arrived: it is also lost, hidden by the other message.
        assert_eq!(r.count(Kind::Lost), 1, "{}", r.summary());
        assert_eq!(r.lost_shadowed, 1);
    }

    #[test]
    fn a_conflict_between_two_observers_is_found_without_any_answer() {
        let h = vec![
            observer("a"),
            observer("b"),
            enter("a", 0, &["a", "b"]),
            enter("b", 0, &["a", "b"]),
            chat("a", 0, 1, "x", "first"),
            chat("b", 0, 1, "y", "second"),
            members(&["a", "b"]),
        ];
        only(&check(&h), Kind::SeqConflict);
    }

    #[test]
    fn an_accepted_message_that_never_arrives_is_lost() {
        let mut h = clean();
        h.remove(5);
        let r = check(&h);
        only(&r, Kind::Lost);
        assert_eq!(r.lost_shadowed, 0);
        assert!(r.violations[&Kind::Lost].examples[0].contains("seq 7"));
    }

    #[test]
    fn a_loss_inside_a_reported_gap_is_excused() {
        let mut h = clean();
        h.remove(5);
        h.push(at(
            4,
            Event::Push {
                who: "o".into(),
                conn: 0,
                room: "r".into(),
                route: "onGap".into(),
                seq: 7,
                msg: None,
                from: None,
                user: None,
                gap: Some((7, 7)),
            },
        ));
        // The onGap's seq (7) comes after the onAdd (8): an order violation, not a loss.
        let r = check(&h);
        assert_eq!(r.count(Kind::Lost), 0, "{}", r.summary());
        assert_eq!(r.excused_by_gap, 1);
        // A resume gap excuses it the same way.
        let mut h = clean();
        h.remove(5);
        h.push(at(
            4,
            Event::Resume {
                who: "o".into(),
                conn: 1,
                room: "r".into(),
                seq: 8,
                users: vec!["o".into(), "s".into(), "c".into()],
                gap: Some((6, 8)),
            },
        ));
        let r = check(&h);
        assert!(r.ok(), "{}", r.summary());
        assert_eq!((r.excused_by_gap, r.gaps, r.gap_seqs), (1, 1, 3));
    }

    #[test]
    fn sends_before_the_enter_and_observers_that_gave_up_are_not_expected() {
        let mut h = clean();
        h.insert(2, send("s", "early", 4));
        h.push(at(
            8,
            Event::GaveUp {
                who: "o".into(),
                reason: "test".into(),
            },
        ));
        h.remove(4);
        let r = check(&h);
        assert!(r.ok(), "{}", r.summary());
        assert_eq!(r.expected, 0);
    }

    #[test]
    fn the_same_push_twice_is_a_duplicate() {
        let mut h = clean();
        h.insert(4, chat("o", 1, 6, "s", "s#0"));
        let r = check(&h);
        only(&r, Kind::Duplicate);
        assert!(r.violations[&Kind::Duplicate].examples[0].contains("twice"));
    }

    #[test]
    fn a_lower_seq_after_a_higher_one_is_an_order_violation() {
        let mut h = clean();
        h.swap(3, 5);
        let r = check(&h);
        only(&r, Kind::Order);
        assert!(r.violations[&Kind::Order].examples[0].contains("seq 6"));
    }

    #[test]
    fn a_member_view_that_differs_from_the_store_is_a_presence_violation() {
        let mut h = clean();
        h.pop();
        h.push(members(&["o", "s"]));
        let r = check(&h);
        only(&r, Kind::Presence);
        assert!(r.violations[&Kind::Presence].examples[0].contains("[\"c\"]"));
        // The observer missing from the store is named.
        let mut h = clean();
        h.pop();
        h.push(members(&["s", "c"]));
        let r = check(&h);
        only(&r, Kind::Presence);
        assert!(r.violations[&Kind::Presence].examples[0].contains("itself is not a member"));
    }

    #[test]
    fn views_start_from_the_latest_answer_and_apply_later_changes_in_seq_order() {
        let h = vec![
            observer("o"),
            enter("o", 5, &["o", "a"]),
            presence("o", "onAdd", 6, "b"),
            // Resumed at seq 9 with a fresh list; the onLeave of 8 is already in it.
            at(
                5,
                Event::Resume {
                    who: "o".into(),
                    conn: 1,
                    room: "r".into(),
                    seq: 9,
                    users: vec!["o".into(), "b".into()],
                    gap: None,
                },
            ),
            at(
                6,
                Event::Push {
                    who: "o".into(),
                    conn: 1,
                    room: "r".into(),
                    route: "onLeave".into(),
                    seq: 11,
                    msg: None,
                    from: None,
                    user: Some("b".into()),
                    gap: None,
                },
            ),
            at(
                6,
                Event::Push {
                    who: "o".into(),
                    conn: 1,
                    room: "r".into(),
                    route: "onAdd".into(),
                    seq: 10,
                    msg: None,
                    from: None,
                    user: Some("d".into()),
                    gap: None,
                },
            ),
        ];
        let v = views(&h);
        let want: BTreeSet<String> = ["o", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(v[&("o".to_string(), "r".to_string())], want);
    }

    /// A real history (the e2e chaos test, before observers' reconnects were staggered): two
    /// observers of a killed edge resumed on it in the same millisecond; `obs-2`'s answer for
    /// room-2 had seq 38, `obs-1`'s re-join was seq 39, and `obs-2` never got that `onAdd`.
    #[test]
    fn a_real_history_with_a_lost_onadd_shows_a_presence_split() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/chaos-concurrent-rejoin.jsonl");
        let r = check(&super::super::history::read(&path).unwrap());
        only(&r, Kind::Presence);
        let e = &r.violations[&Kind::Presence].examples[0];
        assert!(e.starts_with("obs-2's view of room-2"), "{e}");
        assert!(e.contains("the store also has [\"obs-1\"]"), "{e}");
        assert_eq!(r.faults.get("kill-edge"), Some(&1));
    }

    #[test]
    fn what_observers_record_after_the_store_was_read_is_not_held_against_it() {
        // A real run: the views matched the store when it was read; then the runner closed
        // obs-2 first, and obs-1 recorded its onLeave after the store's member lists.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/chaos-leave-after-snapshot.jsonl");
        let h = super::super::history::read(&path).unwrap();
        let r = check(&h);
        assert!(r.presence_checked);
        assert!(r.violations.is_empty(), "{:?}", r.violations.keys());
        // The same onLeave before the store was read is a difference.
        let last_members = h
            .iter()
            .rposition(|rec| matches!(rec.ev, Event::Members { .. }))
            .unwrap();
        let mut moved = h.clone();
        let leave = moved.pop().unwrap();
        assert!(matches!(&leave.ev, Event::Push { route, .. } if route == "onLeave"));
        moved.insert(last_members - 1, leave);
        only(&check(&moved), Kind::Presence);
    }

    #[test]
    fn a_history_round_trips_through_its_file_format() {
        let dir = std::env::temp_dir().join(format!("roomcast-chaos-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.jsonl");
        let rec = super::super::history::Recorder::create(Some(&path)).unwrap();
        for r in clean() {
            rec.record(r.ev);
        }
        rec.finish().unwrap();
        let back = super::super::history::read(&path).unwrap();
        let evs: Vec<Event> = back.into_iter().map(|r| r.ev).collect();
        assert_eq!(evs, clean().into_iter().map(|r| r.ev).collect::<Vec<_>>());
        // A line that is not a record is an error naming the line, not a panic.
        std::fs::write(
            &path,
            "{\"t_ms\":1,\"ev\":\"observer\",\"who\":\"o\",\"rooms\":[]}\nnot json\n",
        )
        .unwrap();
        let e = super::super::history::read(&path).unwrap_err();
        assert!(
            format!("{e:#}").contains(":2: not a history record"),
            "{e:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
