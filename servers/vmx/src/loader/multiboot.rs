//! Multiboot (version 0.6.96) kernels.
//!
//! The header (magic 0x1BADB002, flags, checksum; 4-byte aligned, wholly within the
//! first 8 KiB) says how to load the kernel: with flag bit 16 (the "a.out kludge") by the
//! addresses in the header, otherwise as an ELF executable by its `PT_LOAD` program
//! headers (ELF32 for i386 and ELF64 for x86-64, little-endian, loaded at their physical
//! addresses). The kernel starts in flat 32-bit protected mode, paging off, with EAX =
//! 0x2BADB002 and EBX = the Multiboot information structure.
//!
//! Required flags (bits 0–15) the loader honours: bit 0 (page-aligned modules) and bit 1
//! (memory information, always given). Any other required bit — including bit 2, video
//! mode information, which Esker cannot give — is refused, as the specification demands.
//!
//! Guest-physical layout of the information area (below the kernel's segments, which
//! may not overlap it):
//!
//! | address                 | what                                               |
//! |-------------------------|----------------------------------------------------|
//! | [`INFO`] 0x9000         | the information structure (flags 0, 2, 6, 9, and 3 with an initrd) |
//! | [`MMAP`] 0x9080         | the memory map, up to three 24-byte entries        |
//! | [`MODULES`] 0x90d0      | the module list (the initrd, if any)               |
//! | [`BOOT_LOADER_NAME`] 0x90e0 | "Esker vmx"                                    |
//! | [`MODULE_STRING`] 0x90f0 | the module's string, "initrd"                     |
//! | [`CMDLINE`] 0x9100      | the command line, NUL-terminated                   |
//!
//! An initrd becomes module 0, page-aligned after the highest kernel segment (and at or
//! above 1 MiB).

use super::{
    Bytes, EBDA_START, HIGH_MEMORY, ImageKind, LoadError, Loaded, PAGE_SIZE, align_up, bytes_at,
    memory_map, overlaps, put, u16_at, u32_at, u64_at,
};
use crate::memory::GuestMemory;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use esker_kernel_core::virt::vcpu::GuestRegisters;

/// The header's magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What the loader leaves in EAX.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header must lie wholly within this many bytes of the file.
pub const SEARCH_LIMIT: u64 = 8192;

/// Header flag 0: page-align modules.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag 1: the kernel needs memory information.
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag 2: the kernel needs video mode information.
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag 16: the a.out-kludge address fields are valid.
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Required header flags (bits 0–15) this loader satisfies.
pub const SUPPORTED_REQUIRED_FLAGS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO;

/// Information flag 0: `mem_lower`/`mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Information flag 2: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Information flag 3: `mods_count`/`mods_addr` are valid.
pub const INFO_MODULES: u32 = 1 << 3;
/// Information flag 6: `mmap_length`/`mmap_addr` are valid.
pub const INFO_MEMORY_MAP: u32 = 1 << 6;
/// Information flag 9: `boot_loader_name` is valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// Guest-physical address of the information structure (EBX).
pub const INFO: u64 = 0x9000;
/// Guest-physical address of the memory map.
pub const MMAP: u64 = 0x9080;
/// Guest-physical address of the module list.
pub const MODULES: u64 = 0x90d0;
/// Guest-physical address of the boot loader's name.
pub const BOOT_LOADER_NAME: u64 = 0x90e0;
/// Guest-physical address of the module's string.
pub const MODULE_STRING: u64 = 0x90f0;
/// Guest-physical address of the command line.
pub const CMDLINE: u64 = 0x9100;
/// The name the loader gives itself.
pub const LOADER_NAME: &str = "Esker vmx";
/// The string module 0 (the initrd) carries.
pub const INITRD_MODULE_STRING: &str = "initrd";

/// Bytes of one memory map entry (the `size` field, 4, plus the 20 it counts).
const MMAP_ENTRY_SIZE: usize = 24;

/// Addresses a 32-bit kernel can reach.
const FOUR_GIB: u64 = 1 << 32;

/// A Multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: u64,
    /// The flags word.
    pub flags: u32,
}

/// Finds the first Multiboot header with a good checksum in the first 8 KiB of `image`.
/// `Ok(None)` when there is no magic at all; an error when the only headers found have
/// bad checksums.
pub fn find_header(image: &[u8]) -> Result<Option<Header>, LoadError> {
    let limit = (image.len() as u64).min(SEARCH_LIMIT);
    let mut bad_checksum = None;
    let mut offset = 0;
    while offset + 12 <= limit {
        if u32_at(image, offset) == Some(HEADER_MAGIC) {
            let flags = u32_at(image, offset + 4).unwrap_or(0);
            let checksum = u32_at(image, offset + 8).unwrap_or(0);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                return Ok(Some(Header { offset, flags }));
            }
            bad_checksum.get_or_insert(offset);
        }
        offset += 4;
    }
    match bad_checksum {
        Some(offset) => Err(LoadError::MultibootChecksum { offset }),
        None => Ok(None),
    }
}

/// How an image is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// By the header's a.out-kludge addresses.
    AoutKludge,
    /// An ELF32 executable.
    Elf32,
    /// An ELF64 executable.
    Elf64,
}

/// One piece of the image to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address.
    pub address: u64,
    /// Where its bytes start in the file.
    pub file_offset: u64,
    /// Bytes taken from the file.
    pub file_size: u64,
    /// Bytes in memory (the rest after `file_size` is zeroed).
    pub memory_size: u64,
}

impl Segment {
    /// End of the segment in memory (exclusive); callers check it does not overflow.
    fn end(&self) -> u64 {
        self.address.saturating_add(self.memory_size)
    }
}

/// What the header or ELF headers say to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// How it was read.
    pub format: Format,
    /// Segments with a non-zero memory size.
    pub segments: Vec<Segment>,
    /// Physical entry point.
    pub entry: u32,
}

/// Reads the header of `image` and works out what to load where.
pub fn layout(image: &[u8]) -> Result<Layout, LoadError> {
    let header = find_header(image)?.ok_or(LoadError::UnknownFormat)?;
    let unsupported = header.flags & 0xffff & !SUPPORTED_REQUIRED_FLAGS;
    if unsupported != 0 {
        return Err(LoadError::MultibootUnsupportedFlags { flags: unsupported });
    }
    if header.flags & FLAG_AOUT_KLUDGE != 0 {
        aout_layout(image, header)
    } else {
        elf_layout(image)
    }
}

fn aout_layout(image: &[u8], header: Header) -> Result<Layout, LoadError> {
    let end = header.offset + 32;
    if end > SEARCH_LIMIT || end > image.len() as u64 {
        return Err(LoadError::MultibootHeaderTruncated {
            offset: header.offset,
        });
    }
    let field = |index: u64| u64::from(u32_at(image, header.offset + 12 + 4 * index).unwrap_or(0));
    let (header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr) =
        (field(0), field(1), field(2), field(3), field(4));
    let bad = |problem| LoadError::MultibootBadAddresses { problem };
    if load_addr > header_addr {
        return Err(bad("load_addr is above header_addr"));
    }
    let file_offset = header
        .offset
        .checked_sub(header_addr - load_addr)
        .ok_or(bad("load_addr lies before the start of the file"))?;
    let file_length = image.len() as u64;
    let file_size = if load_end_addr == 0 {
        file_length - file_offset
    } else {
        if load_end_addr < load_addr {
            return Err(bad("load_end_addr is below load_addr"));
        }
        let size = load_end_addr - load_addr;
        if file_offset + size > file_length {
            return Err(bad("load_end_addr lies beyond the end of the file"));
        }
        size
    };
    let memory_size = if bss_end_addr == 0 {
        file_size
    } else {
        if bss_end_addr < load_addr + file_size {
            return Err(bad("bss_end_addr is below load_end_addr"));
        }
        bss_end_addr - load_addr
    };
    let segment = Segment {
        address: load_addr,
        file_offset,
        file_size,
        memory_size,
    };
    if !(load_addr..segment.end()).contains(&entry_addr) {
        return Err(LoadError::EntryOutsideImage { entry: entry_addr });
    }
    let segments = if memory_size > 0 {
        vec![segment]
    } else {
        Vec::new()
    };
    Ok(Layout {
        format: Format::AoutKludge,
        segments,
        entry: entry_addr as u32,
    })
}

/// ELF program header type of a loadable segment.
const PT_LOAD: u32 = 1;
/// ELF executable file type.
const ET_EXEC: u16 = 2;
/// i386.
const EM_386: u16 = 3;
/// x86-64.
const EM_X86_64: u16 = 62;

fn elf_layout(image: &[u8]) -> Result<Layout, LoadError> {
    let bad = |problem| LoadError::BadElf { problem };
    if image.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(bad(
            "not an ELF file, and the Multiboot header has no a.out-kludge addresses (flag 16)",
        ));
    }
    let elf64 = match image.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(bad("unknown ELF class (neither 32- nor 64-bit)")),
    };
    if image.get(5) != Some(&1) {
        return Err(bad("not little-endian"));
    }
    let header_size = if elf64 { 64 } else { 52 };
    if (image.len() as u64) < header_size {
        return Err(bad("the file is shorter than its ELF header"));
    }
    // Every header field below lies within header_size bytes.
    let half = |offset| u16_at(image, offset).unwrap_or(0);
    let address = |offset| {
        if elf64 {
            u64_at(image, offset).unwrap_or(0)
        } else {
            u64::from(u32_at(image, offset).unwrap_or(0))
        }
    };
    if half(16) != ET_EXEC {
        return Err(bad("not an executable (e_type is not ET_EXEC)"));
    }
    let machine = half(18);
    if (elf64 && machine != EM_X86_64) || (!elf64 && machine != EM_386) {
        return Err(bad("not an x86 executable (e_machine)"));
    }
    let (entry, phoff, phentsize, phnum) = if elf64 {
        (
            address(24),
            address(32),
            u64::from(half(54)),
            u64::from(half(56)),
        )
    } else {
        (
            address(24),
            address(28),
            u64::from(half(42)),
            u64::from(half(44)),
        )
    };
    let min_phentsize = if elf64 { 56 } else { 32 };
    if phnum > 0 && phentsize < min_phentsize {
        return Err(bad("program headers are smaller than the ELF class needs"));
    }
    let table_size = phentsize * phnum;
    if phoff
        .checked_add(table_size)
        .is_none_or(|end| end > image.len() as u64)
    {
        return Err(bad("the program headers lie beyond the end of the file"));
    }
    let mut segments = Vec::new();
    // (virtual start, physical start, memory size) of each segment, for the entry.
    let mut ranges = Vec::new();
    for index in 0..phnum {
        let ph = phoff + index * phentsize;
        // Within the table checked above.
        let p_type = u32_at(image, ph).unwrap_or(0);
        if p_type != PT_LOAD {
            continue;
        }
        let (offset, vaddr, paddr, file_size, memory_size) = if elf64 {
            (
                u64_at(image, ph + 8).unwrap_or(0),
                u64_at(image, ph + 16).unwrap_or(0),
                u64_at(image, ph + 24).unwrap_or(0),
                u64_at(image, ph + 32).unwrap_or(0),
                u64_at(image, ph + 40).unwrap_or(0),
            )
        } else {
            let field = |at| u64::from(u32_at(image, ph + at).unwrap_or(0));
            (field(4), field(8), field(12), field(16), field(20))
        };
        if file_size > memory_size {
            return Err(bad("a segment has more file bytes than memory bytes"));
        }
        if offset
            .checked_add(file_size)
            .is_none_or(|end| end > image.len() as u64)
        {
            return Err(bad("a segment's bytes lie beyond the end of the file"));
        }
        if memory_size == 0 {
            continue;
        }
        ranges.push((vaddr, paddr, memory_size));
        segments.push(Segment {
            address: paddr,
            file_offset: offset,
            file_size,
            memory_size,
        });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segments"));
    }
    // The entry is usually virtual: translate it through the segment that holds it,
    // else take it as physical if a segment is loaded there.
    let inside = |start: u64, size: u64| entry >= start && entry - start < size;
    let physical = ranges
        .iter()
        .find(|&&(vaddr, _, size)| inside(vaddr, size))
        .map(|&(vaddr, paddr, _)| paddr.wrapping_add(entry - vaddr))
        .or_else(|| {
            ranges
                .iter()
                .any(|&(_, paddr, size)| inside(paddr, size))
                .then_some(entry)
        })
        .ok_or(LoadError::EntryOutsideImage { entry })?;
    let entry32 = u32::try_from(physical).map_err(|_| LoadError::EntryOutsideImage { entry })?;
    Ok(Layout {
        format: if elf64 { Format::Elf64 } else { Format::Elf32 },
        segments,
        entry: entry32,
    })
}

/// Loads the Multiboot kernel `image` into `memory`, with `initrd` as module 0 and
/// `cmdline` as the kernel's command line.
pub fn load<M: GuestMemory + ?Sized>(
    memory: &mut M,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<Loaded, LoadError> {
    let layout = layout(image)?;
    let ram = memory.size();

    let cmdline = cmdline.as_bytes();
    if cmdline.contains(&0) {
        return Err(LoadError::CommandLineHasNul);
    }
    let max = EBDA_START - CMDLINE - 1;
    if cmdline.len() as u64 > max {
        return Err(LoadError::CommandLineTooLong {
            length: cmdline.len() as u64,
            max,
        });
    }
    let info_end = CMDLINE + cmdline.len() as u64 + 1;
    if ram < info_end {
        return Err(LoadError::RamTooSmall {
            needed: info_end,
            ram,
        });
    }

    // Every segment in RAM, below 4 GiB, clear of the information area and the hole.
    let reachable = ram.min(FOUR_GIB);
    let mut kernel_end = 0;
    for segment in &layout.segments {
        let start = segment.address;
        let end = start
            .checked_add(segment.memory_size)
            .filter(|&end| end <= reachable)
            .ok_or(LoadError::SegmentOutsideRam {
                start,
                end: segment.end(),
                ram: reachable,
            })?;
        for (what, area_start, area_end) in [
            ("the Multiboot information area", INFO, info_end),
            ("the legacy BIOS and VGA area", EBDA_START, HIGH_MEMORY),
        ] {
            if overlaps((start, end), (area_start, area_end)) {
                return Err(LoadError::Overlap {
                    start,
                    end,
                    what,
                    area_start,
                    area_end,
                });
            }
        }
        kernel_end = kernel_end.max(end);
    }

    // The initrd, as module 0: page-aligned after the kernel, above 1 MiB.
    let initrd = initrd.filter(|initrd| !initrd.is_empty());
    let module = match initrd {
        None => None,
        Some(initrd) => {
            let size = initrd.len() as u64;
            // kernel_end <= 4 GiB: no overflow.
            let start = align_up(kernel_end.max(HIGH_MEMORY), PAGE_SIZE).unwrap_or(u64::MAX);
            if start.checked_add(size).is_none_or(|end| end > reachable) {
                return Err(LoadError::InitrdTooLarge {
                    size,
                    start,
                    limit: reachable,
                });
            }
            Some((start, initrd))
        }
    };

    // The information area, built in one buffer from INFO to the command line's NUL.
    let mut info = vec![0u8; (info_end - INFO) as usize];
    let at = |address: u64| (address - INFO) as usize;
    let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEMORY_MAP | INFO_BOOT_LOADER_NAME;
    let mem_lower = (ram.min(EBDA_START) / 1024) as u32;
    let mem_upper = (reachable.saturating_sub(HIGH_MEMORY) / 1024) as u32;
    put(&mut info, 4, &mem_lower.to_le_bytes());
    put(&mut info, 8, &mem_upper.to_le_bytes());
    put(&mut info, 16, &(CMDLINE as u32).to_le_bytes());
    if let Some((start, initrd)) = module {
        flags |= INFO_MODULES;
        put(&mut info, 20, &1u32.to_le_bytes());
        put(&mut info, 24, &(MODULES as u32).to_le_bytes());
        let end = start + initrd.len() as u64;
        put(&mut info, at(MODULES), &(start as u32).to_le_bytes());
        put(&mut info, at(MODULES) + 4, &(end as u32).to_le_bytes());
        put(
            &mut info,
            at(MODULES) + 8,
            &(MODULE_STRING as u32).to_le_bytes(),
        );
        put(
            &mut info,
            at(MODULE_STRING),
            INITRD_MODULE_STRING.as_bytes(),
        );
    }
    let mut mmap_length = 0;
    for (start, length, usable) in memory_map(reachable) {
        let entry = at(MMAP) + mmap_length;
        put(&mut info, entry, &20u32.to_le_bytes());
        put(&mut info, entry + 4, &start.to_le_bytes());
        put(&mut info, entry + 12, &length.to_le_bytes());
        put(
            &mut info,
            entry + 20,
            &(if usable { 1u32 } else { 2 }).to_le_bytes(),
        );
        mmap_length += MMAP_ENTRY_SIZE;
    }
    put(&mut info, 44, &(mmap_length as u32).to_le_bytes());
    put(&mut info, 48, &(MMAP as u32).to_le_bytes());
    put(&mut info, 64, &(BOOT_LOADER_NAME as u32).to_le_bytes());
    put(&mut info, at(BOOT_LOADER_NAME), LOADER_NAME.as_bytes());
    put(&mut info, at(CMDLINE), cmdline);
    put(&mut info, 0, &flags.to_le_bytes());

    for segment in &layout.segments {
        let bytes =
            bytes_at(image, segment.file_offset, segment.file_size).ok_or(LoadError::BadElf {
                problem: "a segment's bytes lie beyond the end of the file",
            })?;
        memory.write(segment.address, bytes)?;
        memory.fill_bytes(
            segment.address + segment.file_size,
            segment.memory_size - segment.file_size,
            0,
        )?;
    }
    memory.write(INFO, &info)?;
    if let Some((start, initrd)) = module {
        memory.write(start, initrd)?;
    }

    let mut registers = GuestRegisters::protected_mode_flat(layout.entry);
    registers.gpr.rax = BOOTLOADER_MAGIC.into();
    registers.gpr.rbx = INFO;

    let format = match layout.format {
        Format::AoutKludge => "a.out-kludge",
        Format::Elf32 => "ELF32",
        Format::Elf64 => "ELF64",
    };
    let low = layout.segments.iter().map(|s| s.address).min().unwrap_or(0);
    let count = layout.segments.len();
    let plural = if count == 1 { "" } else { "s" };
    let initrd_text = match module {
        Some((start, initrd)) => format!(
            "initrd {} at {start:#x} (module 0)",
            Bytes(initrd.len() as u64)
        ),
        None => String::from("no initrd"),
    };
    let summary = format!(
        "Multiboot {format} kernel, {count} segment{plural} at {low:#x}..{kernel_end:#x}, \
         entry {:#x}, {initrd_text}, command line {} bytes",
        layout.entry,
        cmdline.len()
    );
    Ok(Loaded {
        registers,
        kind: ImageKind::Multiboot,
        summary,
    })
}
