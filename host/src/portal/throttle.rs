//! Sign-in throttling: wrong passwords counted per account (by the email
//! typed, whether or not an account has it, so that a lockout says nothing
//! about which emails exist) and per client address, each in a fixed
//! window; past the limit, sign-in is refused for the lockout's duration.
//! Memory is bounded: each table keeps at most [`MAX_ENTRIES`] entries,
//! dropping expired ones first and then the oldest.

use crate::manifest::LockoutSpec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries one table keeps at most.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

struct Table<K> {
    limit: u32,
    entries: HashMap<K, Entry>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn locked(&self, k: &K, now: Instant) -> bool {
        self.entries
            .get(k)
            .and_then(|e| e.locked_until)
            .is_some_and(|t| t > now)
    }

    fn fail(&mut self, k: K, now: Instant, window: Duration, duration: Duration) {
        if !self.entries.contains_key(&k) && self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| {
                now.duration_since(e.window_start) < window
                    || e.locked_until.is_some_and(|t| t > now)
            });
            if self.entries.len() >= MAX_ENTRIES {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.window_start)
                    .map(|(k, _)| k.clone());
                if let Some(o) = oldest {
                    self.entries.remove(&o);
                }
            }
        }
        let e = self.entries.entry(k).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if now.duration_since(e.window_start) >= window {
            *e = Entry {
                window_start: now,
                failures: 0,
                locked_until: e.locked_until.filter(|t| *t > now),
            };
        }
        e.failures += 1;
        if e.failures >= self.limit {
            e.locked_until = Some(now + duration);
            e.failures = 0;
            e.window_start = now;
        }
    }
}

/// The portal's sign-in throttle.
pub struct Throttle {
    window: Duration,
    duration: Duration,
    accounts: Mutex<Table<String>>,
    clients: Mutex<Table<IpAddr>>,
}

impl Throttle {
    pub fn new(spec: &LockoutSpec) -> Throttle {
        Throttle {
            window: spec.window.0,
            duration: spec.duration.0,
            accounts: Mutex::new(Table {
                limit: spec.failures,
                entries: HashMap::new(),
            }),
            clients: Mutex::new(Table {
                limit: spec.client_failures,
                entries: HashMap::new(),
            }),
        }
    }

    /// Whether sign-in for `email` from `ip` is locked out now.
    pub fn locked(&self, email: &str, ip: IpAddr) -> bool {
        let now = Instant::now();
        let email = email.to_lowercase();
        lock(&self.accounts).locked(&email, now) || lock(&self.clients).locked(&ip, now)
    }

    /// Count a failed sign-in.
    pub fn failed(&self, email: &str, ip: IpAddr) {
        let now = Instant::now();
        lock(&self.accounts).fail(email.to_lowercase(), now, self.window, self.duration);
        lock(&self.clients).fail(ip, now, self.window, self.duration);
    }

    /// Whether `ip` is locked out now.
    pub fn client_locked(&self, ip: IpAddr) -> bool {
        lock(&self.clients).locked(&ip, Instant::now())
    }

    /// Count an attempt against the client only.
    pub fn client_failed(&self, ip: IpAddr) {
        lock(&self.clients).fail(ip, Instant::now(), self.window, self.duration);
    }

    /// Entries held (for the bound's test).
    pub fn entries(&self) -> (usize, usize) {
        (
            lock(&self.accounts).entries.len(),
            lock(&self.clients).entries.len(),
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Dur;

    fn spec(failures: u32, client_failures: u32) -> LockoutSpec {
        LockoutSpec {
            failures,
            window: Dur(Duration::from_secs(60)),
            duration: Dur(Duration::from_secs(60)),
            client_failures,
        }
    }

    #[test]
    fn locks_an_account_then_a_client_and_stays_bounded() {
        let t = Throttle::new(&spec(3, 5));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            t.failed("Ann@x.io", a);
        }
        assert!(!t.locked("ann@x.io", a));
        t.failed("ann@X.io", b);
        assert!(t.locked("ANN@x.io", a), "any case, any client");
        assert!(!t.locked("bob@x.io", b));
        // One client trying many emails.
        for i in 0..5 {
            t.failed(&format!("u{i}@x.io"), b);
        }
        assert!(t.locked("new@x.io", b));
        assert!(!t.locked("new@x.io", a));
        // Bounded.
        let t = Throttle::new(&spec(100, 10_000));
        for i in 0..(MAX_ENTRIES + 50) {
            t.failed(&format!("u{i}@x.io"), a);
        }
        assert!(t.entries().0 <= MAX_ENTRIES);
    }
}
