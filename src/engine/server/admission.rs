//! Which connections may wait for, and go through, login: the engine's defence
//! against connection floods, as pure bookkeeping (no sockets, no clock of its own).
//!
//! Owns: the limits (connections held before login in total and per source address,
//! logins in progress at once, the login timeout), each pre-login connection's
//! stage, and the decisions: admit, admit by closing an older connection, refuse,
//! start a login, time out.
//! Does not: touch a socket. `gate.rs` does what the decisions say.
//!
//! Stages of a connection before its login completes:
//!
//! * **idle**: accepted, nothing received yet. Costs a descriptor, no thread.
//! * **waiting**: bytes arrived (a Login Request is coming) but every login slot is
//!   busy. Costs a descriptor, no thread.
//! * **in login**: a thread runs the login. At most `max_logins` at once.
//!
//! Under pressure (the total or a source's share is full) the oldest idle connection
//! is closed first: it has shown no sign of being an initiator. Then the oldest
//! waiting one. Connections in login are never displaced (they hold a thread that
//! the timeout frees); when every slot is held by them, the newcomer is refused.
//! Every stage counts from the accept against one login timeout (LIO's is 15 s), so
//! a peer that drips a byte at a time cannot hold a slot longer than that.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The limits `isctl serve` enforces before login (its `--max-*` and
/// `--login-timeout` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections accepted and not yet logged in, in total.
    pub max_pending: usize,
    /// Connections not yet logged in from one source address.
    pub max_pending_per_source: usize,
    /// Logins running at once (each holds a thread).
    pub max_logins: usize,
    /// From accept to the final login response.
    pub login_timeout: Duration,
}

impl Limits {
    /// LIO's login timeout (`ISCSI_LOGIN_TIMEOUT` in the kernel's iscsi_target_login.c).
    pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 1024,
            max_pending_per_source: 64,
            max_logins: 64,
            login_timeout: Limits::LOGIN_TIMEOUT,
        }
    }
}

/// A pre-login connection's handle; increasing with the accept order, so the
/// smallest is the oldest.
pub type Id = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Idle,
    Waiting,
    InLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection this source may hold is in login.
    SourceFull,
    /// Every pre-login connection the engine may hold is in login.
    Full,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::SourceFull => "its address already has the most connections in login",
            Refusal::Full => "the engine already has the most connections in login",
        })
    }
}

/// The answer to an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hold it as `id`, after closing `evict` (older connections displaced for it).
    Admit {
        id: Id,
        evict: Vec<Id>,
    },
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    source: IpAddr,
    accepted: Instant,
    stage: Stage,
    /// Timed out while in login: its socket was shut down, the thread is ending.
    cut: bool,
}

/// Running totals, for the log and the control API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Closed to make room (oldest idle first).
    pub evicted: u64,
    /// Closed at once: no room.
    pub refused: u64,
    /// Closed (or cut in login) at the login timeout.
    pub timed_out: u64,
}

/// The pre-login connections and what to do with them.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    entries: BTreeMap<Id, Entry>,
    per_source: HashMap<IpAddr, usize>,
    in_login: usize,
    next_id: Id,
    counters: Counters,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            entries: BTreeMap::new(),
            per_source: HashMap::new(),
            in_login: 0,
            next_id: 1,
            counters: Counters::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Connections held before login (every stage).
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    pub fn in_login(&self) -> usize {
        self.in_login
    }

    pub fn stage(&self, id: Id) -> Option<Stage> {
        self.entries.get(&id).map(|e| e.stage)
    }

    /// Connections that have sent nothing yet (to watch for input).
    pub fn idle(&self) -> impl Iterator<Item = Id> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.stage == Stage::Idle)
            .map(|(id, _)| *id)
    }

    /// A connection from `source` was accepted at `now`.
    pub fn on_accept(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let mut evict = Vec::new();
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.max_pending_per_source
        {
            match self.victim(Some(source), &evict) {
                Some(v) => evict.push(v),
                None => return self.refuse(Refusal::SourceFull),
            }
        }
        if self.entries.len() - evict.len() >= self.limits.max_pending {
            match self.victim(None, &evict) {
                Some(v) => evict.push(v),
                None => return self.refuse(Refusal::Full),
            }
        }
        for v in &evict {
            self.remove(*v);
            self.counters.evicted += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                source,
                accepted: now,
                stage: Stage::Idle,
                cut: false,
            },
        );
        *self.per_source.entry(source).or_default() += 1;
        Verdict::Admit { id, evict }
    }

    fn refuse(&mut self, why: Refusal) -> Verdict {
        self.counters.refused += 1;
        Verdict::Refuse(why)
    }

    /// The connection to close for a newcomer (from `source` only, if given): the
    /// oldest idle one, else the oldest waiting one; none of `taken`.
    fn victim(&self, source: Option<IpAddr>, taken: &[Id]) -> Option<Id> {
        let fits = |id: &Id, e: &Entry| source.is_none_or(|s| e.source == s) && !taken.contains(id);
        let oldest = |stage: Stage| {
            self.entries
                .iter()
                .find(|(id, e)| e.stage == stage && fits(id, e))
                .map(|(id, _)| *id)
        };
        oldest(Stage::Idle).or_else(|| oldest(Stage::Waiting))
    }

    /// Input arrived on an idle connection: it wants to log in.
    pub fn on_readable(&mut self, id: Id) {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.stage == Stage::Idle {
                e.stage = Stage::Waiting;
            }
        }
    }

    /// Waiting connections that may start their login now: the oldest of the source
    /// with the fewest logins in progress first, so that sources flooding with slow
    /// logins cannot keep another source's initiator waiting for more than one free
    /// slot.
    pub fn start_logins(&mut self) -> Vec<Id> {
        let mut started = Vec::new();
        while self.in_login < self.limits.max_logins {
            let mut busy: HashMap<IpAddr, usize> = HashMap::new();
            for e in self.entries.values().filter(|e| e.stage == Stage::InLogin) {
                *busy.entry(e.source).or_default() += 1;
            }
            let Some(id) = self
                .entries
                .iter()
                .filter(|(_, e)| e.stage == Stage::Waiting)
                .min_by_key(|(id, e)| (busy.get(&e.source).copied().unwrap_or(0), **id))
                .map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&id) {
                e.stage = Stage::InLogin;
            }
            self.in_login += 1;
            started.push(id);
        }
        started
    }

    /// A login ended (completed, failed, or cut): its slot is free.
    pub fn on_login_end(&mut self, id: Id) {
        if self
            .entries
            .get(&id)
            .is_some_and(|e| e.stage == Stage::InLogin)
        {
            self.remove(id);
        }
    }

    /// A connection that is gone before its login (the peer closed it).
    pub fn forget(&mut self, id: Id) {
        if self
            .entries
            .get(&id)
            .is_some_and(|e| e.stage != Stage::InLogin)
        {
            self.remove(id);
        }
    }

    /// Connections whose login time is up at `now`. Idle and waiting ones are
    /// forgotten (the caller closes them); ones in login are reported once and keep
    /// their slot until their thread ends (the caller shuts their socket down).
    pub fn expire(&mut self, now: Instant) -> Vec<(Id, Stage)> {
        let timeout = self.limits.login_timeout;
        let due: Vec<(Id, Stage)> = self
            .entries
            .iter()
            .take_while(|(_, e)| e.accepted + timeout <= now)
            .filter(|(_, e)| !e.cut)
            .map(|(id, e)| (*id, e.stage))
            .collect();
        for (id, stage) in &due {
            self.counters.timed_out += 1;
            if *stage == Stage::InLogin {
                if let Some(e) = self.entries.get_mut(id) {
                    e.cut = true;
                }
            } else {
                self.remove(*id);
            }
        }
        due
    }

    /// When [`Admission::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .find(|e| !e.cut)
            .map(|e| e.accepted + self.limits.login_timeout)
    }

    fn remove(&mut self, id: Id) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        if e.stage == Stage::InLogin {
            self.in_login -= 1;
        }
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits(max_pending: usize, per_source: usize, max_logins: usize) -> Limits {
        Limits {
            max_pending,
            max_pending_per_source: per_source,
            max_logins,
            login_timeout: Duration::from_secs(15),
        }
    }

    fn admit(a: &mut Admission, source: IpAddr, now: Instant) -> (Id, Vec<Id>) {
        match a.on_accept(source, now) {
            Verdict::Admit { id, evict } => (id, evict),
            v => panic!("expected admission, got {v:?}"),
        }
    }

    #[test]
    fn a_full_engine_closes_the_oldest_idle_connection_not_a_busy_one() {
        let now = Instant::now();
        let mut a = Admission::new(limits(3, 10, 10));
        let (first, _) = admit(&mut a, ip(2), now);
        let (second, _) = admit(&mut a, ip(3), now);
        let (third, _) = admit(&mut a, ip(4), now);
        // The first one starts talking: it is no longer idle.
        a.on_readable(first);
        let (_, evicted) = admit(&mut a, ip(5), now);
        assert_eq!(
            evicted,
            vec![second],
            "the oldest idle one goes, not the talker"
        );
        assert_eq!(a.stage(first), Some(Stage::Waiting));
        assert_eq!(a.pending(), 3);
        let (_, evicted) = admit(&mut a, ip(5), now);
        assert_eq!(evicted, vec![third]);
        assert_eq!(a.counters().evicted, 2);
    }

    #[test]
    fn waiting_connections_go_after_idle_ones_and_logins_never() {
        let now = Instant::now();
        let mut a = Admission::new(limits(2, 10, 1));
        let (x, _) = admit(&mut a, ip(2), now);
        let (y, _) = admit(&mut a, ip(2), now);
        a.on_readable(x);
        a.on_readable(y);
        assert_eq!(a.start_logins(), vec![x], "one login slot, oldest first");
        // y waits for the slot; a newcomer displaces it (no idle one is left)...
        let (z, evicted) = admit(&mut a, ip(3), now);
        assert_eq!(evicted, vec![y]);
        a.on_readable(z);
        assert!(a.start_logins().is_empty(), "the slot is still busy");
        // ...but one in login is never displaced: with x in login and z waiting, the
        // next newcomer displaces z, and once both are in login, newcomers are refused.
        a.on_login_end(x);
        assert_eq!(a.start_logins(), vec![z]);
        let (w, evicted) = admit(&mut a, ip(4), now);
        assert!(evicted.is_empty());
        a.on_readable(w);
        let mut a2 = Admission::new(limits(2, 10, 2));
        let (p, _) = admit(&mut a2, ip(2), now);
        let (q, _) = admit(&mut a2, ip(2), now);
        a2.on_readable(p);
        a2.on_readable(q);
        assert_eq!(a2.start_logins(), vec![p, q]);
        assert_eq!(a2.on_accept(ip(9), now), Verdict::Refuse(Refusal::Full));
        assert_eq!(a2.counters().refused, 1);
    }

    #[test]
    fn one_source_cannot_take_the_room_of_others() {
        let now = Instant::now();
        let mut a = Admission::new(limits(100, 4, 10));
        let others = admit(&mut a, ip(1), now).0;
        let flood: Vec<Id> = (0..4).map(|_| admit(&mut a, ip(2), now).0).collect();
        // The fifth from the same address displaces that address's oldest, never
        // another address's connection (even an older one).
        let (_, evicted) = admit(&mut a, ip(2), now);
        assert_eq!(evicted, vec![flood[0]]);
        assert_eq!(a.stage(others), Some(Stage::Idle));
        for _ in 0..1000 {
            let (_, evicted) = admit(&mut a, ip(2), now);
            assert_eq!(evicted.len(), 1);
        }
        assert_eq!(a.pending(), 5, "4 from the flood, 1 other");
        // A source whose connections are all in login is refused.
        let mut b = Admission::new(limits(100, 2, 10));
        for _ in 0..2 {
            let (id, _) = admit(&mut b, ip(7), now);
            b.on_readable(id);
        }
        assert_eq!(b.start_logins().len(), 2);
        assert_eq!(
            b.on_accept(ip(7), now),
            Verdict::Refuse(Refusal::SourceFull)
        );
        assert!(matches!(b.on_accept(ip(8), now), Verdict::Admit { .. }));
    }

    #[test]
    fn the_login_timeout_counts_from_the_accept_whatever_the_stage() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(10, 10, 1));
        let (idle, _) = admit(&mut a, ip(2), t0);
        let (dripping, _) = admit(&mut a, ip(3), t0 + Duration::from_secs(1));
        let (waiting, _) = admit(&mut a, ip(4), t0 + Duration::from_secs(2));
        a.on_readable(dripping);
        a.on_readable(waiting);
        assert_eq!(a.start_logins(), vec![dripping]);
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(15)));
        assert!(a.expire(t0 + Duration::from_secs(14)).is_empty());
        assert_eq!(
            a.expire(t0 + Duration::from_secs(16)),
            vec![(idle, Stage::Idle), (dripping, Stage::InLogin)]
        );
        // The dripping login keeps its slot until its thread ends, and is reported once.
        assert_eq!(a.in_login(), 1);
        assert!(a.expire(t0 + Duration::from_secs(16)).is_empty());
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(17)));
        a.on_login_end(dripping);
        assert_eq!(a.start_logins(), vec![waiting]);
        assert_eq!(
            a.expire(t0 + Duration::from_secs(17)),
            vec![(waiting, Stage::InLogin)]
        );
        assert_eq!(a.counters().timed_out, 3);
    }

    #[test]
    fn a_free_slot_goes_to_the_source_with_the_fewest_logins() {
        let now = Instant::now();
        let mut a = Admission::new(limits(100, 100, 2));
        let drips: Vec<Id> = (0..4).map(|_| admit(&mut a, ip(2), now).0).collect();
        for id in &drips {
            a.on_readable(*id);
        }
        assert_eq!(a.start_logins(), drips[..2].to_vec());
        let (initiator, _) = admit(&mut a, ip(1), now);
        a.on_readable(initiator);
        a.on_login_end(drips[0]);
        assert_eq!(a.start_logins(), vec![initiator], "not the older drips");
    }

    #[test]
    fn bookkeeping_returns_to_empty() {
        let now = Instant::now();
        let mut a = Admission::new(limits(8, 3, 2));
        let mut ids = Vec::new();
        for i in 0..20u8 {
            if let Verdict::Admit { id, .. } = a.on_accept(ip(i % 3), now) {
                ids.push(id);
            }
        }
        for id in &ids {
            a.on_readable(*id);
        }
        loop {
            let started = a.start_logins();
            if started.is_empty() {
                break;
            }
            for id in started {
                a.on_login_end(id);
            }
        }
        for id in ids {
            a.forget(id);
        }
        assert_eq!(a.pending(), 0);
        assert_eq!(a.in_login(), 0);
        assert!(a.per_source.is_empty());
        assert!(a.idle().next().is_none());
    }
}
