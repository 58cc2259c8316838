//! The Linux x86 64-bit boot protocol for a bzImage.
//!
//! A bzImage is a real-mode setup part ((setup_sects + 1) × 512 bytes, the boot sector
//! first) followed by the protected-mode kernel. The loader skips the setup code
//! entirely: it copies the setup header into a zero page (`struct boot_params`), loads
//! the protected-mode kernel, and enters it at its 64-bit entry (load address + 0x200)
//! in long mode with identity-mapped page tables, as the boot protocol's "64-bit boot
//! protocol" section describes. Kernels older than boot protocol 2.12 (Linux 3.8) or
//! without a 64-bit entry are refused.
//!
//! Guest-physical layout (all below 1 MiB is usable RAM up to [`EBDA_START`]):
//!
//! | address               | what                                                  |
//! |-----------------------|-------------------------------------------------------|
//! | [`ZERO_PAGE`] 0x7000  | `boot_params`, 4 KiB; RSI points here                 |
//! | [`GDT`] 0x8000        | GDT: null, null, code64 (0x10), data (0x18)           |
//! | [`PML4`] 0x9000       | PML4 → PDPT at 0xa000 → four PDs at 0xb000..0xf000    |
//! | [`CMDLINE`] 0x20000   | the command line, NUL-terminated                      |
//! | `pref_address` or 16 MiB | the protected-mode kernel, `init_size` bytes reserved |
//! | as high as allowed    | the initrd, page-aligned, below `initrd_addr_max` and RAM end |

use super::{
    Bytes, EBDA_START, HIGH_MEMORY, ImageKind, LoadError, Loaded, PAGE_SIZE, align_up, bytes_at,
    memory_map, put, u16_at, u32_at, u64_at,
};
use crate::memory::GuestMemory;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use esker_kernel_core::virt::vcpu::{
    DescriptorTable, GuestRegisters, LINUX_BOOT_CS, LINUX_BOOT_DS,
};
use esker_kernel_core::virt::x86::SegmentAttributes;

/// The boot sector signature at 0x1fe.
pub const BOOT_FLAG: u16 = 0xaa55;
/// "HdrS" at 0x202, little-endian.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// Oldest boot protocol the loader accepts: 2.12 has `xloadflags` and the 64-bit entry
/// flag, `init_size` and `pref_address` came with 2.10.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit 0: the protected-mode kernel is loaded at 1 MiB or above.
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit 7: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `type_of_loader` for a loader without an assigned ID.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// Guest-physical address of the zero page.
pub const ZERO_PAGE: u64 = 0x7000;
/// Guest-physical address of the GDT.
pub const GDT: u64 = 0x8000;
/// Bytes of GDT: four descriptors.
pub const GDT_SIZE: u64 = 4 * 8;
/// Guest-physical address of the PML4 (CR3).
pub const PML4: u64 = 0x9000;
/// Guest-physical address of the PDPT.
pub const PDPT: u64 = 0xa000;
/// Guest-physical address of the first of the four page directories (0xb000..0xf000).
pub const PAGE_DIRECTORIES: u64 = 0xb000;
/// Guest-physical address of the command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Where a kernel goes whose `pref_address` is unusable (rounded up to its alignment).
pub const DEFAULT_LOAD_ADDRESS: u64 = 0x100_0000;

/// The kernel's 64-bit entry point is this far into the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;

// Setup header and zero page offsets (the header sits at the same offset in both).
const SETUP_SECTS: u64 = 0x1f1;
const SYSSIZE: u64 = 0x1f4;
const BOOT_FLAG_OFFSET: u64 = 0x1fe;
const JUMP: u64 = 0x200;
const HEADER: u64 = 0x202;
const VERSION: u64 = 0x206;
const KERNEL_VERSION: u64 = 0x20e;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const CODE32_START: usize = 0x214;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const HEAP_END_PTR: usize = 0x224;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: u64 = 0x22c;
const KERNEL_ALIGNMENT: u64 = 0x230;
const RELOCATABLE_KERNEL: u64 = 0x234;
const XLOADFLAGS: u64 = 0x236;
const CMDLINE_SIZE: u64 = 0x238;
const PREF_ADDRESS: u64 = 0x258;
const INIT_SIZE: u64 = 0x260;
/// The end of `init_size`, the last field the loader reads.
const HEADER_END_2_12: u64 = 0x264;
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
const E820_ENTRY_SIZE: usize = 20;
const ZERO_PAGE_SIZE: usize = 0x1000;

/// Page-table entry bits.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;

/// The setup-header fields the loader uses, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (major in the high byte).
    pub version: u16,
    /// Bytes of real-mode setup, boot sector included ((setup_sects + 1) × 512).
    pub setup_bytes: u64,
    /// Bytes of protected-mode kernel (syssize × 16).
    pub kernel_bytes: u64,
    /// File offset where the header ends (0x202 + the byte at 0x201).
    pub header_end: u64,
    /// Highest address the initrd may occupy (inclusive).
    pub initrd_addr_max: u32,
    /// Alignment a relocated kernel needs (a power of two when relocatable).
    pub kernel_alignment: u32,
    /// Whether the kernel may be loaded anywhere suitably aligned.
    pub relocatable: bool,
    /// Longest command line, without its NUL.
    pub cmdline_size: u32,
    /// Where the kernel prefers to be loaded.
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address before it reads the memory map.
    pub init_size: u32,
    /// The kernel version string's first word ("6.1.0-18-amd64"), when readable.
    pub kernel_version: Option<String>,
}

impl SetupHeader {
    /// Reads and checks the setup header of `image`.
    pub fn parse(image: &[u8]) -> Result<Self, LoadError> {
        let length = image.len() as u64;
        if image.get(HEADER as usize..HEADER as usize + 4).is_none() {
            return Err(LoadError::BzImageTooShort { length });
        }
        if u32_at(image, HEADER) != Some(HEADER_MAGIC) {
            return Err(LoadError::NoBzImageSignature);
        }
        let boot_flag = u16_at(image, BOOT_FLAG_OFFSET).unwrap_or(0);
        if boot_flag != BOOT_FLAG {
            return Err(LoadError::BadBootFlag { found: boot_flag });
        }
        let version = u16_at(image, VERSION).ok_or(LoadError::HeaderTruncated {
            needed: VERSION + 2,
            have: length,
        })?;
        if version < MIN_PROTOCOL {
            return Err(LoadError::OldBootProtocol { version });
        }
        // The jump at 0x200 skips the header: its 8-bit displacement marks the end.
        let header_end = HEADER + u64::from(image[JUMP as usize + 1]);
        if header_end < HEADER_END_2_12 {
            return Err(LoadError::HeaderTruncated {
                needed: HEADER_END_2_12,
                have: header_end,
            });
        }
        if length < header_end {
            return Err(LoadError::HeaderTruncated {
                needed: header_end,
                have: length,
            });
        }
        // Every field below lies before HEADER_END_2_12 <= header_end <= length.
        let u16_field = |offset| u16_at(image, offset).unwrap_or(0);
        let u32_field = |offset| u32_at(image, offset).unwrap_or(0);
        if u16_field(XLOADFLAGS) & XLF_KERNEL_64 == 0 {
            return Err(LoadError::Not64Bit);
        }
        let setup_sects = match image[SETUP_SECTS as usize] {
            0 => 4,
            sects => u64::from(sects),
        };
        let setup_bytes = (setup_sects + 1) * 512;
        if length < setup_bytes {
            return Err(LoadError::SetupTruncated {
                setup_bytes,
                file_bytes: length,
            });
        }
        let syssize = u32_field(SYSSIZE);
        if syssize == 0 {
            return Err(LoadError::BadHeaderField {
                field: "syssize",
                value: 0,
                problem: "so there is no protected-mode kernel",
            });
        }
        let kernel_bytes = u64::from(syssize) * 16;
        if length - setup_bytes < kernel_bytes {
            return Err(LoadError::KernelTruncated {
                expected: kernel_bytes,
                actual: length - setup_bytes,
            });
        }
        let relocatable = image[RELOCATABLE_KERNEL as usize] != 0;
        let kernel_alignment = u32_field(KERNEL_ALIGNMENT);
        if relocatable && !kernel_alignment.is_power_of_two() {
            return Err(LoadError::BadHeaderField {
                field: "kernel_alignment",
                value: kernel_alignment.into(),
                problem: "not a power of two",
            });
        }
        Ok(Self {
            version,
            setup_bytes,
            kernel_bytes,
            header_end,
            initrd_addr_max: u32_field(INITRD_ADDR_MAX),
            kernel_alignment,
            relocatable,
            cmdline_size: u32_field(CMDLINE_SIZE),
            pref_address: u64_at(image, PREF_ADDRESS).unwrap_or(0),
            init_size: u32_field(INIT_SIZE),
            kernel_version: kernel_version(image, setup_bytes),
        })
    }

    /// Bytes the kernel occupies from its load address: `init_size`, or the kernel's own
    /// size if a (broken) header says less.
    pub fn footprint(&self) -> u64 {
        u64::from(self.init_size).max(self.kernel_bytes)
    }

    /// Where the kernel goes in `ram` bytes of guest RAM: `pref_address` if it is
    /// aligned, at or above 1 MiB and leaves room for [`Self::footprint`]; otherwise
    /// (relocatable kernels only) 16 MiB rounded up to `kernel_alignment`.
    pub fn load_address(&self, ram: u64) -> Result<u64, LoadError> {
        let size = self.footprint();
        let fits = |address: u64| {
            address >= HIGH_MEMORY && address.checked_add(size).is_some_and(|end| end <= ram)
        };
        let aligned = !self.relocatable
            || self
                .pref_address
                .is_multiple_of(u64::from(self.kernel_alignment));
        if aligned && fits(self.pref_address) {
            return Ok(self.pref_address);
        }
        if !self.relocatable {
            return Err(LoadError::NotRelocatable {
                address: self.pref_address,
                size,
                ram,
            });
        }
        // kernel_alignment is a power of two of at most 2^31: no overflow.
        let address = align_up(DEFAULT_LOAD_ADDRESS, self.kernel_alignment.into())
            .unwrap_or(DEFAULT_LOAD_ADDRESS);
        if fits(address) {
            Ok(address)
        } else {
            Err(LoadError::NotEnoughMemory { address, size, ram })
        }
    }
}

/// The first word of the version string the header points to, if it is printable.
fn kernel_version(image: &[u8], setup_bytes: u64) -> Option<String> {
    let pointer = u16_at(image, KERNEL_VERSION)?;
    if pointer == 0 {
        return None;
    }
    let start = u64::from(pointer) + 0x200;
    if start >= setup_bytes {
        return None;
    }
    let available = (setup_bytes - start).min(128);
    let text = bytes_at(image, start, available)?;
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let word = &text[..end];
    if word.is_empty() || !word.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    core::str::from_utf8(word).ok().map(String::from)
}

/// A GDT descriptor for a flat 4 GiB segment with `attributes` (the VMCB layout: type,
/// S, DPL, P in bits 0–7; AVL, L, D/B, G in bits 8–11).
pub const fn flat_descriptor(attributes: SegmentAttributes) -> u64 {
    let access = (attributes.0 & 0xff) as u64;
    let flags = ((attributes.0 >> 8) & 0xf) as u64;
    0xffff | (access << 40) | (0xf << 48) | (flags << 52)
}

/// `cmdline` with the guest's TSC rate (`tsc_early_khz=<khz>`) added, unless it sets
/// one already or the rate is unknown (0). Linux otherwise calibrates its TSC against the
/// PIT, which takes thousands of port reads in a few milliseconds — too many for a guest
/// whose every port access is an exit — fails, marks the TSC unstable and keeps time with
/// jiffies; told the rate, it uses the TSC as its clock and the TSC-deadline timer.
pub fn command_line_with_tsc(cmdline: &str, tsc_khz: u64) -> String {
    let given = cmdline
        .split_ascii_whitespace()
        .any(|word| word.starts_with("tsc_early_khz="));
    if given || tsc_khz == 0 {
        return cmdline.into();
    }
    let separator = if cmdline.is_empty() { "" } else { " " };
    format!("{cmdline}{separator}tsc_early_khz={tsc_khz}")
}

/// Loads the bzImage `image` into `memory` with an optional `initrd` and `cmdline`.
pub fn load<M: GuestMemory + ?Sized>(
    memory: &mut M,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<Loaded, LoadError> {
    let header = SetupHeader::parse(image)?;
    let ram = memory.size();
    let address = header.load_address(ram)?;
    let kernel = bytes_at(image, header.setup_bytes, header.kernel_bytes).ok_or(
        LoadError::KernelTruncated {
            expected: header.kernel_bytes,
            actual: (image.len() as u64).saturating_sub(header.setup_bytes),
        },
    )?;

    // The command line: NUL-free, within the kernel's limit and the loader's buffer.
    let cmdline = cmdline.as_bytes();
    if cmdline.contains(&0) {
        return Err(LoadError::CommandLineHasNul);
    }
    let max = u64::from(header.cmdline_size).min(EBDA_START - CMDLINE - 1);
    if cmdline.len() as u64 > max {
        return Err(LoadError::CommandLineTooLong {
            length: cmdline.len() as u64,
            max,
        });
    }

    // The initrd: page-aligned, as high as allowed, above the kernel's init_size.
    let initrd = initrd.filter(|initrd| !initrd.is_empty());
    let initrd_address = match initrd {
        None => None,
        Some(initrd) => {
            let size = initrd.len() as u64;
            // The kernel fits in RAM, so its end does not overflow.
            let start = align_up(address + header.footprint(), PAGE_SIZE).unwrap_or(u64::MAX);
            let limit = (u64::from(header.initrd_addr_max) + 1).min(ram);
            let too_large = LoadError::InitrdTooLarge { size, start, limit };
            let top = limit.checked_sub(size).ok_or(too_large.clone())? & !(PAGE_SIZE - 1);
            if top < start {
                return Err(too_large);
            }
            Some(top)
        }
    };

    // The kernel's own load checks leave RAM above 1 MiB, so all the low structures fit.
    let mut zero_page = vec![0u8; ZERO_PAGE_SIZE];
    let header_bytes = bytes_at(image, SETUP_SECTS, header.header_end - SETUP_SECTS).ok_or(
        LoadError::HeaderTruncated {
            needed: header.header_end,
            have: image.len() as u64,
        },
    )?;
    put(&mut zero_page, SETUP_SECTS as usize, header_bytes);
    zero_page[TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    zero_page[LOADFLAGS] = (zero_page[LOADFLAGS] | LOADED_HIGH) & !CAN_USE_HEAP;
    put(&mut zero_page, HEAP_END_PTR, &0u16.to_le_bytes());
    put(
        &mut zero_page,
        CODE32_START,
        &(address as u32).to_le_bytes(),
    );
    put(
        &mut zero_page,
        CMD_LINE_PTR,
        &(CMDLINE as u32).to_le_bytes(),
    );
    put(
        &mut zero_page,
        EXT_CMD_LINE_PTR,
        &((CMDLINE >> 32) as u32).to_le_bytes(),
    );
    let (initrd_image, initrd_size) = match (initrd_address, initrd) {
        (Some(at), Some(initrd)) => (at, initrd.len() as u64),
        _ => (0, 0),
    };
    put(
        &mut zero_page,
        RAMDISK_IMAGE,
        &(initrd_image as u32).to_le_bytes(),
    );
    put(
        &mut zero_page,
        RAMDISK_SIZE,
        &(initrd_size as u32).to_le_bytes(),
    );
    put(
        &mut zero_page,
        EXT_RAMDISK_IMAGE,
        &((initrd_image >> 32) as u32).to_le_bytes(),
    );
    put(
        &mut zero_page,
        EXT_RAMDISK_SIZE,
        &((initrd_size >> 32) as u32).to_le_bytes(),
    );
    let mut entries = 0;
    for (start, length, usable) in memory_map(ram) {
        let kind = if usable { E820_RAM } else { E820_RESERVED };
        let at = E820_TABLE + entries * E820_ENTRY_SIZE;
        put(&mut zero_page, at, &start.to_le_bytes());
        put(&mut zero_page, at + 8, &length.to_le_bytes());
        put(&mut zero_page, at + 16, &kind.to_le_bytes());
        entries += 1;
    }
    zero_page[E820_ENTRIES] = entries as u8;

    let needed = CMDLINE + cmdline.len() as u64 + 1;
    if ram < needed {
        return Err(LoadError::RamTooSmall { needed, ram });
    }
    memory.write(ZERO_PAGE, &zero_page)?;
    write_gdt(memory)?;
    write_page_tables(memory)?;
    memory.write(CMDLINE, cmdline)?;
    memory.write(CMDLINE + cmdline.len() as u64, &[0])?;
    memory.write(address, kernel)?;
    if let (Some(at), Some(initrd)) = (initrd_address, initrd) {
        memory.write(at, initrd)?;
    }

    let mut registers = GuestRegisters::long_mode(
        address + ENTRY_64_OFFSET,
        PML4,
        DescriptorTable {
            base: GDT,
            limit: (GDT_SIZE - 1) as u16,
        },
    );
    registers.gpr.rsi = ZERO_PAGE;

    let version = header
        .kernel_version
        .as_deref()
        .map(|version| format!("Linux {version} bzImage"))
        .unwrap_or_else(|| String::from("Linux bzImage"));
    let initrd_text = match (initrd_address, initrd) {
        (Some(at), Some(initrd)) => format!("initrd {} at {at:#x}", Bytes(initrd.len() as u64)),
        _ => String::from("no initrd"),
    };
    let summary = format!(
        "{version} (protocol {}.{}) at {address:#x}, {initrd_text}, command line {} bytes",
        header.version >> 8,
        header.version & 0xff,
        cmdline.len()
    );
    Ok(Loaded {
        registers,
        kind: ImageKind::LinuxBzImage,
        summary,
    })
}

/// The GDT: two null descriptors, then flat 64-bit code at [`LINUX_BOOT_CS`] and flat
/// data at [`LINUX_BOOT_DS`].
fn write_gdt<M: GuestMemory + ?Sized>(memory: &mut M) -> Result<(), LoadError> {
    let mut gdt = [0u8; GDT_SIZE as usize];
    let code = usize::from(LINUX_BOOT_CS);
    let data = usize::from(LINUX_BOOT_DS);
    put(
        &mut gdt,
        code,
        &flat_descriptor(SegmentAttributes::CODE64).to_le_bytes(),
    );
    put(
        &mut gdt,
        data,
        &flat_descriptor(SegmentAttributes::DATA).to_le_bytes(),
    );
    memory.write(GDT, &gdt)?;
    Ok(())
}

/// Identity-maps the first 4 GiB with 2 MiB pages: PML4[0] → PDPT, PDPT[0..4] → four
/// page directories of 512 large pages each.
fn write_page_tables<M: GuestMemory + ?Sized>(memory: &mut M) -> Result<(), LoadError> {
    let mut table = vec![0u8; PAGE_SIZE as usize];
    put(&mut table, 0, &(PDPT | PRESENT | WRITABLE).to_le_bytes());
    memory.write(PML4, &table)?;
    table.fill(0);
    for directory in 0..4u64 {
        let entry = (PAGE_DIRECTORIES + directory * PAGE_SIZE) | PRESENT | WRITABLE;
        put(&mut table, directory as usize * 8, &entry.to_le_bytes());
    }
    memory.write(PDPT, &table)?;
    for directory in 0..4u64 {
        for index in 0..512u64 {
            let frame = (directory * 512 + index) << 21;
            let entry = frame | PRESENT | WRITABLE | HUGE;
            put(&mut table, index as usize * 8, &entry.to_le_bytes());
        }
        memory.write(PAGE_DIRECTORIES + directory * PAGE_SIZE, &table)?;
    }
    Ok(())
}
