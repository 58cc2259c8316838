//! The spinner's measurement, kept apart from the wiring so it is tested on the host.
//!
//! A spinner reads the TSC in a tight loop. Consecutive reads close together mean it kept
//! the CPU; a large gap means it was descheduled. Summing the small gaps gives the time it
//! actually ran, which divided by the window is its share of the CPU.
#![cfg_attr(not(test), no_std)]

/// Gaps above this many TSC ticks count as time the spinner did not run.
pub const MAX_RUNNING_GAP_TICKS: u64 = 200_000;

/// What a spinner measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measurement {
    /// Loop iterations (proportional to CPU time for identical code).
    pub iterations: u64,
    /// TSC ticks spent running.
    pub running_ticks: u64,
    /// TSC ticks the window lasted.
    pub window_ticks: u64,
}

impl Measurement {
    /// Accounts one step of the loop, from TSC `previous` to `now`.
    pub fn step(&mut self, previous: u64, now: u64) {
        let gap = now.saturating_sub(previous);
        self.iterations += 1;
        if gap <= MAX_RUNNING_GAP_TICKS {
            self.running_ticks += gap;
        }
        self.window_ticks += gap;
    }

    /// Running time as a share of the window, in tenths of a percent.
    pub fn permille(&self) -> u64 {
        (self.running_ticks * 1000)
            .checked_div(self.window_ticks)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_from_being_descheduled_do_not_count_as_running() {
        let mut m = Measurement::default();
        let mut t = 0;
        for _ in 0..100 {
            m.step(t, t + 100);
            t += 100;
        }
        m.step(t, t + 30_000_000); // descheduled for a long while
        assert_eq!(m.iterations, 101);
        assert_eq!(m.running_ticks, 10_000);
        assert_eq!(m.window_ticks, 30_010_000);
        assert_eq!(m.permille(), 0);
        let mut busy = Measurement::default();
        busy.step(0, 500);
        assert_eq!(busy.permille(), 1000);
    }
}
