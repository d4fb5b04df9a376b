//! Failed sign-ins slow down whoever makes them.
//!
//! Failures are counted per user name and per client address. Once a name has failed
//! `max_failed_logins` times (an address `max_failed_logins_per_address` times), every further
//! attempt for it, even with the right password, is refused without checking the password
//! until a delay has passed: 1 s after the last counted failure, doubling with each further
//! failure, at most [`MAX_LOCK`]. A successful sign-in clears the name's count (not the
//! address's, so one good account cannot reset the count of an address guessing at others);
//! counts are forgotten [`FORGET_AFTER`] after the last failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest wait.
pub const MAX_LOCK: Duration = Duration::from_secs(300);
/// How long failures are remembered.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most names and addresses remembered at once (the oldest are forgotten first).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Who waits, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// `user 'pat'` or `address 127.0.0.1`.
    pub who: String,
    pub wait: Duration,
}

impl Locked {
    /// Whole seconds to wait, rounded up.
    pub fn seconds(&self) -> u64 {
        self.wait.as_millis().div_ceil(1000).max(1) as u64
    }
}

#[derive(Debug)]
pub struct Throttle {
    per_user: u32,
    per_address: u32,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl Throttle {
    pub fn new(per_user: u32, per_address: u32) -> Self {
        Self {
            per_user: per_user.max(1),
            per_address: per_address.max(1),
            failures: Mutex::default(),
        }
    }

    fn keys(user: &str, address: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::User(user.to_string())];
        keys.extend(address.map(Key::Address));
        keys
    }

    /// Whether an attempt for `user` from `address` must wait now, and how long.
    pub fn locked(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Option<Locked> {
        let failures = self.failures.lock().ok()?;
        Self::keys(user, address)
            .into_iter()
            .filter_map(|k| {
                let until = failures.get(&k)?.locked_until?;
                (until > now).then(|| Locked {
                    who: match &k {
                        Key::User(u) => format!("user '{u}'"),
                        Key::Address(a) => format!("address {a}"),
                    },
                    wait: until - now,
                })
            })
            .max_by_key(|l| l.wait)
    }

    /// Counts a failed attempt (one that was checked: not one refused while waiting).
    pub fn failed(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_ENTRIES {
            Self::forget(&mut failures, now);
            if failures.len() >= MAX_ENTRIES {
                let mut by_age: Vec<(Instant, Key)> =
                    failures.iter().map(|(k, f)| (f.last, k.clone())).collect();
                by_age.sort_by_key(|(last, _)| *last);
                for (_, k) in by_age.into_iter().take(MAX_ENTRIES / 10) {
                    failures.remove(&k);
                }
            }
        }
        for key in Self::keys(user, address) {
            let threshold = match key {
                Key::User(_) => self.per_user,
                Key::Address(_) => self.per_address,
            };
            let f = failures.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            if now.duration_since(f.last) > FORGET_AFTER {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            if f.count >= threshold {
                let doublings = (f.count - threshold).min(16);
                let wait = Duration::from_secs(1u64 << doublings).min(MAX_LOCK);
                f.locked_until = Some(now + wait);
            }
        }
    }

    /// A successful sign-in of `user`: its name starts over.
    pub fn succeeded(&self, user: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Key::User(user.to_string()));
        }
    }

    /// Forgets failures older than [`FORGET_AFTER`] whose wait is over. Run periodically.
    pub fn sweep(&self, now: Instant) {
        if let Ok(mut failures) = self.failures.lock() {
            Self::forget(&mut failures, now);
        }
    }

    fn forget(failures: &mut HashMap<Key, Failures>, now: Instant) {
        failures.retain(|_, f| {
            now.duration_since(f.last) <= FORGET_AFTER || f.locked_until.is_some_and(|u| u > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_waits_after_its_failures_and_longer_with_each_one() {
        let t = Throttle::new(5, 20);
        let at = Instant::now();
        let here = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..4 {
            t.failed("pat", here, at);
            assert_eq!(t.locked("pat", here, at), None);
        }
        t.failed("pat", here, at);
        let locked = t.locked("pat", here, at).expect("locked");
        assert_eq!(locked.who, "user 'pat'");
        assert_eq!(locked.seconds(), 1);
        // Other names from the same address are not held up by pat's failures.
        assert_eq!(t.locked("dana", here, at), None);
        let later = at + Duration::from_millis(1500);
        assert_eq!(t.locked("pat", here, later), None);
        t.failed("pat", here, later);
        assert_eq!(t.locked("pat", here, later).expect("locked").seconds(), 2);
        let much_later = later + Duration::from_secs(3);
        t.failed("pat", here, much_later);
        assert_eq!(
            t.locked("pat", here, much_later).expect("locked").seconds(),
            4
        );
        t.succeeded("pat");
        assert_eq!(t.locked("pat", None, much_later), None);
    }

    #[test]
    fn an_address_waits_after_failures_for_any_names_and_a_success_does_not_clear_it() {
        let t = Throttle::new(5, 20);
        let at = Instant::now();
        let there = Some(IpAddr::from([10, 0, 0, 7]));
        for i in 0..20 {
            t.failed(&format!("guess{i}"), there, at);
        }
        let locked = t.locked("dana", there, at).expect("locked");
        assert_eq!(locked.who, "address 10.0.0.7");
        t.succeeded("dana");
        assert!(t.locked("dana", there, at).is_some());
        assert_eq!(
            t.locked("dana", Some(IpAddr::from([10, 0, 0, 8])), at),
            None
        );
    }

    #[test]
    fn waits_are_bounded_and_failures_are_forgotten() {
        let t = Throttle::new(1, 100);
        let mut at = Instant::now();
        for _ in 0..40 {
            t.failed("pat", None, at);
            let wait = t.locked("pat", None, at).expect("locked").wait;
            assert!(wait <= MAX_LOCK);
            at += wait;
        }
        let after = at + FORGET_AFTER + Duration::from_secs(1);
        t.sweep(after);
        assert!(t.failures.lock().expect("lock").is_empty());
    }
}
