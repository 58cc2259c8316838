//! Intel EPT (extended page tables, guest-physical to host-physical): the entry format as
//! a third [`EntryFormat`] for the crate's page-table builder, and the EPT pointer.
//!
//! Entry format from Intel SDM vol. 3C §29.3.2 (tables 29-1 to 29-6): bits 0/1/2 read,
//! write, execute; in a leaf bits 3–5 the memory type and bit 6 "ignore PAT"; bit 7 a
//! 1 GiB or 2 MiB page; bits 8/9 accessed and dirty (with A/D enabled); bits 12–51 the
//! address. EPT pointer from §25.6.11 (table 25-9).

use crate::addr::{PhysAddr, PhysFrame};
use crate::paging::{Access, CachePolicy, EntryFormat, PageSize};

/// EPT memory types (SDM §29.3.7; the encodings of the MTRR/PAT types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EptMemoryType {
    /// 0: uncacheable.
    Uncacheable = 0,
    /// 1: write combining.
    WriteCombining = 1,
    /// 4: write through.
    WriteThrough = 4,
    /// 5: write protected.
    WriteProtected = 5,
    /// 6: write back.
    WriteBack = 6,
}

impl EptMemoryType {
    /// The type for a three-bit value, `None` for the reserved 2, 3 and 7.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::Uncacheable),
            1 => Some(Self::WriteCombining),
            4 => Some(Self::WriteThrough),
            5 => Some(Self::WriteProtected),
            6 => Some(Self::WriteBack),
            _ => None,
        }
    }
}

/// EPT paging-structure entries.
///
/// A leaf is always readable (the builder's [`Access`] has no read bit); `user` and
/// `global` have no EPT meaning (every guest access is checked the same way, and EPT has
/// no global pages), so entries read back as user, not global. Write-back leaves let the
/// guest's PAT choose the effective type, as nested paging does on AMD; uncached leaves
/// are UC, which no PAT can loosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept;

impl Ept {
    /// Bit 0: reads allowed.
    pub const READ: u64 = 1 << 0;
    /// Bit 1: writes allowed.
    pub const WRITE: u64 = 1 << 1;
    /// Bit 2: instruction fetches allowed.
    pub const EXECUTE: u64 = 1 << 2;
    /// Bits 3–5 (leaves): the memory type.
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// Mask of the memory type.
    pub const MEMORY_TYPE_MASK: u64 = 7 << Self::MEMORY_TYPE_SHIFT;
    /// Bit 6 (leaves): ignore the guest PAT.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Bit 7: a level-2 or level-3 entry maps a 2 MiB or 1 GiB page.
    pub const LARGE_PAGE: u64 = 1 << 7;
    /// Bit 8: accessed (with A/D flags enabled in the EPT pointer).
    pub const ACCESSED: u64 = 1 << 8;
    /// Bit 9 (leaves): dirty (with A/D flags enabled).
    pub const DIRTY: u64 = 1 << 9;
    /// Bit 10: user-mode execute (mode-based execute control).
    pub const USER_EXECUTE: u64 = 1 << 10;
    /// Bit 63 (leaves): suppress #VE.
    pub const SUPPRESS_VE: u64 = 1 << 63;
    /// Bits 12–51: the physical address.
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// The memory type of a leaf, `None` if it holds a reserved value.
    pub const fn memory_type(entry: u64) -> Option<EptMemoryType> {
        EptMemoryType::from_bits(
            ((entry & Self::MEMORY_TYPE_MASK) >> Self::MEMORY_TYPE_SHIFT) as u8,
        )
    }
}

impl EntryFormat for Ept {
    const REFUSES_WRITE_AND_EXECUTE: bool = false;

    fn leaf(phys: PhysAddr, size: PageSize, access: Access) -> u64 {
        let memory_type = match access.cache {
            CachePolicy::WriteBack => EptMemoryType::WriteBack,
            CachePolicy::Uncached => EptMemoryType::Uncacheable,
        };
        let mut entry = Self::READ
            | (phys.as_u64() & Self::ADDRESS_MASK)
            | ((memory_type as u64) << Self::MEMORY_TYPE_SHIFT);
        if access.write {
            entry |= Self::WRITE;
        }
        if access.execute {
            entry |= Self::EXECUTE;
        }
        if size != PageSize::Size4K {
            entry |= Self::LARGE_PAGE;
        }
        entry
    }

    fn table(next: PhysFrame, _user: bool) -> u64 {
        Self::READ | Self::WRITE | Self::EXECUTE | (next.start().as_u64() & Self::ADDRESS_MASK)
    }

    fn table_with_user(entry: u64) -> u64 {
        entry
    }

    fn is_present(entry: u64) -> bool {
        entry & (Self::READ | Self::WRITE | Self::EXECUTE) != 0
    }

    fn is_huge(entry: u64) -> bool {
        entry & Self::LARGE_PAGE != 0
    }

    fn address(entry: u64) -> u64 {
        entry & Self::ADDRESS_MASK
    }

    /// Cache policy reads back as [`CachePolicy::Uncached`] for a UC leaf, otherwise
    /// [`CachePolicy::WriteBack`] (table entries hold no memory type).
    fn access(entry: u64) -> Access {
        Access {
            write: entry & Self::WRITE != 0,
            execute: entry & Self::EXECUTE != 0,
            user: true,
            global: false,
            cache: match Self::memory_type(entry) {
                Some(EptMemoryType::Uncacheable) => CachePolicy::Uncached,
                _ => CachePolicy::WriteBack,
            },
        }
    }
}

/// The EPT pointer (VMCS field 0x201a): bits 0–2 the memory type of the paging
/// structures (UC or WB), bits 3–5 the page-walk length minus one, bit 6 accessed/dirty
/// flags enabled, bits 12–51 the root (PML4) table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptPointer {
    /// The PML4 table.
    pub root: PhysFrame,
    /// How the CPU caches the paging structures: [`EptMemoryType::WriteBack`] or
    /// [`EptMemoryType::Uncacheable`].
    pub memory_type: EptMemoryType,
    /// Whether the CPU sets accessed and dirty flags.
    pub accessed_dirty: bool,
}

impl EptPointer {
    /// Four-level walks (the builder's tables).
    pub const PAGE_WALK_LENGTH: u64 = 4;
    /// Bit 6.
    pub const ACCESSED_DIRTY: u64 = 1 << 6;

    /// A pointer to the four-level table at `root`, write-back, with or without A/D flags.
    pub const fn new(root: PhysFrame, accessed_dirty: bool) -> Self {
        Self {
            root,
            memory_type: EptMemoryType::WriteBack,
            accessed_dirty,
        }
    }

    /// The 64-bit value for the VMCS.
    pub const fn encode(self) -> u64 {
        (self.memory_type as u64)
            | ((Self::PAGE_WALK_LENGTH - 1) << 3)
            | if self.accessed_dirty {
                Self::ACCESSED_DIRTY
            } else {
                0
            }
            | (self.root.start().as_u64() & Ept::ADDRESS_MASK)
    }

    /// Decodes a value, `None` if VM entry would refuse it: a memory type other than UC
    /// or WB, a walk length other than four, reserved bits 8–11 or 52–63 set.
    pub const fn decode(raw: u64) -> Option<Self> {
        let memory_type = match raw & 7 {
            0 => EptMemoryType::Uncacheable,
            6 => EptMemoryType::WriteBack,
            _ => return None,
        };
        if (raw >> 3) & 7 != Self::PAGE_WALK_LENGTH - 1 || raw & 0xfff0_0000_0000_0f00 != 0 {
            return None;
        }
        Some(Self {
            root: PhysFrame::containing(PhysAddr::new(raw & Ept::ADDRESS_MASK)),
            memory_type,
            accessed_dirty: raw & Self::ACCESSED_DIRTY != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::VirtAddr;
    use crate::paging::{FrameSource, MapStats, PageTable, PhysMemory, Translation};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Physical memory as a map of frame number to table.
    #[derive(Default)]
    struct Memory(HashMap<u64, [u64; 512]>);

    impl PhysMemory for Memory {
        fn read_entry(&self, table: PhysFrame, index: usize) -> u64 {
            self.0
                .get(&table.number())
                .map_or(0xdead_beef_dead_beef, |t| t[index])
        }
        fn write_entry(&mut self, table: PhysFrame, index: usize, value: u64) {
            self.0.entry(table.number()).or_insert([0; 512])[index] = value;
        }
        fn zero_frame(&mut self, frame: PhysFrame) {
            self.0.insert(frame.number(), [0; 512]);
        }
    }

    struct Frames(u64);

    impl FrameSource for Frames {
        fn allocate_table_frame(&mut self) -> Option<PhysFrame> {
            self.0 += 1;
            Some(PhysFrame::from_number(self.0))
        }
    }

    const GUEST_RAM: Access = Access {
        write: true,
        execute: true,
        user: true,
        global: false,
        cache: CachePolicy::WriteBack,
    };

    const DEVICE: Access = Access {
        write: true,
        execute: false,
        user: true,
        global: false,
        cache: CachePolicy::Uncached,
    };

    fn setup() -> (Memory, Frames, PageTable<Ept>) {
        let mut mem = Memory::default();
        let mut frames = Frames(0x100);
        let table = PageTable::new(&mut mem, &mut frames).unwrap();
        (mem, frames, table)
    }

    #[test]
    fn leaves_and_tables_have_exactly_the_expected_bits() {
        let ram = Ept::leaf(PhysAddr::new(0x1234_5000), PageSize::Size4K, GUEST_RAM);
        assert_eq!(ram, 0x1234_5000 | 0b111 | (6 << 3));
        let mmio = Ept::leaf(PhysAddr::new(0xfee0_0000), PageSize::Size2M, DEVICE);
        assert_eq!(mmio, 0xfee0_0000 | 0b011 | Ept::LARGE_PAGE);
        let read_only = Ept::leaf(
            PhysAddr::new(0x4000_0000),
            PageSize::Size1G,
            Access {
                write: false,
                execute: false,
                ..GUEST_RAM
            },
        );
        assert_eq!(
            read_only,
            0x4000_0000 | Ept::READ | (6 << 3) | Ept::LARGE_PAGE
        );
        assert_eq!(
            Ept::table(PhysFrame::from_number(0x42), false),
            0x42_000 | 0b111
        );
        assert!(!Ept::is_present(0x42_000 | Ept::ACCESSED | Ept::LARGE_PAGE));
        assert_eq!(Ept::memory_type(mmio), Some(EptMemoryType::Uncacheable));
        assert_eq!(Ept::memory_type(ram), Some(EptMemoryType::WriteBack));
        assert_eq!(Ept::memory_type(2 << 3), None);
    }

    #[test]
    fn the_builder_maps_and_translates_with_ept_entries() {
        let (mut mem, mut frames, mut table) = setup();
        table
            .map(
                &mut mem,
                &mut frames,
                VirtAddr::new(0xb8000),
                PhysAddr::new(0x7_0000_0000),
                PageSize::Size4K,
                DEVICE,
            )
            .unwrap();
        table
            .map(
                &mut mem,
                &mut frames,
                VirtAddr::new(0x4000_0000),
                PhysAddr::new(0x8000_0000),
                PageSize::Size1G,
                GUEST_RAM,
            )
            .unwrap();
        assert_eq!(
            table.translate(&mem, VirtAddr::new(0xb8123)),
            Some(Translation {
                phys: PhysAddr::new(0x7_0000_0123),
                size: PageSize::Size4K,
                access: DEVICE,
            })
        );
        let huge = table.translate(&mem, VirtAddr::new(0x4123_4567)).unwrap();
        assert_eq!(huge.phys, PhysAddr::new(0x8123_4567));
        assert_eq!(huge.size, PageSize::Size1G);
        assert_eq!(huge.access, GUEST_RAM);
        assert_eq!(table.translate(&mem, VirtAddr::new(0xb9000)), None);
        // Every table entry on the walk is RWX with no memory type.
        let root_entry = mem.read_entry(table.root(), 0);
        assert_eq!(root_entry & 0xfff, 0b111);
        assert_eq!(
            table.unmap(&mut mem, VirtAddr::new(0xb8000)),
            Ok((PhysAddr::new(0x7_0000_0000), PageSize::Size4K))
        );
        assert_eq!(table.translate(&mem, VirtAddr::new(0xb8000)), None);
    }

    #[test]
    fn map_range_uses_2m_pages_where_aligned() {
        let (mut mem, mut frames, mut table) = setup();
        // 64 MiB of guest RAM at guest-physical 0 backed by host 0x1_0000_0000, plus a
        // 12 KiB tail: 32 pages of 2 MiB and three of 4 KiB.
        let len = (64 << 20) + 0x3000;
        let stats = table
            .map_range(
                &mut mem,
                &mut frames,
                VirtAddr::new(0),
                PhysAddr::new(0x1_0000_0000),
                len,
                GUEST_RAM,
                PageSize::Size2M,
            )
            .unwrap();
        assert_eq!(
            stats,
            MapStats {
                pages_4k: 3,
                pages_2m: 32,
                pages_1g: 0
            }
        );
        for gpa in [0, 0x1f_ffff, 0x20_0000, (64 << 20) - 1, (64 << 20) + 0x2fff] {
            let hit = table.translate(&mem, VirtAddr::new(gpa)).unwrap();
            assert_eq!(hit.phys, PhysAddr::new(0x1_0000_0000 + gpa), "{gpa:#x}");
            assert!(hit.access.write && hit.access.execute);
        }
        assert_eq!(
            table.translate(&mem, VirtAddr::new((64 << 20) + 0x3000)),
            None
        );
        // The level-2 entry for the first 2 MiB is a large write-back leaf.
        let l3 =
            PhysFrame::containing(PhysAddr::new(Ept::address(mem.read_entry(table.root(), 0))));
        let l2 = PhysFrame::containing(PhysAddr::new(Ept::address(mem.read_entry(l3, 0))));
        let leaf = mem.read_entry(l2, 0);
        assert!(Ept::is_huge(leaf));
        assert_eq!(leaf, 0x1_0000_0000 | 0b111 | (6 << 3) | Ept::LARGE_PAGE);
    }

    #[test]
    fn ept_pointer_encoding() {
        let pointer = EptPointer::new(PhysFrame::from_number(0x1234), true);
        assert_eq!(pointer.encode(), 0x123_4000 | 6 | (3 << 3) | (1 << 6));
        assert_eq!(EptPointer::decode(pointer.encode()), Some(pointer));
        let uc = EptPointer {
            memory_type: EptMemoryType::Uncacheable,
            accessed_dirty: false,
            ..pointer
        };
        assert_eq!(uc.encode(), 0x123_4000 | (3 << 3));
        assert_eq!(
            EptPointer::decode(0x123_4000 | 6 | (4 << 3)),
            None,
            "5-level walk"
        );
        assert_eq!(
            EptPointer::decode(0x123_4000 | 1 | (3 << 3)),
            None,
            "write combining"
        );
        assert_eq!(
            EptPointer::decode(0x123_4100 | 6 | (3 << 3)),
            None,
            "reserved bit 8"
        );
    }

    proptest! {
        #[test]
        fn leaves_decode_to_what_was_encoded(
            frame in 0u64..(1 << 40),
            write: bool, execute: bool, uncached: bool,
            size in prop::sample::select(vec![PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]),
        ) {
            let phys = (frame << 12) & !(size.bytes() - 1);
            let wanted = Access {
                write,
                execute,
                user: true,
                global: false,
                cache: if uncached { CachePolicy::Uncached } else { CachePolicy::WriteBack },
            };
            let entry = Ept::leaf(PhysAddr::new(phys), size, wanted);
            prop_assert!(Ept::is_present(entry));
            prop_assert_eq!(Ept::is_huge(entry), size != PageSize::Size4K);
            prop_assert_eq!(Ept::address(entry), phys);
            prop_assert_eq!(Ept::access(entry), wanted);
        }

        #[test]
        fn ept_pointer_round_trips(frame in 0u64..(1 << 40), accessed_dirty: bool, uncached: bool, raw: u64) {
            let pointer = EptPointer {
                root: PhysFrame::from_number(frame),
                memory_type: if uncached { EptMemoryType::Uncacheable } else { EptMemoryType::WriteBack },
                accessed_dirty,
            };
            prop_assert_eq!(EptPointer::decode(pointer.encode()), Some(pointer));
            if let Some(decoded) = EptPointer::decode(raw) {
                prop_assert_eq!(decoded.encode(), raw & !(1 << 7));
            }
        }
    }
}
