//! Host tests: page tables built in a byte-vector guest RAM for every paging mode,
//! fetches across page boundaries, MMIO decoding and completion, and properties over
//! hostile guest state.

use super::*;
use crate::memory::GuestMemory;
use esker_kernel_core::virt::vcpu::{DescriptorTable, GuestRegisters, Segment, SegmentAttributes};
use esker_kernel_core::virt::x86::{cr0, cr4, efer, rflags};
use iced_x86::Mnemonic;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// Guest RAM with a bump allocator for page tables.
struct Ram {
    bytes: Vec<u8>,
    next_table: u64,
}

impl Ram {
    fn new(size: usize, first_table: u64) -> Self {
        Self {
            bytes: vec![0; size],
            next_table: first_table,
        }
    }

    fn table(&mut self) -> u64 {
        let table = self.next_table;
        self.next_table += 0x1000;
        table
    }

    fn memory(&self) -> &[u8] {
        &self.bytes
    }

    fn put(&mut self, gpa: u64, bytes: &[u8]) {
        GuestMemory::write(self.bytes.as_mut_slice(), gpa, bytes).unwrap();
    }

    fn put_u64(&mut self, gpa: u64, value: u64) {
        self.put(gpa, &value.to_le_bytes());
    }

    fn put_u32(&mut self, gpa: u64, value: u32) {
        self.put(gpa, &value.to_le_bytes());
    }

    fn get_u64(&self, gpa: u64) -> u64 {
        self.memory().read_u64(gpa).unwrap()
    }

    fn get_u32(&self, gpa: u64) -> u32 {
        self.memory().read_u32(gpa).unwrap()
    }

    /// The entry for `index` in the 64-bit table at `table`, creating the next table if
    /// it is not there yet; returns that next table.
    fn descend(&mut self, table: u64, index: u64, flags: u64) -> u64 {
        let at = table + index * 8;
        let entry = self.get_u64(at);
        if entry & P != 0 {
            return entry & ADDRESS;
        }
        let next = self.table();
        self.put_u64(at, next | flags);
        next
    }

    /// Maps `linear` to `gpa` with 4-level tables at `cr3`; `level` 1 is a 4 KiB page,
    /// 2 a 2 MiB page, 3 a 1 GiB page. Directories get P|RW|US.
    fn map_long(&mut self, cr3: u64, linear: u64, gpa: u64, level: u8, flags: u64) {
        let mut table = cr3;
        for (this, shift) in [(4u8, 39), (3, 30), (2, 21), (1, 12)] {
            let index = (linear >> shift) & 0x1ff;
            if this == level {
                let ps = if level > 1 { PS } else { 0 };
                self.put_u64(table + index * 8, gpa | flags | ps);
                return;
            }
            table = self.descend(table, index, P | RW | US);
        }
    }

    /// Maps `linear` to `gpa` with PAE tables whose PDPT is at the 32-byte aligned `cr3`;
    /// `level` 1 is a 4 KiB page, 2 a 2 MiB page.
    fn map_pae(&mut self, cr3: u64, linear: u64, gpa: u64, level: u8, flags: u64) {
        let pd = self.descend(cr3 & !0x1f, (linear >> 30) & 3, P);
        let index = (linear >> 21) & 0x1ff;
        if level == 2 {
            self.put_u64(pd + index * 8, gpa | flags | PS);
            return;
        }
        let pt = self.descend(pd, index, P | RW | US);
        self.put_u64(pt + ((linear >> 12) & 0x1ff) * 8, gpa | flags);
    }

    /// Maps `linear` to `gpa` with 32-bit tables at `cr3`: a 4 KiB page, or with `large`
    /// a 4 MiB page (PSE-36 bits from `gpa` bits 32–39).
    fn map_legacy(&mut self, cr3: u64, linear: u64, gpa: u64, large: bool, flags: u64) {
        let pde_at = cr3 + ((linear >> 22) & 0x3ff) * 4;
        if large {
            let high = ((gpa >> 32) & 0xff) << 13;
            self.put_u32(pde_at, ((gpa & 0xffc0_0000) | high | flags | PS) as u32);
            return;
        }
        let pde = u64::from(self.get_u32(pde_at));
        let pt = if pde & P != 0 {
            pde & 0xffff_f000
        } else {
            let pt = self.table();
            self.put_u32(pde_at, (pt | P | RW | US) as u32);
            pt
        };
        self.put_u32(pt + ((linear >> 12) & 0x3ff) * 4, (gpa | flags) as u32);
    }
}

/// 64-bit registers with paging at `cr3`, RIP at `rip`.
fn long_mode(cr3: u64, rip: u64) -> GuestRegisters {
    let mut registers = GuestRegisters::long_mode(rip, cr3, DescriptorTable::default());
    registers.efer |= efer::NXE;
    registers
}

/// 32-bit flat protected mode with paging (`pae` selects PAE) at `cr3`.
fn protected_paging(cr3: u64, rip: u32, pae: bool) -> GuestRegisters {
    let mut registers = GuestRegisters::protected_mode_flat(rip);
    registers.cr0 |= cr0::PG | cr0::WP;
    registers.cr3 = cr3;
    registers.cr4 = if pae { cr4::PAE } else { cr4::PSE };
    registers
}

/// Real mode: paging off, 16-bit CS with `base`, limit 64 KiB.
fn real_mode(cs_base: u64, ip: u64) -> GuestRegisters {
    GuestRegisters {
        cs: Segment {
            selector: (cs_base >> 4) as u16,
            attributes: SegmentAttributes(0x9b),
            limit: 0xffff,
            base: cs_base,
        },
        rip: ip,
        ..GuestRegisters::default()
    }
}

// ---------------------------------------------------------------------------------------
// Page walks.

#[test]
fn four_level_walk_reads_hand_written_tables() {
    // 0xffff_ffff_8123_4567: PML4 index 0x1ff, PDPT 0x1fe, PD 9, PT 0x34, offset 0x567.
    let mut ram = Ram::new(0x10000, 0x8000);
    ram.put_u64(0x1000 + 0x1ff * 8, 0x2000 | P | RW);
    ram.put_u64(0x2000 + 0x1fe * 8, 0x3000 | P | RW);
    ram.put_u64(0x3000 + 9 * 8, 0x4000 | P | RW);
    ram.put_u64(0x4000 + 0x34 * 8, 0x7000 | P);
    let registers = long_mode(0x1000, 0);
    let linear = 0xffff_ffff_8123_4567;
    assert_eq!(translate(ram.memory(), &registers, linear), Ok(0x7567));
    let translation = walk::walk(ram.memory(), &registers, linear).unwrap();
    assert_eq!(translation.page_size, 0x1000);
    assert!(!translation.writable);
    assert!(!translation.user);
    assert!(translation.executable);
    assert_eq!(translation.mode, PagingMode::FourLevel);
    // CR3's low bits (PCID, PWT/PCD) do not move the root.
    let mut with_pcid = registers;
    with_pcid.cr3 |= 0xfff;
    assert_eq!(translate(ram.memory(), &with_pcid, linear), Ok(0x7567));

    // The next page has no PTE.
    assert_eq!(
        translate(ram.memory(), &registers, linear + 0x1000),
        Err(WalkError::NotPresent {
            linear: linear + 0x1000,
            level: 1,
            entry_gpa: 0x4000 + 0x35 * 8,
        })
    );
    // The other half has no PML4 entry.
    assert_eq!(
        translate(ram.memory(), &registers, 0x1234),
        Err(WalkError::NotPresent {
            linear: 0x1234,
            level: 4,
            entry_gpa: 0x1000,
        })
    );
}

#[test]
fn four_level_large_pages() {
    let mut ram = Ram::new(0x40000, 0x1000);
    let cr3 = ram.table();
    ram.map_long(cr3, 0xffff_8000_0000_0000, 0x4000_0000, 3, P | RW);
    ram.map_long(cr3, 0xffff_ffff_8000_0000, 0x20_0000, 2, P | RW | NX);
    ram.map_long(cr3, 0x40_0000, 0x1_2345_6000, 1, P | RW | US);
    let registers = long_mode(cr3, 0);
    let memory = ram.memory();

    let huge = walk::walk(memory, &registers, 0xffff_8000_1234_5678).unwrap();
    assert_eq!(huge.gpa, 0x5234_5678);
    assert_eq!(huge.page_size, 1 << 30);
    let large = walk::walk(memory, &registers, 0xffff_ffff_801f_fffe).unwrap();
    assert_eq!(large.gpa, 0x3f_fffe);
    assert_eq!(large.page_size, 2 << 20);
    assert!(!large.executable);
    assert_eq!(translate(memory, &registers, 0x40_0abc), Ok(0x1_2345_6abc));
    // A translation may lead outside RAM (MMIO): translation does not read the page.
    assert_eq!(
        walk::walk(memory, &registers, 0x40_0000).unwrap().page_size,
        0x1000
    );
}

#[test]
fn four_level_reserved_bits_and_bad_addresses_are_reported() {
    let mut ram = Ram::new(0x20000, 0x1000);
    let cr3 = ram.table();
    ram.map_long(cr3, 0x20_0000, 0x20_0000, 2, P | RW);
    ram.map_long(cr3, 0x60_0000, 0x60_0000, 2, P | RW | NX);
    let mut registers = long_mode(cr3, 0);
    let pd_entry = |ram: &Ram, linear: u64| {
        let pml4e = ram.get_u64(cr3 + ((linear >> 39) & 0x1ff) * 8);
        let pdpte = ram.get_u64((pml4e & ADDRESS) + ((linear >> 30) & 0x1ff) * 8);
        (pdpte & ADDRESS) + ((linear >> 21) & 0x1ff) * 8
    };

    // NX is reserved without EFER.NXE.
    registers.efer &= !efer::NXE;
    assert!(matches!(
        translate(ram.memory(), &registers, 0x60_0000),
        Err(WalkError::Reserved { level: 2, .. })
    ));
    registers.efer |= efer::NXE;
    assert_eq!(
        translate(ram.memory(), &registers, 0x60_0000),
        Ok(0x60_0000)
    );

    // A 2 MiB frame must be 2 MiB aligned (bit 12 is PAT and allowed).
    let at = pd_entry(&ram, 0x20_0000);
    ram.put_u64(at, 0x20_1000 | P | RW | PS);
    assert_eq!(
        translate(ram.memory(), &registers, 0x20_0000),
        Ok(0x20_0000)
    );
    ram.put_u64(at, 0x20_2000 | P | RW | PS);
    let entry = 0x20_2000 | P | RW | PS;
    assert_eq!(
        translate(ram.memory(), &registers, 0x20_0000),
        Err(WalkError::Reserved {
            linear: 0x20_0000,
            level: 2,
            entry_gpa: at,
            entry,
        })
    );

    // PS in a PML4 entry is reserved (there are no 512 GiB pages), even when the
    // address would be aligned for one.
    let pml4e = ram.get_u64(cr3);
    for entry in [pml4e | PS, 0x1000 | P | RW | PS] {
        ram.put_u64(cr3, entry);
        assert_eq!(
            translate(ram.memory(), &registers, 0x60_0000),
            Err(WalkError::Reserved {
                linear: 0x60_0000,
                level: 4,
                entry_gpa: cr3,
                entry,
            })
        );
    }
    ram.put_u64(cr3, pml4e);

    // A directory pointing outside RAM.
    let pdpte_at = ram.get_u64(cr3) & ADDRESS;
    ram.put_u64(pdpte_at, 0x8000_0000 | P | RW);
    assert_eq!(
        translate(ram.memory(), &registers, 0x60_0000),
        Err(WalkError::TableOutsideRam {
            linear: 0x60_0000,
            level: 2,
            entry_gpa: 0x8000_0000 + 3 * 8,
        })
    );
    // A root outside RAM.
    registers.cr3 = 0x000f_ffff_ffff_f000;
    assert!(matches!(
        translate(ram.memory(), &registers, 0),
        Err(WalkError::TableOutsideRam { level: 4, .. })
    ));

    // Non-canonical addresses and 5-level paging.
    assert_eq!(
        translate(ram.memory(), &registers, 0x0000_8000_0000_0000),
        Err(WalkError::NonCanonical {
            linear: 0x0000_8000_0000_0000
        })
    );
    registers.cr4 |= cr4::LA57;
    assert_eq!(
        translate(ram.memory(), &registers, 0x1000),
        Err(WalkError::FiveLevelPaging { linear: 0x1000 })
    );
}

#[test]
fn walk_errors_read_well() {
    let error = WalkError::NotPresent {
        linear: 0xffff_ffff_8100_0000,
        level: 2,
        entry_gpa: 0x1234,
    };
    assert_eq!(
        std::format!("{error}"),
        "guest page table entry for 0xffffffff81000000 at gpa 0x1234 is not present (level 2)"
    );
    let denied = WalkError::Denied {
        linear: 0x1000,
        access: Access {
            kind: AccessKind::Write,
            user: true,
        },
    };
    assert_eq!(
        std::format!("{denied}"),
        "guest page tables do not allow a user write at 0x1000"
    );
}

#[test]
fn pae_walk_reads_hand_written_tables() {
    // 0xc034_5678: PDPTE 3, PD 1, PT 0x145. CR3 is 32-byte aligned, not page aligned.
    let mut ram = Ram::new(0x10000, 0x8000);
    ram.put_u64(0x1020 + 3 * 8, 0x2000 | P);
    ram.put_u64(0x2000 + 8, 0x3000 | P | RW | US);
    ram.put_u64(0x3000 + 0x145 * 8, 0x5000 | P | RW | US);
    let mut registers = protected_paging(0x1020, 0, true);
    registers.efer |= efer::NXE;
    assert_eq!(translate(ram.memory(), &registers, 0xc034_5678), Ok(0x5678));
    let translation = walk::walk(ram.memory(), &registers, 0xc034_5678).unwrap();
    assert!(translation.writable && translation.user && translation.executable);
    assert_eq!(translation.mode, PagingMode::Pae);
    // Only the low 32 bits count outside long mode.
    assert_eq!(
        translate(ram.memory(), &registers, 0xdead_0000_c034_5678),
        Ok(0x5678)
    );
    // PDPTE 0 is not present.
    assert_eq!(
        translate(ram.memory(), &registers, 0x1000),
        Err(WalkError::NotPresent {
            linear: 0x1000,
            level: 3,
            entry_gpa: 0x1020,
        })
    );
    // NX is reserved in a PDPTE even with NXE; bits 52–62 are reserved in PAE mode.
    ram.put_u64(0x1038, 0x2000 | P | NX);
    assert!(matches!(
        translate(ram.memory(), &registers, 0xc034_5678),
        Err(WalkError::Reserved { level: 3, .. })
    ));
    ram.put_u64(0x1038, 0x2000 | P);
    ram.put_u64(0x3000 + 0x145 * 8, 0x5000 | P | (1 << 52));
    assert!(matches!(
        translate(ram.memory(), &registers, 0xc034_5678),
        Err(WalkError::Reserved { level: 1, .. })
    ));
}

#[test]
fn pae_large_pages_and_builder() {
    let mut ram = Ram::new(0x20000, 0x2000);
    let cr3 = 0x1fe0; // the last 32 bytes of a page
    ram.map_pae(cr3, 0xc000_0000, 0x1_0000_0000, 2, P | RW);
    ram.map_pae(cr3, 0x0804_8000, 0x9000, 1, P | US);
    ram.map_pae(cr3, 0x4000_0000, 0xa000, 1, P | RW | US);
    let registers = protected_paging(cr3, 0, true);
    let large = walk::walk(ram.memory(), &registers, 0xc01f_ffff).unwrap();
    assert_eq!(large.gpa, 0x1_001f_ffff);
    assert_eq!(large.page_size, 2 << 20);
    assert_eq!(translate(ram.memory(), &registers, 0x0804_8123), Ok(0x9123));
    assert_eq!(translate(ram.memory(), &registers, 0x4000_0fff), Ok(0xafff));
    // PDPTE indices 0, 1 and 3 are distinct entries.
    assert!(ram.get_u64(cr3) & P != 0);
    assert!(ram.get_u64(cr3 + 8) & P != 0);
    assert!(ram.get_u64(cr3 + 16) & P == 0);
    assert!(ram.get_u64(cr3 + 24) & P != 0);
}

#[test]
fn legacy_walk_reads_hand_written_tables() {
    // 0xc034_5678: PDE 0x300, PTE 0x345.
    let mut ram = Ram::new(0x10000, 0x8000);
    ram.put_u32(0x1000 + 0x300 * 4, 0x2000 | 3);
    ram.put_u32(0x2000 + 0x345 * 4, 0x6000 | 3);
    let registers = protected_paging(0x1000, 0, false);
    assert_eq!(translate(ram.memory(), &registers, 0xc034_5678), Ok(0x6678));
    let translation = walk::walk(ram.memory(), &registers, 0xc034_5678).unwrap();
    assert_eq!(translation.mode, PagingMode::Legacy32);
    assert!(translation.writable && !translation.user && translation.executable);
    assert_eq!(
        translate(ram.memory(), &registers, 0xc034_6000),
        Err(WalkError::NotPresent {
            linear: 0xc034_6000,
            level: 1,
            entry_gpa: 0x2000 + 0x346 * 4,
        })
    );
    assert_eq!(
        translate(ram.memory(), &registers, 0x8000_0000),
        Err(WalkError::NotPresent {
            linear: 0x8000_0000,
            level: 2,
            entry_gpa: 0x1000 + 0x200 * 4,
        })
    );
}

#[test]
fn legacy_four_mib_pages_follow_cr4_pse() {
    let mut ram = Ram::new(0x10000, 0x2000);
    ram.map_legacy(0x1000, 0xc000_0000, 0x12_0040_0000, true, P | RW);
    ram.map_legacy(0x1000, 0x0040_0000, 0x5000, false, P | RW);
    let mut registers = protected_paging(0x1000, 0, false);
    let large = walk::walk(ram.memory(), &registers, 0xc03f_fffc).unwrap();
    assert_eq!(large.gpa, 0x12_007f_fffc, "PSE-36 supplies bits 32-39");
    assert_eq!(large.page_size, 4 << 20);
    assert_eq!(translate(ram.memory(), &registers, 0x0040_0010), Ok(0x5010));
    // Bit 21 of a 4 MiB PDE is reserved.
    let at = 0x1000 + 0x300 * 4;
    let pde = ram.get_u32(at);
    ram.put_u32(at, pde | (1 << 21));
    assert!(matches!(
        translate(ram.memory(), &registers, 0xc000_0000),
        Err(WalkError::Reserved { level: 2, .. })
    ));
    ram.put_u32(at, pde);
    // Without CR4.PSE the PS bit is ignored: the PDE points at a page table (here at
    // 0x42_4000 — the PSE-36 bits are now address bits 13-20 — outside RAM).
    registers.cr4 &= !cr4::PSE;
    assert_eq!(
        translate(ram.memory(), &registers, 0xc000_0000),
        Err(WalkError::TableOutsideRam {
            linear: 0xc000_0000,
            level: 1,
            entry_gpa: 0x42_4000,
        })
    );
}

#[test]
fn paging_off_is_identity_on_32_bits() {
    let memory: &[u8] = &[];
    let registers = real_mode(0, 0);
    assert_eq!(PagingMode::of(&registers), PagingMode::Disabled);
    assert_eq!(translate(memory, &registers, 0xfee0_0000), Ok(0xfee0_0000));
    assert_eq!(translate(memory, &registers, 0x1_0000_1234), Ok(0x1234));
    let translation = walk::walk(memory, &registers, 0).unwrap();
    assert!(translation.permits(
        &registers,
        Access {
            kind: AccessKind::Write,
            user: true
        }
    ));
}

#[test]
fn permissions_combine_over_levels_as_the_cpu_does() {
    let mut ram = Ram::new(0x20000, 0x1000);
    let cr3 = ram.table();
    ram.map_long(cr3, 0x1000, 0x1000, 1, P | RW | US); // user, writable
    ram.map_long(cr3, 0x2000, 0x2000, 1, P | US); // user, read-only
    ram.map_long(cr3, 0x3000, 0x3000, 1, P | RW); // supervisor
    ram.map_long(cr3, 0x4000, 0x4000, 1, P | RW | US | NX); // user, no-execute
    // A directory without US hides everything under it from user mode.
    ram.map_long(cr3, 0x4000_0000, 0x5000, 1, P | RW | US);
    let pml4e = ram.get_u64(cr3);
    let pdpt = pml4e & ADDRESS;
    let pdpte = ram.get_u64(pdpt + 8);
    ram.put_u64(pdpt + 8, pdpte & !US & !RW);

    let mut registers = long_mode(cr3, 0);
    registers.cr0 |= cr0::WP;
    let check = |registers: &GuestRegisters, linear: u64, kind: AccessKind, user: bool| {
        translate_access(ram.memory(), registers, linear, Access { kind, user }).is_ok()
    };
    use AccessKind::{Execute, Read, Write};

    assert!(check(&registers, 0x1000, Write, true));
    assert!(check(&registers, 0x2000, Read, true));
    assert!(!check(&registers, 0x2000, Write, true));
    assert!(!check(&registers, 0x3000, Read, true));
    assert!(check(&registers, 0x3000, Write, false));
    assert!(!check(&registers, 0x4000, Execute, true));
    assert!(check(&registers, 0x4000, Read, true));
    assert!(!check(&registers, 0x4000_0000, Read, true));
    let hidden = walk::walk(ram.memory(), &registers, 0x4000_0000).unwrap();
    assert!(!hidden.user && !hidden.writable);

    // Supervisor writes to read-only pages: allowed unless CR0.WP.
    assert!(!check(&registers, 0x2000, Write, false));
    registers.cr0 &= !cr0::WP;
    assert!(check(&registers, 0x2000, Write, false));
    assert!(check(&registers, 0x4000_0000, Write, false));

    // SMEP: no supervisor fetch from user pages. SMAP: no supervisor data access to user
    // pages unless RFLAGS.AC.
    assert!(check(&registers, 0x1000, Execute, false));
    registers.cr4 |= cr4::SMEP;
    assert!(!check(&registers, 0x1000, Execute, false));
    assert!(check(&registers, 0x3000, Execute, false));
    assert!(check(&registers, 0x1000, Read, false));
    registers.cr4 |= cr4::SMAP;
    assert!(!check(&registers, 0x1000, Read, false));
    assert!(!check(&registers, 0x1000, Write, false));
    assert!(check(&registers, 0x3000, Read, false));
    registers.rflags |= rflags::AC;
    assert!(check(&registers, 0x1000, Read, false));

    assert_eq!(
        translate_access(
            ram.memory(),
            &registers,
            0x3000,
            Access {
                kind: Read,
                user: true
            }
        ),
        Err(WalkError::Denied {
            linear: 0x3000,
            access: Access {
                kind: Read,
                user: true
            }
        })
    );
}

// ---------------------------------------------------------------------------------------
// Fetching.

#[test]
fn fetch_crosses_a_page_boundary_into_a_discontiguous_page() {
    let mut ram = Ram::new(0x40000, 0x1000);
    let cr3 = ram.table();
    let rip = 0xffff_ffff_8100_0ffd;
    // The two virtual pages are backwards in physical memory.
    ram.map_long(cr3, 0xffff_ffff_8100_0000, 0x30000, 1, P);
    ram.map_long(cr3, 0xffff_ffff_8100_1000, 0x20000, 1, P);
    ram.put(0x30ffd, &[0x66, 0x0f, 0xa2]);
    ram.put(0x20000, &[0xf4; 16]);
    let registers = long_mode(cr3, rip);

    let fetched = fetch(ram.memory(), &registers).unwrap();
    assert_eq!(fetched.linear, rip);
    assert_eq!(fetched.bitness, 64);
    assert_eq!(fetched.bytes()[..3], [0x66, 0x0f, 0xa2]);
    assert_eq!(fetched.bytes().len(), 15);
    assert!(fetched.bytes()[3..].iter().all(|&b| b == 0xf4));
    assert_eq!(fetched.stopped, None);
    assert_eq!(exit_instruction_length(ram.memory(), &registers), Ok(3));

    // The CPUID's last byte on the next page.
    let mut split = registers;
    split.rip = 0xffff_ffff_8100_0ffe;
    ram.put(0x30ffe, &[0x0f, 0x01]);
    ram.put(0x20000, &[0xd9]);
    assert_eq!(exit_instruction_length(ram.memory(), &split), Ok(3));

    // Without the second page: the fetch is short, and whether that is enough is the
    // decoder's call.
    let pte = {
        let l4 = ram.get_u64(cr3 + 0x1ff * 8) & ADDRESS;
        let l3 = ram.get_u64(l4 + 0x1fe * 8) & ADDRESS;
        let l2 = ram.get_u64(l3 + 8 * 8) & ADDRESS;
        l2 + 8
    };
    ram.put_u64(pte, 0);
    let fetched = fetch(ram.memory(), &split).unwrap();
    assert_eq!(fetched.bytes(), [0x0f, 0x01]);
    assert_eq!(
        fetched.stopped,
        Some(FetchError::Walk(WalkError::NotPresent {
            linear: 0xffff_ffff_8100_1000,
            level: 1,
            entry_gpa: pte,
        }))
    );
    assert!(matches!(
        exit_instruction_length(ram.memory(), &split),
        Err(InstructionError::Fetch(FetchError::Walk(
            WalkError::NotPresent { level: 1, .. }
        )))
    ));
    let mut hlt = split;
    hlt.rip = 0xffff_ffff_8100_0fff;
    ram.put(0x30fff, &[0xf4]);
    assert_eq!(fetch(ram.memory(), &hlt).unwrap().bytes(), [0xf4]);
    assert_eq!(exit_instruction_length(ram.memory(), &hlt), Ok(1));

    // Not even the first page.
    let mut nowhere = registers;
    nowhere.rip = 0x1000;
    assert!(matches!(
        fetch(ram.memory(), &nowhere),
        Err(FetchError::Walk(WalkError::NotPresent { level: 4, .. }))
    ));
}

#[test]
fn fetch_checks_execute_permission_at_the_guest_cpl() {
    let mut ram = Ram::new(0x20000, 0x1000);
    let cr3 = ram.table();
    ram.map_long(cr3, 0x40_0000, 0x10000, 1, P | US | NX);
    ram.map_long(cr3, 0x80_0000, 0x11000, 1, P);
    let mut registers = long_mode(cr3, 0x40_0000);
    assert!(matches!(
        fetch(ram.memory(), &registers),
        Err(FetchError::Walk(WalkError::Denied { .. }))
    ));
    registers.rip = 0x80_0000;
    assert!(fetch(ram.memory(), &registers).is_ok());
    registers.ss.attributes = SegmentAttributes(SegmentAttributes::DATA.0 | 3 << 5);
    assert!(matches!(
        fetch(ram.memory(), &registers),
        Err(FetchError::Walk(WalkError::Denied {
            access: Access {
                kind: AccessKind::Execute,
                user: true
            },
            ..
        }))
    ));
}

#[test]
fn fetch_uses_cs_base_and_limit_outside_long_mode() {
    let mut ram = Ram::new(0x10_0000, 0);
    // Real mode: CS.base 0xf0000.
    ram.put(0xffff0, &[0xea, 0x5b, 0xe0, 0x00, 0xf0]);
    let registers = real_mode(0xf0000, 0xfff0);
    let fetched = fetch(ram.memory(), &registers).unwrap();
    assert_eq!(fetched.linear, 0xffff0);
    assert_eq!(fetched.bitness, 16);
    assert_eq!(fetched.bytes().len(), 15);
    assert_eq!(exit_instruction_length(ram.memory(), &registers), Ok(5));

    // Two bytes before the limit.
    let mut near_limit = registers;
    near_limit.rip = 0xfffe;
    ram.put(0xffffe, &[0x0f, 0xa2]);
    let fetched = fetch(ram.memory(), &near_limit).unwrap();
    assert_eq!(fetched.bytes(), [0x0f, 0xa2]);
    assert_eq!(
        fetched.stopped,
        Some(FetchError::SegmentLimit {
            eip: 0xfffe,
            limit: 0xffff
        })
    );
    assert_eq!(exit_instruction_length(ram.memory(), &near_limit), Ok(2));
    near_limit.rip = 0x1_0000;
    assert_eq!(
        fetch(ram.memory(), &near_limit),
        Err(FetchError::SegmentLimit {
            eip: 0x1_0000,
            limit: 0xffff
        })
    );

    // 32-bit code: CS.base + EIP wraps at 4 GiB; only EIP's 32 bits count.
    let mut flat = GuestRegisters::protected_mode_flat(0);
    flat.cs.base = 0xffff_f000;
    flat.rip = 0xdead_0000_0000_1010;
    ram.put(0x10, &[0x0f, 0x32]);
    let fetched = fetch(ram.memory(), &flat).unwrap();
    assert_eq!(fetched.linear, 0x10);
    assert_eq!(fetched.bitness, 32);
    assert_eq!(exit_instruction_length(ram.memory(), &flat), Ok(2));
}

#[test]
fn fetch_stops_at_the_end_of_ram() {
    let mut ram = Ram::new(0x3000, 0);
    ram.put(0x2ffe, &[0x0f, 0x30]);
    let mut registers = GuestRegisters::protected_mode_flat(0x2ffe);
    let fetched = fetch(ram.memory(), &registers).unwrap();
    assert_eq!(fetched.bytes(), [0x0f, 0x30]);
    assert_eq!(
        fetched.stopped,
        Some(FetchError::OutsideRam {
            linear: 0x3000,
            gpa: 0x3000
        })
    );
    assert_eq!(exit_instruction_length(ram.memory(), &registers), Ok(2));
    registers.rip = 0xfee0_0000;
    assert_eq!(
        fetch(ram.memory(), &registers),
        Err(FetchError::OutsideRam {
            linear: 0xfee0_0000,
            gpa: 0xfee0_0000
        })
    );
}

// ---------------------------------------------------------------------------------------
// Instruction lengths.

#[test]
fn exit_instruction_lengths_include_prefixes() {
    let length = |bytes: &[u8]| instruction_length(bytes, 64);
    assert_eq!(length(&[0x0f, 0xa2]), Ok(2)); // cpuid
    assert_eq!(length(&[0x66, 0x0f, 0xa2]), Ok(3)); // iced: a 66h prefix is part of it
    assert_eq!(length(&[0xf3, 0x0f, 0xa2, 0x90]), Ok(3));
    assert_eq!(length(&[0xf4, 0xf4]), Ok(1)); // hlt
    assert_eq!(length(&[0x0f, 0x01, 0xd9]), Ok(3)); // vmmcall
    assert_eq!(length(&[0x0f, 0x01, 0xc1]), Ok(3)); // vmcall
    assert_eq!(length(&[0x0f, 0x32]), Ok(2)); // rdmsr
    assert_eq!(length(&[0x2e, 0x0f, 0x30]), Ok(3)); // cs: wrmsr
    assert_eq!(length(&[0xe4, 0x60]), Ok(2)); // in al, 0x60
    assert_eq!(instruction_length(&[0x0f, 0xa2], 16), Ok(2));
    assert_eq!(
        length(&[0x0f]),
        Err(DecodeError::Truncated { available: 1 })
    );
    assert_eq!(length(&[]), Err(DecodeError::Truncated { available: 0 }));
    assert_eq!(length(&[0x66; 15]), Err(DecodeError::Invalid));
    // Fourteen prefixes and a 2-byte MOV make 16 bytes: too long.
    let mut long = [0x66; 16];
    long[14] = 0x8b;
    long[15] = 0x03;
    assert_eq!(length(&long), Err(DecodeError::Invalid));
    assert_eq!(
        instruction_length(&[0x90], 8),
        Err(DecodeError::BadBitness { bitness: 8 })
    );
}

// ---------------------------------------------------------------------------------------
// MMIO decoding.

/// 64-bit registers with distinctive values.
fn busy_registers() -> GuestRegisters {
    let mut registers = long_mode(0, 0x40_0000);
    for n in 0..16u8 {
        registers
            .gpr
            .set(n, 0x0101_0101_0101_0101 * u64::from(n + 1));
    }
    registers
}

fn decode64(bytes: &[u8], registers: &GuestRegisters) -> Decoded {
    mmio::decode(bytes, 64, registers).unwrap()
}

fn read_into(number: u8, part: RegisterPart, extension: Extension, size: u8) -> MmioAccess {
    MmioAccess::Read {
        size,
        destination: Destination {
            register: number,
            part,
            extension,
        },
    }
}

#[test]
fn mov_eax_from_rbx_zero_extends() {
    let mut registers = busy_registers();
    registers.gpr.rbx = 0xffff_c900_0000_0300;
    registers.gpr.rax = u64::MAX;
    let decoded = decode64(&[0x8b, 0x03], &registers);
    assert_eq!(
        decoded,
        Decoded {
            access: read_into(0, RegisterPart::Low32, Extension::Zero, 4),
            length: 2,
            linear: 0xffff_c900_0000_0300,
        }
    );
    complete_read(&mut registers, decoded.access, 0xabcd_1234_5678_9abc);
    assert_eq!(registers.gpr.rax, 0x5678_9abc);
    let before = busy_registers();
    assert_eq!(registers.gpr.rbx, 0xffff_c900_0000_0300);
    assert_eq!(registers.gpr.rcx, before.gpr.rcx);
}

#[test]
fn stores_take_the_register_or_immediate_value() {
    let mut registers = busy_registers();
    registers.gpr.rcx = 0xdead_beef_cafe_f00d;
    registers.gpr.rdi = 0x1000;
    // mov [rdi+8], ecx
    let decoded = decode64(&[0x89, 0x4f, 0x08], &registers);
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 4,
            value: 0xcafe_f00d
        }
    );
    assert_eq!((decoded.length, decoded.linear), (3, 0x1008));
    // mov [rdi], rcx; mov [rdi], cx; mov [rdi], cl; mov [rdi], ch
    assert_eq!(
        decode64(&[0x48, 0x89, 0x0f], &registers).access,
        MmioAccess::Write {
            size: 8,
            value: 0xdead_beef_cafe_f00d
        }
    );
    assert_eq!(
        decode64(&[0x66, 0x89, 0x0f], &registers).access,
        MmioAccess::Write {
            size: 2,
            value: 0xf00d
        }
    );
    assert_eq!(
        decode64(&[0x88, 0x0f], &registers).access,
        MmioAccess::Write {
            size: 1,
            value: 0x0d
        }
    );
    assert_eq!(
        decode64(&[0x88, 0x2f], &registers).access,
        MmioAccess::Write {
            size: 1,
            value: 0xf0
        }
    );
    // With REX, encoding 5 is BPL, not CH.
    registers.gpr.rbp = 0x77;
    assert_eq!(
        decode64(&[0x40, 0x88, 0x2f], &registers).access,
        MmioAccess::Write {
            size: 1,
            value: 0x77
        }
    );
    // mov [rdi], r9d
    registers.gpr.r9 = 0x9999_0000_1234_5678;
    assert_eq!(
        decode64(&[0x44, 0x89, 0x0f], &registers).access,
        MmioAccess::Write {
            size: 4,
            value: 0x1234_5678
        }
    );
}

#[test]
fn immediate_stores_are_sign_extended_where_x86_does() {
    let mut registers = busy_registers();
    registers.gpr.rax = 0x2000;
    // mov byte [rax], 0x12
    let decoded = decode64(&[0xc6, 0x00, 0x12], &registers);
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 1,
            value: 0x12
        }
    );
    assert_eq!((decoded.length, decoded.linear), (3, 0x2000));
    // mov qword [rax], -1
    let decoded = decode64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], &registers);
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 8,
            value: u64::MAX
        }
    );
    assert_eq!(decoded.length, 7);
    // mov qword [rax], 0x8000_0000 sign-extends too; 0x7fff_ffff does not.
    assert_eq!(
        decode64(&[0x48, 0xc7, 0x00, 0x00, 0x00, 0x00, 0x80], &registers).access,
        MmioAccess::Write {
            size: 8,
            value: 0xffff_ffff_8000_0000
        }
    );
    assert_eq!(
        decode64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0x7f], &registers).access,
        MmioAccess::Write {
            size: 8,
            value: 0x7fff_ffff
        }
    );
    // mov dword [rax], -1 stays 32 bits; mov word [rax], 0x1234.
    assert_eq!(
        decode64(&[0xc7, 0x00, 0xff, 0xff, 0xff, 0xff], &registers).access,
        MmioAccess::Write {
            size: 4,
            value: 0xffff_ffff
        }
    );
    let decoded = decode64(&[0x66, 0xc7, 0x00, 0x34, 0x12], &registers);
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 2,
            value: 0x1234
        }
    );
    assert_eq!(decoded.length, 5);
    // mov dword [rax+0x10], imm32 with a displacement: length counts both.
    assert_eq!(
        decode64(&[0xc7, 0x40, 0x10, 1, 0, 0, 0], &registers).length,
        7
    );
}

#[test]
fn movzx_and_movsx_extend_into_their_destination() {
    let mut registers = busy_registers();
    registers.gpr.rsi = 0x3000;

    // movzx eax, word [rsi]
    registers.gpr.rax = u64::MAX;
    let decoded = decode64(&[0x0f, 0xb7, 0x06], &registers);
    assert_eq!(
        decoded.access,
        read_into(0, RegisterPart::Low32, Extension::Zero, 2)
    );
    assert_eq!((decoded.length, decoded.linear), (3, 0x3000));
    complete_read(&mut registers, decoded.access, 0xffff_8001);
    assert_eq!(registers.gpr.rax, 0x8001);

    // movzx cx, byte [rsi]: 16-bit destination keeps bits 16-63.
    registers.gpr.rcx = 0x1111_2222_3333_4444;
    let access = decode64(&[0x66, 0x0f, 0xb6, 0x0e], &registers).access;
    assert_eq!(
        access,
        read_into(1, RegisterPart::Low16, Extension::Zero, 1)
    );
    complete_read(&mut registers, access, 0xfe);
    assert_eq!(registers.gpr.rcx, 0x1111_2222_3333_00fe);

    // movsx rax, word [rsi]
    let access = decode64(&[0x48, 0x0f, 0xbf, 0x06], &registers).access;
    assert_eq!(access, read_into(0, RegisterPart::Full, Extension::Sign, 2));
    complete_read(&mut registers, access, 0x8001);
    assert_eq!(registers.gpr.rax, 0xffff_ffff_ffff_8001);

    // movsx eax, byte [rsi]: sign-extends to 32 bits, zero-extends to 64.
    let access = decode64(&[0x0f, 0xbe, 0x06], &registers).access;
    complete_read(&mut registers, access, 0x80);
    assert_eq!(registers.gpr.rax, 0xffff_ff80);
    complete_read(&mut registers, access, 0x7f);
    assert_eq!(registers.gpr.rax, 0x7f);

    // movsx ax, byte [rsi]: keeps bits 16-63.
    registers.gpr.rax = 0x1111_2222_3333_4444;
    let access = decode64(&[0x66, 0x0f, 0xbe, 0x06], &registers).access;
    complete_read(&mut registers, access, 0xfe);
    assert_eq!(registers.gpr.rax, 0x1111_2222_3333_fffe);

    // movsxd r11, dword [rsi]
    let access = decode64(&[0x4c, 0x63, 0x1e], &registers).access;
    assert_eq!(
        access,
        read_into(11, RegisterPart::Full, Extension::Sign, 4)
    );
    complete_read(&mut registers, access, 0x8000_0000);
    assert_eq!(registers.gpr.r11, 0xffff_ffff_8000_0000);
}

#[test]
fn moffs_forms() {
    let mut registers = busy_registers();
    registers.gpr.rax = 0x1122_3344_5566_7788;
    // mov al, [0xffff_ffff_fee0_0030]
    let bytes = [0xa0, 0x30, 0x00, 0xe0, 0xfe, 0xff, 0xff, 0xff, 0xff];
    let decoded = decode64(&bytes, &registers);
    assert_eq!(
        decoded,
        Decoded {
            access: read_into(0, RegisterPart::Low8, Extension::Zero, 1),
            length: 9,
            linear: 0xffff_ffff_fee0_0030,
        }
    );
    complete_read(&mut registers, decoded.access, 0xab);
    assert_eq!(registers.gpr.rax, 0x1122_3344_5566_77ab);
    // mov [moffs64], rax
    let bytes = [0x48, 0xa3, 0x00, 0x10, 0, 0, 0, 0, 0, 0];
    let decoded = decode64(&bytes, &registers);
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 8,
            value: 0x1122_3344_5566_77ab
        }
    );
    assert_eq!((decoded.length, decoded.linear), (10, 0x1000));
    // 32-bit code: mov eax, [moffs32] with DS.base; mov [moffs16], ax with a 67h prefix.
    let mut flat = GuestRegisters::protected_mode_flat(0);
    flat.ds.base = 0x100;
    flat.gpr.rax = 0xaaaa_bbbb_cccc_dddd;
    let decoded = mmio::decode(&[0xa1, 0x00, 0x00, 0xc0, 0xfe], 32, &flat).unwrap();
    assert_eq!(
        decoded.access,
        read_into(0, RegisterPart::Low32, Extension::Zero, 4)
    );
    assert_eq!((decoded.length, decoded.linear), (5, 0xfec0_0100));
    let decoded = mmio::decode(&[0x66, 0x67, 0xa3, 0x34, 0x12], 32, &flat).unwrap();
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 2,
            value: 0xdddd
        }
    );
    assert_eq!((decoded.length, decoded.linear), (5, 0x1334));
}

#[test]
fn high_byte_registers_are_bits_8_to_15() {
    let mut registers = busy_registers();
    registers.gpr.rax = 0x1122_3344_5566_7788;
    registers.gpr.rbx = 0x5000;
    // mov ah, [rbx]
    let access = decode64(&[0x8a, 0x23], &registers).access;
    assert_eq!(
        access,
        read_into(0, RegisterPart::High8, Extension::Zero, 1)
    );
    complete_read(&mut registers, access, 0x1ab);
    assert_eq!(registers.gpr.rax, 0x1122_3344_5566_ab88);
    // mov bh, [rbx]... with REX it is DIL instead; mov r12b, [rbx].
    assert_eq!(
        decode64(&[0x8a, 0x3b], &registers).access,
        read_into(3, RegisterPart::High8, Extension::Zero, 1)
    );
    assert_eq!(
        decode64(&[0x40, 0x8a, 0x3b], &registers).access,
        read_into(7, RegisterPart::Low8, Extension::Zero, 1)
    );
    let access = decode64(&[0x44, 0x8a, 0x23], &registers).access;
    assert_eq!(
        access,
        read_into(12, RegisterPart::Low8, Extension::Zero, 1)
    );
    registers.gpr.r12 = u64::MAX;
    complete_read(&mut registers, access, 0x42);
    assert_eq!(registers.gpr.r12, 0xffff_ffff_ffff_ff42);
}

#[test]
fn sixteen_and_sixty_four_bit_reads() {
    let mut registers = busy_registers();
    registers.gpr.rax = 0x1111_2222_3333_4444;
    // mov ax, [rbx] keeps the rest of RAX.
    let access = decode64(&[0x66, 0x8b, 0x03], &registers).access;
    assert_eq!(
        access,
        read_into(0, RegisterPart::Low16, Extension::Zero, 2)
    );
    complete_read(&mut registers, access, 0xdead_beef);
    assert_eq!(registers.gpr.rax, 0x1111_2222_3333_beef);
    // mov r8, [rbx]
    let access = decode64(&[0x4c, 0x8b, 0x03], &registers).access;
    assert_eq!(access, read_into(8, RegisterPart::Full, Extension::Zero, 8));
    complete_read(&mut registers, access, 0x0123_4567_89ab_cdef);
    assert_eq!(registers.gpr.r8, 0x0123_4567_89ab_cdef);
    // A write access completes nothing.
    let before = registers;
    complete_read(
        &mut registers,
        MmioAccess::Write { size: 4, value: 1 },
        0xffff,
    );
    assert_eq!(registers, before);
}

#[test]
fn operand_addresses_follow_the_addressing_mode() {
    let mut registers = busy_registers();
    registers.rip = 0x40_0000;
    // RIP-relative: mov eax, [rip+0x10] (relative to the next instruction).
    assert_eq!(
        decode64(&[0x8b, 0x05, 0x10, 0, 0, 0], &registers).linear,
        0x40_0016
    );
    // SIB: mov eax, [rax+rbx*4+8]
    registers.gpr.rax = 0x1000;
    registers.gpr.rbx = 0x10;
    assert_eq!(
        decode64(&[0x8b, 0x44, 0x98, 0x08], &registers).linear,
        0x1048
    );
    // Negative displacement: mov eax, [rbx-4]
    assert_eq!(decode64(&[0x8b, 0x43, 0xfc], &registers).linear, 0xc);
    // An absolute disp32 is sign-extended with 64-bit addressing, zero-extended with
    // 32-bit addressing: mov eax, [0x8000_0000] without and with 67h.
    let absolute = [0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x80];
    assert_eq!(
        decode64(&absolute, &registers).linear,
        0xffff_ffff_8000_0000
    );
    let absolute = [0x67, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x80];
    assert_eq!(decode64(&absolute, &registers).linear, 0x8000_0000);
    // Index without base: mov eax, [rbx*8+0x100]
    let scaled = [0x8b, 0x04, 0xdd, 0x00, 0x01, 0x00, 0x00];
    assert_eq!(decode64(&scaled, &registers).linear, 0x10 * 8 + 0x100);
    // 32-bit addressing in 64-bit mode: mov eax, [ebx]
    registers.gpr.rbx = 0xffff_ffff_0000_1000;
    assert_eq!(decode64(&[0x67, 0x8b, 0x03], &registers).linear, 0x1000);
    // FS and GS bases apply in 64-bit mode; ES and DS do not.
    registers.gpr.rbx = 0x10;
    registers.fs.base = 0x7000_0000_0000;
    registers.es.base = 0x5555_0000;
    assert_eq!(
        decode64(&[0x64, 0x8b, 0x03], &registers).linear,
        0x7000_0000_0010
    );
    assert_eq!(decode64(&[0x26, 0x8b, 0x03], &registers).linear, 0x10);

    // 32-bit code: DS.base + EA, wrapping at 4 GiB.
    let mut flat = GuestRegisters::protected_mode_flat(0);
    flat.ds.base = 0x1000_0000;
    flat.gpr.rbx = 2;
    let decoded = mmio::decode(&[0x8b, 0x43, 0xfc], 32, &flat).unwrap();
    assert_eq!(decoded.linear, 0x0fff_fffe);
    // ES override.
    flat.es.base = 0x2000;
    let decoded = mmio::decode(&[0x26, 0x89, 0x03], 32, &flat).unwrap();
    assert_eq!(decoded.linear, 0x2002);

    // 16-bit code: [bx+si+2] wraps at 64 KiB before DS.base; [bp-2] uses SS.
    let mut real = real_mode(0, 0x100);
    real.ds.base = 0x1000;
    real.ss.base = 0x9_0000;
    real.gpr.rbx = 0xfffe;
    real.gpr.rsi = 3;
    real.gpr.rbp = 0x10;
    real.gpr.rax = 0x1234_5678;
    let decoded = mmio::decode(&[0x8b, 0x40, 0x02], 16, &real).unwrap();
    assert_eq!(
        decoded.access,
        read_into(0, RegisterPart::Low16, Extension::Zero, 2)
    );
    assert_eq!((decoded.length, decoded.linear), (3, 0x1003));
    let decoded = mmio::decode(&[0x89, 0x46, 0xfe], 16, &real).unwrap();
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 2,
            value: 0x5678
        }
    );
    assert_eq!(decoded.linear, 0x9_000e);
    // A 32-bit operand in 16-bit code: mov [ebx], eax with 66h 67h.
    let decoded = mmio::decode(&[0x66, 0x67, 0x89, 0x03], 16, &real).unwrap();
    assert_eq!(
        decoded.access,
        MmioAccess::Write {
            size: 4,
            value: 0x1234_5678
        }
    );
    assert_eq!((decoded.length, decoded.linear), (4, 0x1000 + 0xfffe));
}

#[test]
fn everything_else_is_unsupported_with_its_mnemonic() {
    let registers = busy_registers();
    let error = |bytes: &[u8]| mmio::decode(bytes, 64, &registers).unwrap_err();
    let unsupported = |mnemonic| MmioError::Unsupported { mnemonic };
    assert_eq!(error(&[0xf0, 0x01, 0x03]), unsupported(Mnemonic::Add)); // lock add
    assert_eq!(error(&[0x01, 0x03]), unsupported(Mnemonic::Add));
    assert_eq!(error(&[0x87, 0x03]), unsupported(Mnemonic::Xchg));
    assert_eq!(
        error(&[0xf0, 0x0f, 0xb1, 0x0b]),
        unsupported(Mnemonic::Cmpxchg)
    );
    assert_eq!(error(&[0xa5]), unsupported(Mnemonic::Movsd)); // movsd
    assert_eq!(error(&[0xf3, 0xa4]), unsupported(Mnemonic::Movsb)); // rep movsb
    assert_eq!(error(&[0xaa]), unsupported(Mnemonic::Stosb));
    assert_eq!(error(&[0x0f, 0x10, 0x03]), unsupported(Mnemonic::Movups));
    assert_eq!(error(&[0x8c, 0x1b]), unsupported(Mnemonic::Mov)); // mov [rbx], ds
    assert_eq!(
        error(&[0x89, 0xd8]),
        MmioError::NoMemoryOperand {
            mnemonic: Mnemonic::Mov
        }
    );
    // LOCK on a MOV does not decode at all (#UD).
    assert_eq!(
        error(&[0xf0, 0x89, 0x03]),
        MmioError::Decode(DecodeError::Invalid)
    );
    assert_eq!(
        error(&[0x8b]),
        MmioError::Decode(DecodeError::Truncated { available: 1 })
    );
    assert_eq!(
        std::format!("{}", error(&[0xf3, 0xa4])),
        "the guest accessed MMIO with `movsb`, which is not emulated"
    );
}

#[test]
fn register_numbering_covers_every_general_purpose_register() {
    // Each REX.R/REX.B combination reaches the right register number for a 64-bit load.
    let registers = busy_registers();
    for number in 0u8..16 {
        let rex = 0x48 | if number >= 8 { 0x4 } else { 0 };
        let modrm = ((number & 7) << 3) | 0x03; // reg = number, [rbx]
        let access = decode64(&[rex, 0x8b, modrm], &registers).access;
        assert_eq!(
            access,
            read_into(number, RegisterPart::Full, Extension::Zero, 8)
        );
        // And the same register as a store source.
        let access = decode64(&[rex, 0x89, modrm], &registers).access;
        assert_eq!(
            access,
            MmioAccess::Write {
                size: 8,
                value: registers.gpr.get(number)
            }
        );
    }
}

// ---------------------------------------------------------------------------------------
// decode_mmio end to end.

/// Long-mode guest: code at 0xffff_ffff_8100_0ffd (straddling two pages), MMIO page at
/// linear 0xffff_c900_0000_0000 → gpa 0xfee0_0000 (outside RAM).
fn mmio_guest(code: &[u8]) -> (Ram, GuestRegisters) {
    let mut ram = Ram::new(0x40000, 0x1000);
    let cr3 = ram.table();
    ram.map_long(cr3, 0xffff_ffff_8100_0000, 0x30000, 1, P);
    ram.map_long(cr3, 0xffff_ffff_8100_1000, 0x31000, 1, P);
    ram.map_long(cr3, 0xffff_c900_0000_0000, 0xfee0_0000, 1, P | RW | NX);
    ram.put(0x30ffd, code);
    let mut registers = long_mode(cr3, 0xffff_ffff_8100_0ffd);
    registers.gpr.rbx = 0xffff_c900_0000_0030;
    (ram, registers)
}

#[test]
fn decode_mmio_fetches_decodes_and_checks_the_address() {
    // mov rcx, [rbx+8] across the page boundary.
    let (ram, registers) = mmio_guest(&[0x48, 0x8b, 0x4b, 0x08]);
    assert_eq!(
        decode_mmio(ram.memory(), &registers, 0xfee0_0038),
        Ok((read_into(1, RegisterPart::Full, Extension::Zero, 8), 4))
    );
    assert_eq!(
        decode_mmio(ram.memory(), &registers, 0xfee0_0030),
        Err(MmioError::AddressMismatch {
            gpa: 0xfee0_0030,
            linear: 0xffff_c900_0000_0038,
            operand_gpa: 0xfee0_0038,
        })
    );
    // The operand's page is gone.
    let mut elsewhere = registers;
    elsewhere.gpr.rbx = 0x1000;
    assert!(matches!(
        decode_mmio(ram.memory(), &elsewhere, 0xfee0_0038),
        Err(MmioError::OperandWalk(WalkError::NotPresent { .. }))
    ));
    // An access straddling a page boundary.
    let mut straddle = registers;
    straddle.gpr.rbx = 0xffff_c900_0000_0ff8 - 8 + 4;
    assert_eq!(
        decode_mmio(ram.memory(), &straddle, 0xfee0_0ffc),
        Err(MmioError::CrossesPage {
            linear: 0xffff_c900_0000_0ffc,
            size: 8
        })
    );
    // A write.
    let (ram, mut registers) = mmio_guest(&[0x89, 0x03]);
    registers.gpr.rax = 0x1_0000_0042;
    assert_eq!(
        decode_mmio(ram.memory(), &registers, 0xfee0_0030),
        Ok((
            MmioAccess::Write {
                size: 4,
                value: 0x42
            },
            2
        ))
    );
    // An unsupported instruction.
    let (ram, registers) = mmio_guest(&[0xf0, 0x09, 0x03]);
    assert_eq!(
        decode_mmio(ram.memory(), &registers, 0xfee0_0030),
        Err(MmioError::Unsupported {
            mnemonic: Mnemonic::Or
        })
    );
}

#[test]
fn decode_mmio_reports_the_unmapped_second_page() {
    let (mut ram, registers) = mmio_guest(&[0x48, 0x8b, 0x4b, 0x08]);
    // Unmap the second code page: three bytes are not a whole instruction.
    let cr3 = registers.cr3;
    let l3 = ram.get_u64(cr3 + 0x1ff * 8) & ADDRESS;
    let l2 = ram.get_u64(l3 + 0x1fe * 8) & ADDRESS;
    let l1 = ram.get_u64(l2 + 8 * 8) & ADDRESS;
    ram.put_u64(l1 + 8, 0);
    assert_eq!(
        decode_mmio(ram.memory(), &registers, 0xfee0_0038),
        Err(MmioError::Fetch(FetchError::Walk(WalkError::NotPresent {
            linear: 0xffff_ffff_8100_1000,
            level: 1,
            entry_gpa: l1 + 8,
        })))
    );
    // RIP itself unmapped.
    let mut nowhere = registers;
    nowhere.rip = 0x7000;
    assert!(matches!(
        decode_mmio(ram.memory(), &nowhere, 0xfee0_0038),
        Err(MmioError::Fetch(FetchError::Walk(_)))
    ));
}

#[test]
fn decode_mmio_in_32_bit_paged_and_unpaged_guests() {
    // PAE guest: code at 0xc010_0000, MMIO at 0xf000_0000 → gpa 0xfec0_0000.
    let mut ram = Ram::new(0x40000, 0x2000);
    let cr3 = 0x1000;
    ram.map_pae(cr3, 0xc010_0000, 0x20000, 1, P);
    ram.map_pae(cr3, 0xf000_0000, 0xfec0_0000, 1, P | RW);
    ram.put(0x20000, &[0x8b, 0x42, 0x20]); // mov eax, [edx+0x20]
    let mut registers = protected_paging(cr3, 0xc010_0000, true);
    registers.gpr.rdx = 0xf000_0000;
    registers.gpr.rax = 0xffff_ffff_ffff_ffff;
    let (access, length) = decode_mmio(ram.memory(), &registers, 0xfec0_0020).unwrap();
    assert_eq!(length, 3);
    complete_read(&mut registers, access, 0x11);
    assert_eq!(registers.gpr.rax, 0x11);
    assert_eq!(registers.rip_after(length), 0xc010_0003);

    // Paging off, 32-bit flat: linear is physical.
    let mut ram = Ram::new(0x10000, 0);
    ram.put(0x8000, &[0xc6, 0x05, 0x00, 0x00, 0xe0, 0xfe, 0x01]); // mov byte [0xfee00000], 1
    let registers = GuestRegisters::protected_mode_flat(0x8000);
    assert_eq!(
        decode_mmio(ram.memory(), &registers, 0xfee0_0000),
        Ok((MmioAccess::Write { size: 1, value: 1 }, 7))
    );
}

#[test]
fn errors_display() {
    let fetch = FetchError::SegmentLimit {
        eip: 0x10000,
        limit: 0xffff,
    };
    assert_eq!(
        std::format!("{}", InstructionError::Fetch(fetch)),
        "guest instruction bytes at EIP 0x10000 are beyond the CS limit 0xffff"
    );
    assert_eq!(
        std::format!(
            "{}",
            MmioError::NoMemoryOperand {
                mnemonic: Mnemonic::Mov
            }
        ),
        "the guest instruction `mov` at RIP has no memory operand: it cannot have made the \
         MMIO access"
    );
}

// ---------------------------------------------------------------------------------------
// Properties.

const PROPERTY_RAM: usize = 0x8000;

/// Guest RAM from `seed`. Each word is random, or — `shaped` times in 8 — a well-formed
/// page-table entry pointing into RAM (so that walks go deep), or, one time in 8 each, an
/// entry with random flags or the start of a MOV with random operands.
fn hostile_ram(seed: u64, shaped: u8) -> Vec<u8> {
    // SplitMix64: a cheap deterministic stream, so proptest varies one seed rather than
    // generating every word.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let pages = PROPERTY_RAM as u64 >> 12;
    let shaped = u64::from(shaped);
    let mut bytes = Vec::with_capacity(PROPERTY_RAM);
    while bytes.len() < PROPERTY_RAM {
        let random = next();
        let choice = random & 7;
        let frame = ((random >> 8) % pages) << 12;
        let word = if choice < shaped {
            // Present, writable, user; a large page one time in 8.
            frame | P | RW | US | if (random >> 3) & 7 == 0 { PS } else { 0 }
        } else if choice == shaped {
            frame | ((random >> 40) & 0xfff) | ((random & (1 << 3)) << 60)
        } else if choice == shaped + 1 {
            let opcode =
                [0x88, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0xa1, 0xa3][(random >> 3) as usize & 7];
            let prefix = [0x48, 0x66, 0x40, 0x67][(random >> 6) as usize & 3];
            (random & !0xffff) | (opcode << 8) | prefix
        } else {
            random
        };
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes
}

fn segment() -> impl Strategy<Value = Segment> {
    let limit = prop_oneof![1 => any::<u32>(), 3 => Just(u32::MAX)];
    let base = prop_oneof![1 => any::<u64>(), 3 => Just(0)];
    (any::<u16>(), any::<u16>(), limit, base).prop_map(|(selector, attributes, limit, base)| {
        Segment {
            selector,
            attributes: SegmentAttributes(attributes),
            limit,
            base,
        }
    })
}

/// Any register state, with CR3 often inside RAM.
fn registers() -> impl Strategy<Value = GuestRegisters> {
    let cr3 = prop_oneof![1 => any::<u64>(), 3 => 0..PROPERTY_RAM as u64];
    // Mostly without 5-level paging (which stops every walk) or SMEP/SMAP.
    let cr4 = prop_oneof![
        1 => any::<u64>(),
        3 => any::<u64>().prop_map(|cr4| cr4 & !(cr4::LA57 | cr4::SMEP | cr4::SMAP)),
    ];
    let rip = prop_oneof![
        1 => any::<u64>(),
        3 => 0..PROPERTY_RAM as u64 + 0x100,
        1 => any::<u16>().prop_map(u64::from),
    ];
    (
        any::<[u64; 16]>(),
        rip,
        (any::<u64>(), cr3, cr4, any::<u64>(), any::<u64>()),
        (
            segment(),
            segment(),
            segment(),
            segment(),
            segment(),
            segment(),
        ),
    )
        .prop_map(
            |(gprs, rip, (cr0, cr3, cr4, efer, rflags), (cs, ds, es, fs, gs, ss))| {
                let mut registers = GuestRegisters::default();
                for (n, value) in gprs.into_iter().enumerate() {
                    registers.gpr.set(n as u8, value);
                }
                registers.rip = rip;
                registers.cr0 = cr0;
                registers.cr3 = cr3;
                registers.cr4 = cr4;
                registers.efer = efer;
                registers.rflags = rflags;
                registers.cs = cs;
                registers.ds = ds;
                registers.es = es;
                registers.fs = fs;
                registers.gs = gs;
                registers.ss = ss;
                registers
            },
        )
}

fn access() -> impl Strategy<Value = MmioAccess> {
    prop_oneof![
        (any::<u8>(), 0u8..32, 0u8..5, any::<bool>()).prop_map(|(size, register, part, sign)| {
            MmioAccess::Read {
                size,
                destination: Destination {
                    register,
                    part: [
                        RegisterPart::Low8,
                        RegisterPart::High8,
                        RegisterPart::Low16,
                        RegisterPart::Low32,
                        RegisterPart::Full,
                    ][usize::from(part)],
                    extension: if sign {
                        Extension::Sign
                    } else {
                        Extension::Zero
                    },
                },
            }
        }),
        (any::<u8>(), any::<u64>()).prop_map(|(size, value)| MmioAccess::Write { size, value }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Hostile RAM and registers: translation, fetch and decode answer without panicking,
    /// and what they answer is self-consistent.
    #[test]
    fn hostile_guest_state_never_panics(
        seed in any::<u64>(),
        shaped in 0u8..=4,
        registers in registers(),
        linear in any::<u64>(),
        gpa in any::<u64>(),
    ) {
        let bytes = hostile_ram(seed, shaped);
        let memory: &[u8] = &bytes;
        for address in [linear, registers.rip, registers.cs.base.wrapping_add(registers.rip)] {
            if let Ok(translation) = walk::walk(memory, &registers, address) {
                prop_assert_eq!(translation.gpa & 0xfff, address & 0xfff);
                prop_assert!(translation.page_size.is_power_of_two());
                let _ = translation.permits(&registers, Access::at_cpl(AccessKind::Write, &registers));
            }
            let _ = translate_access(memory, &registers, address, Access::at_cpl(AccessKind::Read, &registers));
        }
        match fetch(memory, &registers) {
            Ok(fetched) => {
                prop_assert!((1..=15).contains(&fetched.bytes().len()));
                prop_assert!(matches!(fetched.bitness, 16 | 32 | 64));
                if fetched.bytes().len() < 15 {
                    prop_assert!(fetched.stopped.is_some());
                }
            }
            Err(error) => { let _ = std::format!("{error}"); }
        }
        if let Ok(length) = exit_instruction_length(memory, &registers) {
            prop_assert!((1..=15).contains(&length));
        }
        match decode_mmio(memory, &registers, gpa) {
            Ok((access, length)) => {
                prop_assert!((1..=15).contains(&length));
                prop_assert!(matches!(access.size(), 1 | 2 | 4 | 8));
                let mut after = registers;
                complete_read(&mut after, access, gpa);
            }
            Err(MmioError::AddressMismatch { operand_gpa, .. }) => {
                // The operand's own address is accepted.
                prop_assert!(decode_mmio(memory, &registers, operand_gpa).is_ok());
            }
            Err(error) => { let _ = std::format!("{error}"); }
        }
    }

    /// Any bytes in any bitness: decode and length agree, never panic.
    #[test]
    fn decoding_any_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..20),
        bitness in prop_oneof![Just(16u32), Just(32), Just(64), any::<u32>()],
        registers in registers(),
    ) {
        let length = instruction_length(&bytes, bitness);
        match mmio::decode(&bytes, bitness, &registers) {
            Ok(decoded) => {
                prop_assert_eq!(length, Ok(decoded.length));
                prop_assert!(matches!(decoded.access.size(), 1 | 2 | 4 | 8));
                if let MmioAccess::Write { size, value } = decoded.access {
                    prop_assert!(size == 8 || value >> (u32::from(size) * 8) == 0);
                }
            }
            Err(MmioError::Decode(error)) => prop_assert_eq!(length, Err(error)),
            Err(error) => { let _ = std::format!("{error}"); }
        }
    }

    /// complete_read touches only its destination and follows x86 widths.
    #[test]
    fn complete_read_writes_only_the_destination(
        registers in registers(),
        access in access(),
        value in any::<u64>(),
    ) {
        let mut after = registers;
        complete_read(&mut after, access, value);
        match access {
            MmioAccess::Write { .. } => prop_assert_eq!(after, registers),
            MmioAccess::Read { destination, .. } => {
                let number = destination.register;
                for other in (0u8..16).filter(|&n| n != number & 0xf) {
                    prop_assert_eq!(after.gpr.get(other), registers.gpr.get(other));
                }
                let old = registers.gpr.get(number);
                let new = after.gpr.get(number);
                match destination.part {
                    RegisterPart::Low8 => prop_assert_eq!(new & !0xff, old & !0xff),
                    RegisterPart::High8 => prop_assert_eq!(new & !0xff00, old & !0xff00),
                    RegisterPart::Low16 => prop_assert_eq!(new & !0xffff, old & !0xffff),
                    RegisterPart::Low32 => prop_assert_eq!(new >> 32, 0),
                    RegisterPart::Full => {}
                }
            }
        }
    }

    /// Random 4 KiB mappings built in each paging mode translate back exactly; other
    /// pages do not translate.
    #[test]
    fn built_mappings_translate_back(
        mode in 0u8..3,
        pages in proptest::collection::btree_map(any::<u64>(), 0u64..0x10_0000, 1..12),
        probe in any::<u64>(),
        offset in 0u64..0x1000,
    ) {
        let mut ram = Ram::new(0x80000, 0x2000);
        let (registers, canonical): (GuestRegisters, fn(u64) -> u64) = match mode {
            0 => (long_mode(0x1000, 0), |l| (((l << 16) as i64) >> 16) as u64 & !0xfff),
            1 => (protected_paging(0x1fe0, 0, true), |l| l & 0xffff_f000),
            _ => (protected_paging(0x1000, 0, false), |l| l & 0xffff_f000),
        };
        let mut mapped = BTreeMap::new();
        for (linear, frame) in pages {
            let linear = canonical(linear);
            let gpa = frame << 12;
            let gpa = if mode == 2 { gpa & 0xffff_f000 } else { gpa };
            mapped.insert(linear, gpa);
        }
        for (&linear, &gpa) in &mapped {
            match mode {
                0 => ram.map_long(0x1000, linear, gpa, 1, P | RW),
                1 => ram.map_pae(0x1fe0, linear, gpa, 1, P | RW),
                _ => ram.map_legacy(0x1000, linear, gpa, false, P | RW),
            }
        }
        for (&linear, &gpa) in &mapped {
            prop_assert_eq!(translate(ram.memory(), &registers, linear + offset), Ok(gpa + offset));
        }
        let probe = canonical(probe);
        if !mapped.contains_key(&probe) {
            prop_assert!(
                matches!(
                    translate(ram.memory(), &registers, probe + offset),
                    Err(WalkError::NotPresent { .. })
                ),
                "unmapped page translated"
            );
        }
    }
}

#[test]
fn the_common_exit_instructions_measure_the_same_with_and_without_the_decoder() {
    for bytes in [
        &[0xf4][..],
        &[0x0f, 0xa2],
        &[0x0f, 0x32],
        &[0x0f, 0x30],
        &[0x0f, 0x08],
        &[0x0f, 0x09],
        &[0x0f, 0x01, 0xd9],
    ] {
        let mut padded = [0x90u8; 15];
        padded[..bytes.len()].copy_from_slice(bytes);
        for bitness in [16, 32, 64] {
            assert_eq!(
                super::unprefixed_exit_length(&padded),
                instruction_length(&padded, bitness).ok(),
                "{bytes:x?} in {bitness}-bit code"
            );
        }
    }
    // A prefix is left to the decoder.
    assert_eq!(super::unprefixed_exit_length(&[0x66, 0x0f, 0xa2]), None);
}
