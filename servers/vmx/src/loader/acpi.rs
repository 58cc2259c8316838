//! The ACPI tables a guest needs to find its vCPUs: a root pointer (RSDP, ACPI 1.0 form),
//! a root table (RSDT) naming one table, and the MADT — one enabled processor local APIC
//! per vCPU (APIC id = index, processor UID = index), the local APIC at 0xfee00000, the
//! PC-AT 8259 pair present, LINT1 as NMI on every processor. No I/O APIC: the guest keeps
//! the 8259 pair in virtual-wire mode (Linux: `noapic`). Kernels built without MP-table
//! support (Debian's cloud kernel, for one) enumerate CPUs only from the MADT.
//!
//! The RSDP goes at [`ADDRESS`], on a 16-byte boundary in the BIOS area 0xe0000–0xfffff
//! that Linux scans, inside the range both loaders keep free and report as reserved; the
//! RSDT and MADT follow it. Facts from the ACPI specification (5.2.5, 5.2.7, 5.2.12).

use super::checksum;
use crate::memory::{GuestMemory, OutOfBounds};
use alloc::vec::Vec;
use core::fmt;

use crate::devices::lapic::BASE as LOCAL_APIC_BASE;

/// Where the root pointer goes (the tables follow it).
pub const ADDRESS: u64 = 0xe_0000;
/// Most processors described (as in the MP table: APIC ids are bytes, 0xff broadcasts).
pub const MAX_CPUS: u8 = super::mptable::MAX_CPUS;
/// OEM id in every header.
const OEM_ID: [u8; 6] = *b"ESKER ";
/// OEM table id in every header.
const OEM_TABLE_ID: [u8; 8] = *b"ESKERVM ";
/// Bytes of a table header.
const HEADER: usize = 36;
/// Bytes of the ACPI 1.0 root pointer.
const RSDP_SIZE: u64 = 20;

/// Why the tables could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No processors, or more than [`MAX_CPUS`].
    BadCpuCount {
        /// The count asked for.
        cpus: u8,
    },
    /// The tables do not fit in guest RAM there.
    DoesNotFit(OutOfBounds),
}

impl From<OutOfBounds> for AcpiError {
    fn from(error: OutOfBounds) -> Self {
        Self::DoesNotFit(error)
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadCpuCount { cpus } => write!(
                f,
                "the MADT describes 1 to {MAX_CPUS} processors, not {cpus}"
            ),
            Self::DoesNotFit(error) => write!(f, "the ACPI tables do not fit: {error}"),
        }
    }
}

impl core::error::Error for AcpiError {}

/// A table: the standard header with `signature` and `revision`, then `body`; the length
/// and checksum filled in.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(signature);
    bytes.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
    bytes.push(revision);
    bytes.push(0); // checksum, below
    bytes.extend_from_slice(&OEM_ID);
    bytes.extend_from_slice(&OEM_TABLE_ID);
    bytes.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    bytes.extend_from_slice(b"ESKR"); // creator id
    bytes.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    bytes.extend_from_slice(body);
    bytes[9] = checksum(&bytes);
    bytes
}

/// The MADT for `cpus` processors.
fn madt(cpus: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(LOCAL_APIC_BASE as u32).to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: an 8259 pair is present
    for cpu in 0..cpus {
        // Processor local APIC: type 0, length 8, UID, APIC id, flags (enabled).
        body.extend_from_slice(&[0, 8, cpu, cpu]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // Local APIC NMI: type 4, length 6, every processor (UID 0xff), flags 0 (conforming),
    // LINT1.
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    table(b"APIC", 3, &body)
}

/// Writes the root pointer at `at` (16-byte aligned) and the RSDT and MADT after it, for
/// `cpus` processors. Returns the bytes used. Checks everything first: on an error guest
/// memory is untouched.
pub fn write<M: GuestMemory + ?Sized>(memory: &mut M, at: u64, cpus: u8) -> Result<u64, AcpiError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(AcpiError::BadCpuCount { cpus });
    }
    let rsdt_at = at + 32;
    let madt = madt(cpus);
    let rsdt_size = (HEADER + 4) as u64;
    let madt_at = rsdt_at + rsdt_size.next_multiple_of(16);
    let rsdt = table(b"RSDT", 1, &(madt_at as u32).to_le_bytes());
    let total = madt_at - at + madt.len() as u64;
    crate::memory::check(at, total, memory.size())?;
    let mut rsdp = [0u8; RSDP_SIZE as usize];
    rsdp[0..8].copy_from_slice(b"RSD PTR ");
    rsdp[9..15].copy_from_slice(&OEM_ID);
    rsdp[15] = 0; // revision 0: ACPI 1.0, an RSDT
    rsdp[16..20].copy_from_slice(&(rsdt_at as u32).to_le_bytes());
    rsdp[8] = checksum(&rsdp);
    memory.write(at, &rsdp)?;
    memory.write(rsdt_at, &rsdt)?;
    memory.write(madt_at, &madt)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sums_to_zero(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
    }

    fn u32_at(ram: &[u8], at: usize) -> usize {
        u32::from_le_bytes(ram[at..at + 4].try_into().unwrap()) as usize
    }

    #[test]
    fn the_tables_chain_from_the_root_pointer_and_list_every_cpu() {
        let mut ram = vec![0u8; 1 << 20];
        let used = write(&mut ram[..], ADDRESS, 3).unwrap();
        let at = ADDRESS as usize;
        // Found the way Linux scans: "RSD PTR " on a 16-byte boundary, checksummed.
        assert_eq!(&ram[at..at + 8], b"RSD PTR ");
        assert!(sums_to_zero(&ram[at..at + 20]));
        assert_eq!(ram[at + 15], 0, "ACPI 1.0 form");
        let rsdt = u32_at(&ram, at + 16);
        assert_eq!(&ram[rsdt..rsdt + 4], b"RSDT");
        let rsdt_len = u32_at(&ram, rsdt + 4);
        assert_eq!(rsdt_len, 40, "one entry");
        assert!(sums_to_zero(&ram[rsdt..rsdt + rsdt_len]));
        let madt = u32_at(&ram, rsdt + 36);
        assert_eq!(&ram[madt..madt + 4], b"APIC");
        let madt_len = u32_at(&ram, madt + 4);
        assert!(sums_to_zero(&ram[madt..madt + madt_len]));
        assert_eq!(madt + madt_len - at, used as usize);
        assert_eq!(u32_at(&ram, madt + 36), 0xfee0_0000);
        assert_eq!(u32_at(&ram, madt + 40), 1, "8259 pair present");
        // Entries: three enabled local APICs with ids 0, 1, 2, then LINT1 NMI.
        let mut entry = madt + 44;
        let mut ids = vec![];
        let mut nmi_entries = 0;
        while entry < madt + madt_len {
            let (kind, len) = (ram[entry], ram[entry + 1] as usize);
            assert!(len >= 2);
            if kind == 0 {
                assert_eq!(u32_at(&ram, entry + 4), 1, "enabled");
                assert_eq!(ram[entry + 2], ram[entry + 3], "processor UID = APIC id");
                ids.push(ram[entry + 3]);
            } else {
                assert_eq!(&ram[entry..entry + 6], &[4, 6, 0xff, 0, 0, 1]);
                nmi_entries += 1;
            }
            entry += len;
        }
        assert_eq!(entry, madt + madt_len);
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(nmi_entries, 1, "LINT1 is the NMI input of every processor");
    }

    #[test]
    fn bad_counts_and_small_memory_are_refused_untouched() {
        let mut ram = vec![0u8; 1 << 20];
        assert_eq!(
            write(&mut ram[..], ADDRESS, 0),
            Err(AcpiError::BadCpuCount { cpus: 0 })
        );
        assert_eq!(
            write(&mut ram[..], ADDRESS, 255),
            Err(AcpiError::BadCpuCount { cpus: 255 })
        );
        let mut small = vec![0u8; ADDRESS as usize + 40];
        assert!(matches!(
            write(&mut small[..], ADDRESS, 2),
            Err(AcpiError::DoesNotFit(_))
        ));
        assert!(small.iter().all(|b| *b == 0));
        assert!(write(&mut ram[..], ADDRESS, MAX_CPUS).unwrap() < 0x1_0000);
    }
}
