//! The Multiboot2 boot information (MBI) whose physical address a Multiboot2 loader
//! (GRUB) leaves in EBX, next to [`BOOTLOADER_MAGIC`] in EAX.
//!
//! ```text
//! MBI  = total_size u32, reserved u32, then tags, each at an 8-byte aligned offset
//! tag  = type u32, size u32 (header included, padding not), body
//!        0 end | 1 command line | 2 boot loader name | 6 memory map
//!        14 copy of the ACPI 1.0 RSDP | 15 copy of the ACPI 2.0+ RSDP
//! tag 6 body = entry_size u32, entry_version u32, entries of entry_size bytes:
//!              base u64, length u64, type u32 (E820 numbering), reserved u32
//! ```
//!
//! The MBI is limited to [`MAX_TOTAL_SIZE`] bytes and every tag must lie inside
//! `total_size` and end before an end tag, so a garbled MBI is refused instead of walked
//! into the weeds. Unknown tags are skipped. This module only reads through
//! [`PhysRead`] and never panics.

use super::{
    BootInfo, BootInfoError, MemoryMap, PhysRead, Protocol, field_address, memory_map_from_reads,
    read_c_string, read_u32, read_u64,
};

/// The value a Multiboot2 loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

/// Largest `total_size` accepted.
pub const MAX_TOTAL_SIZE: u64 = 64 * 1024;

/// Tag type numbers.
mod tag {
    pub const END: u32 = 0;
    pub const CMDLINE: u32 = 1;
    pub const LOADER_NAME: u32 = 2;
    pub const MEMORY_MAP: u32 = 6;
    pub const ACPI_OLD_RSDP: u32 = 14;
    pub const ACPI_NEW_RSDP: u32 = 15;
}

/// Size of the MBI header and of every tag header.
const HEADER_SIZE: u64 = 8;
/// Tags start at offsets that are multiples of this.
const TAG_ALIGN: u64 = 8;
/// The memory-map tag's header: tag header, entry_size, entry_version.
const MEMORY_MAP_HEADER_SIZE: u64 = 16;
/// The part of a memory-map entry this parser reads.
const MEMORY_MAP_ENTRY_MIN: u64 = 24;
/// Length of an ACPI 1.0 RSDP.
const RSDP_V1_LEN: u64 = 20;
/// Length of an ACPI 2.0+ RSDP (XSDP).
const RSDP_V2_LEN: u64 = 36;

/// Checks the magic the loader left in EAX.
pub fn check_magic(eax: u32) -> Result<(), BootInfoError> {
    if eax == BOOTLOADER_MAGIC {
        Ok(())
    } else {
        Err(BootInfoError::BadMagic {
            expected: BOOTLOADER_MAGIC,
            found: eax,
        })
    }
}

/// Parses the MBI at `info_paddr`.
///
/// Uses tags 1, 2, 6, 14 and 15; for the two RSDP tags, the RSDP reported is the copy
/// inside the tag (tag address + 8); a 2.0+ RSDP is preferred to a 1.0 one. When a
/// string tag appears twice the last wins; two memory-map tags are refused as
/// ambiguous. The command line is cut at [`CMDLINE_MAX`](super::CMDLINE_MAX) bytes, invalid UTF-8 replaced.
pub fn parse(mem: &impl PhysRead, info_paddr: u64) -> Result<BootInfo, BootInfoError> {
    let total_size = u64::from(read_u32(mem, info_paddr, 0)?);
    if total_size < HEADER_SIZE * 2 {
        return Err(BootInfoError::Malformed {
            what: "total_size is too small for the header and an end tag",
            offset: info_paddr,
        });
    }
    if total_size > MAX_TOTAL_SIZE {
        return Err(BootInfoError::Malformed {
            what: "total_size is larger than 64 KiB",
            offset: info_paddr,
        });
    }
    // The whole MBI must be addressable, so tag addresses below cannot overflow.
    field_address(info_paddr, total_size, 0)?;

    let mut memory_map: Option<MemoryMap> = None;
    let mut cmdline = heapless::String::new();
    let mut loader_name = heapless::String::new();
    let mut rsdp_v1 = None;
    let mut rsdp_v2 = None;
    let mut offset = HEADER_SIZE;
    loop {
        if offset + HEADER_SIZE > total_size {
            return Err(BootInfoError::Malformed {
                what: "no end tag before total_size",
                offset: info_paddr,
            });
        }
        let tag_paddr = info_paddr + offset;
        let kind = read_u32(mem, tag_paddr, 0)?;
        let size = u64::from(read_u32(mem, tag_paddr, 4)?);
        if size < HEADER_SIZE {
            return Err(BootInfoError::Malformed {
                what: "tag size is below the 8-byte tag header",
                offset: tag_paddr + 4,
            });
        }
        if size > total_size - offset {
            return Err(BootInfoError::Malformed {
                what: "tag runs past total_size",
                offset: tag_paddr + 4,
            });
        }
        let body = tag_paddr + HEADER_SIZE;
        let body_len = size - HEADER_SIZE;
        match kind {
            tag::END => break,
            tag::CMDLINE => cmdline = read_c_string(mem, body, body_len)?,
            tag::LOADER_NAME => loader_name = read_c_string(mem, body, body_len)?,
            tag::MEMORY_MAP => {
                if memory_map.is_some() {
                    return Err(BootInfoError::Malformed {
                        what: "a second memory map tag",
                        offset: tag_paddr,
                    });
                }
                memory_map = Some(parse_memory_map(mem, tag_paddr, size)?);
            }
            tag::ACPI_OLD_RSDP => rsdp_v1 = Some(rsdp_copy(tag_paddr, body_len, RSDP_V1_LEN)?),
            tag::ACPI_NEW_RSDP => rsdp_v2 = Some(rsdp_copy(tag_paddr, body_len, RSDP_V2_LEN)?),
            _ => {}
        }
        // Cannot overflow: `size` is at most 64 KiB.
        offset += size.next_multiple_of(TAG_ALIGN);
    }
    Ok(BootInfo {
        protocol: Protocol::Multiboot2,
        memory_map: memory_map.ok_or(BootInfoError::NoMemoryMap)?,
        cmdline,
        rsdp: rsdp_v2.or(rsdp_v1),
        loader_name,
    })
}

/// The address of the RSDP copy in an ACPI tag, if the tag is long enough to hold one.
fn rsdp_copy(tag_paddr: u64, body_len: u64, rsdp_len: u64) -> Result<u64, BootInfoError> {
    if body_len < rsdp_len {
        return Err(BootInfoError::Malformed {
            what: "ACPI RSDP tag is shorter than an RSDP",
            offset: tag_paddr + 4,
        });
    }
    Ok(tag_paddr + HEADER_SIZE)
}

/// Reads the entries of the memory-map tag at `tag_paddr` (`size` already checked to lie
/// inside the MBI).
fn parse_memory_map(
    mem: &impl PhysRead,
    tag_paddr: u64,
    size: u64,
) -> Result<MemoryMap, BootInfoError> {
    if size < MEMORY_MAP_HEADER_SIZE {
        return Err(BootInfoError::Malformed {
            what: "memory map tag is shorter than its header",
            offset: tag_paddr + 4,
        });
    }
    let entry_size = u64::from(read_u32(mem, tag_paddr, 8)?);
    if entry_size < MEMORY_MAP_ENTRY_MIN {
        return Err(BootInfoError::Malformed {
            what: "memory map entry_size is below 24",
            offset: tag_paddr + 8,
        });
    }
    let count = (size - MEMORY_MAP_HEADER_SIZE) / entry_size;
    memory_map_from_reads((0..count).map(|index| {
        let entry = tag_paddr + MEMORY_MAP_HEADER_SIZE + index * entry_size;
        Ok((
            read_u64(mem, entry, 0)?,
            read_u64(mem, entry, 8)?,
            read_u32(mem, entry, 16)?,
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::memmap::{Region, RegionKind};
    use crate::boot::test_memory::{QEMU_E820, VecMemory};
    use crate::boot::{CMDLINE_MAX, OutOfRange};
    use proptest::prelude::*;

    const MBI: u64 = 0x9000;

    /// Builds an MBI from `(type, body)` tags, padding each to 8 bytes and appending the
    /// end tag.
    fn mbi(tags: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        for (kind, body) in tags.iter().chain([&(0, Vec::new())]) {
            out.extend(kind.to_le_bytes());
            out.extend((body.len() as u32 + 8).to_le_bytes());
            out.extend(body);
            while !out.len().is_multiple_of(8) {
                out.push(0);
            }
        }
        let total = out.len() as u32;
        out[..4].copy_from_slice(&total.to_le_bytes());
        out
    }

    fn memory_map_body(entry_size: u32, entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(entry_size.to_le_bytes());
        body.extend(0u32.to_le_bytes());
        for &(base, len, kind) in entries {
            let start = body.len();
            body.extend(base.to_le_bytes());
            body.extend(len.to_le_bytes());
            body.extend(kind.to_le_bytes());
            body.resize(start + entry_size as usize, 0xee);
        }
        body
    }

    /// What GRUB hands over on a QEMU machine with 512 MiB.
    fn grub_tags() -> Vec<(u32, Vec<u8>)> {
        vec![
            (1, b"esker.selftest=invalid-opcode\0".to_vec()),
            (2, b"GRUB 2.12\0".to_vec()),
            (4, vec![0; 8]), // basic meminfo: skipped
            (6, memory_map_body(24, &QEMU_E820)),
            (
                14,
                b"RSD PTR \x00BOCHS \x00\x00\x00\x00\x00\x00\x00".to_vec(),
            ),
        ]
    }

    fn load(bytes: &[u8]) -> VecMemory {
        let mut mem = VecMemory::new(MBI, bytes.len());
        mem.put(MBI, bytes);
        mem
    }

    fn rsdp_tag_paddr(bytes: &[u8], wanted: u32) -> u64 {
        let mut offset = 8;
        loop {
            let kind = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
            let size = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap());
            if kind == wanted {
                return MBI + offset as u64;
            }
            offset += (size as usize).next_multiple_of(8);
        }
    }

    #[test]
    fn a_grub_mbi_parses() {
        let bytes = mbi(&grub_tags());
        let info = parse(&load(&bytes), MBI).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.cmdline, "esker.selftest=invalid-opcode");
        assert_eq!(info.loader_name, "GRUB 2.12");
        assert_eq!(info.rsdp, Some(rsdp_tag_paddr(&bytes, 14) + 8));
        let regions = info.memory_map.regions();
        assert_eq!(regions.len(), 6);
        assert_eq!(
            regions[5],
            Region {
                start: 0xfffc_0000,
                end: 0x1_0000_0000,
                kind: RegionKind::Reserved
            }
        );
        assert_eq!(
            info.memory_map.usable_bytes(),
            0x9f000 + 0x1ffe_0000 - 0x10_0000
        );
    }

    #[test]
    fn the_newer_rsdp_is_preferred_whatever_the_order() {
        let mut tags = grub_tags();
        tags.insert(0, (15, vec![0x5a; 36]));
        let bytes = mbi(&tags);
        let info = parse(&load(&bytes), MBI).unwrap();
        assert_eq!(info.rsdp, Some(rsdp_tag_paddr(&bytes, 15) + 8));
    }

    #[test]
    fn entry_size_is_honoured() {
        let tags = vec![(6, memory_map_body(40, &QEMU_E820))];
        let info = parse(&load(&mbi(&tags)), MBI).unwrap();
        assert_eq!(info.memory_map.regions().len(), 6);
        assert_eq!(info.cmdline, "");
        assert_eq!(info.loader_name, "");
        assert_eq!(info.rsdp, None);
        let tags = vec![(6, memory_map_body(16, &[]))];
        assert_eq!(
            parse(&load(&mbi(&tags)), MBI),
            Err(BootInfoError::Malformed {
                what: "memory map entry_size is below 24",
                offset: MBI + 16
            })
        );
    }

    #[test]
    fn no_memory_map_tag_is_reported_as_such() {
        let tags: Vec<_> = grub_tags()
            .into_iter()
            .filter(|(kind, _)| *kind != 6)
            .collect();
        assert_eq!(
            parse(&load(&mbi(&tags)), MBI),
            Err(BootInfoError::NoMemoryMap)
        );
    }

    #[test]
    fn two_memory_maps_are_ambiguous() {
        let mut tags = grub_tags();
        tags.push((6, memory_map_body(24, &QEMU_E820[..1])));
        assert!(matches!(
            parse(&load(&mbi(&tags)), MBI),
            Err(BootInfoError::Malformed {
                what: "a second memory map tag",
                ..
            })
        ));
    }

    #[test]
    fn total_size_is_bounded() {
        let mut bytes = mbi(&grub_tags());
        bytes[..4].copy_from_slice(&8u32.to_le_bytes());
        let err = parse(&load(&bytes), MBI).unwrap_err();
        assert!(
            matches!(err, BootInfoError::Malformed { offset: MBI, .. }),
            "{err}"
        );
        bytes[..4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert_eq!(
            parse(&load(&bytes), MBI),
            Err(BootInfoError::Malformed {
                what: "total_size is larger than 64 KiB",
                offset: MBI
            })
        );
    }

    #[test]
    fn a_truncated_mbi_is_unreadable() {
        let bytes = mbi(&grub_tags());
        let cut = &bytes[..bytes.len() - 40];
        assert!(matches!(
            parse(&load(cut), MBI),
            Err(BootInfoError::Unreadable(OutOfRange { .. }))
        ));
        assert!(matches!(
            parse(&load(&bytes), MBI + 0x10_0000),
            Err(BootInfoError::Unreadable(_))
        ));
        assert!(matches!(
            parse(&load(&bytes), u64::MAX - 3),
            Err(BootInfoError::Unreadable(_))
        ));
    }

    #[test]
    fn bad_tag_sizes_are_named() {
        let bytes = mbi(&grub_tags());
        // The first tag (command line) claims 4 bytes.
        let mut small = bytes.clone();
        small[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            parse(&load(&small), MBI),
            Err(BootInfoError::Malformed {
                what: "tag size is below the 8-byte tag header",
                offset: MBI + 12
            })
        );
        let mut big = bytes.clone();
        big[12..16].copy_from_slice(&0x8000u32.to_le_bytes());
        assert_eq!(
            parse(&load(&big), MBI),
            Err(BootInfoError::Malformed {
                what: "tag runs past total_size",
                offset: MBI + 12
            })
        );
        // total_size that ends before the end tag.
        let mut short = bytes.clone();
        let total = (bytes.len() - 8) as u32;
        short[..4].copy_from_slice(&total.to_le_bytes());
        assert_eq!(
            parse(&load(&short), MBI),
            Err(BootInfoError::Malformed {
                what: "no end tag before total_size",
                offset: MBI
            })
        );
        // An RSDP tag too short to hold an RSDP.
        let mut tags = grub_tags();
        tags.push((15, vec![0; 20]));
        assert!(matches!(
            parse(&load(&mbi(&tags)), MBI),
            Err(BootInfoError::Malformed {
                what: "ACPI RSDP tag is shorter than an RSDP",
                ..
            })
        ));
    }

    #[test]
    fn strings_are_confined_to_their_tag() {
        // A command line without NUL ends at its tag, not in the next one.
        let mut tags = grub_tags();
        tags[0] = (1, b"quiet".to_vec());
        let info = parse(&load(&mbi(&tags)), MBI).unwrap();
        assert_eq!(info.cmdline, "quiet");
        // A loader name longer than 64 bytes is cut.
        tags[1] = (2, [b'n'; 100].to_vec());
        let info = parse(&load(&mbi(&tags)), MBI).unwrap();
        assert_eq!(info.loader_name.len(), 64);
    }

    #[test]
    fn the_magic_in_eax_is_checked() {
        assert_eq!(check_magic(0x36d7_6289), Ok(()));
        assert_eq!(
            check_magic(0x2bad_b002),
            Err(BootInfoError::BadMagic {
                expected: 0x36d7_6289,
                found: 0x2bad_b002
            })
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
            base in any::<u64>(),
            at in any::<u64>(),
            at_base: bool,
        ) {
            let mem = VecMemory { base, bytes };
            let _ = parse(&mem, if at_base { base } else { at });
        }

        #[test]
        fn random_tags_never_panic(
            tags in proptest::collection::vec(
                (prop::sample::select(vec![0u32, 1, 2, 6, 14, 15, 99]),
                 proptest::collection::vec(any::<u8>(), 0..80)),
                0..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        ) {
            let mut bytes = mbi(&tags);
            for (at, value) in flips {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            if let Ok(info) = parse(&load(&bytes), MBI) {
                prop_assert!(info.cmdline.len() <= CMDLINE_MAX);
                prop_assert!(info.memory_map.regions().windows(2).all(|w| w[0].end <= w[1].start));
            }
        }
    }
}
