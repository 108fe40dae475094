//! The edge's sessions and rooms as plain code: no tokio, no quinn, no Redis, time passed in.
//!
//! [`EdgeCore`] is the one owner of everything an edge knows about its sessions: which session
//! is which uid, which rooms each is in (and the room feeds that order their pushes), which uids
//! are detached and until when, how many local users each room's bus subscription has, and
//! whether the edge is draining. The rule "a session's rooms, its push streams, the room feed
//! and the bus subscription count agree" is kept here, in one place.
//!
//! The QUIC code is one driver of it, the way quinn sits on quinn-proto: it does the IO (token
//! checks, store scripts, confirmed bus subscriptions, history fetches), reports the outcome
//! through the input methods below, and carries out the [`Effect`]s they append to `out`. Time
//! comes in as `Instant`: the driver arms one timer for [`EdgeCore::poll_timeout`] and calls
//! [`EdgeCore::handle_timeout`], so grace periods and drain deadlines are testable with a fake
//! clock (see `tests.rs`).
//!
//! The core is generic over `H`, the driver's per-session transport handle (for QUIC: the
//! connection and its push queues), so the driver keeps no second session map: it looks a
//! recipient up with [`EdgeCore::handle`] while applying effects under the same lock, which is
//! what keeps each room's seq order per stream.

pub mod limits;
pub mod rooms;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomcast_protocol::protocol::close;

pub use limits::{TokenBucket, Verdict};
pub use rooms::{Action, LocalRooms, SessionId};

/// The close reason of `close::SHUTDOWN`.
const DRAIN_REASON: &str = "edge draining: reconnect through the gate and resume";
/// Close reason (`close::SHUTDOWN`) when the store no longer agrees this edge hosts the session.
pub const LEASE_LOST_REASON: &str =
    "this edge lost its lease and its members may have been removed: reconnect and resume";

/// Settings the core needs (a subset of the edge configuration).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long a lost session keeps its rooms, waiting for a resume.
    pub resume_grace: Duration,
    /// How long a draining edge waits for its sessions to resume elsewhere.
    pub drain: Duration,
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub max_rooms_per_session: usize,
}

/// What the driver must do. Effects are appended in the order they must be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The room feed's actions for room `rid`: queue pushes and gap markers on members' room
    /// streams, fetch history ([`Action::Fill`], [`Action::CatchUp`], then report it with
    /// [`EdgeCore::history_fetched`]), close slow consumers ([`Action::Disconnect`]). One effect
    /// per room and event, so the room's stream key is built once, not per recipient.
    Feed { rid: String, actions: Vec<Action> },
    /// Queue a push (no room, seq 0) on the session stream of `sid`.
    ToSession { sid: SessionId, frame: Bytes },
    /// Queue a push on the session stream of every session.
    ToAll { frame: Bytes },
    /// Finish the session's stream for room `rid` once what is queued on it is written.
    Finish { sid: SessionId, rid: String },
    /// Close the session's connection.
    Close {
        sid: SessionId,
        code: u32,
        reason: &'static str,
    },
    /// The last local user of the room is gone: unsubscribe its channel (unless a join wanted it
    /// again meanwhile: check [`EdgeCore::wants_room`] under the bus's own lock).
    Unsubscribe { rid: String },
    /// A detached session's grace period ended: ask the store whether `rc:session:<uid>` still
    /// names `token`, and report it with [`EdgeCore::claim_checked`].
    CheckClaim { uid: String, token: String },
    /// Make `uid` leave `rooms` (onLeave, only where it is still a member through this edge) and
    /// release its claim if it is still `token`'s.
    Leave {
        uid: String,
        token: String,
        rooms: Vec<String>,
    },
}

/// What [`EdgeCore::begin_join`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStart {
    /// Already a member: the join is idempotent, nothing to record.
    Already,
    /// Counted as a user of the room's channel, which is confirmed subscribed: run the join.
    Ready,
    /// Counted, but the channel is not confirmed yet: subscribe (waiting for the confirmation),
    /// call [`EdgeCore::subscribed`], then run the join.
    Subscribe,
}

/// Why a join cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefused {
    /// No such session (it closed) or it has no uid yet.
    NotLoggedIn,
    /// The session is in `max` rooms already.
    TooManyRooms { max: usize },
}

/// What the store said about a join, for [`EdgeCore::joined`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// `connector.enter`: a new member from `seq` on.
    Enter,
    /// `connector.resume` that moved a member who was still in the room (inside the grace
    /// period, or before a reaper removed it): continue after `since`, replaying from history.
    Resume { since: u64 },
    /// `connector.resume` after the member had left (grace period over, or reaped): it joined
    /// again like a new member; `since+1 ..= seq` (its own onLeave and onAdd among them) is a gap.
    Rejoin { since: u64 },
}

/// A history fetch the driver ran, for [`EdgeCore::history_fetched`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Fill {
        rid: String,
        upto: u64,
    },
    CatchUp {
        rid: String,
        sid: SessionId,
        upto: u64,
    },
}

/// What the registry refresh must do, decided by [`EdgeCore::registration_checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The lease was there (or there is nothing to restore): nothing to do.
    Ok,
    /// The store lost its state (a new generation): write back every claim and membership,
    /// silently and with seq floors, while the store's recovery window keeps numbering
    /// stopped.
    Reregister,
    /// Same generation but the lease had expired (the edge was paused or cut off): another
    /// edge may have reaped its members, so they must not be resurrected silently. Every
    /// session was closed with `close::SHUTDOWN`; clients resume, and a member who was
    /// removed joins again visibly (onAdd with a seq).
    Resume,
}

/// Whether a request may be served (see [`EdgeCore::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// Answer 429.
    Refuse,
    /// The session is being closed for flooding: answer nothing.
    Drop,
}

/// What the core knows about a live session.
struct Session<H> {
    handle: H,
    /// Globally unique session name (`rc:session:<uid>` → `session`).
    token: String,
    uid: Option<String>,
    /// Rooms joined (local feed member) or being joined (subscription counted).
    rooms: BTreeSet<String>,
    limiter: TokenBucket,
    /// Resumed on another connection: when it closes it leaves nothing behind.
    replaced: bool,
    /// Opened while the edge drains: it may only ask the gate (a client whose only gate is
    /// this edge still learns where to go), never log in; it holds nothing, so the drain
    /// neither closes it nor waits for it.
    gate_only: bool,
    /// Rooms a `connector.leave` is removing it from (its own onLeave is expected).
    leaving: BTreeSet<String>,
}

/// A session whose connection was lost, keeping its rooms until `deadline`.
#[derive(Debug, Clone)]
struct Detached {
    token: String,
    rooms: Vec<String>,
    deadline: Instant,
    /// The deadline passed and the store is being asked whether the claim is still ours.
    checking: bool,
}

/// Room channel users: sessions joined or joining. `confirmed` once the subscription is.
#[derive(Debug, Default)]
struct Sub {
    users: usize,
    confirmed: bool,
    /// Pushes that arrived while joins were under way but before the room had a feed here:
    /// the subscription is confirmed before the store's join, so a push numbered after a join
    /// (another member's onAdd, a message) can beat the join's answer to the edge. Handed to
    /// the feed the first join creates; at most [`rooms::MAX_BUFFERED`], the oldest dropped
    /// first (the feed then fills them from history).
    early: BTreeMap<u64, Bytes>,
}

pub struct EdgeCore<H> {
    cfg: CoreConfig,
    sessions: HashMap<SessionId, Session<H>>,
    by_uid: HashMap<String, SessionId>,
    detached: HashMap<String, Detached>,
    rooms: LocalRooms,
    subs: HashMap<String, Sub>,
    /// The gate must stop choosing this edge; logins are refused and new connections are
    /// gate-only.
    draining: bool,
    /// Set by [`EdgeCore::drain`]: detached sessions are left by then at the latest.
    drain_deadline: Option<Instant>,
    /// The store generation this edge registered in (see [`EdgeCore::registration_checked`]).
    generation: Option<String>,
}

impl<H> EdgeCore<H> {
    pub fn new(cfg: CoreConfig) -> EdgeCore<H> {
        EdgeCore {
            cfg,
            sessions: HashMap::new(),
            by_uid: HashMap::new(),
            detached: HashMap::new(),
            rooms: LocalRooms::default(),
            subs: HashMap::new(),
            draining: false,
            drain_deadline: None,
            generation: None,
        }
    }

    // ---- queries ----------------------------------------------------------------------------

    /// The transport handle of a live session.
    pub fn handle(&self, sid: SessionId) -> Option<&H> {
        self.sessions.get(&sid).map(|s| &s.handle)
    }

    /// Every live session's handle.
    pub fn handles(&self) -> impl Iterator<Item = &H> {
        self.sessions.values().map(|s| &s.handle)
    }

    pub fn uid(&self, sid: SessionId) -> Option<&str> {
        self.sessions.get(&sid).and_then(|s| s.uid.as_deref())
    }

    pub fn token(&self, sid: SessionId) -> Option<&str> {
        self.sessions.get(&sid).map(|s| s.token.as_str())
    }

    pub fn in_room(&self, sid: SessionId, rid: &str) -> bool {
        self.sessions
            .get(&sid)
            .is_some_and(|s| s.rooms.contains(rid))
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Detached sessions (lost connections in their grace period) by uid, with their token.
    pub fn detached(&self) -> Vec<(String, String)> {
        self.detached
            .iter()
            .map(|(u, d)| (u.clone(), d.token.clone()))
            .collect()
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether `sid` was opened while the edge drains (it may only ask the gate).
    pub fn gate_only(&self, sid: SessionId) -> bool {
        self.sessions.get(&sid).is_some_and(|s| s.gate_only)
    }

    /// Whether `sid` may log in (`connector.enter`, `connector.resume`): not on a draining
    /// edge, whose sessions are being moved elsewhere, and not on a closed session.
    pub fn may_log_in(&self, sid: SessionId) -> bool {
        !self.draining && self.sessions.contains_key(&sid)
    }

    /// Sessions that hold or may hold state: every one but the gate-only ones.
    fn stateful_sessions(&self) -> impl Iterator<Item = (&SessionId, &Session<H>)> {
        self.sessions.iter().filter(|(_, s)| !s.gate_only)
    }

    /// Whether the room's channel has local users (members or joins in progress).
    pub fn wants_room(&self, rid: &str) -> bool {
        self.subs.contains_key(rid)
    }

    /// Rooms whose channel the edge needs (for a (re)connected bus).
    pub fn wanted_rooms(&self) -> Vec<String> {
        self.subs.keys().cloned().collect()
    }

    /// Rooms with local members and the highest seq delivered in order in each.
    pub fn feeds(&self) -> Vec<(String, u64)> {
        self.rooms.feeds()
    }

    /// Local members of a room.
    pub fn members(&self, rid: &str) -> Vec<SessionId> {
        self.rooms.members(rid)
    }

    /// Live sessions that are logged in: (sid, uid, token).
    pub fn logged_in(&self) -> Vec<(SessionId, String, String)> {
        self.sessions
            .iter()
            .filter_map(|(sid, s)| Some((*sid, s.uid.clone()?, s.token.clone())))
            .collect()
    }

    // ---- sessions ---------------------------------------------------------------------------

    /// A connection completed its handshake and got session `sid` named `token`. On a draining
    /// edge it is *gate-only*: it may ask the gate (which names another edge) but not log in,
    /// and the drain neither closes it nor waits for it. Closing it at once instead would leave
    /// a client whose only gate is this edge with nowhere to ask.
    pub fn open(
        &mut self,
        sid: SessionId,
        token: String,
        handle: H,
        now: Instant,
        _out: &mut Vec<Effect>,
    ) {
        let limiter = TokenBucket::new(self.cfg.rate_limit, self.cfg.rate_burst, now);
        self.sessions.insert(
            sid,
            Session {
                handle,
                token,
                uid: None,
                rooms: BTreeSet::new(),
                limiter,
                replaced: false,
                gate_only: self.draining,
                leaving: BTreeSet::new(),
            },
        );
    }

    /// A request arrived on session `sid`: the rate limit decides. A flood closes the session
    /// (`close::ABUSE`).
    pub fn admit(&mut self, sid: SessionId, now: Instant, out: &mut Vec<Effect>) -> Admission {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Admission::Drop;
        };
        match s.limiter.check(now) {
            Verdict::Allow => Admission::Serve,
            Verdict::Refuse => Admission::Refuse,
            Verdict::Disconnect => {
                out.push(Effect::Close {
                    sid,
                    code: close::ABUSE,
                    reason: "request rate limit exceeded again and again",
                });
                Admission::Drop
            }
        }
    }

    /// The store granted `uid`'s claim to session `sid`. `replaced` is the session name the
    /// claim was taken from (a resume): if that session is live on this edge it is closed as
    /// replaced, if it is detached here its grace period is over without a leave (the rooms
    /// belong to the new session now). Returns false if `sid` is gone.
    pub fn bind(
        &mut self,
        sid: SessionId,
        uid: &str,
        replaced: Option<&str>,
        out: &mut Vec<Effect>,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        s.uid = Some(uid.to_string());
        if let Some(old) = replaced {
            self.kick(uid, old, out);
        }
        self.by_uid.insert(uid.to_string(), sid);
        true
    }

    /// Another connection took over `uid`'s session named `token` (a kick from the bus, or a
    /// resume on this edge): a live one is closed with `close::REPLACED` and later leaves
    /// nothing; a detached one is forgotten without a leave.
    pub fn kick(&mut self, uid: &str, token: &str, out: &mut Vec<Effect>) {
        if self.detached.get(uid).is_some_and(|d| d.token == token) {
            self.detached.remove(uid);
        }
        let live = self.by_uid.get(uid).copied();
        let Some((sid, s)) = live.and_then(|sid| Some((sid, self.sessions.get_mut(&sid)?))) else {
            return;
        };
        if s.token == token {
            s.replaced = true;
            out.push(Effect::Close {
                sid,
                code: close::REPLACED,
                reason: "session resumed on another connection",
            });
        }
    }

    /// The session's uid was found taken by another session (Redis lost its data and someone
    /// logged in elsewhere): close ours as replaced.
    pub fn replaced_elsewhere(&mut self, sid: SessionId, out: &mut Vec<Effect>) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.replaced = true;
            out.push(Effect::Close {
                sid,
                code: close::REPLACED,
                reason: "logged in elsewhere",
            });
        }
    }

    /// The connection of `sid` ended. `on_purpose` (client close code 0) leaves at once; a
    /// lost connection detaches the uid, keeping its rooms until the grace period ends (or the
    /// drain deadline, if earlier); a replaced session leaves nothing.
    pub fn closed(
        &mut self,
        sid: SessionId,
        on_purpose: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        for rid in &s.rooms {
            self.rooms.leave(rid, sid);
            self.unhold(rid, out);
        }
        let Some(uid) = s.uid else {
            return;
        };
        if self.by_uid.get(&uid) == Some(&sid) {
            self.by_uid.remove(&uid);
        }
        if s.replaced {
            return;
        }
        let rooms: Vec<String> = s.rooms.into_iter().collect();
        if on_purpose {
            out.push(Effect::Leave {
                uid,
                token: s.token,
                rooms,
            });
            return;
        }
        let mut deadline = now + self.cfg.resume_grace;
        if let Some(d) = self.drain_deadline {
            deadline = deadline.min(d);
        }
        tracing::debug!(%uid, session = %s.token, ?deadline, "session detached");
        self.detached.insert(
            uid,
            Detached {
                token: s.token,
                rooms,
                deadline,
                checking: false,
            },
        );
    }

    // ---- rooms ------------------------------------------------------------------------------

    /// Starts a join of `rid` by `sid`: counts it as a user of the room's channel. Pair with
    /// [`EdgeCore::joined`] or [`EdgeCore::join_failed`].
    pub fn begin_join(&mut self, sid: SessionId, rid: &str) -> Result<JoinStart, JoinRefused> {
        let max = self.cfg.max_rooms_per_session;
        let s = self
            .sessions
            .get_mut(&sid)
            .ok_or(JoinRefused::NotLoggedIn)?;
        if s.uid.is_none() {
            return Err(JoinRefused::NotLoggedIn);
        }
        if s.rooms.contains(rid) {
            return Ok(JoinStart::Already);
        }
        if s.rooms.len() >= max {
            return Err(JoinRefused::TooManyRooms { max });
        }
        s.rooms.insert(rid.to_string());
        let sub = self.subs.entry(rid.to_string()).or_default();
        sub.users += 1;
        Ok(if sub.confirmed {
            JoinStart::Ready
        } else {
            JoinStart::Subscribe
        })
    }

    /// The bus confirmed the room's subscription.
    pub fn subscribed(&mut self, rid: &str) {
        if let Some(sub) = self.subs.get_mut(rid) {
            sub.confirmed = true;
        }
    }

    /// The subscription or the store's join failed: undo [`EdgeCore::begin_join`].
    pub fn join_failed(&mut self, sid: SessionId, rid: &str, out: &mut Vec<Effect>) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if s.rooms.remove(rid) {
                self.unhold(rid, out);
            }
        }
    }

    /// The store recorded the join of `rid` at the room's seq `seq`. Returns the gap the
    /// answer reports: for a [`JoinKind::Rejoin`], the seqs since the client's last one (an
    /// `onGap` push tells the room stream too); a replay's gap comes later, from
    /// [`EdgeCore::history_fetched`].
    pub fn joined(
        &mut self,
        sid: SessionId,
        rid: &str,
        seq: u64,
        kind: JoinKind,
        out: &mut Vec<Effect>,
    ) -> Option<(u64, u64)> {
        if !self.in_room(sid, rid) {
            return None; // the session closed (or the room was destroyed) meanwhile
        }
        let mut actions = Vec::new();
        let mut gap = None;
        let since = match kind {
            JoinKind::Enter => None,
            JoinKind::Resume { since } => Some(since),
            JoinKind::Rejoin { since } => {
                if since < seq {
                    gap = Some((since + 1, seq));
                    actions.push(Action::Gap {
                        sid,
                        rid: rid.to_string(),
                        from: since + 1,
                        to: seq,
                    });
                }
                None
            }
        };
        let (_, more) = self.rooms.join(rid, sid, seq, since);
        actions.extend(more);
        let early = self
            .subs
            .get_mut(rid)
            .map(|sub| std::mem::take(&mut sub.early))
            .unwrap_or_default();
        for (seq, frame) in early {
            actions.extend(self.rooms.push(rid, seq, frame));
        }
        if !actions.is_empty() {
            out.push(Effect::Feed {
                rid: rid.to_string(),
                actions,
            });
        }
        gap
    }

    /// `connector.leave` of `rid` starts: the member's own onLeave is expected from now on.
    /// Pair with [`EdgeCore::left`] or [`EdgeCore::leave_failed`].
    pub fn begin_leave(&mut self, sid: SessionId, rid: &str) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.leaving.insert(rid.to_string());
        }
    }

    /// The store refused the leave: the member stays.
    pub fn leave_failed(&mut self, sid: SessionId, rid: &str) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.leaving.remove(rid);
        }
    }

    /// The store removed `sid`'s uid from `rid` (`connector.leave`): finish its stream.
    pub fn left(&mut self, sid: SessionId, rid: &str, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.leaving.remove(rid);
        if !s.rooms.remove(rid) {
            return;
        }
        self.rooms.leave(rid, sid);
        out.push(Effect::Finish {
            sid,
            rid: rid.to_string(),
        });
        self.unhold(rid, out);
    }

    /// Drops one user of the room's channel; the last one unsubscribes it.
    fn unhold(&mut self, rid: &str, out: &mut Vec<Effect>) {
        if let Some(sub) = self.subs.get_mut(rid) {
            sub.users = sub.users.saturating_sub(1);
            if sub.users == 0 {
                self.subs.remove(rid);
                out.push(Effect::Unsubscribe {
                    rid: rid.to_string(),
                });
            }
        }
    }

    // ---- pushes from the bus ----------------------------------------------------------------

    /// A room push numbered `seq` arrived (the client frame, encoded once).
    pub fn room_push(&mut self, rid: &str, seq: u64, frame: Bytes, out: &mut Vec<Effect>) {
        if self.rooms.last_seq(rid).is_none() {
            // No feed yet: keep it for the joins under way (see `Sub::early`), else drop it.
            if let Some(sub) = self.subs.get_mut(rid) {
                sub.early.insert(seq, frame);
                if sub.early.len() > rooms::MAX_BUFFERED {
                    sub.early.pop_first();
                }
            }
            return;
        }
        let actions = self.rooms.push(rid, seq, frame);
        if !actions.is_empty() {
            out.push(Effect::Feed {
                rid: rid.to_string(),
                actions,
            });
        }
    }

    /// An onLeave of `uid` numbered `seq` arrived. If `uid` is a live member of `rid` here that
    /// is not leaving, the store removed it behind this edge's back (another edge reaped it
    /// while this one was paused or cut off): its session is taken out of the room first, so it
    /// never gets an onLeave about itself, and closed with `close::SHUTDOWN` so its client
    /// resumes and joins again visibly. Everyone else gets the push as usual.
    pub fn member_left_push(
        &mut self,
        rid: &str,
        seq: u64,
        uid: &str,
        frame: Bytes,
        out: &mut Vec<Effect>,
    ) {
        let local = self.by_uid.get(uid).copied().filter(|sid| {
            self.sessions
                .get(sid)
                .is_some_and(|s| s.rooms.contains(rid) && !s.leaving.contains(rid))
                && self.rooms.covers(rid, *sid, seq)
        });
        if let Some(sid) = local {
            tracing::warn!(uid, rid, seq, "a local member was removed by another edge");
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.rooms.remove(rid);
            }
            self.rooms.leave(rid, sid);
            out.push(Effect::Finish {
                sid,
                rid: rid.to_string(),
            });
            out.push(Effect::Close {
                sid,
                code: close::SHUTDOWN,
                reason: LEASE_LOST_REASON,
            });
            self.unhold(rid, out);
        }
        self.room_push(rid, seq, frame, out);
    }

    /// The registry refresh wrote the lease: `generation` is the store's generation id,
    /// `recovering` whether its recovery window is open, and `lease_existed` whether the lease
    /// was still there. Decides what the driver must do (see [`Registration`]); on
    /// [`Registration::Resume`] the sessions are closed here.
    ///
    /// This is the fence against a paused edge's stale state: it writes back silently only
    /// into a store that lost everything *and* still has numbering stopped. After a lost lease
    /// in the same generation (others may have reaped and seen its members leave), or after a
    /// reset whose window already closed (others may have numbered pushes since), its sessions
    /// resume instead and every change is visible.
    pub fn registration_checked(
        &mut self,
        generation: &str,
        recovering: bool,
        lease_existed: bool,
        out: &mut Vec<Effect>,
    ) -> Registration {
        let known = self.generation.replace(generation.to_string());
        if lease_existed {
            return Registration::Ok;
        }
        match known {
            // The first registration of this process: nothing to restore.
            None => Registration::Ok,
            Some(g) if g != generation && recovering => Registration::Reregister,
            Some(_) => {
                for sid in self.sessions.keys() {
                    out.push(Effect::Close {
                        sid: *sid,
                        code: close::SHUTDOWN,
                        reason: LEASE_LOST_REASON,
                    });
                }
                Registration::Resume
            }
        }
    }

    /// A push for some uids arrived: each one logged in here gets it on its session stream.
    pub fn users_push(&mut self, uids: &[String], frame: &Bytes, out: &mut Vec<Effect>) {
        for uid in uids {
            if let Some(sid) = self.by_uid.get(uid) {
                out.push(Effect::ToSession {
                    sid: *sid,
                    frame: frame.clone(),
                });
            }
        }
    }

    /// A broadcast arrived: every session gets it.
    pub fn broadcast(&mut self, frame: Bytes, out: &mut Vec<Effect>) {
        if !self.sessions.is_empty() {
            out.push(Effect::ToAll { frame });
        }
    }

    /// The room was destroyed: members get `frame` (onDestroy) as the last push on the room's
    /// stream, which is then finished; the room is forgotten and its channel released.
    pub fn room_destroyed(&mut self, rid: &str, seq: u64, frame: Bytes, out: &mut Vec<Effect>) {
        let members = self.rooms.drop_room(rid);
        let mut actions = Vec::with_capacity(members.len());
        for sid in &members {
            if let Some(s) = self.sessions.get_mut(sid) {
                s.rooms.remove(rid);
            }
            actions.push(Action::Deliver {
                sid: *sid,
                seq,
                frame: frame.clone(),
            });
        }
        if !actions.is_empty() {
            out.push(Effect::Feed {
                rid: rid.to_string(),
                actions,
            });
        }
        for sid in members {
            out.push(Effect::Finish {
                sid,
                rid: rid.to_string(),
            });
            self.unhold(rid, out);
        }
    }

    /// History asked for by an [`Action::Fill`] or [`Action::CatchUp`] arrived: `entries` are
    /// (seq, frame), oldest first; what they lack becomes a gap. Returns the gap reported to the
    /// catching-up member, if any (a resume's answer carries it).
    pub fn history_fetched(
        &mut self,
        fetched: Fetched,
        entries: Vec<(u64, Bytes)>,
        out: &mut Vec<Effect>,
    ) -> Option<(u64, u64)> {
        let (rid, actions, member) = match fetched {
            Fetched::Fill { rid, upto } => {
                let actions = self.rooms.filled(&rid, upto, entries);
                (rid, actions, None)
            }
            Fetched::CatchUp { rid, sid, upto } => {
                let actions = self.rooms.caught_up(&rid, sid, upto, entries);
                (rid, actions, Some(sid))
            }
        };
        let gap = member.and_then(|m| {
            actions.iter().find_map(|a| match a {
                Action::Gap { sid, from, to, .. } if *sid == m => Some((*from, *to)),
                _ => None,
            })
        });
        if !actions.is_empty() {
            out.push(Effect::Feed { rid, actions });
        }
        gap
    }

    /// After a bus reconnect the driver read each feed's room seq: fetch what the edge missed.
    pub fn room_seq_checked(&mut self, rid: &str, seq: u64, out: &mut Vec<Effect>) {
        if let Some(last) = self.rooms.last_seq(rid).filter(|last| seq > *last) {
            out.push(Effect::Feed {
                rid: rid.to_string(),
                actions: vec![Action::Fill {
                    rid: rid.to_string(),
                    after: last,
                    upto: seq,
                }],
            });
        }
    }

    // ---- time and drain ---------------------------------------------------------------------

    /// Marks the edge draining (announced to the gates) before its sessions are moved.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Drains: every session is closed with `close::SHUTDOWN` (its client resumes
    /// elsewhere); detached sessions are left by `now + drain` at the latest.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let deadline = now + self.cfg.drain;
        self.draining = true;
        self.drain_deadline = Some(deadline);
        for d in self.detached.values_mut() {
            d.deadline = d.deadline.min(deadline);
        }
        for (sid, _) in self.stateful_sessions() {
            out.push(Effect::Close {
                sid: *sid,
                code: close::SHUTDOWN,
                reason: DRAIN_REASON,
            });
        }
    }

    /// Whether a draining edge is done: no session left but gate-only ones (they hold
    /// nothing), no detached session waiting.
    pub fn drained(&self) -> bool {
        self.stateful_sessions().next().is_none() && self.detached.is_empty()
    }

    /// The next deadline the driver must call [`EdgeCore::handle_timeout`] at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.detached
            .values()
            .filter(|d| !d.checking)
            .map(|d| d.deadline)
            .min()
    }

    /// Time passed: detached sessions whose deadline is over get their claim checked.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Effect>) {
        for (uid, d) in self.detached.iter_mut() {
            if !d.checking && d.deadline <= now {
                d.checking = true;
                out.push(Effect::CheckClaim {
                    uid: uid.clone(),
                    token: d.token.clone(),
                });
            }
        }
    }

    /// The answer to an [`Effect::CheckClaim`]: `ours` is false when `rc:session:<uid>` no
    /// longer names `token` (resumed elsewhere, or this edge was reaped and its claims
    /// released): then the rooms are not ours to leave. When the store could not be asked,
    /// pass true: leaving is checked again by the leave script (only through this edge).
    pub fn claim_checked(&mut self, uid: &str, token: &str, ours: bool, out: &mut Vec<Effect>) {
        let mine = self.detached.get(uid).is_some_and(|d| d.token == token);
        if !mine {
            return; // resumed (here or elsewhere) while the store was asked
        }
        let Some(d) = self.detached.remove(uid) else {
            return;
        };
        if ours {
            out.push(Effect::Leave {
                uid: uid.to_string(),
                token: d.token,
                rooms: d.rooms,
            });
        } else {
            tracing::debug!(uid, session = %d.token, "claim moved on; nothing to leave");
        }
    }
}
