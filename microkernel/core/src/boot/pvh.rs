//! The Xen/PVH boot protocol: the `hvm_start_info` structure whose physical address the
//! loader leaves in EBX (QEMU does this for `-kernel` with a PVH ELF note).
//!
//! Layout (Xen `public/arch-x86/hvm/start_info.h`, all little endian):
//!
//! ```text
//! 0x00 magic u32 (0x336ec578)   0x04 version u32   0x08 flags u32   0x0c nr_modules u32
//! 0x10 modlist_paddr u64        0x18 cmdline_paddr u64               0x20 rsdp_paddr u64
//! version >= 1:  0x28 memmap_paddr u64   0x30 memmap_entries u32   0x34 reserved u32
//! memmap entry (24 bytes): addr u64, size u64, type u32 (E820 numbering), reserved u32
//! ```
//!
//! A zero address means "not provided". Modules and flags are not read yet. This module
//! only reads through [`PhysRead`] and never panics.

use super::{
    BootInfo, BootInfoError, CMDLINE_MAX, MAX_FIRMWARE_ENTRIES, PhysRead, Protocol, field_address,
    memory_map_from_reads, read_c_string, read_u32, read_u64,
};

/// The value of `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Byte offsets of the `hvm_start_info` fields.
mod offset {
    pub const MAGIC: u64 = 0x00;
    pub const VERSION: u64 = 0x04;
    pub const CMDLINE_PADDR: u64 = 0x18;
    pub const RSDP_PADDR: u64 = 0x20;
    pub const MEMMAP_PADDR: u64 = 0x28;
    pub const MEMMAP_ENTRIES: u64 = 0x30;
}

/// Size of one memory-map entry.
const MEMMAP_ENTRY_SIZE: u64 = 24;

/// Parses the start info at `start_info_paddr`.
///
/// Refuses a wrong magic, a structure older than version 1 or without memory map
/// ([`BootInfoError::NoMemoryMap`]), an entry count above [`MAX_FIRMWARE_ENTRIES`], and
/// any pointer that leads outside readable memory. The command line is cut at
/// [`CMDLINE_MAX`] bytes; invalid UTF-8 in it is replaced, not refused.
pub fn parse(mem: &impl PhysRead, start_info_paddr: u64) -> Result<BootInfo, BootInfoError> {
    let base = start_info_paddr;
    let magic = read_u32(mem, base, offset::MAGIC)?;
    if magic != START_INFO_MAGIC {
        return Err(BootInfoError::BadMagic {
            expected: START_INFO_MAGIC,
            found: magic,
        });
    }
    if read_u32(mem, base, offset::VERSION)? < 1 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let memmap_paddr = read_u64(mem, base, offset::MEMMAP_PADDR)?;
    let entries = u64::from(read_u32(mem, base, offset::MEMMAP_ENTRIES)?);
    if entries == 0 || memmap_paddr == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    if entries > MAX_FIRMWARE_ENTRIES {
        return Err(BootInfoError::Malformed {
            what: "memmap_entries is implausibly large",
            offset: field_address(base, offset::MEMMAP_ENTRIES, 4)?,
        });
    }
    let memory_map = memory_map_from_reads((0..entries).map(|index| {
        let entry = field_address(
            memmap_paddr,
            index * MEMMAP_ENTRY_SIZE,
            MEMMAP_ENTRY_SIZE as usize,
        )?;
        Ok((
            read_u64(mem, entry, 0)?,
            read_u64(mem, entry, 8)?,
            read_u32(mem, entry, 16)?,
        ))
    }))?;

    let cmdline_paddr = read_u64(mem, base, offset::CMDLINE_PADDR)?;
    let cmdline = match cmdline_paddr {
        0 => heapless::String::new(),
        paddr => read_c_string(mem, paddr, CMDLINE_MAX as u64)?,
    };
    let rsdp = match read_u64(mem, base, offset::RSDP_PADDR)? {
        0 => None,
        paddr => Some(paddr),
    };
    let mut loader_name = heapless::String::new();
    // Cannot fail: "PVH" is far below the capacity.
    let _ = loader_name.push_str("PVH");
    Ok(BootInfo {
        protocol: Protocol::Pvh,
        memory_map,
        cmdline,
        rsdp,
        loader_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::OutOfRange;
    use crate::boot::memmap::{Region, RegionKind};
    use crate::boot::test_memory::{QEMU_E820, VecMemory};
    use proptest::prelude::*;

    const START_INFO: u64 = 0x1000;
    const MEMMAP: u64 = 0x2000;
    const CMDLINE: u64 = 0x3000;
    const RSDP: u64 = 0xf_52e0;

    /// A start info as QEMU writes it for a 512 MiB guest, in memory `[0, 0x4000)`.
    fn qemu_image(cmdline: &[u8]) -> VecMemory {
        let mut mem = VecMemory::new(0, 0x4000);
        mem.put_u32(START_INFO, START_INFO_MAGIC);
        mem.put_u32(START_INFO + 4, 1);
        mem.put_u64(START_INFO + 0x18, CMDLINE);
        mem.put_u64(START_INFO + 0x20, RSDP);
        mem.put_u64(START_INFO + 0x28, MEMMAP);
        mem.put_u32(START_INFO + 0x30, QEMU_E820.len() as u32);
        for (index, (base, len, kind)) in QEMU_E820.into_iter().enumerate() {
            let at = MEMMAP + 24 * index as u64;
            mem.put_u64(at, base);
            mem.put_u64(at + 8, len);
            mem.put_u32(at + 16, kind);
        }
        mem.put(CMDLINE, cmdline);
        mem
    }

    #[test]
    fn a_qemu_start_info_parses() {
        let mem = qemu_image(b"esker.selftest=power-off quiet\0");
        let info = parse(&mem, START_INFO).unwrap();
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(info.loader_name, "PVH");
        assert_eq!(info.cmdline, "esker.selftest=power-off quiet");
        assert_eq!(info.rsdp, Some(RSDP));
        let regions = info.memory_map.regions();
        assert_eq!(regions.len(), 6);
        assert_eq!(
            regions[0],
            Region {
                start: 0,
                end: 0x9f000,
                kind: RegionKind::Usable
            }
        );
        assert_eq!(
            regions[3],
            Region {
                start: 0x10_0000,
                end: 0x1ffe_0000,
                kind: RegionKind::Usable
            }
        );
        assert_eq!(info.memory_map.highest_usable_end(), 0x1ffe_0000);
    }

    #[test]
    fn zero_addresses_mean_not_provided() {
        let mut mem = qemu_image(b"ignored\0");
        mem.put_u64(START_INFO + 0x18, 0);
        mem.put_u64(START_INFO + 0x20, 0);
        let info = parse(&mem, START_INFO).unwrap();
        assert_eq!(info.cmdline, "");
        assert_eq!(info.rsdp, None);
    }

    #[test]
    fn a_wrong_magic_is_named() {
        let mut mem = qemu_image(b"\0");
        mem.put_u32(START_INFO, 0x2bad_b002);
        assert_eq!(
            parse(&mem, START_INFO),
            Err(BootInfoError::BadMagic {
                expected: 0x336e_c578,
                found: 0x2bad_b002
            })
        );
    }

    #[test]
    fn no_memory_map_is_reported_as_such() {
        for (field, value) in [(START_INFO + 4, 0u32), (START_INFO + 0x30, 0)] {
            let mut mem = qemu_image(b"\0");
            mem.put_u32(field, value);
            assert_eq!(parse(&mem, START_INFO), Err(BootInfoError::NoMemoryMap));
        }
        let mut mem = qemu_image(b"\0");
        mem.put_u64(START_INFO + 0x28, 0);
        assert_eq!(parse(&mem, START_INFO), Err(BootInfoError::NoMemoryMap));
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_it_is_walked() {
        let mut mem = qemu_image(b"\0");
        mem.put_u32(START_INFO + 0x30, u32::MAX);
        assert_eq!(
            parse(&mem, START_INFO),
            Err(BootInfoError::Malformed {
                what: "memmap_entries is implausibly large",
                offset: START_INFO + 0x30
            })
        );
    }

    #[test]
    fn pointers_out_of_memory_are_unreadable() {
        // The start info itself cut short: the memmap_paddr field is missing.
        let mem = qemu_image(b"\0");
        let short = VecMemory {
            base: 0,
            bytes: mem.bytes[..(START_INFO + 0x2c) as usize].to_vec(),
        };
        assert_eq!(
            parse(&short, START_INFO),
            Err(BootInfoError::Unreadable(OutOfRange {
                paddr: START_INFO + 0x28,
                len: 8
            }))
        );
        // The memory map runs off the end of memory.
        let mut mem = qemu_image(b"\0");
        mem.put_u64(START_INFO + 0x28, 0x3ff0);
        assert!(matches!(
            parse(&mem, START_INFO),
            Err(BootInfoError::Unreadable(_))
        ));
        // The memory map pointer wraps around.
        mem.put_u64(START_INFO + 0x28, u64::MAX - 8);
        assert!(matches!(
            parse(&mem, START_INFO),
            Err(BootInfoError::Unreadable(_))
        ));
        // The command line has no NUL before memory ends.
        let mut mem = qemu_image(b"\0");
        mem.put_u64(START_INFO + 0x18, 0x3ffc);
        mem.put(0x3ffc, b"abcd");
        assert_eq!(
            parse(&mem, START_INFO),
            Err(BootInfoError::Unreadable(OutOfRange {
                paddr: 0x4000,
                len: 1
            }))
        );
        // The start info address itself.
        assert!(matches!(
            parse(&mem, 0x5000),
            Err(BootInfoError::Unreadable(_))
        ));
        assert!(matches!(
            parse(&mem, u64::MAX - 2),
            Err(BootInfoError::Unreadable(_))
        ));
    }

    #[test]
    fn a_long_command_line_is_cut_at_the_limit() {
        let long = vec![b'x'; 0x2000 - 0x1000 + 7];
        let mut mem = qemu_image(b"\0");
        mem.bytes.resize(0x6000, 0);
        mem.put(CMDLINE, &long);
        let info = parse(&mem, START_INFO).unwrap();
        assert_eq!(info.cmdline.len(), CMDLINE_MAX);
        assert!(info.cmdline.bytes().all(|b| b == b'x'));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            base in any::<u64>(),
            at in any::<u64>(),
            with_magic: bool,
        ) {
            let mut mem = VecMemory { base, bytes };
            let start = if with_magic && mem.bytes.len() >= 4 {
                mem.bytes[..4].copy_from_slice(&START_INFO_MAGIC.to_le_bytes());
                base
            } else {
                at
            };
            let _ = parse(&mem, start);
        }

        #[test]
        fn corrupting_a_good_image_never_panics(
            flips in proptest::collection::vec((0x1000usize..0x1038, any::<u8>()), 1..6),
        ) {
            let mut mem = qemu_image(b"console=ttyS0\0");
            for (at, value) in flips {
                mem.bytes[at] = value;
            }
            if let Ok(info) = parse(&mem, START_INFO) {
                prop_assert!(info.cmdline.len() <= CMDLINE_MAX);
                prop_assert!(info.memory_map.regions().windows(2).all(|w| w[0].end <= w[1].start));
            }
        }
    }
}
