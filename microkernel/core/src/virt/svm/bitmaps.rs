//! The two permission maps a VMCB points at: the MSR permission map (MSRPM, 8 KiB) and the
//! I/O permission map (IOPM, 12 KiB), APM vol. 2 §15.10 and §15.11.
//!
//! Both must sit in physically contiguous, 4 KiB-aligned memory (the low 12 bits of
//! MSRPM_BASE_PA and IOPM_BASE_PA are ignored); the types are page-aligned so the kernel
//! can place one directly in such frames. A set bit means "intercept".

use super::exit::MsrAccess;
use core::fmt;

/// The MSR permission map: two bits per MSR (even = read, odd = write) for three ranges
/// of 8192 MSRs each, at byte offsets 0x000, 0x800 and 0x1000; 0x1800–0x1fff is
/// reserved. Accesses to MSRs outside the ranges always exit.
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct MsrPermissionMap {
    bytes: [u8; MsrPermissionMap::SIZE],
}

/// An MSR number outside the three ranges the MSR permission map covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrOutOfRange {
    /// The MSR asked for.
    pub msr: u32,
}

impl fmt::Display for MsrOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MSR {:#x} is outside the permission map's ranges (0-0x1fff, 0xc0000000-0xc0001fff, \
             0xc0010000-0xc0011fff) and is always intercepted",
            self.msr
        )
    }
}

impl MsrPermissionMap {
    /// 8 KiB.
    pub const SIZE: usize = 8192;
    /// The ranges covered: (first MSR, byte offset of its bits).
    pub const RANGES: [(u32, usize); 3] = [
        (0x0000_0000, 0x0000),
        (0xc000_0000, 0x0800),
        (0xc001_0000, 0x1000),
    ];
    /// MSRs per range.
    pub const MSRS_PER_RANGE: u32 = 0x2000;

    /// Every access intercepted (the safe starting point).
    pub const INTERCEPT_ALL: Self = Self {
        bytes: [0xff; Self::SIZE],
    };

    /// No access to a covered MSR intercepted (the reserved last 2 KiB stay set).
    pub const ALLOW_ALL: Self = {
        let mut bytes = [0xff; Self::SIZE];
        let mut index = 0;
        while index < 0x1800 {
            bytes[index] = 0;
            index += 1;
        }
        Self { bytes }
    };

    /// The byte and bit that control `access` to `msr`, `None` outside the ranges.
    pub const fn position(msr: u32, access: MsrAccess) -> Option<(usize, u8)> {
        let mut range = 0;
        while range < Self::RANGES.len() {
            let (first, offset) = Self::RANGES[range];
            if msr >= first && msr - first < Self::MSRS_PER_RANGE {
                let bit = 2 * (msr - first) as usize
                    + match access {
                        MsrAccess::Read => 0,
                        MsrAccess::Write => 1,
                    };
                return Some((offset + bit / 8, (bit % 8) as u8));
            }
            range += 1;
        }
        None
    }

    /// Sets whether `access` to `msr` is intercepted.
    pub fn set(
        &mut self,
        msr: u32,
        access: MsrAccess,
        intercept: bool,
    ) -> Result<(), MsrOutOfRange> {
        let (byte, bit) = Self::position(msr, access).ok_or(MsrOutOfRange { msr })?;
        if intercept {
            self.bytes[byte] |= 1 << bit;
        } else {
            self.bytes[byte] &= !(1 << bit);
        }
        Ok(())
    }

    /// Lets the guest `access` `msr` without an exit.
    pub fn allow(&mut self, msr: u32, access: MsrAccess) -> Result<(), MsrOutOfRange> {
        self.set(msr, access, false)
    }

    /// Makes `access` to `msr` exit.
    pub fn intercept(&mut self, msr: u32, access: MsrAccess) -> Result<(), MsrOutOfRange> {
        self.set(msr, access, true)
    }

    /// Lets the guest read and write `msr` without an exit.
    pub fn allow_read_write(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        self.allow(msr, MsrAccess::Read)?;
        self.allow(msr, MsrAccess::Write)
    }

    /// Whether `access` to `msr` exits (always, outside the ranges).
    pub const fn intercepts(&self, msr: u32, access: MsrAccess) -> bool {
        match Self::position(msr, access) {
            Some((byte, bit)) => self.bytes[byte] & (1 << bit) != 0,
            None => true,
        }
    }

    /// The map as the CPU reads it.
    pub const fn as_bytes(&self) -> &[u8; Self::SIZE] {
        &self.bytes
    }
}

impl fmt::Debug for MsrPermissionMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed = self.bytes[..0x1800]
            .iter()
            .map(|byte| byte.count_zeros())
            .sum::<u32>();
        f.debug_struct("MsrPermissionMap")
            .field("allowed_accesses", &allowed)
            .finish()
    }
}

/// The I/O permission map: one bit per port. The CPU checks every bit an access covers
/// (ports `p` to `p + size - 1`), so a 4-byte access to port 0xffff also reads bits
/// 0x10000–0x10002: that is why the map is 12 KiB and not 8 (APM vol. 2 §15.10.1).
#[derive(Clone, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct IoPermissionMap {
    bytes: [u8; IoPermissionMap::SIZE],
}

/// A port range that runs past port 0xffff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRangeOutOfBounds {
    /// First port.
    pub first: u16,
    /// Number of ports asked for.
    pub count: u32,
}

impl fmt::Display for PortRangeOutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ports from {:#x} run past port 0xffff",
            self.count, self.first
        )
    }
}

impl IoPermissionMap {
    /// 12 KiB.
    pub const SIZE: usize = 12288;
    /// Ports.
    pub const PORTS: u32 = 0x1_0000;

    /// Every access intercepted (the safe starting point).
    pub const INTERCEPT_ALL: Self = Self {
        bytes: [0xff; Self::SIZE],
    };

    /// No port intercepted; the bits beyond port 0xffff stay set, so an access that runs
    /// past the end of the port space still exits.
    pub const ALLOW_ALL: Self = {
        let mut bytes = [0xff; Self::SIZE];
        let mut index = 0;
        while index < (Self::PORTS / 8) as usize {
            bytes[index] = 0;
            index += 1;
        }
        Self { bytes }
    };

    /// Sets whether accesses touching `port` exit.
    pub fn set(&mut self, port: u16, intercept: bool) {
        let (byte, bit) = (usize::from(port) / 8, port % 8);
        if intercept {
            self.bytes[byte] |= 1 << bit;
        } else {
            self.bytes[byte] &= !(1 << bit);
        }
    }

    /// Sets whether accesses touching any of `count` ports from `first` exit.
    pub fn set_range(
        &mut self,
        first: u16,
        count: u32,
        intercept: bool,
    ) -> Result<(), PortRangeOutOfBounds> {
        if u32::from(first) + count > Self::PORTS {
            return Err(PortRangeOutOfBounds { first, count });
        }
        for port in u32::from(first)..u32::from(first) + count {
            // In range: checked above.
            self.set(port as u16, intercept);
        }
        Ok(())
    }

    /// Lets the guest use `port` (accesses that also touch an intercepted port still exit).
    pub fn allow(&mut self, port: u16) {
        self.set(port, false);
    }

    /// Makes accesses touching `port` exit.
    pub fn intercept(&mut self, port: u16) {
        self.set(port, true);
    }

    /// Whether `port`'s own bit is set.
    pub const fn intercepts_port(&self, port: u16) -> bool {
        self.bytes[port as usize / 8] & (1 << (port % 8)) != 0
    }

    /// Whether an access of `size` bytes at `port` exits, as the CPU decides it: if any
    /// of the bits for `port` to `port + size - 1` is set, including the bits past 0xffff.
    pub const fn intercepts_access(&self, port: u16, size: u8) -> bool {
        let mut offset = 0;
        while offset < size as usize {
            let bit = port as usize + offset;
            if self.bytes[bit / 8] & (1 << (bit % 8)) != 0 {
                return true;
            }
            offset += 1;
        }
        false
    }

    /// The map as the CPU reads it.
    pub const fn as_bytes(&self) -> &[u8; Self::SIZE] {
        &self.bytes
    }
}

impl fmt::Debug for IoPermissionMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let allowed = self.bytes[..(Self::PORTS / 8) as usize]
            .iter()
            .map(|byte| byte.count_zeros())
            .sum::<u32>();
        f.debug_struct("IoPermissionMap")
            .field("allowed_ports", &allowed)
            .finish()
    }
}

const _: () = {
    assert!(core::mem::size_of::<MsrPermissionMap>() == 8192);
    assert!(core::mem::align_of::<MsrPermissionMap>() == 4096);
    assert!(core::mem::size_of::<IoPermissionMap>() == 12288);
    assert!(core::mem::align_of::<IoPermissionMap>() == 4096);
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn msr_positions_at_the_range_edges() {
        use MsrAccess::{Read, Write};
        let cases = [
            (0x0000_0000, Read, (0x000, 0)),
            (0x0000_0000, Write, (0x000, 1)),
            (0x0000_0003, Write, (0x000, 7)),
            (0x0000_0004, Read, (0x001, 0)),
            (0x0000_1fff, Read, (0x7ff, 6)),
            (0x0000_1fff, Write, (0x7ff, 7)),
            (0xc000_0000, Read, (0x800, 0)),
            (0xc000_0080, Write, (0x820, 1)), // EFER
            (0xc000_1fff, Write, (0xfff, 7)),
            (0xc001_0000, Read, (0x1000, 0)),
            (0xc001_1fff, Write, (0x17ff, 7)),
        ];
        for (msr, access, expected) in cases {
            assert_eq!(
                MsrPermissionMap::position(msr, access),
                Some(expected),
                "{msr:#x} {access:?}"
            );
        }
        for outside in [
            0x2000,
            0xbfff_ffff,
            0xc000_2000,
            0xc000_ffff,
            0xc001_2000,
            u32::MAX,
        ] {
            assert_eq!(
                MsrPermissionMap::position(outside, Read),
                None,
                "{outside:#x}"
            );
        }
    }

    #[test]
    fn msr_allow_and_intercept_touch_only_their_bit() {
        let mut map = MsrPermissionMap::INTERCEPT_ALL;
        map.allow(0xc000_0100, MsrAccess::Read).unwrap(); // FS_BASE
        assert!(!map.intercepts(0xc000_0100, MsrAccess::Read));
        assert!(map.intercepts(0xc000_0100, MsrAccess::Write));
        assert!(map.intercepts(0xc000_0101, MsrAccess::Read));
        let changed: Vec<usize> = (0..MsrPermissionMap::SIZE)
            .filter(|&i| map.as_bytes()[i] != 0xff)
            .collect();
        assert_eq!(changed, [0x800 + 0x100 * 2 / 8]);
        map.intercept(0xc000_0100, MsrAccess::Read).unwrap();
        assert!(map == MsrPermissionMap::INTERCEPT_ALL);
    }

    #[test]
    fn msrs_outside_the_ranges_are_refused_and_always_intercepted() {
        let mut map = MsrPermissionMap::ALLOW_ALL;
        assert_eq!(
            map.allow(0x4000_0000, MsrAccess::Read),
            Err(MsrOutOfRange { msr: 0x4000_0000 })
        );
        assert!(map.intercepts(0x4000_0000, MsrAccess::Read));
        assert!(!map.intercepts(0x1b, MsrAccess::Write));
        assert!(map.as_bytes()[0x1800..].iter().all(|&b| b == 0xff));
        assert!(
            MsrOutOfRange { msr: 0x4000_0000 }
                .to_string()
                .contains("0x40000000")
        );
    }

    #[test]
    fn io_port_bits_and_multi_port_accesses() {
        let mut map = IoPermissionMap::ALLOW_ALL;
        map.intercept(0x3f9);
        assert!(map.intercepts_port(0x3f9));
        assert_eq!(map.as_bytes()[0x3f9 / 8], 1 << (0x3f9 % 8));
        assert!(!map.intercepts_access(0x3f8, 1));
        // A word at 0x3f8 covers 0x3f9, a dword at 0x3f6 too.
        assert!(map.intercepts_access(0x3f8, 2));
        assert!(map.intercepts_access(0x3f6, 4));
        assert!(!map.intercepts_access(0x3f5, 4));
        // Crossing a byte boundary of the map: ports 0x7 and 0x8.
        map.intercept(0x8);
        assert!(map.intercepts_access(0x7, 2));
        assert!(!map.intercepts_access(0x7, 1));
    }

    #[test]
    fn accesses_past_port_ffff_read_the_third_page() {
        let mut map = IoPermissionMap::ALLOW_ALL;
        assert!(!map.intercepts_access(0xffff, 1));
        assert!(map.intercepts_access(0xffff, 2), "bit 0x10000 is set");
        assert!(map.intercepts_access(0xfffd, 4), "bit 0x10000 is set");
        assert!(!map.intercepts_access(0xfffc, 4));
        map.intercept(0xffff);
        assert!(map.intercepts_access(0xffff, 1));
        assert_eq!(map.as_bytes()[0x1fff], 0x80);
        assert_eq!(map.as_bytes()[0x2000], 0xff);
    }

    #[test]
    fn ranges_set_every_port_and_refuse_running_past_the_end() {
        let mut map = IoPermissionMap::ALLOW_ALL;
        map.set_range(0x3f8, 8, true).unwrap();
        assert!((0x3f8..0x400).all(|p| map.intercepts_port(p)));
        assert!(!map.intercepts_port(0x3f7) && !map.intercepts_port(0x400));
        map.set_range(0xfff0, 16, true).unwrap();
        assert_eq!(
            map.set_range(0xfff0, 17, true),
            Err(PortRangeOutOfBounds {
                first: 0xfff0,
                count: 17
            })
        );
        map.set_range(0, 0x1_0000, false).unwrap();
        assert!(map == IoPermissionMap::ALLOW_ALL);
    }

    proptest! {
        #[test]
        fn msr_bits_are_distinct_per_msr_and_access(a in 0u32..0x6000, b in 0u32..0x6000) {
            let msr = |i: u32| MsrPermissionMap::RANGES[(i / 0x2000) as usize].0 + i % 0x2000;
            let pa = MsrPermissionMap::position(msr(a), MsrAccess::Read).unwrap();
            let pb = MsrPermissionMap::position(msr(b), MsrAccess::Write).unwrap();
            prop_assert_ne!(pa, pb);
            if a != b {
                prop_assert_ne!(pa, MsrPermissionMap::position(msr(b), MsrAccess::Read).unwrap());
            }
        }

        #[test]
        fn access_intercepted_iff_some_covered_port_is(port: u16, size in 1u8..=4, marked: u16) {
            let mut map = IoPermissionMap::ALLOW_ALL;
            map.intercept(marked);
            let covered = u32::from(port)..u32::from(port) + u32::from(size);
            let expected = covered.contains(&u32::from(marked)) || covered.end > 0x1_0000;
            prop_assert_eq!(map.intercepts_access(port, size), expected);
        }
    }
}
