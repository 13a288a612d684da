//! Ed25519 nonces drawn ahead of signing, on a thread that runs only when a core is idle.
//!
//! Most of an Ed25519 signature's cost is the nonce point `R = r·B`. RFC 8032 derives `r`
//! from the message, so `R` can only be computed once the message (here, the event hash)
//! is known, on the commit path. A nonce drawn uniformly at random is just as valid, and
//! verifiers cannot tell the two apart; drawn ahead, `R` is ready when the event arrives,
//! and signing costs two hashes and a scalar multiply-add. Each nonce is used once, then
//! zeroized; the pool lives in memory only. When it runs dry the signer falls back to the
//! RFC 8032 derivation, so signing never waits for it.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::{EdwardsPoint, Scalar};
use zeroize::Zeroize;

/// One secret nonce and its public point.
pub struct Nonce {
    pub r: Scalar,
    pub big_r: CompressedEdwardsY,
}

impl Drop for Nonce {
    fn drop(&mut self) {
        self.r.zeroize();
    }
}

/// Nonces kept ready: enough for a few large groups, few enough that a benchmark's first
/// moments gain little from the idle time before it.
pub const CAPACITY: usize = 1024;

/// Nonces drawn per round of the filler: one shared inversion compresses them together.
const DRAW: usize = 64;

pub struct NoncePool {
    ready: Mutex<Vec<Nonce>>,
    low: Condvar,
}

impl Default for NoncePool {
    /// Room for a full pool and a round more, so filling never moves the nonces (leaving
    /// copies behind in freed memory).
    fn default() -> NoncePool {
        NoncePool {
            ready: Mutex::new(Vec::with_capacity(CAPACITY + DRAW)),
            low: Condvar::new(),
        }
    }
}

impl NoncePool {
    /// Takes up to `n` nonces, each never handed out again; the slots they leave are zeroed.
    pub fn take(&self, n: usize) -> Vec<Nonce> {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let from = ready.len().saturating_sub(n);
        let taken = ready.split_off(from);
        let left = taken.len();
        ready.spare_capacity_mut()[..left]
            .iter_mut()
            .for_each(|slot| *slot = std::mem::MaybeUninit::zeroed());
        if ready.len() < CAPACITY / 2 {
            self.low.notify_one();
        }
        taken
    }

    /// Draws `n` nonces from the operating system's random source into the pool; false
    /// when that source fails.
    pub fn draw(&self, n: usize) -> bool {
        let mut seeds = vec![[0u8; 64]; n];
        if seeds.iter_mut().any(|s| getrandom::fill(s).is_err()) {
            return false;
        }
        let mut rs: Vec<Scalar> = seeds
            .iter()
            .map(Scalar::from_bytes_mod_order_wide)
            .collect();
        seeds.zeroize();
        let points: Vec<EdwardsPoint> = rs.iter().map(EdwardsPoint::mul_base).collect();
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        let drawn = rs
            .iter()
            .zip(compressed)
            .map(|(r, big_r)| Nonce { r: *r, big_r });
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(drawn);
        rs.zeroize();
        true
    }

    /// How many nonces are ready.
    pub fn count(&self) -> usize {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Starts the filler thread at the idle scheduling class, so it never takes a core from
    /// the commit path; None when either cannot be had (signing then derives every nonce).
    /// The thread ends once the pool's last other holder drops it.
    pub fn start() -> Option<Arc<NoncePool>> {
        let pool = Arc::new(NoncePool::default());
        let (started, ready) = std::sync::mpsc::channel();
        let filler = pool.clone();
        std::thread::Builder::new()
            .name("ledger-nonces".into())
            .spawn(move || {
                let idle = libc::sched_param { sched_priority: 0 };
                // SAFETY: 0 names the calling thread; `idle` is a valid sched_param.
                let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } == 0;
                let _ = started.send(ok);
                if ok {
                    filler.fill();
                }
            })
            .ok()?;
        ready.recv().ok()?.then_some(pool)
    }

    /// Keeps the pool full while anyone else holds it.
    fn fill(self: Arc<Self>) {
        while Arc::strong_count(&self) > 1 {
            if self.count() + DRAW <= CAPACITY {
                if !self.draw(DRAW) {
                    return;
                }
                continue;
            }
            let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
            // A timeout, so the thread sees its last holder go even when nobody signs.
            let _ = self.low.wait_timeout(ready, Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_taken_once_and_match_their_points() {
        let pool = NoncePool::default();
        assert!(pool.draw(100));
        let a = pool.take(60);
        let b = pool.take(60);
        assert_eq!((a.len(), b.len(), pool.count()), (60, 40, 0));
        let mut seen = std::collections::HashSet::new();
        for n in a.iter().chain(&b) {
            assert_eq!(EdwardsPoint::mul_base(&n.r).compress(), n.big_r);
            assert!(seen.insert(n.big_r.to_bytes()), "a nonce handed out twice");
        }
        assert!(pool.take(5).is_empty());
    }

    #[test]
    fn the_filler_fills_and_stops_with_its_holder() {
        let Some(pool) = NoncePool::start() else {
            // No idle scheduling class here: signing derives every nonce, as tested in keys.
            return;
        };
        // The idle class gets a core only when nothing else wants it: generous deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while pool.count() < DRAW && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(pool.count() >= DRAW);
        let weak = Arc::downgrade(&pool);
        drop(pool);
        while weak.strong_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            weak.strong_count(),
            0,
            "the filler outlived its pool's holders"
        );
    }
}
