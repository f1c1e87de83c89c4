//! Rolling windows by event time, in fixed sub-buckets aligned to the Unix epoch.
//!
//! | window | sub-bucket | sub-buckets |
//! |--------|-----------:|------------:|
//! | 1m     | 5 s        | 12          |
//! | 5m     | 10 s       | 30          |
//! | 15m    | 30 s       | 30          |
//! | 1h     | 1 min      | 60          |
//! | 24h    | 15 min     | 96          |
//!
//! A window read at `now` covers the sub-bucket holding `now` and the ones before it, so it
//! is exact up to one sub-bucket at its old edge (it spans between `len − sub-bucket` and
//! `len`). An event is added to every window whose span still holds its time: one older
//! than a window only touches the longer ones. An event stamped ahead of the hub clock (the
//! ingest allows 5 minutes of skew) counts in the current sub-bucket.
//!
//! Only sub-buckets that received something are stored, so an idle agent costs nothing
//! but its map entry. Each series knows the bytes it holds ([`Series::bytes`]), kept up to
//! date as buckets fill and expire, so the live state can hold a workspace to a budget.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    M1,
    M5,
    M15,
    H1,
    H24,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown window `{0}`: use 1m, 5m, 15m, 1h or 24h")]
pub struct WindowError(String);

impl Window {
    pub const ALL: [Window; 5] = [Self::M1, Self::M5, Self::M15, Self::H1, Self::H24];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H24 => "24h",
        }
    }

    /// Length of the window in milliseconds.
    pub fn len_ms(self) -> i64 {
        self.bucket_ms() * self.buckets()
    }

    /// Length of one sub-bucket in milliseconds.
    pub fn bucket_ms(self) -> i64 {
        1_000
            * match self {
                Self::M1 => 5,
                Self::M5 => 10,
                Self::M15 => 30,
                Self::H1 => 60,
                Self::H24 => 900,
            }
    }

    pub fn buckets(self) -> i64 {
        match self {
            Self::M1 => 12,
            Self::M5 | Self::M15 => 30,
            Self::H1 => 60,
            Self::H24 => 96,
        }
    }

    pub fn minutes(self) -> f64 {
        self.len_ms() as f64 / 60_000.0
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Window {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Window::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| WindowError(s.chars().take(16).collect()))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a sub-bucket accumulates.
pub trait Bucket: Default {
    /// Folds another bucket in (used to sum a window).
    fn merge(&mut self, other: &Self);

    /// Heap bytes the bucket holds beyond its own size.
    fn heap_bytes(&self) -> usize {
        0
    }

    /// Gives back spare capacity: called when time has moved past the sub-bucket, so few
    /// (late) events will still reach it.
    fn shrink(&mut self) {}
}

/// The populated sub-buckets of one window, oldest first, keyed by `time ÷ bucket_ms`.
#[derive(Debug, Clone)]
struct Ring<B> {
    window: Window,
    buckets: VecDeque<(i64, B)>,
    /// Σ `heap_bytes` of the stored buckets.
    heap: usize,
}

impl<B: Bucket> Ring<B> {
    fn new(window: Window) -> Self {
        Self {
            window,
            buckets: VecDeque::new(),
            heap: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(i64, B)>() + self.heap
    }

    /// Index of the oldest sub-bucket still inside the window at `now_ms`.
    fn oldest(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.window.bucket_ms()) - self.window.buckets() + 1
    }

    fn expire(&mut self, now_ms: i64) {
        let oldest = self.oldest(now_ms);
        while self.buckets.front().is_some_and(|(i, _)| *i < oldest) {
            if let Some((_, b)) = self.buckets.pop_front() {
                self.heap -= b.heap_bytes();
            }
        }
        if self.buckets.is_empty() && self.buckets.capacity() > 0 {
            // An agent that went quiet gives its ring's room back.
            self.buckets = VecDeque::new();
        }
    }

    /// Room for one more sub-bucket: the ring doubles as usual, but never past the
    /// `buckets()` it can hold at most (96 slots, not 128, for a full day).
    fn make_room(&mut self) {
        let (len, cap) = (self.buckets.len(), self.buckets.capacity());
        if len == cap {
            let most = self.window.buckets() as usize;
            let want = (cap * 2).clamp(4, most.max(len + 1));
            self.buckets.reserve_exact(want - len);
        }
    }

    /// The sub-bucket for `ts_ms`, or `None` when that time is older than the window.
    fn bucket(&mut self, ts_ms: i64, now_ms: i64) -> Option<&mut B> {
        self.expire(now_ms);
        let idx = ts_ms.min(now_ms).div_euclid(self.window.bucket_ms());
        if idx < self.oldest(now_ms) {
            return None;
        }
        let pos = match self.buckets.back() {
            Some((last, _)) if *last == idx => self.buckets.len() - 1,
            Some((last, _)) if *last < idx => {
                // Time moved past the last sub-bucket: it keeps only what it holds.
                if let Some((_, closed)) = self.buckets.back_mut() {
                    let before = closed.heap_bytes();
                    closed.shrink();
                    self.heap = self.heap + closed.heap_bytes() - before;
                }
                self.make_room();
                self.buckets.push_back((idx, B::default()));
                self.buckets.len() - 1
            }
            None => {
                self.make_room();
                self.buckets.push_back((idx, B::default()));
                0
            }
            Some(_) => match self.buckets.binary_search_by_key(&idx, |(i, _)| *i) {
                Ok(p) => p,
                Err(p) => {
                    self.make_room();
                    self.buckets.insert(p, (idx, B::default()));
                    p
                }
            },
        };
        Some(&mut self.buckets[pos].1)
    }

    fn sum(&self, now_ms: i64) -> B {
        let oldest = self.oldest(now_ms);
        let mut total = B::default();
        for (_, b) in self.buckets.iter().filter(|(i, _)| *i >= oldest) {
            total.merge(b);
        }
        total
    }

    fn is_empty(&self, now_ms: i64) -> bool {
        let oldest = self.oldest(now_ms);
        self.buckets.iter().all(|(i, _)| *i < oldest)
    }
}

/// One series (a workspace or an agent) over all five windows.
#[derive(Debug, Clone)]
pub struct Series<B> {
    rings: [Ring<B>; 5],
}

impl<B: Bucket> Default for Series<B> {
    fn default() -> Self {
        Self {
            rings: Window::ALL.map(Ring::new),
        }
    }
}

impl<B: Bucket> Series<B> {
    /// Applies `f` to the sub-bucket holding `ts_ms` in every window that still covers it.
    /// Returns how many windows were touched (0: the event is older than 24 h).
    pub fn record(&mut self, ts_ms: i64, now_ms: i64, mut f: impl FnMut(&mut B)) -> usize {
        let mut touched = 0;
        for ring in &mut self.rings {
            if let Some(b) = ring.bucket(ts_ms, now_ms) {
                let before = b.heap_bytes();
                f(b);
                let after = b.heap_bytes();
                ring.heap = ring.heap + after - before;
                touched += 1;
            }
        }
        touched
    }

    /// Bytes the series holds: its sub-buckets' slots and their heap (not `self` itself).
    pub fn bytes(&self) -> usize {
        self.rings.iter().map(Ring::bytes).sum()
    }

    /// The stored sub-buckets of `window`, oldest first (expired ones go at `expire`).
    pub fn buckets(&self, window: Window) -> impl Iterator<Item = &B> {
        self.rings[window.index()].buckets.iter().map(|(_, b)| b)
    }

    /// The window's total at `now_ms`, plus the start of its oldest sub-bucket (ms).
    pub fn total(&self, window: Window, now_ms: i64) -> (B, i64) {
        let ring = &self.rings[window.index()];
        (ring.sum(now_ms), ring.oldest(now_ms) * window.bucket_ms())
    }

    /// True when nothing in the longest window is still current.
    pub fn is_idle(&self, now_ms: i64) -> bool {
        self.rings.iter().all(|r| r.is_empty(now_ms))
    }

    /// Drops sub-buckets that have left their window.
    pub fn expire(&mut self, now_ms: i64) {
        for ring in &mut self.rings {
            ring.expire(now_ms);
        }
    }

    /// Sub-buckets held, for memory accounting and tests.
    pub fn stored_buckets(&self) -> usize {
        self.rings.iter().map(|r| r.buckets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Count(u64);
    impl Bucket for Count {
        fn merge(&mut self, other: &Self) {
            self.0 += other.0;
        }
    }

    const MIN: i64 = 60_000;
    /// A round base time, so sub-bucket edges fall where the table says.
    const T0: i64 = 1_795_000_000_000 - 1_795_000_000_000 % (15 * MIN);

    fn counts(s: &Series<Count>, now: i64) -> Vec<u64> {
        Window::ALL.iter().map(|w| s.total(*w, now).0 .0).collect()
    }

    #[test]
    fn windows_roll_over_and_expire_with_the_clock() {
        let mut s = Series::<Count>::default();
        assert_eq!(s.record(T0, T0, |b| b.0 += 1), 5);
        // Table: at each later clock reading, what each window (1m,5m,15m,1h,24h) still holds.
        let table = [
            (T0 + 59_999, [1, 1, 1, 1, 1]),
            (T0 + MIN, [0, 1, 1, 1, 1]), // the 1m window's 12th sub-bucket no longer holds T0
            (T0 + 5 * MIN - 1, [0, 1, 1, 1, 1]),
            (T0 + 5 * MIN, [0, 0, 1, 1, 1]),
            (T0 + 15 * MIN, [0, 0, 0, 1, 1]),
            (T0 + 60 * MIN, [0, 0, 0, 0, 1]),
            (T0 + 24 * 60 * MIN, [0, 0, 0, 0, 0]),
        ];
        for (now, want) in table {
            assert_eq!(counts(&s, now), want, "at +{} ms", now - T0);
        }
        s.expire(T0 + 24 * 60 * MIN);
        assert_eq!(s.stored_buckets(), 0);
        assert!(s.is_idle(T0 + 24 * 60 * MIN));
    }

    #[test]
    fn old_events_touch_only_longer_windows() {
        let mut s = Series::<Count>::default();
        let now = T0 + 2 * 60 * MIN;
        assert_eq!(s.record(now - 10 * MIN, now, |b| b.0 += 1), 3);
        assert_eq!(s.record(now - 2 * 60 * MIN, now, |b| b.0 += 1), 1);
        assert_eq!(s.record(now - 25 * 60 * MIN, now, |b| b.0 += 1), 0);
        assert_eq!(counts(&s, now), vec![0, 0, 1, 1, 2]);
    }

    #[test]
    fn window_is_exact_up_to_one_sub_bucket_at_the_old_edge() {
        let mut s = Series::<Count>::default();
        // One event per second for ten minutes.
        let end = T0 + 10 * MIN;
        for t in (T0..end).step_by(1_000) {
            s.record(t, t, |b| b.0 += 1);
        }
        let now = end - 1;
        for w in [Window::M1, Window::M5] {
            let (total, from) = s.total(w, now);
            let span_s = (now + 1 - from) / 1_000;
            assert_eq!(total.0 as i64, span_s, "{w}");
            assert!(span_s <= w.len_ms() / 1_000 && span_s > (w.len_ms() - w.bucket_ms()) / 1_000);
        }
    }

    #[test]
    fn future_events_count_now_and_out_of_order_events_land_in_their_bucket() {
        let mut s = Series::<Count>::default();
        let now = T0 + 30 * MIN;
        s.record(now + 4 * MIN, now, |b| b.0 += 1);
        s.record(now - 30_000, now, |b| b.0 += 10);
        s.record(now - 45_000, now, |b| b.0 += 100);
        assert_eq!(counts(&s, now), vec![111, 111, 111, 111, 111]);
        // 20 s later the 1m window starts at now − 35 s; 40 s later at now − 15 s.
        assert_eq!(s.total(Window::M1, now + 20_000).0 .0, 11);
        assert_eq!(s.total(Window::M1, now + 40_000).0 .0, 1);
    }

    #[test]
    fn window_names_round_trip() {
        for w in Window::ALL {
            assert_eq!(w.as_str().parse::<Window>().unwrap(), w);
        }
        assert!("2m".parse::<Window>().is_err());
    }

    mod properties {
        use super::*;
        use crate::domain::sketch::Sketch;
        use proptest::prelude::*;

        #[derive(Debug, Default, Clone, PartialEq)]
        struct Runs {
            n: u64,
            runtime: Sketch,
        }
        impl Bucket for Runs {
            fn merge(&mut self, o: &Self) {
                self.n += o.n;
                self.runtime.merge(&o.runtime);
            }
        }

        /// Events as (ms before the clock, runtime), spread over 26 hours.
        fn events() -> impl Strategy<Value = Vec<(i64, f64)>> {
            prop::collection::vec((0i64..26 * 3_600_000, 0.0f64..10_000.0), 0..200)
        }

        fn fill(events: &[(i64, f64)], now: i64) -> Series<Runs> {
            let mut s = Series::<Runs>::default();
            for (ago, v) in events {
                s.record(now - ago, now, |b| {
                    b.n += 1;
                    b.runtime.add(*v);
                });
            }
            s
        }

        proptest! {
            #[test]
            fn the_order_events_arrive_in_does_not_matter(events in events(), seed in any::<u64>()) {
                let now = T0 + 30 * 3_600_000;
                let mut shuffled = events.clone();
                // A deterministic shuffle from the seed.
                let mut x = seed | 1;
                for i in (1..shuffled.len()).rev() {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    shuffled.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let (a, b) = (fill(&events, now), fill(&shuffled, now));
                for w in Window::ALL {
                    let ((ta, fa), (tb, fb)) = (a.total(w, now), b.total(w, now));
                    prop_assert_eq!(fa, fb);
                    prop_assert_eq!(ta.n, tb.n);
                    prop_assert_eq!(ta.runtime.count(), tb.runtime.count());
                    for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
                        prop_assert_eq!(ta.runtime.quantile(q), tb.runtime.quantile(q));
                    }
                    // Float sums differ only by the order of additions.
                    prop_assert!((ta.runtime.sum() - tb.runtime.sum()).abs() <= 1e-9 * ta.runtime.sum().max(1.0));
                }
            }

            #[test]
            fn expiry_removes_exactly_what_left_the_window(events in events(), later in 0i64..26 * 3_600_000) {
                let now = T0 + 30 * 3_600_000;
                let mut s = fill(&events, now);
                let read_at = now + later;
                s.expire(read_at);
                for w in Window::ALL {
                    let oldest = read_at.div_euclid(w.bucket_ms()) - w.buckets() + 1;
                    // An event counts when recorded (inside the window at `now`) and still inside at `read_at`.
                    let recorded = |ago: i64| (now - ago).div_euclid(w.bucket_ms()) > now.div_euclid(w.bucket_ms()) - w.buckets();
                    let want = events
                        .iter()
                        .filter(|(ago, _)| recorded(*ago) && (now - ago).div_euclid(w.bucket_ms()) >= oldest)
                        .count() as u64;
                    let (total, from) = s.total(w, read_at);
                    prop_assert_eq!(total.n, want, "window {}", w);
                    prop_assert_eq!(total.runtime.count(), want);
                    prop_assert_eq!(from, oldest * w.bucket_ms());
                }
            }
        }
    }
}
