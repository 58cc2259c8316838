//! An Intel MultiProcessor Specification 1.4 table, so a guest finds its vCPUs without
//! ACPI.
//!
//! [`write()`] puts two structures into guest memory, back to back:
//!
//! | offset | what                                                                   |
//! |--------|------------------------------------------------------------------------|
//! | 0      | the floating pointer ("_MP_", 16 bytes, spec 1.4, no default configuration, virtual-wire mode) |
//! | 16     | the configuration table: header ("PCMP", OEM "ESKER   ", local APIC at 0xfee00000), one processor entry per vCPU, an ISA bus, LINT0 ExtINT and LINT1 NMI to every APIC |
//!
//! There is no I/O APIC entry: the guest keeps the 8259 pair in virtual-wire mode (Linux
//! with `noapic`). Processor `i` has APIC ID `i`; processor 0 is the bootstrap processor.
//!
//! Linux looks for the floating pointer on 16-byte boundaries in the first KiB of RAM, the
//! last KiB below 640 KiB (0x9fc00) and the BIOS area 0xf0000–0xfffff (and the EBDA the
//! BIOS data area points to), and reserves the structures it finds before it allocates
//! memory. [`ADDRESS`] lies in the BIOS area, inside the range both loaders keep
//! free and report as reserved in the memory map ([`super::EBDA_START`] to
//! [`super::HIGH_MEMORY`]); the table for the most processors fits there.

use super::checksum;
use crate::devices::lapic::{BASE as LOCAL_APIC_BASE, VERSION};
use crate::memory::{GuestMemory, OutOfBounds};
use alloc::vec::Vec;
use core::fmt;

/// Where the monitor puts the table: the start of the BIOS area Linux scans, reserved in
/// the guest's memory map and written by no loader.
pub const ADDRESS: u64 = 0xf_0000;
/// The floating pointer's signature.
pub const FLOATING_SIGNATURE: [u8; 4] = *b"_MP_";
/// The configuration table's signature.
pub const TABLE_SIGNATURE: [u8; 4] = *b"PCMP";
/// The specification revision both structures give: 1.4.
pub const SPEC_REVISION: u8 = 4;
/// The configuration table header's OEM ID.
pub const OEM_ID: [u8; 8] = *b"ESKER   ";
/// The configuration table header's product ID.
pub const PRODUCT_ID: [u8; 12] = *b"ESKER VM    ";
/// Bytes of the floating pointer structure.
pub const FLOATING_POINTER_SIZE: u64 = 16;
/// Bytes of the configuration table header.
pub const HEADER_SIZE: u64 = 44;
/// Bytes of a processor entry.
pub const PROCESSOR_ENTRY_SIZE: u64 = 20;
/// Bytes of a bus entry.
pub const BUS_ENTRY_SIZE: u64 = 8;
/// Bytes of a local interrupt assignment entry.
pub const LOCAL_INTERRUPT_ENTRY_SIZE: u64 = 8;
/// Entry type: processor.
pub const ENTRY_PROCESSOR: u8 = 0;
/// Entry type: bus.
pub const ENTRY_BUS: u8 = 1;
/// Entry type: local interrupt assignment.
pub const ENTRY_LOCAL_INTERRUPT: u8 = 4;
/// Processor entry flag: the processor is usable.
pub const CPU_ENABLED: u8 = 1 << 0;
/// Processor entry flag: the bootstrap processor.
pub const CPU_BOOTSTRAP: u8 = 1 << 1;
/// Interrupt type of a local interrupt assignment: NMI.
pub const INTERRUPT_NMI: u8 = 1;
/// Interrupt type of a local interrupt assignment: ExtINT (the 8259).
pub const INTERRUPT_EXTINT: u8 = 3;
/// Destination APIC ID meaning every local APIC.
pub const ALL_APICS: u8 = crate::devices::lapic::BROADCAST;
/// The ISA bus's ID.
pub const ISA_BUS_ID: u8 = 0;
/// The bus type string of the ISA bus.
pub const ISA_BUS_TYPE: [u8; 6] = *b"ISA   ";
/// The local APIC version each processor entry gives (that of the APIC model).
pub const APIC_VERSION: u8 = VERSION as u8;
/// The most processors: APIC IDs 0 to 254 (0xff addresses every APIC).
pub const MAX_CPUS: u8 = crate::devices::lapic::BROADCAST - 1;

// The largest table lies in the reserved hole below 1 MiB that no loader writes.
const _: () =
    assert!(ADDRESS >= super::EBDA_START && ADDRESS + size(MAX_CPUS) <= super::HIGH_MEMORY);

/// Why the table could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpTableError {
    /// No processors, or more than [`MAX_CPUS`].
    BadCpuCount {
        /// The count asked for.
        cpus: u8,
    },
    /// The address is not on a 16-byte boundary, where the guest looks.
    Misaligned {
        /// The address asked for.
        at: u64,
    },
    /// The table would not lie wholly below 4 GiB (its pointers are 32-bit).
    Above4GiB {
        /// The address asked for.
        at: u64,
    },
    /// The table does not fit in guest RAM there.
    DoesNotFit(OutOfBounds),
}

impl From<OutOfBounds> for MpTableError {
    fn from(error: OutOfBounds) -> Self {
        Self::DoesNotFit(error)
    }
}

impl fmt::Display for MpTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadCpuCount { cpus } => write!(
                f,
                "an MP table describes 1 to {MAX_CPUS} processors, not {cpus}"
            ),
            Self::Misaligned { at } => {
                write!(f, "the MP table at {at:#x} is not 16-byte aligned")
            }
            Self::Above4GiB { at } => write!(f, "the MP table at {at:#x} is not below 4 GiB"),
            Self::DoesNotFit(error) => write!(f, "the MP table does not fit: {error}"),
        }
    }
}

impl core::error::Error for MpTableError {}

/// Entries in the configuration table for `cpus` processors: one per processor, the ISA
/// bus, two local interrupt assignments.
pub const fn entry_count(cpus: u8) -> u16 {
    cpus as u16 + 3
}

/// Bytes of the configuration table (header and entries) for `cpus` processors.
pub const fn table_size(cpus: u8) -> u64 {
    HEADER_SIZE
        + cpus as u64 * PROCESSOR_ENTRY_SIZE
        + BUS_ENTRY_SIZE
        + 2 * LOCAL_INTERRUPT_ENTRY_SIZE
}

/// Bytes [`write()`] uses for `cpus` processors: the floating pointer and the table.
pub const fn size(cpus: u8) -> u64 {
    FLOATING_POINTER_SIZE + table_size(cpus)
}

/// Writes the floating pointer at `at` (16-byte aligned) and the configuration table right
/// after it, describing `cpus` processors whose entries carry `signature` (CPUID.01H:EAX:
/// stepping, model, family) and `features` (CPUID.01H:EDX). Returns the bytes used
/// ([`size`]). Checks everything before it writes: on an error, guest memory is untouched.
pub fn write<M: GuestMemory + ?Sized>(
    memory: &mut M,
    at: u64,
    cpus: u8,
    signature: u32,
    features: u32,
) -> Result<u64, MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::BadCpuCount { cpus });
    }
    if !at.is_multiple_of(16) {
        return Err(MpTableError::Misaligned { at });
    }
    let total = size(cpus);
    crate::memory::check(at, total, 1 << 32).map_err(|_| MpTableError::Above4GiB { at })?;
    crate::memory::check(at, total, memory.size())?;

    let table_address = at + FLOATING_POINTER_SIZE;
    let mut floating = [0u8; FLOATING_POINTER_SIZE as usize];
    floating[0..4].copy_from_slice(&FLOATING_SIGNATURE);
    floating[4..8].copy_from_slice(&(table_address as u32).to_le_bytes());
    floating[8] = 1; // length in 16-byte paragraphs
    floating[9] = SPEC_REVISION;
    // 11: feature byte 1 = 0, a configuration table follows (no default configuration).
    // 12: feature byte 2 bit 7 = 0, no IMCR: virtual-wire mode. 13–15: reserved, 0.
    floating[10] = checksum(&floating);

    let mut table = Vec::with_capacity(table_size(cpus) as usize);
    table.extend_from_slice(&TABLE_SIGNATURE);
    table.extend_from_slice(&(table_size(cpus) as u16).to_le_bytes());
    table.push(SPEC_REVISION);
    table.push(0); // checksum, filled in below
    table.extend_from_slice(&OEM_ID);
    table.extend_from_slice(&PRODUCT_ID);
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer: none
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count(cpus).to_le_bytes());
    table.extend_from_slice(&(LOCAL_APIC_BASE as u32).to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length: none
    table.push(0); // extended table checksum
    table.push(0); // reserved
    for cpu in 0..cpus {
        let flags = if cpu == 0 {
            CPU_ENABLED | CPU_BOOTSTRAP
        } else {
            CPU_ENABLED
        };
        table.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        table.extend_from_slice(&signature.to_le_bytes());
        table.extend_from_slice(&features.to_le_bytes());
        table.extend_from_slice(&[0; 8]); // reserved
    }
    table.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    table.extend_from_slice(&ISA_BUS_TYPE);
    for (kind, lint) in [(INTERRUPT_EXTINT, 0), (INTERRUPT_NMI, 1)] {
        // Flags 0: polarity and trigger mode conform to the bus.
        table.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0]);
        table.extend_from_slice(&[ISA_BUS_ID, 0, ALL_APICS, lint]);
    }
    table[7] = checksum(&table);

    memory.write(at, &floating)?;
    memory.write(table_address, &table)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    const SIGNATURE: u32 = 0x0080_0f82;
    const FEATURES: u32 = 0x178b_fbff;
    const RAM: usize = 0x10_0000;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte))
    }

    fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
    }

    fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    /// Finds the floating pointer the way Linux does: 16-byte steps through the last KiB
    /// below 640 KiB and the BIOS area, signature, length 1, checksum, revision 1 or 4.
    fn scan(ram: &[u8]) -> Option<usize> {
        let ranges = [
            (0usize, 0x400usize),
            (639 * 0x400, 0x400),
            (0xf_0000, 0x1_0000),
        ];
        ranges.into_iter().find_map(|(base, length)| {
            (base..base + length).step_by(16).find(|&at| {
                let candidate = &ram[at..at + 16];
                candidate[0..4] == FLOATING_SIGNATURE
                    && candidate[8] == 1
                    && sum(candidate) == 0
                    && matches!(candidate[9], 1 | 4)
            })
        })
    }

    #[test]
    fn linux_finds_and_parses_the_table() {
        for cpus in [1u8, 2, 4, 47, 64, MAX_CPUS] {
            let mut ram = vec![0u8; RAM];
            let used = write(&mut ram[..], ADDRESS, cpus, SIGNATURE, FEATURES).unwrap();
            assert_eq!(used, 16 + 44 + 20 * u64::from(cpus) + 8 + 16);
            assert_eq!(used, size(cpus));
            let at = scan(&ram).expect("found");
            assert_eq!(at as u64, ADDRESS);

            // The floating pointer.
            let floating = &ram[at..at + 16];
            assert_eq!(sum(floating), 0);
            assert_eq!(&floating[0..4], b"_MP_");
            let physptr = u32_at(floating, 4) as usize;
            assert_eq!(physptr, at + 16);
            assert_eq!(floating[8], 1);
            assert_eq!(floating[9], 4);
            assert_eq!(floating[11], 0, "a table, not a default configuration");
            assert_eq!(floating[12] & 0x80, 0, "virtual-wire mode");
            assert_eq!(&floating[12..16], &[0; 4]);

            // The header.
            let length = usize::from(u16_at(&ram, physptr + 4));
            assert_eq!(length as u64, table_size(cpus));
            let table = &ram[physptr..physptr + length];
            assert_eq!(sum(table), 0, "{cpus} CPUs");
            assert_eq!(&table[0..4], b"PCMP");
            assert_eq!(table[6], 4);
            assert_eq!(&table[8..16], b"ESKER   ");
            assert_eq!(&table[16..28], b"ESKER VM    ");
            assert_eq!(u32_at(table, 28), 0, "no OEM table");
            assert_eq!(u16_at(table, 32), 0);
            assert_eq!(u16_at(table, 34), u16::from(cpus) + 3);
            assert_eq!(u32_at(table, 36), 0xfee0_0000);
            assert_eq!(u16_at(table, 40), 0, "no extended table");
            assert_eq!(table[42], 0);
            assert_eq!(table[43], 0);
            // Nothing after the table.
            assert!(
                ram[physptr + length..physptr + length + 64]
                    .iter()
                    .all(|&b| b == 0)
            );

            // The entries, walked as Linux's smp_read_mpc does.
            let mut offset = 44;
            let mut processors = 0u8;
            let mut buses = 0;
            let mut lints = Vec::new();
            let mut entries = 0;
            while offset < length {
                entries += 1;
                match table[offset] {
                    ENTRY_PROCESSOR => {
                        assert_eq!(buses + lints.len(), 0, "processors come first");
                        let entry = &table[offset..offset + 20];
                        assert_eq!(entry[1], processors, "APIC ID");
                        assert_eq!(entry[2], 0x14, "APIC version");
                        let bsp = if processors == 0 { CPU_BOOTSTRAP } else { 0 };
                        assert_eq!(entry[3], CPU_ENABLED | bsp);
                        assert_eq!(u32_at(entry, 4), SIGNATURE);
                        assert_eq!(u32_at(entry, 8), FEATURES);
                        assert_eq!(&entry[12..20], &[0; 8]);
                        processors += 1;
                        offset += 20;
                    }
                    ENTRY_BUS => {
                        assert!(lints.is_empty(), "buses before interrupts");
                        assert_eq!(&table[offset + 1..offset + 8], b"\0ISA   ");
                        buses += 1;
                        offset += 8;
                    }
                    ENTRY_LOCAL_INTERRUPT => {
                        let entry = &table[offset..offset + 8];
                        assert_eq!(u16_at(entry, 2), 0, "conforms to the bus");
                        assert_eq!(entry[4], 0, "source bus");
                        assert_eq!(entry[5], 0, "source IRQ");
                        assert_eq!(entry[6], 0xff, "every local APIC");
                        lints.push((entry[1], entry[7]));
                        offset += 8;
                    }
                    other => panic!("unexpected entry type {other}"),
                }
            }
            assert_eq!(offset, length);
            assert_eq!(processors, cpus);
            assert_eq!(buses, 1);
            assert_eq!(lints, [(INTERRUPT_EXTINT, 0), (INTERRUPT_NMI, 1)]);
            assert_eq!(entries, usize::from(entry_count(cpus)));
        }
    }

    #[test]
    fn the_table_fits_where_linux_looks() {
        // In the last KiB of base memory: up to 47 processors.
        const _: () = assert!(0x9_fc00 + size(47) <= 0xa_0000);
        const _: () = assert!(0x9_fc00 + size(48) > 0xa_0000);
        let mut ram = vec![0u8; RAM];
        write(&mut ram[..], 0x9_fc00, 8, SIGNATURE, FEATURES).unwrap();
        assert_eq!(scan(&ram), Some(0x9_fc00));
    }

    #[test]
    fn bad_requests_are_refused_without_writing() {
        let mut ram = vec![0u8; RAM];
        let memory = &mut ram[..];
        assert_eq!(
            write(memory, ADDRESS, 0, SIGNATURE, FEATURES),
            Err(MpTableError::BadCpuCount { cpus: 0 })
        );
        assert_eq!(
            write(memory, ADDRESS, 255, SIGNATURE, FEATURES),
            Err(MpTableError::BadCpuCount { cpus: 255 })
        );
        assert_eq!(
            write(memory, ADDRESS + 8, 2, SIGNATURE, FEATURES),
            Err(MpTableError::Misaligned { at: ADDRESS + 8 })
        );
        assert!(matches!(
            write(memory, RAM as u64 - 64, 2, SIGNATURE, FEATURES),
            Err(MpTableError::DoesNotFit(_))
        ));
        assert_eq!(
            write(memory, (1 << 32) - 64, 2, SIGNATURE, FEATURES),
            Err(MpTableError::Above4GiB { at: (1 << 32) - 64 })
        );
        assert_eq!(
            write(memory, u64::MAX - 15, 2, SIGNATURE, FEATURES),
            Err(MpTableError::Above4GiB { at: u64::MAX - 15 })
        );
        assert!(ram.iter().all(|&byte| byte == 0), "nothing written");
        // Too small a memory.
        let mut tiny = [0u8; 64];
        assert!(matches!(
            write(&mut tiny[..], 0, 1, SIGNATURE, FEATURES),
            Err(MpTableError::DoesNotFit(_))
        ));
        assert!(matches!(
            write(&mut [][..], 0, 1, SIGNATURE, FEATURES),
            Err(MpTableError::DoesNotFit(_))
        ));
        // Exactly enough.
        let mut exact = vec![0u8; size(3) as usize];
        assert_eq!(write(&mut exact[..], 0, 3, 0, 0), Ok(size(3)));
        for error in [
            MpTableError::BadCpuCount { cpus: 0 },
            MpTableError::Misaligned { at: 1 },
            MpTableError::Above4GiB { at: 1 },
        ] {
            assert!(!std::format!("{error}").is_empty());
        }
    }
}
