//! Limits failed sign-ins, per account and per client address, in memory.
//!
//! A few failures are free; after that each failure closes the door for a window that doubles
//! (1 s, 2 s, 4 s, ...) up to a short cap. Guessing passwords becomes slow, while an attacker who
//! fails on purpose against someone else's account can lock its owner out for at most the
//! account cap (30 s) at a time. Counters are forgotten after a quiet quarter of an hour, and a
//! successful sign-in clears its account's (never its address's: signing in to one's own
//! account must not reset the budget for guessing others').
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct Policy {
    free: u32,
    cap: Duration,
}

const ACCOUNT: Policy = Policy {
    free: 5,
    cap: Duration::from_secs(30),
};
const ADDRESS: Policy = Policy {
    free: 20,
    cap: Duration::from_secs(60),
};
/// How long a counter lives without a new failure.
const FORGET: Duration = Duration::from_secs(15 * 60);
/// Above this many counters, stale ones are dropped (and, if still too many, all).
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

struct Entry {
    failures: u32,
    last: Instant,
    blocked_until: Instant,
}

#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
}

fn keys(username: &str, addr: Option<IpAddr>) -> Vec<(Key, Policy)> {
    let mut k = vec![(Key::Account(username.to_lowercase()), ACCOUNT)];
    if let Some(a) = addr {
        k.push((Key::Address(a), ADDRESS));
    }
    k
}

impl Throttle {
    /// How long until a sign-in for `username` from `addr` may be tried, if it may not now.
    pub fn wait(&self, username: &str, addr: Option<IpAddr>) -> Option<Duration> {
        self.wait_at(username, addr, Instant::now())
    }

    fn wait_at(&self, username: &str, addr: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let map = self.entries.lock().ok()?;
        keys(username, addr)
            .iter()
            .filter_map(|(k, _)| map.get(k))
            .filter(|e| e.blocked_until > now)
            .map(|e| e.blocked_until - now)
            .max()
    }

    pub fn failed(&self, username: &str, addr: Option<IpAddr>) {
        self.failed_at(username, addr, Instant::now())
    }

    fn failed_at(&self, username: &str, addr: Option<IpAddr>, now: Instant) {
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now.duration_since(e.last) < FORGET);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        for (k, policy) in keys(username, addr) {
            let e = map.entry(k).or_insert(Entry {
                failures: 0,
                last: now,
                blocked_until: now,
            });
            if now.duration_since(e.last) >= FORGET {
                e.failures = 0;
            }
            e.failures += 1;
            e.last = now;
            if e.failures > policy.free {
                let doublings = (e.failures - policy.free - 1).min(16);
                let window = Duration::from_secs(1 << doublings).min(policy.cap);
                e.blocked_until = now + window;
            }
        }
    }

    pub fn succeeded(&self, username: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(&Key::Account(username.to_lowercase()));
        }
    }
}

/// Whole seconds to tell a person, rounded up so "try again in 0 s" never happens.
pub fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stays_short_for_an_account() {
        let t = Throttle::default();
        let now = Instant::now();
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        for _ in 0..ACCOUNT.free {
            t.failed_at("alice", a, now);
        }
        assert_eq!(t.wait_at("alice", a, now), None);
        t.failed_at("alice", a, now);
        assert_eq!(t.wait_at("alice", a, now), Some(Duration::from_secs(1)));
        t.failed_at("alice", a, now);
        assert_eq!(t.wait_at("alice", a, now), Some(Duration::from_secs(2)));
        for _ in 0..40 {
            t.failed_at("Alice", a, now);
        }
        // However many failures, an account is closed for at most the cap, and opens again.
        assert_eq!(t.wait_at("ALICE", None, now), Some(ACCOUNT.cap));
        assert_eq!(t.wait_at("alice", None, now + ACCOUNT.cap), None);
        t.succeeded("alice");
        assert_eq!(t.wait_at("alice", None, now), None);
    }

    #[test]
    fn an_address_is_limited_across_accounts_and_success_does_not_reset_it() {
        let t = Throttle::default();
        let now = Instant::now();
        let a: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        for i in 0..=ADDRESS.free {
            t.failed_at(&format!("user{i}"), a, now);
        }
        t.succeeded("user0");
        assert_eq!(
            t.wait_at("someone-else", a, now),
            Some(Duration::from_secs(1))
        );
        // Another address is not affected.
        assert_eq!(
            t.wait_at("someone-else", Some("10.0.0.3".parse().unwrap()), now),
            None
        );
        // A quiet quarter of an hour forgets the count.
        let later = now + FORGET;
        t.failed_at("x", a, later);
        assert_eq!(t.wait_at("y", a, later), None);
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(2)), 2);
    }
}
