//! How a page-table entry is encoded: the [`EntryFormat`] trait and the x86-64 formats.
//!
//! [`X86`] is the format of ordinary 4-level paging (the kernel's own tables); [`Npt`] is
//! the same format as AMD nested page tables need it, with the User bit on every entry.
//! Intel EPT will be a third implementation. This module only turns meaning into bits and
//! back; it never decides what may be mapped (that is [`super::PageTable`]'s job) and
//! never touches memory.

use super::{Access, CachePolicy, PageSize};
use crate::addr::{PhysAddr, PhysFrame};

/// The encoding of page-table entries of one kind of page table.
///
/// All four levels share one encoding; a *table entry* points at the next level's table,
/// a *leaf* maps a page (at level 1 always, at levels 2 and 3 when [`Self::is_huge`]).
pub trait EntryFormat {
    /// Whether a leaf both writable and executable is refused (W^X).
    const REFUSES_WRITE_AND_EXECUTE: bool;

    /// A leaf mapping the page of `size` at `phys` (aligned to `size`, below 2^52).
    fn leaf(phys: PhysAddr, size: PageSize, access: Access) -> u64;

    /// A table entry pointing at `next`. `user` is set when a user-accessible leaf lives
    /// somewhere below.
    fn table(next: PhysFrame, user: bool) -> u64;

    /// `entry` (a present table entry) changed to also allow user access below it.
    fn table_with_user(entry: u64) -> u64;

    /// Whether the entry maps anything at all.
    fn is_present(entry: u64) -> bool;

    /// Whether a present entry at level 2 or 3 is a leaf (a 2 MiB or 1 GiB page).
    fn is_huge(entry: u64) -> bool;

    /// The physical address the entry holds (of the next table, or of the page; for a
    /// huge page the caller masks it to the page size).
    fn address(entry: u64) -> u64;

    /// What the entry allows. For a table entry, `global` and `cache` mean nothing and
    /// the rest bounds every page below it.
    fn access(entry: u64) -> Access;
}

/// Ordinary x86-64 4-level paging entries.
///
/// NX (bit 63) is only valid once `EFER.NXE` is set; the kernel must set it before it
/// loads a table built with this format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X86;

impl X86 {
    /// Bit 0: the entry is valid.
    pub const PRESENT: u64 = 1 << 0;
    /// Bit 1: writes allowed.
    pub const WRITABLE: u64 = 1 << 1;
    /// Bit 2: user-mode (CPL 3) access allowed.
    pub const USER: u64 = 1 << 2;
    /// Bit 3: page-level write-through.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// Bit 4: page-level cache disable.
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// Bit 5: set by the CPU on access.
    pub const ACCESSED: u64 = 1 << 5;
    /// Bit 6: set by the CPU on write (leaves only).
    pub const DIRTY: u64 = 1 << 6;
    /// Bit 7 (PS): a level-2 or level-3 entry maps a 2 MiB or 1 GiB page.
    pub const HUGE: u64 = 1 << 7;
    /// Bit 8: the translation survives CR3 reloads (leaves only).
    pub const GLOBAL: u64 = 1 << 8;
    /// Bit 63: instruction fetches not allowed.
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Bits 12..51: the physical address.
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
}

impl EntryFormat for X86 {
    const REFUSES_WRITE_AND_EXECUTE: bool = true;

    fn leaf(phys: PhysAddr, size: PageSize, access: Access) -> u64 {
        let mut entry = Self::PRESENT | (phys.as_u64() & Self::ADDRESS_MASK);
        if access.write {
            entry |= Self::WRITABLE;
        }
        if access.user {
            entry |= Self::USER;
        }
        if access.cache == CachePolicy::Uncached {
            entry |= Self::CACHE_DISABLE | Self::WRITE_THROUGH;
        }
        if size != PageSize::Size4K {
            entry |= Self::HUGE;
        }
        if access.global {
            entry |= Self::GLOBAL;
        }
        if !access.execute {
            entry |= Self::NO_EXECUTE;
        }
        entry
    }

    fn table(next: PhysFrame, user: bool) -> u64 {
        let entry = Self::PRESENT | Self::WRITABLE | (next.start().as_u64() & Self::ADDRESS_MASK);
        if user { entry | Self::USER } else { entry }
    }

    fn table_with_user(entry: u64) -> u64 {
        entry | Self::USER
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn is_huge(entry: u64) -> bool {
        entry & Self::HUGE != 0
    }

    fn address(entry: u64) -> u64 {
        entry & Self::ADDRESS_MASK
    }

    /// Cache policy reads back as [`CachePolicy::Uncached`] whenever PCD is set (UC and
    /// UC-), otherwise [`CachePolicy::WriteBack`] (a PWT-only write-through entry, which
    /// this builder never writes, also reads back as write-back).
    fn access(entry: u64) -> Access {
        Access {
            write: entry & Self::WRITABLE != 0,
            execute: entry & Self::NO_EXECUTE == 0,
            user: entry & Self::USER != 0,
            global: entry & Self::GLOBAL != 0,
            cache: if entry & Self::CACHE_DISABLE != 0 {
                CachePolicy::Uncached
            } else {
                CachePolicy::WriteBack
            },
        }
    }
}

/// AMD nested page tables (guest-physical to host-physical): the [`X86`] encoding with
/// the User bit forced on every entry, because the CPU treats every nested walk as a
/// user access.
///
/// Unlike [`X86`], a writable and executable leaf is allowed: guest RAM must be both, the
/// guest's own page tables enforce its W^X.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Npt;

impl EntryFormat for Npt {
    const REFUSES_WRITE_AND_EXECUTE: bool = false;

    fn leaf(phys: PhysAddr, size: PageSize, access: Access) -> u64 {
        X86::leaf(
            phys,
            size,
            Access {
                user: true,
                ..access
            },
        )
    }

    fn table(next: PhysFrame, _user: bool) -> u64 {
        X86::table(next, true)
    }

    fn table_with_user(entry: u64) -> u64 {
        X86::table_with_user(entry)
    }

    fn is_present(entry: u64) -> bool {
        X86::is_present(entry)
    }

    fn is_huge(entry: u64) -> bool {
        X86::is_huge(entry)
    }

    fn address(entry: u64) -> u64 {
        X86::address(entry)
    }

    fn access(entry: u64) -> Access {
        X86::access(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn access(write: bool, execute: bool, user: bool, global: bool, uncached: bool) -> Access {
        Access {
            write,
            execute,
            user,
            global,
            cache: if uncached {
                CachePolicy::Uncached
            } else {
                CachePolicy::WriteBack
            },
        }
    }

    #[test]
    fn kernel_data_leaf_has_exactly_the_expected_bits() {
        let entry = X86::leaf(
            PhysAddr::new(0x1234_5000),
            PageSize::Size4K,
            Access::KERNEL_DATA,
        );
        assert_eq!(
            entry,
            0x1234_5000 | X86::PRESENT | X86::WRITABLE | X86::GLOBAL | X86::NO_EXECUTE
        );
    }

    #[test]
    fn mmio_sets_both_cache_bits_and_code_clears_nx() {
        let mmio = X86::leaf(
            PhysAddr::new(0xfee0_0000),
            PageSize::Size4K,
            Access::KERNEL_MMIO,
        );
        assert_eq!(
            mmio & (X86::CACHE_DISABLE | X86::WRITE_THROUGH),
            X86::CACHE_DISABLE | X86::WRITE_THROUGH
        );
        let code = X86::leaf(
            PhysAddr::new(0x20_0000),
            PageSize::Size2M,
            Access::KERNEL_CODE,
        );
        assert_eq!(code & X86::NO_EXECUTE, 0);
        assert_eq!(code & X86::WRITABLE, 0);
        assert_ne!(code & X86::HUGE, 0);
        let rodata = X86::leaf(
            PhysAddr::new(0x4000_0000),
            PageSize::Size1G,
            Access::KERNEL_RODATA,
        );
        assert_eq!(
            rodata,
            0x4000_0000 | X86::PRESENT | X86::HUGE | X86::GLOBAL | X86::NO_EXECUTE
        );
    }

    #[test]
    fn table_entries_are_writable_never_nx_and_user_only_on_request() {
        let next = PhysFrame::from_number(0x42);
        assert_eq!(
            X86::table(next, false),
            0x42_000 | X86::PRESENT | X86::WRITABLE
        );
        assert_eq!(
            X86::table(next, true),
            0x42_000 | X86::PRESENT | X86::WRITABLE | X86::USER
        );
        assert_eq!(
            X86::table_with_user(X86::table(next, false)),
            X86::table(next, true)
        );
    }

    #[test]
    fn npt_forces_user_on_every_entry() {
        let next = PhysFrame::from_number(7);
        assert_ne!(Npt::table(next, false) & X86::USER, 0);
        let leaf = Npt::leaf(PhysAddr::new(0x1000), PageSize::Size4K, Access::KERNEL_DATA);
        assert_ne!(leaf & X86::USER, 0);
        assert!(Npt::access(leaf).user);
    }

    #[test]
    fn addresses_above_bit_51_never_leak_into_flag_bits() {
        let entry = X86::leaf(
            PhysAddr::new(0xffff_ffff_ffff_f000),
            PageSize::Size4K,
            Access::KERNEL_CODE,
        );
        assert_eq!(entry & X86::NO_EXECUTE, 0, "address bit 63 became NX");
        assert_eq!(X86::address(entry), X86::ADDRESS_MASK);
    }

    proptest! {
        #[test]
        fn leaves_decode_to_what_was_encoded(
            frame in 0u64..(1 << 40),
            write: bool, execute: bool, user: bool, global: bool, uncached: bool,
            size in prop::sample::select(vec![PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]),
        ) {
            let phys = (frame << 12) & !(size.bytes() - 1);
            let wanted = access(write, execute, user, global, uncached);
            let entry = X86::leaf(PhysAddr::new(phys), size, wanted);
            prop_assert!(X86::is_present(entry));
            prop_assert_eq!(X86::is_huge(entry), size != PageSize::Size4K);
            prop_assert_eq!(X86::address(entry), phys);
            prop_assert_eq!(X86::access(entry), wanted);
        }
    }
}
