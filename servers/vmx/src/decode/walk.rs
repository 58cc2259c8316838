//! Guest linear → guest-physical translation: a software walk of the guest's own page
//! tables, read from guest RAM, in whatever paging mode the guest is in.
//!
//! | Mode | Condition | Tables | Page sizes |
//! |------|-----------|--------|------------|
//! | off | CR0.PG = 0 | none: identity (low 32 bits) | — |
//! | 32-bit | CR4.PAE = 0 | 2 levels of 32-bit entries | 4 KiB, 4 MiB with CR4.PSE (PSE-36 high bits included) |
//! | PAE | CR4.PAE = 1, EFER.LMA = 0 | 4 PDPTEs at a 32-byte aligned CR3, then 2 levels | 4 KiB, 2 MiB |
//! | 4-level | EFER.LMA = 1 | 4 levels | 4 KiB, 2 MiB, 1 GiB |
//! | 5-level | EFER.LMA = 1, CR4.LA57 = 1 | — | reported as unsupported |
//!
//! The walk only reads: it never sets accessed or dirty bits (the hardware already did
//! when the guest executed the instruction the monitor is looking at). It reports an
//! entry that is not present, one with bits set that the hardware treats as reserved (so
//! that the monitor never translates what the CPU would fault on), and a table that lies
//! outside guest RAM. Everything it reads is guest-controlled: no input makes it panic.
//!
//! [`walk`] returns the final permissions ([`Translation`]); [`translate_access`] also
//! checks them for one [`Access`] the way the CPU does (U/S, R/W with CR0.WP, NX with
//! EFER.NXE, SMEP, SMAP with RFLAGS.AC). Protection keys are not checked.

use crate::memory::GuestMemory;
use core::fmt;
use esker_kernel_core::virt::vcpu::GuestRegisters;
use esker_kernel_core::virt::x86::{cr0, cr4, efer, rflags};

/// Present.
const PRESENT: u64 = 1 << 0;
/// Writable.
const WRITABLE: u64 = 1 << 1;
/// User-accessible.
const USER: u64 = 1 << 2;
/// Page size: this entry maps a large page.
const PAGE_SIZE: u64 = 1 << 7;
/// The PAT bit of a large-page entry (not an address bit).
const LARGE_PAT: u64 = 1 << 12;
/// No-execute.
const NO_EXECUTE: u64 = 1 << 63;
/// Bits 12–51 of a 64-bit entry: the next table or the page frame.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 52–62: ignored in long mode, reserved in legacy PAE mode.
const HIGH_AVAILABLE: u64 = 0x7ff0_0000_0000_0000;
/// 32-bit paging: bits 13–20 of a 4 MiB PDE hold physical-address bits 32–39 (PSE-36).
const PSE36_HIGH: u64 = 0x001f_e000;
/// 32-bit paging: bit 21 of a 4 MiB PDE is reserved.
const PSE36_RESERVED: u64 = 1 << 21;

/// The 4 KiB page size every mode has.
pub const PAGE_SIZE_4K: u64 = 1 << 12;

/// How the guest translates linear addresses, from CR0.PG, CR4.PAE, CR4.LA57 and
/// EFER.LMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: linear addresses are physical (32 bits).
    Disabled,
    /// 32-bit paging (CR4.PAE clear).
    Legacy32,
    /// PAE paging outside long mode.
    Pae,
    /// 4-level long-mode paging.
    FourLevel,
    /// 5-level long-mode paging (CR4.LA57): not supported here.
    FiveLevel,
}

impl PagingMode {
    /// The mode `registers` select. Inconsistent combinations a CPU would refuse are
    /// resolved in a fixed order: CR0.PG first, then EFER.LMA, then CR4.PAE.
    pub const fn of(registers: &GuestRegisters) -> Self {
        if registers.cr0 & cr0::PG == 0 {
            Self::Disabled
        } else if registers.efer & efer::LMA != 0 {
            if registers.cr4 & cr4::LA57 != 0 {
                Self::FiveLevel
            } else {
                Self::FourLevel
            }
        } else if registers.cr4 & cr4::PAE != 0 {
            Self::Pae
        } else {
            Self::Legacy32
        }
    }
}

/// What an access does with the memory it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// One access to check against the guest's page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// A user-mode (CPL 3) access rather than a supervisor one.
    pub user: bool,
}

impl Access {
    /// An access of `kind` at the guest's current privilege level (CPL 3 is user; the CPL
    /// is SS.DPL, as the backends keep it).
    pub const fn at_cpl(kind: AccessKind, registers: &GuestRegisters) -> Self {
        Self {
            kind,
            user: registers.ss.attributes.dpl() == 3,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.user { "user" } else { "supervisor" };
        let what = match self.kind {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::Execute => "instruction fetch",
        };
        write!(f, "{who} {what}")
    }
}

/// A successful translation and the permissions the walk found, combined over every
/// level as the CPU combines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub gpa: u64,
    /// Size of the page that maps it (4 KiB with paging off).
    pub page_size: u64,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// Executable: no level has NX set (always true without EFER.NXE or in 32-bit paging).
    pub executable: bool,
    /// The mode that translated it.
    pub mode: PagingMode,
}

impl Translation {
    /// Whether the CPU would allow `access` through this translation, given the guest's
    /// CR0.WP, CR4.SMEP, CR4.SMAP and RFLAGS.AC. With paging off everything is allowed.
    pub const fn permits(&self, registers: &GuestRegisters, access: Access) -> bool {
        if matches!(self.mode, PagingMode::Disabled) {
            return true;
        }
        let write_protect = registers.cr0 & cr0::WP != 0;
        let smep = registers.cr4 & cr4::SMEP != 0;
        let smap = registers.cr4 & cr4::SMAP != 0 && registers.rflags & rflags::AC == 0;
        if access.user {
            return self.user
                && match access.kind {
                    AccessKind::Read => true,
                    AccessKind::Write => self.writable,
                    AccessKind::Execute => self.executable,
                };
        }
        match access.kind {
            AccessKind::Read => !(smap && self.user),
            AccessKind::Write => !(smap && self.user) && (self.writable || !write_protect),
            AccessKind::Execute => self.executable && !(smep && self.user),
        }
    }
}

/// Why a linear address does not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// An entry on the way has its present bit clear.
    NotPresent {
        /// The address being translated.
        linear: u64,
        /// Which level (1 = page table … 4 = PML4; the PAE PDPT is level 3).
        level: u8,
        /// Where the entry is.
        entry_gpa: u64,
    },
    /// An entry has a bit set that the CPU treats as reserved (a page fault with RSVD).
    Reserved {
        /// The address being translated.
        linear: u64,
        /// Which level.
        level: u8,
        /// Where the entry is.
        entry_gpa: u64,
        /// The entry.
        entry: u64,
    },
    /// An entry would be read from outside guest RAM.
    TableOutsideRam {
        /// The address being translated.
        linear: u64,
        /// Which level.
        level: u8,
        /// Where the entry would be.
        entry_gpa: u64,
    },
    /// In long mode, bits 63–47 of the address are not all equal (a #GP, not a #PF).
    NonCanonical {
        /// The address.
        linear: u64,
    },
    /// The guest uses 5-level paging, which this walker does not implement.
    FiveLevelPaging {
        /// The address.
        linear: u64,
    },
    /// The translation exists but does not allow the access.
    Denied {
        /// The address.
        linear: u64,
        /// The access refused.
        access: Access,
    },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPresent {
                linear,
                level,
                entry_gpa,
            } => write!(
                f,
                "guest page table entry for {linear:#x} at gpa {entry_gpa:#x} is not present \
                 (level {level})"
            ),
            Self::Reserved {
                linear,
                level,
                entry_gpa,
                entry,
            } => write!(
                f,
                "guest page table entry {entry:#x} for {linear:#x} at gpa {entry_gpa:#x} has \
                 reserved bits set (level {level})"
            ),
            Self::TableOutsideRam {
                linear,
                level,
                entry_gpa,
            } => write!(
                f,
                "guest page table entry for {linear:#x} at gpa {entry_gpa:#x} is outside guest \
                 RAM (level {level})"
            ),
            Self::NonCanonical { linear } => {
                write!(f, "guest linear address {linear:#x} is not canonical")
            }
            Self::FiveLevelPaging { linear } => write!(
                f,
                "cannot translate {linear:#x}: the guest uses 5-level paging (CR4.LA57), which \
                 is not supported"
            ),
            Self::Denied { linear, access } => write!(
                f,
                "guest page tables do not allow a {access} at {linear:#x}"
            ),
        }
    }
}

/// Translates `linear` to a guest-physical address without checking permissions. Outside
/// long mode only the low 32 bits of `linear` count.
pub fn translate<M: GuestMemory + ?Sized>(
    memory: &M,
    registers: &GuestRegisters,
    linear: u64,
) -> Result<u64, WalkError> {
    walk(memory, registers, linear).map(|translation| translation.gpa)
}

/// Translates `linear` for `access`, refusing what the CPU would refuse
/// ([`Translation::permits`]).
pub fn translate_access<M: GuestMemory + ?Sized>(
    memory: &M,
    registers: &GuestRegisters,
    linear: u64,
    access: Access,
) -> Result<u64, WalkError> {
    let translation = walk(memory, registers, linear)?;
    if translation.permits(registers, access) {
        Ok(translation.gpa)
    } else {
        Err(WalkError::Denied { linear, access })
    }
}

/// Walks the guest's page tables for `linear` and returns the translation with its
/// combined permissions. Outside long mode only the low 32 bits of `linear` count.
pub fn walk<M: GuestMemory + ?Sized>(
    memory: &M,
    registers: &GuestRegisters,
    linear: u64,
) -> Result<Translation, WalkError> {
    let mode = PagingMode::of(registers);
    let nxe = registers.efer & efer::NXE != 0;
    match mode {
        PagingMode::Disabled => Ok(Translation {
            gpa: linear & 0xffff_ffff,
            page_size: PAGE_SIZE_4K,
            writable: true,
            user: true,
            executable: true,
            mode,
        }),
        PagingMode::Legacy32 => {
            let pse = registers.cr4 & cr4::PSE != 0;
            walk_legacy32(memory, registers.cr3, linear & 0xffff_ffff, pse)
        }
        PagingMode::Pae => walk_pae(memory, registers.cr3, linear & 0xffff_ffff, nxe),
        PagingMode::FourLevel => walk_four_level(memory, registers.cr3, linear, nxe),
        PagingMode::FiveLevel => Err(WalkError::FiveLevelPaging { linear }),
    }
}

/// Where a directory entry leads.
enum Step {
    /// The next table's guest-physical address.
    Table(u64),
    /// A large page.
    Leaf(Translation),
}

/// The state of a walk through 64-bit entries (PAE and long mode).
struct Walker<'a, M: ?Sized> {
    memory: &'a M,
    linear: u64,
    /// Bits reserved in every entry of this mode.
    reserved: u64,
    writable: bool,
    user: bool,
    executable: bool,
    mode: PagingMode,
}

impl<M: GuestMemory + ?Sized> Walker<'_, M> {
    fn new(memory: &M, linear: u64, nxe: bool, mode: PagingMode) -> Walker<'_, M> {
        let mut reserved = if nxe { 0 } else { NO_EXECUTE };
        if mode == PagingMode::Pae {
            reserved |= HIGH_AVAILABLE;
        }
        Walker {
            memory,
            linear,
            reserved,
            writable: true,
            user: true,
            executable: true,
            mode,
        }
    }

    /// Reads the present entry `index` of the table at `table`, checking `extra_reserved`
    /// on top of the mode's reserved bits.
    fn entry(
        &self,
        table: u64,
        index: u64,
        level: u8,
        extra_reserved: u64,
    ) -> Result<u64, WalkError> {
        // `table` is at most 52 bits and `index` at most 511: no overflow.
        let entry_gpa = table + index * 8;
        let entry = self
            .memory
            .read_u64(entry_gpa)
            .map_err(|_| WalkError::TableOutsideRam {
                linear: self.linear,
                level,
                entry_gpa,
            })?;
        if entry & PRESENT == 0 {
            return Err(WalkError::NotPresent {
                linear: self.linear,
                level,
                entry_gpa,
            });
        }
        if entry & (self.reserved | extra_reserved) != 0 {
            return Err(WalkError::Reserved {
                linear: self.linear,
                level,
                entry_gpa,
                entry,
            });
        }
        Ok(entry)
    }

    /// Folds a (non-PDPTE) entry's permissions into the walk's.
    fn combine(&mut self, entry: u64) {
        self.writable &= entry & WRITABLE != 0;
        self.user &= entry & USER != 0;
        self.executable &= entry & NO_EXECUTE == 0;
    }

    /// Reads and folds in the directory entry at `level` (2–4; `shift` is the
    /// linear-address bit its index starts at): the next table, or a large page at
    /// levels 2 and 3.
    fn directory(&mut self, table: u64, level: u8, shift: u32) -> Result<Step, WalkError> {
        let index = (self.linear >> shift) & 0x1ff;
        let extra_reserved = if level == 4 { PAGE_SIZE } else { 0 };
        let entry = self.entry(table, index, level, extra_reserved)?;
        self.combine(entry);
        if entry & PAGE_SIZE == 0 {
            return Ok(Step::Table(entry & ADDRESS_MASK));
        }
        let size = 1u64 << shift;
        // The frame must be aligned to the page: its low address bits are reserved (bit
        // 12 is PAT).
        if entry & (size - 1) & ADDRESS_MASK & !LARGE_PAT != 0 {
            return Err(WalkError::Reserved {
                linear: self.linear,
                level,
                entry_gpa: table + index * 8,
                entry,
            });
        }
        let gpa = (entry & ADDRESS_MASK & !(size - 1)) | (self.linear & (size - 1));
        Ok(Step::Leaf(self.translation(gpa, size)))
    }

    /// Reads and folds in the page-table entry (level 1): the 4 KiB page.
    fn page(mut self, table: u64) -> Result<Translation, WalkError> {
        let entry = self.entry(table, (self.linear >> 12) & 0x1ff, 1, 0)?;
        self.combine(entry);
        let gpa = (entry & ADDRESS_MASK) | (self.linear & 0xfff);
        Ok(self.translation(gpa, PAGE_SIZE_4K))
    }

    fn translation(&self, gpa: u64, page_size: u64) -> Translation {
        Translation {
            gpa,
            page_size,
            writable: self.writable,
            user: self.user,
            executable: self.executable,
            mode: self.mode,
        }
    }
}

/// 4-level long-mode paging.
fn walk_four_level<M: GuestMemory + ?Sized>(
    memory: &M,
    cr3: u64,
    linear: u64,
    nxe: bool,
) -> Result<Translation, WalkError> {
    let high = (linear as i64) >> 47;
    if high != 0 && high != -1 {
        return Err(WalkError::NonCanonical { linear });
    }
    let mut walker = Walker::new(memory, linear, nxe, PagingMode::FourLevel);
    let mut table = cr3 & ADDRESS_MASK;
    for (level, shift) in [(4, 39), (3, 30), (2, 21)] {
        match walker.directory(table, level, shift)? {
            Step::Table(next) => table = next,
            Step::Leaf(translation) => return Ok(translation),
        }
    }
    walker.page(table)
}

/// PAE paging outside long mode: four PDPTEs at the 32-byte aligned CR3, then a page
/// directory and a page table of 64-bit entries.
fn walk_pae<M: GuestMemory + ?Sized>(
    memory: &M,
    cr3: u64,
    linear: u64,
    nxe: bool,
) -> Result<Translation, WalkError> {
    let mut walker = Walker::new(memory, linear, nxe, PagingMode::Pae);
    let pdpt = cr3 & 0xffff_ffe0;
    // A PDPTE carries no permissions (its R/W and U/S positions are reserved) and never
    // NX.
    let pdpte = walker.entry(pdpt, (linear >> 30) & 3, 3, NO_EXECUTE)?;
    match walker.directory(pdpte & ADDRESS_MASK, 2, 21)? {
        Step::Table(table) => walker.page(table),
        Step::Leaf(translation) => Ok(translation),
    }
}

/// 32-bit paging: a page directory and a page table of 32-bit entries, 4 MiB pages with
/// CR4.PSE.
fn walk_legacy32<M: GuestMemory + ?Sized>(
    memory: &M,
    cr3: u64,
    linear: u64,
    pse: bool,
) -> Result<Translation, WalkError> {
    let read = |level: u8, entry_gpa: u64| -> Result<u64, WalkError> {
        let entry = memory
            .read_u32(entry_gpa)
            .map_err(|_| WalkError::TableOutsideRam {
                linear,
                level,
                entry_gpa,
            })?;
        if u64::from(entry) & PRESENT == 0 {
            return Err(WalkError::NotPresent {
                linear,
                level,
                entry_gpa,
            });
        }
        Ok(u64::from(entry))
    };
    let pde_gpa = (cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4;
    let pde = read(2, pde_gpa)?;
    let mut writable = pde & WRITABLE != 0;
    let mut user = pde & USER != 0;
    let (gpa, page_size) = if pse && pde & PAGE_SIZE != 0 {
        if pde & PSE36_RESERVED != 0 {
            return Err(WalkError::Reserved {
                linear,
                level: 2,
                entry_gpa: pde_gpa,
                entry: pde,
            });
        }
        let frame = (pde & 0xffc0_0000) | ((pde & PSE36_HIGH) << (32 - 13));
        (frame | (linear & 0x3f_ffff), 1 << 22)
    } else {
        let pte_gpa = (pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4;
        let pte = read(1, pte_gpa)?;
        writable &= pte & WRITABLE != 0;
        user &= pte & USER != 0;
        ((pte & 0xffff_f000) | (linear & 0xfff), PAGE_SIZE_4K)
    };
    Ok(Translation {
        gpa,
        page_size,
        writable,
        user,
        executable: true,
        mode: PagingMode::Legacy32,
    })
}
