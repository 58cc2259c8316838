//! The ping world's arithmetic, host-tested: how many calls it makes, what it sends, and
//! how it summarises the round-trip times it measured.
//!
//! The world itself (`main.rs`) calls `pong` over the `bench` channel with raw system calls
//! — a zero-length message, the four message registers only — and times each round trip
//! with `rdtsc`. Under QEMU `-icount shift=0,sleep=off` the TSC advances one tick per guest
//! instruction, so a delta counts the instructions the round trip ran, kernel and user
//! together, and is the same on every run.
#![no_std]
#![forbid(unsafe_code)]

/// Calls made before measuring (first touches, first switches).
pub const WARM_UP: usize = 100;

/// Calls measured (and null system calls measured).
pub const CALLS: usize = 2000;

/// Message register 0 of the call that turns `pong` into a yielder: it replies, then calls
/// `yield` forever, so that ping's own `yield`s switch to it and back (the context-switch
/// measurement, made last).
pub const START_YIELDING: u64 = 0x7969_656c_6421_0000;

/// The message registers ping sends in call `i`: different in every call and in every
/// register, so an echo that mixed registers up or returned stale ones is noticed.
pub const fn pattern(i: usize) -> [u64; 4] {
    let i = i as u64;
    [
        i,
        !i,
        (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        0x5eed_0000_0000_0000 | (i << 16) | 0xbeef,
    ]
}

/// Minimum, median, 90th percentile and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Smallest sample.
    pub min: u64,
    /// The 50th percentile (nearest rank).
    pub median: u64,
    /// The 90th percentile (nearest rank).
    pub p90: u64,
    /// Largest sample.
    pub max: u64,
    /// How many samples.
    pub count: usize,
}

impl Summary {
    /// Sorts `samples` in place and summarises them; `None` if there are none.
    pub fn of(samples: &mut [u64]) -> Option<Self> {
        samples.sort_unstable();
        Some(Self {
            min: *samples.first()?,
            median: percentile(samples, 50)?,
            p90: percentile(samples, 90)?,
            max: *samples.last()?,
            count: samples.len(),
        })
    }
}

/// The `percent`-th percentile of sorted samples, by nearest rank (the smallest sample
/// with at least `percent`% of the samples at or below it).
pub fn percentile(sorted: &[u64], percent: usize) -> Option<u64> {
    let rank = (sorted.len() * percent.min(100)).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The highest of `slots` slots that is not `used` (one the manifest left empty), if any.
pub fn empty_slot(used: impl Fn(u32) -> bool, slots: u32) -> Option<u32> {
    (0..slots).rev().find(|slot| !used(*slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_ranks() {
        let mut samples: [u64; 10] = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5];
        let summary = Summary::of(&mut samples).unwrap();
        assert_eq!(
            summary,
            Summary {
                min: 1,
                median: 5,
                p90: 9,
                max: 10,
                count: 10
            }
        );
        assert_eq!(samples, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "sorted in place");
        assert_eq!(Summary::of(&mut []), None);
        let one = Summary::of(&mut [42]).unwrap();
        assert_eq!((one.min, one.median, one.p90, one.max), (42, 42, 42, 42));
    }

    #[test]
    fn percentiles_of_the_benchmark_size() {
        let sorted: [u64; CALLS] = core::array::from_fn(|i| i as u64);
        assert_eq!(percentile(&sorted, 50), Some(999));
        assert_eq!(percentile(&sorted, 90), Some(1799));
        assert_eq!(percentile(&sorted, 100), Some(1999));
        assert_eq!(percentile(&sorted, 0), Some(0));
    }

    #[test]
    fn patterns_differ_between_calls_and_registers() {
        for i in 0..WARM_UP + CALLS {
            let p = pattern(i);
            for a in 0..4 {
                for b in a + 1..4 {
                    assert_ne!(p[a], p[b], "call {i}, registers {a} and {b}");
                }
            }
            assert_ne!(p, pattern(i + 1));
        }
    }

    #[test]
    fn empty_slot_skips_used_ones() {
        let used = [0u32, 1, 255];
        assert_eq!(empty_slot(|s| used.contains(&s), 256), Some(254));
        assert_eq!(empty_slot(|s| s < 2, 2), None);
    }
}
