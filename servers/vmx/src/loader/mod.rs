//! Guest loaders: put a kernel (and its initrd and command line) into guest RAM and
//! produce the vCPU state it starts in.
//!
//! Two image formats are understood, told apart by [`detect`]:
//!
//! - a Linux bzImage, booted with the 64-bit boot protocol ([`linux`]): the kernel
//!   starts in long mode at its 64-bit entry with the zero page in RSI;
//! - a Multiboot (v1) kernel, ELF32, ELF64 or a.out-kludge ([`multiboot`]): the kernel
//!   starts in flat 32-bit protected mode with the Multiboot magic in EAX and the
//!   information structure in EBX.
//!
//! Images and initrds are hostile input: every loader checks every size and address
//! before it writes anything, and returns a [`LoadError`] a user can act on rather than
//! panicking. Both loaders use the same legacy PC layout below 1 MiB: RAM up to
//! [`EBDA_START`], a reserved hole (EBDA, VGA, BIOS) up to [`HIGH_MEMORY`], then RAM to
//! the end of guest memory.

pub mod acpi;
pub mod linux;
pub mod mptable;
pub mod multiboot;

use crate::memory::{GuestMemory, OutOfBounds};
use alloc::string::String;
use core::fmt;
use esker_kernel_core::virt::vcpu::GuestRegisters;

/// Where low RAM ends and the legacy reserved area (EBDA, VGA, option and BIOS ROMs)
/// begins, as on a PC with 639 KiB of conventional memory.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where RAM resumes above the legacy hole (1 MiB).
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// Page size the loaders align to.
pub const PAGE_SIZE: u64 = 0x1000;

/// The kinds of kernel image the loaders understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A Linux bzImage (boot protocol 2.12 or newer, 64-bit entry).
    LinuxBzImage,
    /// A Multiboot (version 1) kernel.
    Multiboot,
}

/// A loaded guest, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The boot vCPU's initial state.
    pub registers: GuestRegisters,
    /// What was loaded.
    pub kind: ImageKind,
    /// One line for the log: what went where.
    pub summary: String,
}

/// Why an image could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// Neither a bzImage nor a Multiboot kernel.
    UnknownFormat,
    /// Shorter than a bzImage setup header.
    BzImageTooShort {
        /// File length.
        length: u64,
    },
    /// Not a bzImage: no "HdrS" signature.
    NoBzImageSignature,
    /// The boot sector's 0xAA55 signature is missing.
    BadBootFlag {
        /// The value at 0x1fe.
        found: u16,
    },
    /// The bzImage speaks a boot protocol older than 2.12.
    OldBootProtocol {
        /// The protocol version (major in the high byte).
        version: u16,
    },
    /// The bzImage has no 64-bit entry point (XLF_KERNEL_64 clear).
    Not64Bit,
    /// The setup header is shorter than the file claims, or than protocol 2.12 needs.
    HeaderTruncated {
        /// Bytes the header needs (from the start of the file).
        needed: u64,
        /// Bytes the file or the header has.
        have: u64,
    },
    /// The file ends inside the real-mode setup code.
    SetupTruncated {
        /// Setup bytes the header announces ((setup_sects + 1) × 512).
        setup_bytes: u64,
        /// File length.
        file_bytes: u64,
    },
    /// The file ends inside the protected-mode kernel.
    KernelTruncated {
        /// Protected-mode bytes the header announces (syssize × 16).
        expected: u64,
        /// Protected-mode bytes the file has.
        actual: u64,
    },
    /// A setup-header field has a value the loader cannot use.
    BadHeaderField {
        /// The field's name in the boot protocol.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A non-relocatable kernel whose fixed load address does not work in this VM.
    NotRelocatable {
        /// The address it must be loaded at.
        address: u64,
        /// Bytes it needs there.
        size: u64,
        /// Bytes of guest RAM.
        ram: u64,
    },
    /// Guest RAM is too small for the kernel's `init_size` at its load address.
    NotEnoughMemory {
        /// Where the kernel would go.
        address: u64,
        /// Bytes it needs from there (the larger of `init_size` and its file size).
        size: u64,
        /// Bytes of guest RAM.
        ram: u64,
    },
    /// The command line is longer than the kernel (or the loader's buffer) accepts.
    CommandLineTooLong {
        /// Its length in bytes.
        length: u64,
        /// The most allowed.
        max: u64,
    },
    /// The command line holds a NUL byte, which would end it early.
    CommandLineHasNul,
    /// The initrd does not fit between the kernel and the highest address allowed.
    InitrdTooLarge {
        /// Its size in bytes.
        size: u64,
        /// The lowest address it may use (after the kernel).
        start: u64,
        /// The address it must end below.
        limit: u64,
    },
    /// A Multiboot header with a bad checksum (and no good one).
    MultibootChecksum {
        /// File offset of the header.
        offset: u64,
    },
    /// The Multiboot header runs past the first 8 KiB or the end of the file.
    MultibootHeaderTruncated {
        /// File offset of the header.
        offset: u64,
    },
    /// The Multiboot header requires features the loader does not provide.
    MultibootUnsupportedFlags {
        /// The required flag bits (0–15) not supported.
        flags: u32,
    },
    /// The a.out-kludge addresses in the Multiboot header are inconsistent.
    MultibootBadAddresses {
        /// Which rule they break.
        problem: &'static str,
    },
    /// The kernel is not a usable ELF file (and has no a.out-kludge addresses).
    BadElf {
        /// What is wrong.
        problem: &'static str,
    },
    /// The kernel's entry point lies outside everything it loads.
    EntryOutsideImage {
        /// The entry point as the image gives it.
        entry: u64,
    },
    /// A part of the kernel lies outside guest RAM (or above 4 GiB for a 32-bit kernel).
    SegmentOutsideRam {
        /// First guest-physical address.
        start: u64,
        /// End (exclusive).
        end: u64,
        /// Bytes of guest RAM (or of addressable memory).
        ram: u64,
    },
    /// A part of the kernel overlaps memory the loader uses or must keep free.
    Overlap {
        /// First address of the kernel part.
        start: u64,
        /// Its end (exclusive).
        end: u64,
        /// What it overlaps.
        what: &'static str,
        /// That area's first address.
        area_start: u64,
        /// That area's end (exclusive).
        area_end: u64,
    },
    /// Guest RAM is smaller than the loader's own structures need.
    RamTooSmall {
        /// Bytes needed.
        needed: u64,
        /// Bytes of guest RAM.
        ram: u64,
    },
    /// A guest memory access failed (a loader bug: every range is checked before).
    Memory(OutOfBounds),
}

impl From<OutOfBounds> for LoadError {
    fn from(error: OutOfBounds) -> Self {
        Self::Memory(error)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownFormat => f.write_str(
                "not a Linux bzImage or Multiboot kernel (no \"HdrS\" at 0x202, no Multiboot \
                 header in the first 8 KiB)",
            ),
            Self::BzImageTooShort { length } => write!(
                f,
                "kernel image is truncated: {length} bytes is too short for a bzImage setup header"
            ),
            Self::NoBzImageSignature => {
                f.write_str("not a Linux bzImage: no \"HdrS\" signature at 0x202")
            }
            Self::BadBootFlag { found } => write!(
                f,
                "not a Linux bzImage: the boot flag at 0x1fe is {found:#06x}, not 0xaa55"
            ),
            Self::OldBootProtocol { version } => write!(
                f,
                "the kernel uses boot protocol {}.{}; Esker needs 2.12 or newer (Linux 3.8 or later)",
                version >> 8,
                version & 0xff
            ),
            Self::Not64Bit => f.write_str(
                "the kernel has no 64-bit entry point (XLF_KERNEL_64 is clear): Esker boots only \
                 64-bit x86 Linux kernels",
            ),
            Self::HeaderTruncated { needed, have } => write!(
                f,
                "kernel image is truncated: the setup header needs {needed} bytes, there are {have}"
            ),
            Self::SetupTruncated {
                setup_bytes,
                file_bytes,
            } => write!(
                f,
                "kernel image is truncated: the header says {setup_bytes} bytes of real-mode \
                 setup code, the file has {file_bytes} bytes in all"
            ),
            Self::KernelTruncated { expected, actual } => write!(
                f,
                "kernel image is truncated: the header says {expected} bytes of protected-mode \
                 code, the file has {actual}"
            ),
            Self::BadHeaderField {
                field,
                value,
                problem,
            } => write!(f, "bad bzImage header: {field} is {value:#x}, {problem}"),
            Self::NotRelocatable { address, size, ram } => write!(
                f,
                "the kernel is not relocatable and must be loaded at {address:#x}, but its {} \
                 do not fit there in {} of guest RAM",
                Bytes(size),
                Bytes(ram)
            ),
            Self::NotEnoughMemory { address, size, ram } => write!(
                f,
                "not enough guest memory for the kernel: it needs {} (init_size) from \
                 {address:#x}, up to {}, but the VM has {}",
                Bytes(size),
                Bytes(address.saturating_add(size)),
                Bytes(ram)
            ),
            Self::CommandLineTooLong { length, max } => write!(
                f,
                "the command line is {length} bytes long, the kernel accepts at most {max}"
            ),
            Self::CommandLineHasNul => f.write_str("the command line contains a NUL byte"),
            Self::InitrdTooLarge { size, start, limit } => write!(
                f,
                "the initrd ({}) does not fit in guest memory: only {} are free between the \
                 kernel's end at {start:#x} and {limit:#x}",
                Bytes(size),
                Bytes(limit.saturating_sub(start))
            ),
            Self::MultibootChecksum { offset } => write!(
                f,
                "the Multiboot header at offset {offset:#x} has a bad checksum"
            ),
            Self::MultibootHeaderTruncated { offset } => write!(
                f,
                "the Multiboot header at offset {offset:#x} runs past the first 8 KiB of the \
                 file or its end"
            ),
            Self::MultibootUnsupportedFlags { flags } => {
                f.write_str("the kernel requires Multiboot features Esker does not provide:")?;
                if flags & multiboot::FLAG_VIDEO_MODE != 0 {
                    f.write_str(" video mode information (flag bit 2)")?;
                }
                let unknown = flags & !multiboot::FLAG_VIDEO_MODE;
                if unknown != 0 {
                    if flags & multiboot::FLAG_VIDEO_MODE != 0 {
                        f.write_str(" and")?;
                    }
                    write!(f, " unknown required flags {unknown:#06x}")?;
                }
                Ok(())
            }
            Self::MultibootBadAddresses { problem } => {
                write!(f, "bad Multiboot a.out-kludge addresses: {problem}")
            }
            Self::BadElf { problem } => write!(f, "bad ELF kernel: {problem}"),
            Self::EntryOutsideImage { entry } => write!(
                f,
                "the kernel's entry point {entry:#x} lies outside everything it loads"
            ),
            Self::SegmentOutsideRam { start, end, ram } => write!(
                f,
                "the kernel loads to {start:#x}..{end:#x}, outside guest RAM (0..{ram:#x})"
            ),
            Self::Overlap {
                start,
                end,
                what,
                area_start,
                area_end,
            } => write!(
                f,
                "the kernel loads to {start:#x}..{end:#x}, which overlaps {what} \
                 ({area_start:#x}..{area_end:#x})"
            ),
            Self::RamTooSmall { needed, ram } => write!(
                f,
                "guest RAM ({}) is too small: the loader needs at least {}",
                Bytes(ram),
                Bytes(needed)
            ),
            Self::Memory(error) => write!(f, "loader bug: {error}"),
        }
    }
}

impl core::error::Error for LoadError {}

/// Tells what kind of kernel `image` is: a bzImage ("HdrS" at 0x202 and the boot flag),
/// else a Multiboot kernel (a header with a good checksum in the first 8 KiB).
pub fn detect(image: &[u8]) -> Result<ImageKind, LoadError> {
    let has_signature = image.get(0x202..0x206) == Some(b"HdrS".as_slice());
    let boot_flag = u16_at(image, 0x1fe);
    if has_signature && boot_flag == Some(linux::BOOT_FLAG) {
        return Ok(ImageKind::LinuxBzImage);
    }
    match multiboot::find_header(image) {
        Ok(Some(_)) => Ok(ImageKind::Multiboot),
        Err(error) => Err(error),
        Ok(None) if has_signature => Err(LoadError::BadBootFlag {
            found: boot_flag.unwrap_or(0),
        }),
        Ok(None) => Err(LoadError::UnknownFormat),
    }
}

/// Loads `image` (of whichever kind [`detect`] finds) into `memory` with an optional
/// `initrd` (a Multiboot kernel gets it as its one module) and the kernel command line.
pub fn load<M: GuestMemory + ?Sized>(
    memory: &mut M,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<Loaded, LoadError> {
    match detect(image)? {
        ImageKind::LinuxBzImage => linux::load(memory, image, initrd, cmdline),
        ImageKind::Multiboot => multiboot::load(memory, image, initrd, cmdline),
    }
}

/// A size for messages: bytes, KiB, MiB or GiB with one decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let (unit, name) = match n {
            0..0x400 => return write!(f, "{n} bytes"),
            0x400..0x10_0000 => (0x400, "KiB"),
            0x10_0000..0x4000_0000 => (0x10_0000, "MiB"),
            _ => (0x4000_0000, "GiB"),
        };
        let tenths = (u128::from(n) * 10 + unit / 2) / unit;
        write!(f, "{}.{} {name}", tenths / 10, tenths % 10)
    }
}

/// `value` rounded up to a multiple of `align` (a power of two), `None` on overflow.
/// The byte that makes `bytes` (with it in place of a zero) sum to 0 modulo 256: the
/// checksum of firmware tables (MP specification, ACPI).
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &byte| sum.wrapping_add(byte))
        .wrapping_neg()
}

pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// Whether `a` and `b` (half-open ranges) share a byte.
pub(crate) const fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1 && a.0 < a.1 && b.0 < b.1
}

/// `image[offset..offset + len]`, `None` past the end.
pub(crate) fn bytes_at(image: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    image.get(start..end)
}

fn array_at<const N: usize>(image: &[u8], offset: u64) -> Option<[u8; N]> {
    bytes_at(image, offset, N as u64)?.try_into().ok()
}

/// Little-endian u16 at `offset`.
pub(crate) fn u16_at(image: &[u8], offset: u64) -> Option<u16> {
    array_at(image, offset).map(u16::from_le_bytes)
}

/// Little-endian u32 at `offset`.
pub(crate) fn u32_at(image: &[u8], offset: u64) -> Option<u32> {
    array_at(image, offset).map(u32::from_le_bytes)
}

/// Little-endian u64 at `offset`.
pub(crate) fn u64_at(image: &[u8], offset: u64) -> Option<u64> {
    array_at(image, offset).map(u64::from_le_bytes)
}

/// Writes `value` little-endian into `buffer` at `offset` (which the caller keeps in
/// bounds: offsets are constants within loader-built buffers).
pub(crate) fn put(buffer: &mut [u8], offset: usize, value: &[u8]) {
    buffer[offset..offset + value.len()].copy_from_slice(value);
}

/// The guest's memory map, shared by the E820 table and the Multiboot map:
/// `(start, length, usable)`. Low RAM, the legacy hole, and RAM above 1 MiB, each only
/// as far as guest RAM (of `ram` bytes) goes.
pub(crate) fn memory_map(ram: u64) -> impl Iterator<Item = (u64, u64, bool)> {
    let low = (0, ram.min(EBDA_START), true);
    let hole = (EBDA_START, HIGH_MEMORY - EBDA_START, false);
    let high = (HIGH_MEMORY, ram.saturating_sub(HIGH_MEMORY), true);
    [low, hole, high]
        .into_iter()
        .filter(move |&(start, length, usable)| length > 0 && (!usable || start < ram))
}

#[cfg(test)]
mod tests;
