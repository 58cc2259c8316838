//! Address newtypes: physical addresses, virtual addresses and 4 KiB physical frames.
//!
//! These types are plain numbers with meaning attached; they never touch memory. A
//! [`PhysAddr`] and a [`VirtAddr`] can hold any `u64` so that code receiving an address
//! from outside (firmware, a guest, a caller) can wrap it first and refuse it by name
//! afterwards ([`VirtAddr::is_canonical`], [`VirtAddr::try_new`]). Nothing here panics on
//! an address value; only an alignment that is not a power of two is a programming error
//! and panics.

use core::fmt;

/// Size of the smallest page and of a physical frame.
pub const PAGE_SIZE: u64 = 4096;

/// Bits 47 and up of a canonical 48-bit virtual address are all equal.
const CANONICAL_SIGN_BIT: u32 = 47;

/// The mask `align - 1` for a power-of-two `align`.
///
/// # Panics
///
/// If `align` is not a power of two: alignments are chosen by code, not by input.
const fn low_mask(align: u64) -> u64 {
    assert!(align.is_power_of_two(), "alignment must be a power of two");
    align - 1
}

/// `value` rounded down to a multiple of `align` (a power of two).
const fn round_down(value: u64, align: u64) -> u64 {
    value & !low_mask(align)
}

/// `value` rounded up to a multiple of `align` (a power of two), `None` on overflow.
const fn checked_round_up(value: u64, align: u64) -> Option<u64> {
    let mask = low_mask(align);
    match value.checked_add(mask) {
        Some(sum) => Some(sum & !mask),
        None => None,
    }
}

/// `value` rounded up to a multiple of `align`; on overflow the largest multiple of
/// `align` that fits in a `u64`.
const fn saturating_round_up(value: u64, align: u64) -> u64 {
    match checked_round_up(value, align) {
        Some(rounded) => rounded,
        None => round_down(u64::MAX, align),
    }
}

/// A physical address. Any `u64` can be held; x86-64 page tables can only express
/// addresses below 2^52 ([`PhysAddr::MAX_ADDRESSABLE`]), which the page-table builder
/// checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// One past the highest physical address an x86-64 page-table entry can hold
    /// (MAXPHYADDR is at most 52).
    pub const MAX_ADDRESSABLE: u64 = 1 << 52;

    /// Wraps a raw physical address.
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Rounds down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Self {
        Self(round_down(self.0, align))
    }

    /// Rounds up to a multiple of `align` (a power of two). Saturates at the highest
    /// aligned address instead of wrapping; use [`PhysAddr::checked_align_up`] to see
    /// the overflow.
    pub const fn align_up(self, align: u64) -> Self {
        Self(saturating_round_up(self.0, align))
    }

    /// Rounds up to a multiple of `align` (a power of two), `None` on overflow.
    pub const fn checked_align_up(self, align: u64) -> Option<Self> {
        match checked_round_up(self.0, align) {
            Some(rounded) => Some(Self(rounded)),
            None => None,
        }
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & low_mask(align) == 0
    }

    /// `self + offset`, `None` on overflow.
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A virtual address. [`VirtAddr::new`] accepts any `u64`, including non-canonical
/// values, so that the page-table builder can refuse those by name; use
/// [`VirtAddr::try_new`] or [`VirtAddr::new_truncate`] where only canonical addresses
/// make sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// Wraps a raw virtual address without checking that it is canonical.
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// Wraps `addr` if it is canonical for 48-bit paging (bits 63..47 all equal).
    pub const fn try_new(addr: u64) -> Option<Self> {
        if Self::new_truncate(addr).0 == addr {
            Some(Self(addr))
        } else {
            None
        }
    }

    /// Makes `addr` canonical by copying bit 47 into bits 48..63.
    pub const fn new_truncate(addr: u64) -> Self {
        let shift = 63 - CANONICAL_SIGN_BIT;
        Self((((addr << shift) as i64) >> shift) as u64)
    }

    /// Whether bits 63..47 are all equal (the address can be used with 4-level paging).
    pub const fn is_canonical(self) -> bool {
        Self::new_truncate(self.0).0 == self.0
    }

    /// The raw address.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Rounds down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Self {
        Self(round_down(self.0, align))
    }

    /// Rounds up to a multiple of `align` (a power of two), saturating instead of
    /// wrapping. The result may be non-canonical (for example just past the lower half).
    pub const fn align_up(self, align: u64) -> Self {
        Self(saturating_round_up(self.0, align))
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & low_mask(align) == 0
    }

    /// `self + offset`, `None` on overflow. The result may be non-canonical.
    pub const fn checked_add(self, offset: u64) -> Option<Self> {
        match self.0.checked_add(offset) {
            Some(sum) => Some(Self(sum)),
            None => None,
        }
    }

    /// Index into the level-4 table (PML4), bits 39..47.
    pub const fn p4_index(self) -> usize {
        ((self.0 >> 39) & 0x1ff) as usize
    }

    /// Index into the level-3 table (PDPT), bits 30..38.
    pub const fn p3_index(self) -> usize {
        ((self.0 >> 30) & 0x1ff) as usize
    }

    /// Index into the level-2 table (PD), bits 21..29.
    pub const fn p2_index(self) -> usize {
        ((self.0 >> 21) & 0x1ff) as usize
    }

    /// Index into the level-1 table (PT), bits 12..20.
    pub const fn p1_index(self) -> usize {
        ((self.0 >> 12) & 0x1ff) as usize
    }

    /// Offset within a 4 KiB page, bits 0..11.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A 4 KiB physical frame, identified by its start address (always 4 KiB aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysFrame(PhysAddr);

impl PhysFrame {
    /// Size of a frame in bytes.
    pub const SIZE: u64 = PAGE_SIZE;

    /// The frame starting at `start`, `None` if `start` is not 4 KiB aligned.
    pub const fn from_start(start: PhysAddr) -> Option<Self> {
        if start.is_aligned(PAGE_SIZE) {
            Some(Self(start))
        } else {
            None
        }
    }

    /// The frame that contains `addr`.
    pub const fn containing(addr: PhysAddr) -> Self {
        Self(addr.align_down(PAGE_SIZE))
    }

    /// The frame with number `number` (start address `number * 4096`). Frame numbers
    /// at or above 2^52 have no address; their high bits are dropped.
    pub const fn from_number(number: u64) -> Self {
        Self(PhysAddr::new(number << PAGE_SIZE.trailing_zeros()))
    }

    /// The first address of the frame.
    pub const fn start(self) -> PhysAddr {
        self.0
    }

    /// The frame number (start address / 4096).
    pub const fn number(self) -> u64 {
        self.0.as_u64() >> PAGE_SIZE.trailing_zeros()
    }
}

impl fmt::Display for PhysFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alignment_rounds_the_right_way() {
        let addr = PhysAddr::new(0x1234);
        assert_eq!(addr.align_down(0x1000), PhysAddr::new(0x1000));
        assert_eq!(addr.align_up(0x1000), PhysAddr::new(0x2000));
        assert_eq!(
            PhysAddr::new(0x2000).align_up(0x1000),
            PhysAddr::new(0x2000)
        );
        assert!(PhysAddr::new(0x20_0000).is_aligned(0x20_0000));
        assert!(!PhysAddr::new(0x20_1000).is_aligned(0x20_0000));
        assert!(PhysAddr::new(0x1234).is_aligned(1));
    }

    #[test]
    fn align_up_saturates_instead_of_wrapping() {
        let top = PhysAddr::new(u64::MAX - 5);
        assert_eq!(top.align_up(0x1000), PhysAddr::new(0xffff_ffff_ffff_f000));
        assert_eq!(top.checked_align_up(0x1000), None);
        assert_eq!(
            VirtAddr::new(u64::MAX).align_up(0x1000),
            VirtAddr::new(0xffff_ffff_ffff_f000)
        );
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn non_power_of_two_alignment_is_a_programming_error() {
        let _ = PhysAddr::new(0x3000).align_down(0x3000);
    }

    #[test]
    fn canonical_addresses_are_recognised() {
        assert!(VirtAddr::try_new(0x0000_7fff_ffff_ffff).is_some());
        assert!(VirtAddr::try_new(0xffff_8000_0000_0000).is_some());
        assert!(VirtAddr::try_new(0x0000_8000_0000_0000).is_none());
        assert!(VirtAddr::try_new(0xffff_7fff_ffff_ffff).is_none());
        assert!(VirtAddr::try_new(0x0001_0000_0000_0000).is_none());
        assert!(!VirtAddr::new(0x0000_8000_0000_0000).is_canonical());
        assert!(VirtAddr::new(0).is_canonical());
    }

    #[test]
    fn truncation_sign_extends_bit_47() {
        assert_eq!(
            VirtAddr::new_truncate(0x0000_8000_0000_1000).as_u64(),
            0xffff_8000_0000_1000
        );
        assert_eq!(
            VirtAddr::new_truncate(0xabcd_7fff_0000_0000).as_u64(),
            0x0000_7fff_0000_0000
        );
    }

    #[test]
    fn table_indices_pick_the_right_bits() {
        // 0xffff_8080_4020_1abc: p4 = 257, p3 = 1, p2 = 1, p1 = 1, offset = 0xabc.
        let addr = VirtAddr::new(0xffff_8080_4020_1abc);
        assert_eq!(addr.p4_index(), 257);
        assert_eq!(addr.p3_index(), 1);
        assert_eq!(addr.p2_index(), 1);
        assert_eq!(addr.p1_index(), 1);
        assert_eq!(addr.page_offset(), 0xabc);
        let top = VirtAddr::new(0xffff_ffff_ffff_ffff);
        assert_eq!(
            (
                top.p4_index(),
                top.p3_index(),
                top.p2_index(),
                top.p1_index()
            ),
            (511, 511, 511, 511)
        );
    }

    #[test]
    fn frames_refuse_unaligned_starts() {
        assert_eq!(PhysFrame::from_start(PhysAddr::new(0x1001)), None);
        let frame = PhysFrame::from_start(PhysAddr::new(0x5000)).unwrap();
        assert_eq!(frame.number(), 5);
        assert_eq!(PhysFrame::containing(PhysAddr::new(0x5fff)), frame);
        assert_eq!(PhysFrame::from_number(5), frame);
        assert_eq!(frame.start(), PhysAddr::new(0x5000));
    }

    #[test]
    fn display_is_hexadecimal() {
        assert_eq!(PhysAddr::new(0x1000).to_string(), "0x1000");
        assert_eq!(VirtAddr::new(0xff).to_string(), "0xff");
        assert_eq!(PhysFrame::from_number(2).to_string(), "frame 0x2000");
    }

    proptest! {
        #[test]
        fn alignment_brackets_the_address(raw in any::<u64>(), shift in 0u32..40) {
            let align = 1u64 << shift;
            let addr = PhysAddr::new(raw);
            let down = addr.align_down(align);
            prop_assert!(down.is_aligned(align));
            prop_assert!(down <= addr && addr.as_u64() - down.as_u64() < align);
            match addr.checked_align_up(align) {
                Some(up) => {
                    prop_assert!(up.is_aligned(align));
                    prop_assert!(up >= addr && up.as_u64() - addr.as_u64() < align);
                    prop_assert_eq!(addr.align_up(align), up);
                }
                None => prop_assert!(raw > u64::MAX - (align - 1)),
            }
        }

        #[test]
        fn canonical_iff_truncation_is_identity(raw in any::<u64>()) {
            let canonical = (raw >> 47) == 0 || (raw >> 47) == (1 << 17) - 1;
            prop_assert_eq!(VirtAddr::try_new(raw).is_some(), canonical);
            prop_assert!(VirtAddr::new_truncate(raw).is_canonical());
            // Truncation keeps the low 48 bits.
            prop_assert_eq!(VirtAddr::new_truncate(raw).as_u64() & ((1 << 48) - 1), raw & ((1 << 48) - 1));
        }

        #[test]
        fn indices_reassemble_the_address(raw in any::<u64>()) {
            let addr = VirtAddr::new_truncate(raw);
            let rebuilt = ((addr.p4_index() as u64) << 39)
                | ((addr.p3_index() as u64) << 30)
                | ((addr.p2_index() as u64) << 21)
                | ((addr.p1_index() as u64) << 12)
                | addr.page_offset();
            prop_assert_eq!(VirtAddr::new_truncate(rebuilt), addr);
        }

        #[test]
        fn frame_numbers_round_trip(number in 0u64..(1 << 40)) {
            let frame = PhysFrame::from_number(number);
            prop_assert_eq!(frame.number(), number);
            prop_assert_eq!(PhysFrame::from_start(frame.start()), Some(frame));
            prop_assert_eq!(PhysFrame::containing(PhysAddr::new(frame.start().as_u64() + 4095)), frame);
        }
    }
}
