//! Monotonic time from the time-stamp counter, at the rate the kernel measured at boot.

use esker_abi::Error;

/// A clock that converts time-stamp-counter readings into time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Monotonic {
    tsc_khz: u64,
}

impl Monotonic {
    /// A clock for a counter running at `tsc_khz` kHz (0 is treated as 1).
    pub const fn with_tsc_khz(tsc_khz: u64) -> Self {
        Self {
            tsc_khz: if tsc_khz == 0 { 1 } else { tsc_khz },
        }
    }

    /// A clock at the rate the kernel reports (`kernel_info(TscKhz)`).
    pub fn from_kernel() -> Result<Self, Error> {
        crate::sys::tsc_khz().map(Self::with_tsc_khz)
    }

    /// The counter rate in kHz.
    pub const fn tsc_khz(&self) -> u64 {
        self.tsc_khz
    }

    /// Microseconds for a counter value.
    pub const fn micros_at(&self, tsc: u64) -> u64 {
        (tsc as u128 * 1000 / self.tsc_khz as u128) as u64
    }

    /// Microseconds since the counter started (boot).
    #[cfg(target_arch = "x86_64")]
    pub fn now_micros(&self) -> u64 {
        self.micros_at(crate::arch::rdtsc())
    }

    /// Seconds since the counter started (boot).
    #[cfg(target_arch = "x86_64")]
    pub fn now_secs(&self) -> u64 {
        self.now_micros() / 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_convert_without_overflow() {
        let clock = Monotonic::with_tsc_khz(2_000_000);
        assert_eq!(clock.micros_at(2_000_000_000), 1_000_000);
        assert_eq!(clock.micros_at(u64::MAX), u64::MAX / 2_000);
        assert_eq!(Monotonic::with_tsc_khz(0).tsc_khz(), 1);
    }
}
