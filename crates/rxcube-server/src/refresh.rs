//! The server keeps the rollups fresh itself (`--no-auto-refresh` turns it off).
//!
//! Every reload ([`crate::Options::reload`]) shows the server the tables' versions. When a
//! built rollup is stale (an import or a reference change landed after its watermark, or its
//! definition changed), the server refreshes the rollups in the background, as
//! `rxcube rollup refresh` would (which also builds any rollup never built; one never built
//! does not start a refresh by itself: that is `rxcube rollup build`, the operator's call): one job at a time, each rollup swapped in by one atomic
//! commit, the job drawing from the server's memory pool like one query. Then it reloads, so
//! new statements read the fresh rollups while those in flight finish on the snapshot they
//! were planned on.
//!
//! The refresh is *debounced* ([`Debounce`]): it starts once no newer version has shown up for
//! `--refresh-debounce` seconds, so a burst of imports is absorbed by one job; a landing area
//! that never goes quiet still gets one every [`MAX_WAIT_FACTOR`] debounce periods. A job that
//! fails is logged and tried again later, waiting twice as long after each failure (at most
//! [`MAX_BACKOFF`]). `system.rollups` and `rxcube rollup status` show how far behind each
//! rollup is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Service;

/// A stale rollup is refreshed at the latest this many debounce periods after it was first
/// seen stale, even while imports keep landing.
pub const MAX_WAIT_FACTOR: u32 = 12;
/// The longest wait before a failed job is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// When to start a refresh, from what each reload shows: pure bookkeeping, no clock of its own.
#[derive(Debug)]
pub struct Debounce {
    quiet: Duration,
    /// The versions last seen stale (tables and rollups, [`rxcube_cube::rollup::Rollups`]'s
    /// `snapshot`), when they were first seen, and when the rollups were first seen stale.
    pending: Option<(String, Instant, Instant)>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Debounce {
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            pending: None,
            failures: 0,
            retry_at: None,
        }
    }

    /// Whether a refresh is due at `now`, given that the rollups are `stale` at the versions
    /// `key`.
    pub fn observe(&mut self, stale: bool, key: &str, now: Instant) -> bool {
        if !stale {
            self.pending = None;
            return false;
        }
        let (changed, first) = match self.pending.take() {
            Some((k, changed, first)) if k == key => (changed, first),
            Some((_, _, first)) => (now, first),
            None => (now, now),
        };
        self.pending = Some((key.to_string(), changed, first));
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        now.duration_since(changed) >= self.quiet
            || now.duration_since(first) >= self.quiet * MAX_WAIT_FACTOR
    }

    /// A job ended well: the next stale version starts a new wait.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.pending = None;
    }

    /// A job failed at `now`: the next waits twice as long as the last (at least the debounce
    /// period, at most [`MAX_BACKOFF`]).
    pub fn failed(&mut self, now: Instant) {
        let wait = self
            .quiet
            .max(Duration::from_secs(1))
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF);
        self.failures += 1;
        self.retry_at = Some(now + wait);
    }
}

/// The server's refresher: the debounce and the one job it may run.
#[derive(Debug)]
pub struct AutoRefresh {
    debounce: Mutex<Debounce>,
    running: AtomicBool,
}

impl AutoRefresh {
    pub fn new(quiet: Duration) -> Arc<Self> {
        Arc::new(Self {
            debounce: Mutex::new(Debounce::new(quiet)),
            running: AtomicBool::new(false),
        })
    }

    /// Looks at the rollups `service` serves now and starts a refresh in the background when
    /// one is due and none is running. Called after every reload.
    pub fn tick(self: &Arc<Self>, service: &Arc<Service>) {
        if self.running.load(Ordering::Acquire) {
            return;
        }
        let rollups = service.rollups();
        let stale: Vec<&str> = rollups
            .states
            .iter()
            // A rollup never built is the operator's to build (`rxcube rollup build`): on a
            // large chain that is a long job, not one to start unasked.
            .filter(|s| s.version.is_some() && !s.is_fresh())
            .map(|s| s.def.name.as_str())
            .collect();
        let due = self
            .debounce
            .lock()
            .is_ok_and(|mut d| d.observe(!stale.is_empty(), &rollups.snapshot, Instant::now()));
        if !due || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(stale = %stale.join(", "), "refreshing the rollups");
        let (me, service) = (self.clone(), service.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = service.refresh_rollups().await;
            if let Ok(mut d) = me.debounce.lock() {
                match &outcome {
                    Ok(_) => d.succeeded(),
                    Err(_) => d.failed(Instant::now()),
                }
            }
            match outcome {
                Ok(reports) => {
                    let done: Vec<String> = reports
                        .iter()
                        .map(|r| format!("{} {}", r.rollup, r.action))
                        .collect();
                    tracing::info!(
                        seconds = started.elapsed().as_secs_f64(),
                        "rollups refreshed: {}",
                        done.join(", ")
                    );
                }
                Err(e) => tracing::warn!(
                    "cannot refresh the rollups (queries read the raw tables where they are \
                     stale; trying again later): {e:#}"
                ),
            }
            me.running.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_waits_for_a_quiet_period_and_not_forever() {
        let quiet = Duration::from_secs(5);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Debounce::new(quiet);
        assert!(!d.observe(false, "a", at(0)), "fresh rollups need nothing");
        assert!(!d.observe(true, "a", at(0)), "first seen stale: wait");
        assert!(!d.observe(true, "a", at(4)));
        assert!(d.observe(true, "a", at(5)), "quiet for 5 s");
        // Versions that keep changing put it off, up to 12 quiet periods after the first.
        let mut d = Debounce::new(quiet);
        for s in 0..60 {
            assert!(!d.observe(true, &format!("v{s}"), at(s)), "at {s} s");
        }
        assert!(d.observe(true, "v60", at(60)));
        // Fresh again: the next stale version waits anew.
        assert!(!d.observe(false, "v60", at(61)));
        assert!(!d.observe(true, "v61", at(62)));
        assert!(d.observe(true, "v61", at(67)));
    }

    #[test]
    fn a_failed_refresh_is_tried_again_later_and_later() {
        let quiet = Duration::from_secs(5);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut d = Debounce::new(quiet);
        assert!(!d.observe(true, "a", at(0)));
        assert!(d.observe(true, "a", at(5)));
        d.failed(at(6));
        assert!(!d.observe(true, "a", at(10)), "5 s after the failure");
        assert!(d.observe(true, "a", at(11)));
        d.failed(at(11));
        assert!(!d.observe(true, "a", at(20)), "then 10 s");
        assert!(d.observe(true, "a", at(21)));
        for _ in 0..20 {
            d.failed(at(21));
        }
        assert!(!d.observe(true, "a", at(21 + 599)), "at most 10 min");
        assert!(d.observe(true, "a", at(21 + 600)));
        d.succeeded();
        assert!(!d.observe(true, "a", at(700)), "a new wait, no back-off");
        assert!(d.observe(true, "a", at(705)));
    }
}
