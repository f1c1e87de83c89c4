//! Scoring flags against labelled windows, as the evaluation reports them.
//!
//! - A window is **caught** when a bucket in `start ..= start + CATCH_WITHIN` is flagged.
//! - A flag inside a window, or within the catch tolerance after its start, is not a false
//!   alarm; any other flag is one (each flagged bucket counts).
//! - Precision = caught ÷ (caught + false alarms); recall = caught ÷ windows.
//! - Normal buckets: scored buckets outside windows and tolerances.

use super::synth::Window;

/// How many buckets after its start a window may be flagged and still count as caught.
pub const CATCH_WITHIN: usize = 2;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub windows: u64,
    pub caught: u64,
    pub false_alarms: u64,
    pub normal_buckets: u64,
    pub flags: u64,
    /// Injected windows too faint to label (see [`Tally::add_excusing`]).
    pub unobservable: u64,
}

impl Tally {
    /// Adds one series: `flags[i]` is whether bucket `i` was flagged; buckets before `from`
    /// are not scored (warm-up), nor are windows starting there.
    pub fn add(&mut self, flags: &[bool], windows: &[Window], from: usize) {
        self.add_excusing(flags, windows, &[], from);
    }

    /// As [`Tally::add`], with `unobservable` windows (an anomaly too faint for its
    /// buckets' volume, see [`super::synth::OBSERVABLE_P`]) neither labels nor normal
    /// buckets: flags there count neither way.
    pub fn add_excusing(
        &mut self,
        flags: &[bool],
        windows: &[Window],
        unobservable: &[Window],
        from: usize,
    ) {
        let n = flags.len();
        let mut excused = vec![false; n];
        for w in unobservable
            .iter()
            .filter(|w| w.start >= from && w.start < n)
        {
            self.unobservable += 1;
            let end = (w.start + w.len.max(CATCH_WITHIN + 1)).min(n);
            excused[w.start..end].iter_mut().for_each(|e| *e = true);
        }
        for w in windows.iter().filter(|w| w.start >= from && w.start < n) {
            let end = (w.start + w.len.max(CATCH_WITHIN + 1)).min(n);
            excused[w.start..end].iter_mut().for_each(|e| *e = true);
            self.windows += 1;
            let catch_end = (w.start + CATCH_WITHIN + 1).min(n);
            if flags[w.start..catch_end].iter().any(|&f| f) {
                self.caught += 1;
            }
        }
        for i in from..n {
            self.flags += flags[i] as u64;
            if !excused[i] {
                self.normal_buckets += 1;
                self.false_alarms += flags[i] as u64;
            }
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.windows += other.windows;
        self.caught += other.caught;
        self.false_alarms += other.false_alarms;
        self.normal_buckets += other.normal_buckets;
        self.flags += other.flags;
        self.unobservable += other.unobservable;
    }

    pub fn precision(&self) -> f64 {
        let d = self.caught + self.false_alarms;
        if d == 0 {
            0.0
        } else {
            self.caught as f64 / d as f64
        }
    }

    pub fn recall(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            self.caught as f64 / self.windows as f64
        }
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// False alarms per 1 000 normal buckets.
    pub fn false_alarm_rate(&self) -> f64 {
        if self.normal_buckets == 0 {
            0.0
        } else {
            1_000.0 * self.false_alarms as f64 / self.normal_buckets as f64
        }
    }
}
