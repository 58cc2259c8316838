//! ACPI: just enough of the firmware's tables to know the machine's processors and
//! interrupt controllers — RSDP → RSDT/XSDT → MADT.
//!
//! Tables are firmware input: every length, offset and checksum is checked, nothing is
//! indexed without a bound, and a bad table gives an error naming it (or, for one bad MADT
//! entry, ends the walk with what was read so far and says so). Reading goes through the
//! same [`PhysRead`] the boot parsers use.

use heapless::Vec;

use crate::boot::{OutOfRange, PhysRead};

/// Most processors recorded.
pub const MAX_CPUS: usize = 64;
/// Most IOAPICs recorded.
pub const MAX_IOAPICS: usize = 8;
/// Most interrupt source overrides recorded.
pub const MAX_OVERRIDES: usize = 16;
/// Most tables looked at in the RSDT/XSDT.
const MAX_TABLES: usize = 64;
/// Largest MADT read.
const MAX_MADT: usize = 16 * 1024;

/// A processor the MADT lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Its local APIC (or x2APIC) id.
    pub apic_id: u32,
    /// ACPI processor UID.
    pub uid: u32,
    /// Enabled now (else only online-capable).
    pub enabled: bool,
}

/// An I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// Its id.
    pub id: u8,
    /// MMIO base.
    pub address: u32,
    /// First global system interrupt it handles.
    pub gsi_base: u32,
}

/// An ISA interrupt that arrives on another global system interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    /// ISA IRQ.
    pub source: u8,
    /// Global system interrupt.
    pub gsi: u32,
    /// MPS INTI flags (polarity, trigger mode).
    pub flags: u16,
}

/// What the MADT says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    /// Local APIC MMIO address (after any 64-bit override).
    pub local_apic_address: u64,
    /// The machine also has legacy 8259 PICs.
    pub has_8259: bool,
    /// Processors, in table order.
    pub cpus: Vec<Cpu, MAX_CPUS>,
    /// I/O APICs.
    pub ioapics: Vec<IoApic, MAX_IOAPICS>,
    /// Interrupt source overrides.
    pub overrides: Vec<Override, MAX_OVERRIDES>,
    /// Entries left out because a list was full.
    pub dropped: usize,
    /// Set if the entry list ended early on a malformed entry.
    pub truncated: bool,
}

/// Why the tables could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The loader gave no RSDP.
    NoRsdp,
    /// Reading physical memory failed.
    Unreadable(OutOfRange),
    /// A table's signature is not what was expected.
    BadSignature {
        /// The table looked for.
        expected: [u8; 4],
        /// Where.
        paddr: u64,
    },
    /// A table's checksum does not add up to zero.
    BadChecksum {
        /// The table.
        table: [u8; 4],
        /// Where.
        paddr: u64,
    },
    /// A table's length is impossible.
    BadLength {
        /// The table.
        table: [u8; 4],
        /// The length it claims.
        length: u32,
    },
    /// The RSDT/XSDT lists no MADT.
    NoMadt,
}

impl From<OutOfRange> for AcpiError {
    fn from(e: OutOfRange) -> Self {
        Self::Unreadable(e)
    }
}

fn name(signature: &[u8; 4]) -> &str {
    core::str::from_utf8(signature).unwrap_or("????")
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRsdp => f.write_str("the boot loader passed no ACPI RSDP"),
            Self::Unreadable(e) => write!(f, "cannot read {} bytes at {:#x}", e.len, e.paddr),
            Self::BadSignature { expected, paddr } => {
                write!(
                    f,
                    "no {} table at {paddr:#x} (wrong signature)",
                    name(expected)
                )
            }
            Self::BadChecksum { table, paddr } => {
                write!(f, "{} table at {paddr:#x} has a bad checksum", name(table))
            }
            Self::BadLength { table, length } => write!(
                f,
                "{} table claims an impossible length {length}",
                name(table)
            ),
            Self::NoMadt => f.write_str("the RSDT/XSDT lists no MADT (APIC table)"),
        }
    }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the 36-byte header of the table at `paddr` and checks its signature; returns its
/// length.
fn table_length(mem: &impl PhysRead, paddr: u64, signature: &[u8; 4]) -> Result<u32, AcpiError> {
    let mut header = [0u8; 36];
    mem.read(paddr, &mut header)?;
    if &header[..4] != signature {
        return Err(AcpiError::BadSignature {
            expected: *signature,
            paddr,
        });
    }
    let length = u32_at(&header, 4).unwrap_or(0);
    if length < 36 {
        return Err(AcpiError::BadLength {
            table: *signature,
            length,
        });
    }
    Ok(length)
}

/// Finds and parses the MADT through the RSDP at `rsdp`.
pub fn read_madt(mem: &impl PhysRead, rsdp: Option<u64>) -> Result<Madt, AcpiError> {
    let rsdp = rsdp.ok_or(AcpiError::NoRsdp)?;
    let mut head = [0u8; 36];
    mem.read(rsdp, &mut head[..20])?;
    if &head[..8] != b"RSD PTR " {
        return Err(AcpiError::BadSignature {
            expected: *b"RSD ",
            paddr: rsdp,
        });
    }
    if !checksum_ok(&head[..20]) {
        return Err(AcpiError::BadChecksum {
            table: *b"RSD ",
            paddr: rsdp,
        });
    }
    let revision = head[15];
    // ACPI 2.0+: the XSDT (64-bit entries), checksummed over the extended 36 bytes.
    let (root, entry_size, signature) = if revision >= 2 {
        mem.read(rsdp, &mut head)?;
        if !checksum_ok(&head) {
            return Err(AcpiError::BadChecksum {
                table: *b"RSD ",
                paddr: rsdp,
            });
        }
        (u64_at(&head, 24).unwrap_or(0), 8usize, *b"XSDT")
    } else {
        (u64::from(u32_at(&head, 16).unwrap_or(0)), 4usize, *b"RSDT")
    };
    let length = table_length(mem, root, &signature)?;
    let entries = ((length as usize) - 36) / entry_size;
    for i in 0..entries.min(MAX_TABLES) {
        let mut raw = [0u8; 8];
        mem.read(root + 36 + (i * entry_size) as u64, &mut raw[..entry_size])?;
        let table = u64::from_le_bytes(raw);
        let mut sig = [0u8; 4];
        if table == 0 || mem.read(table, &mut sig).is_err() || &sig != b"APIC" {
            continue;
        }
        return parse_madt(mem, table);
    }
    Err(AcpiError::NoMadt)
}

fn parse_madt(mem: &impl PhysRead, paddr: u64) -> Result<Madt, AcpiError> {
    let length = table_length(mem, paddr, b"APIC")?;
    if length as usize > MAX_MADT || length < 44 {
        return Err(AcpiError::BadLength {
            table: *b"APIC",
            length,
        });
    }
    let mut bytes = [0u8; MAX_MADT];
    let table = &mut bytes[..length as usize];
    mem.read(paddr, table)?;
    if !checksum_ok(table) {
        return Err(AcpiError::BadChecksum {
            table: *b"APIC",
            paddr,
        });
    }
    let mut madt = Madt {
        local_apic_address: u64::from(u32_at(table, 36).unwrap_or(0)),
        has_8259: u32_at(table, 40).unwrap_or(0) & 1 != 0,
        ..Madt::default()
    };
    let mut at = 44usize;
    while at < table.len() {
        let (Some(&kind), Some(&entry_len)) = (table.get(at), table.get(at + 1)) else {
            break;
        };
        let entry_len = usize::from(entry_len);
        let Some(entry) = table.get(at..at + entry_len).filter(|_| entry_len >= 2) else {
            madt.truncated = true;
            break;
        };
        let pushed = match (kind, entry_len) {
            (0, 8) => {
                let flags = u32_at(entry, 4).unwrap_or(0);
                (flags & 0b11 != 0).then(|| {
                    madt.cpus
                        .push(Cpu {
                            apic_id: u32::from(entry[3]),
                            uid: u32::from(entry[2]),
                            enabled: flags & 1 != 0,
                        })
                        .is_ok()
                })
            }
            (1, 12) => Some(
                madt.ioapics
                    .push(IoApic {
                        id: entry[2],
                        address: u32_at(entry, 4).unwrap_or(0),
                        gsi_base: u32_at(entry, 8).unwrap_or(0),
                    })
                    .is_ok(),
            ),
            (2, 10) => Some(
                madt.overrides
                    .push(Override {
                        source: entry[3],
                        gsi: u32_at(entry, 4).unwrap_or(0),
                        flags: u16::from_le_bytes([entry[8], entry[9]]),
                    })
                    .is_ok(),
            ),
            (5, 12) => {
                madt.local_apic_address = u64_at(entry, 4).unwrap_or(madt.local_apic_address);
                None
            }
            (9, 16) => {
                let flags = u32_at(entry, 8).unwrap_or(0);
                (flags & 0b11 != 0).then(|| {
                    madt.cpus
                        .push(Cpu {
                            apic_id: u32_at(entry, 4).unwrap_or(0),
                            uid: u32_at(entry, 12).unwrap_or(0),
                            enabled: flags & 1 != 0,
                        })
                        .is_ok()
                })
            }
            _ => None,
        };
        if pushed == Some(false) {
            madt.dropped += 1;
        }
        at += entry_len;
    }
    Ok(madt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec as StdVec;

    struct Memory(StdVec<u8>);

    impl PhysRead for Memory {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
            let out = OutOfRange {
                paddr,
                len: buf.len(),
            };
            let start = usize::try_from(paddr).map_err(|_| out)?;
            let end = start.checked_add(buf.len()).ok_or(out)?;
            buf.copy_from_slice(self.0.get(start..end).ok_or(out)?);
            Ok(())
        }
    }

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    fn table(signature: &[u8; 4], body: &[u8]) -> StdVec<u8> {
        let mut t = StdVec::new();
        t.extend_from_slice(signature);
        t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
        t.resize(36, 0);
        t.extend_from_slice(body);
        fix_checksum(&mut t, 9);
        t
    }

    /// A QEMU-like layout: RSDP v2 at 0x100, XSDT at 0x200, a FACP decoy, MADT at 0x400.
    fn machine(cpus: u8) -> Memory {
        let mut madt_body = StdVec::new();
        madt_body.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
        madt_body.extend_from_slice(&1u32.to_le_bytes());
        for i in 0..cpus {
            madt_body.extend_from_slice(&[0, 8, i, i, 1, 0, 0, 0]);
        }
        madt_body.extend_from_slice(&[1, 12, 0, 0]);
        madt_body.extend_from_slice(&0xfec0_0000u32.to_le_bytes());
        madt_body.extend_from_slice(&0u32.to_le_bytes());
        madt_body.extend_from_slice(&[2, 10, 0, 0]);
        madt_body.extend_from_slice(&2u32.to_le_bytes());
        madt_body.extend_from_slice(&0u16.to_le_bytes());
        madt_body.extend_from_slice(&[0, 8, 99, 99, 0, 0, 0, 0]); // disabled, not capable: left out
        let madt = table(b"APIC", &madt_body);
        let facp = table(b"FACP", &[0; 8]);
        let mut xsdt_body = StdVec::new();
        xsdt_body.extend_from_slice(&0x300u64.to_le_bytes());
        xsdt_body.extend_from_slice(&0x400u64.to_le_bytes());
        let xsdt = table(b"XSDT", &xsdt_body);
        let mut mem = vec![0u8; 0x400 + madt.len()];
        let mut rsdp = StdVec::new();
        rsdp.extend_from_slice(b"RSD PTR ");
        rsdp.push(0);
        rsdp.extend_from_slice(b"BOCHS ");
        rsdp.push(2);
        rsdp.extend_from_slice(&0u32.to_le_bytes());
        rsdp.extend_from_slice(&36u32.to_le_bytes());
        rsdp.extend_from_slice(&0x200u64.to_le_bytes());
        rsdp.extend_from_slice(&[0, 0, 0, 0]);
        fix_checksum(&mut rsdp[..20], 8);
        fix_checksum(&mut rsdp, 32);
        mem[0x100..0x100 + 36].copy_from_slice(&rsdp);
        mem[0x200..0x200 + xsdt.len()].copy_from_slice(&xsdt);
        mem[0x300..0x300 + facp.len()].copy_from_slice(&facp);
        mem[0x400..].copy_from_slice(&madt);
        Memory(mem)
    }

    #[test]
    fn finds_the_processors_ioapic_and_overrides() {
        let madt = read_madt(&machine(4), Some(0x100)).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert!(madt.has_8259);
        assert_eq!(
            madt.cpus.iter().map(|c| c.apic_id).collect::<StdVec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            madt.ioapics.as_slice(),
            &[IoApic {
                id: 0,
                address: 0xfec0_0000,
                gsi_base: 0
            }]
        );
        assert_eq!(
            madt.overrides.as_slice(),
            &[Override {
                source: 0,
                gsi: 2,
                flags: 0
            }]
        );
        assert!(!madt.truncated);
    }

    #[test]
    fn bad_checksums_and_signatures_are_named() {
        let mut mem = machine(2);
        mem.0[0x100 + 8] ^= 1;
        assert!(matches!(
            read_madt(&mem, Some(0x100)),
            Err(AcpiError::BadChecksum { .. })
        ));
        let mut mem = machine(2);
        mem.0[0x400 + 40] ^= 1;
        let err = read_madt(&mem, Some(0x100)).unwrap_err();
        assert_eq!(
            std::format!("{err}"),
            "APIC table at 0x400 has a bad checksum"
        );
        assert_eq!(
            read_madt(&machine(2), Some(0x104)).unwrap_err(),
            AcpiError::BadSignature {
                expected: *b"RSD ",
                paddr: 0x104
            }
        );
        assert_eq!(read_madt(&machine(2), None), Err(AcpiError::NoRsdp));
    }

    #[test]
    fn more_cpus_than_recorded_are_counted_as_dropped() {
        let madt = read_madt(&machine(70), Some(0x100)).unwrap();
        assert_eq!(madt.cpus.len(), MAX_CPUS);
        assert_eq!(madt.dropped, 6);
    }

    proptest! {
        #[test]
        fn corrupted_tables_never_panic(flips in proptest::collection::vec((0usize..0x500, any::<u8>()), 1..20)) {
            let mut mem = machine(4);
            let len = mem.0.len();
            for (at, byte) in flips {
                mem.0[at % len] ^= byte;
            }
            let _ = read_madt(&mem, Some(0x100));
        }

        /// Corrupted MADT entries behind a valid checksum: the walk ends early or skips
        /// them, never reads out of bounds.
        #[test]
        fn corrupted_madt_entries_never_panic(flips in proptest::collection::vec((44usize..200, any::<u8>()), 1..20)) {
            let mut mem = machine(4);
            let madt_len = mem.0.len() - 0x400;
            for (at, byte) in flips {
                mem.0[0x400 + at % madt_len] ^= byte;
            }
            fix_checksum(&mut mem.0[0x400..], 9);
            if let Ok(madt) = read_madt(&mem, Some(0x100)) {
                prop_assert!(madt.cpus.len() <= MAX_CPUS);
            }
        }
    }
}
