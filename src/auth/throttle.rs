//! Slows down password guessing: after `max_failures` wrong secrets in a
//! row for one account from one address, further attempts are refused
//! without being checked, for a time that doubles with each new failure.
//! Keyed by address and account together, so an attacker elsewhere cannot
//! lock a user out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First lock-out; it doubles with every failure after that.
const FIRST_LOCK: Duration = Duration::from_secs(30);
const LONGEST_LOCK: Duration = Duration::from_secs(15 * 60);
/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Default)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Option<Instant>,
}

pub struct LoginThrottle {
    max_failures: u32,
    entries: Mutex<HashMap<(IpAddr, String), Failures>>,
}

impl LoginThrottle {
    pub fn new(max_failures: u32) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while this address may not try this account.
    pub fn check(&self, ip: IpAddr, account: &str) -> Result<(), Duration> {
        let entries = self.entries.lock().expect("throttle");
        let now = Instant::now();
        match entries
            .get(&(ip, account.to_owned()))
            .and_then(|f| f.locked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr, account: &str) {
        let mut entries = self.entries.lock().expect("throttle");
        let now = Instant::now();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, f| f.last.is_some_and(|t| now - t < LONGEST_LOCK));
        }
        let f = entries.entry((ip, account.to_owned())).or_default();
        f.count += 1;
        f.last = Some(now);
        if f.count >= self.max_failures {
            let doublings = (f.count - self.max_failures).min(16);
            let lock = FIRST_LOCK.saturating_mul(1 << doublings).min(LONGEST_LOCK);
            f.locked_until = Some(now + lock);
        }
    }

    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        self.entries
            .lock()
            .expect("throttle")
            .remove(&(ip, account.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_per_address_and_account() {
        let throttle = LoginThrottle::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            throttle.failed(ip, "alice");
            assert!(throttle.check(ip, "alice").is_ok());
        }
        throttle.failed(ip, "alice");
        let wait = throttle.check(ip, "alice").unwrap_err();
        assert!(wait > Duration::from_secs(20));
        assert!(throttle.check(other, "alice").is_ok());
        assert!(throttle.check(ip, "bob").is_ok());
        throttle.succeeded(ip, "alice");
        assert!(throttle.check(ip, "alice").is_ok());
    }
}
