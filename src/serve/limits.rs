//! Per-key limits at run time: the request rate (a GCRA limiter from `governor`, lock-free) and
//! the query budget (inputs predicted per hour, day or month), whose counts are saved in
//! `<runs-dir>/key-usage.json` so that a restart does not hand every caller a fresh budget.
//!
//! This module counts; it does not decide which key a request carries ([`super::auth`]) or what
//! status to answer ([`super::app`]).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::keys::{Budget, RateLimit, write_private};
use crate::error::{Error, Result};

/// The usage file's name inside the run store.
pub const USAGE_FILE: &str = "key-usage.json";

/// A key's request-rate limiter.
pub struct Rate {
    limiter: DefaultDirectRateLimiter,
    pub config: RateLimit,
}

impl Rate {
    pub fn new(config: RateLimit) -> Self {
        let per_second = NonZeroU32::new(config.per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(config.burst.max(1)).expect("at least 1");
        Rate { limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)), config }
    }

    /// Takes one request's cell, or says how long until one is free.
    pub fn check(&self) -> std::result::Result<(), Duration> {
        self.limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// A key's allowance of tokens per minute: a bucket that refills at the rate and holds at most
/// a minute's worth. Tokens are charged as they are used (the prompt when the request is
/// admitted, the completion when it ends), so the bucket can go below zero: a request is
/// admitted only while it is not, and the caller is told how long until it is.
pub struct TokenRate {
    pub per_minute: u64,
    /// (tokens available, may be negative; when that was last brought up to date).
    state: Mutex<(f64, std::time::Instant)>,
}

impl TokenRate {
    pub fn new(per_minute: u64) -> Self {
        TokenRate { per_minute, state: Mutex::new((per_minute as f64, std::time::Instant::now())) }
    }

    fn refill(&self, s: &mut (f64, std::time::Instant)) {
        let now = std::time::Instant::now();
        let per_s = self.per_minute as f64 / 60.0;
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * per_s).min(self.per_minute as f64);
        s.1 = now;
    }

    /// Whether a request may start now, or how long until it may.
    pub fn check(&self) -> std::result::Result<(), Duration> {
        let mut s = self.state.lock().expect("token-rate lock is never poisoned: no panics inside");
        self.refill(&mut s);
        if s.0 > 0.0 {
            return Ok(());
        }
        let per_s = self.per_minute as f64 / 60.0;
        Err(Duration::from_secs_f64((-s.0 + 1.0) / per_s))
    }

    /// Charges `n` tokens used.
    pub fn charge(&self, n: u64) {
        let mut s = self.state.lock().expect("token-rate lock is never poisoned: no panics inside");
        self.refill(&mut s);
        s.0 -= n as f64;
    }
}

/// Why a budget refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRefusal {
    pub used: u64,
    pub limit: u64,
    pub asked: u64,
    /// Seconds until the window renews.
    pub retry_after_s: u64,
}

/// A key's query budget: inputs predicted in the current window.
pub struct BudgetCounter {
    pub budget: Budget,
    /// (window index, inputs used in it).
    state: Mutex<(u64, u64)>,
}

impl BudgetCounter {
    /// A counter starting from saved usage (ignored when it belongs to an older window).
    pub fn new(budget: Budget, saved: Option<Usage>) -> Self {
        let state = saved.map_or((0, 0), |u| (u.window, u.used));
        BudgetCounter { budget, state: Mutex::new(state) }
    }

    fn window(&self, now_s: u64) -> u64 {
        now_s / self.budget.period.seconds()
    }

    /// Spends `n` inputs at Unix time `now_s`; returns what is left afterwards.
    pub fn try_spend(&self, n: u64, now_s: u64) -> std::result::Result<u64, BudgetRefusal> {
        let window = self.window(now_s);
        let mut s = self.state.lock().expect("budget lock is never poisoned: no panics inside");
        if s.0 != window {
            *s = (window, 0);
        }
        if s.1 + n > self.budget.limit {
            let period = self.budget.period.seconds();
            return Err(BudgetRefusal {
                used: s.1,
                limit: self.budget.limit,
                asked: n,
                retry_after_s: ((window + 1) * period).saturating_sub(now_s).max(1),
            });
        }
        s.1 += n;
        Ok(self.budget.limit - s.1)
    }

    /// Gives back inputs spent on a request that then failed, in the same window only.
    pub fn refund(&self, n: u64, now_s: u64) {
        let window = self.window(now_s);
        let mut s = self.state.lock().expect("budget lock is never poisoned: no panics inside");
        if s.0 == window {
            s.1 = s.1.saturating_sub(n);
        }
    }

    /// Inputs left in the window at `now_s`.
    pub fn left(&self, now_s: u64) -> u64 {
        let s = self.state.lock().expect("budget lock is never poisoned: no panics inside");
        if s.0 == self.window(now_s) { self.budget.limit.saturating_sub(s.1) } else { self.budget.limit }
    }

    /// The counts to save.
    pub fn usage(&self) -> Usage {
        let s = self.state.lock().expect("budget lock is never poisoned: no panics inside");
        Usage { window: s.0, used: s.1 }
    }
}

/// A key's saved budget count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Index of the window (Unix seconds / period length).
    pub window: u64,
    pub used: u64,
}

/// `key-usage.json`: budget counts by key name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageFile {
    pub keys: BTreeMap<String, Usage>,
    /// Token budgets' counts (language-model routes), by key name; absent while there are none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, Usage>,
}

impl UsageFile {
    /// The usage file of a run store.
    pub fn path(runs_dir: &Path) -> PathBuf {
        runs_dir.join(USAGE_FILE)
    }

    /// Reads saved counts; a missing file holds none.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                msg: format!("line {}, column {}: {e}", e.line(), e.column()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsageFile::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Saves the counts atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_private(path, &serde_json::to_vec_pretty(self).expect("usage always serialises"))
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::keys::Period;

    #[test]
    fn budgets_refuse_past_the_limit_and_renew_with_the_window() {
        let b = BudgetCounter::new(Budget { limit: 10, period: Period::Hour }, None);
        let t = 7200 + 600; // ten minutes into the third hour since the epoch
        assert_eq!(b.try_spend(4, t), Ok(6));
        assert_eq!(b.try_spend(6, t), Ok(0));
        let refusal = b.try_spend(1, t).unwrap_err();
        assert_eq!(refusal, BudgetRefusal { used: 10, limit: 10, asked: 1, retry_after_s: 3000 });
        b.refund(3, t);
        assert_eq!(b.left(t), 3);
        // The next hour starts afresh.
        assert_eq!(b.left(10_800), 10);
        assert_eq!(b.try_spend(10, 10_800), Ok(0));
    }

    #[test]
    fn a_batch_larger_than_what_is_left_is_refused_whole() {
        let b = BudgetCounter::new(Budget { limit: 5, period: Period::Day }, None);
        assert_eq!(b.try_spend(3, 100), Ok(2));
        let r = b.try_spend(3, 100).unwrap_err();
        assert_eq!((r.used, r.asked), (3, 3));
        assert_eq!(b.left(100), 2, "a refused request spends nothing");
    }

    #[test]
    fn saved_usage_carries_over_only_within_its_window() {
        let budget = Budget { limit: 100, period: Period::Day };
        let now = 5 * 86_400 + 10;
        let b = BudgetCounter::new(budget, Some(Usage { window: 5, used: 40 }));
        assert_eq!(b.left(now), 60);
        let stale = BudgetCounter::new(budget, Some(Usage { window: 4, used: 99 }));
        assert_eq!(stale.left(now), 100);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USAGE_FILE);
        let mut file = UsageFile::default();
        file.keys.insert("a".into(), b.usage());
        file.save(&path).unwrap();
        assert_eq!(UsageFile::load(&path).unwrap(), file);
    }

    #[test]
    fn the_token_rate_admits_until_spent_then_says_how_long() {
        let r = TokenRate::new(600); // 10 tokens a second
        assert!(r.check().is_ok());
        r.charge(650);
        let wait = r.check().unwrap_err();
        // 50 tokens of debt (plus the one to get above zero) at 10/s: about 5 s.
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_millis(5200), "{wait:?}");
    }

    #[test]
    fn the_rate_limiter_allows_the_burst_then_says_how_long_to_wait() {
        let r = Rate::new(RateLimit { per_second: 2, burst: 3 });
        for _ in 0..3 {
            assert!(r.check().is_ok());
        }
        let wait = r.check().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
    }
}
