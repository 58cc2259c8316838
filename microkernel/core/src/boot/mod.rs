//! Parsers for what the boot loader hands the kernel: the PVH start info ([`pvh`]), the
//! Multiboot2 information ([`multiboot2`]), the firmware memory map inside either
//! ([`memmap`]) and the kernel command line ([`cmdline`]).
//!
//! All of it is untrusted firmware input read through [`PhysRead`]: these parsers never
//! panic, never index out of bounds, never loop for longer than a fixed bound, and say
//! which field was wrong when they refuse something. They never write memory and never
//! keep a reference into it: a [`BootInfo`] is a self-contained copy.

pub mod cmdline;
pub mod memmap;
pub mod multiboot2;
pub mod pvh;

use core::fmt;
pub use memmap::MemoryMap;

/// Longest kernel command line kept; longer ones are cut.
pub const CMDLINE_MAX: usize = 1024;

/// Longest boot-loader name kept; longer ones are cut.
pub const LOADER_NAME_MAX: usize = 64;

/// Most memory-map entries read from firmware; a table claiming more is refused as
/// malformed instead of being walked for billions of iterations.
pub const MAX_FIRMWARE_ENTRIES: u64 = 4096;

/// A read outside the memory [`PhysRead`] can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// First physical address of the failed read.
    pub paddr: u64,
    /// Its length in bytes.
    pub len: usize,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes at physical address {:#x} are outside readable memory",
            self.len, self.paddr
        )
    }
}

/// Read access to physical memory (the kernel: its identity-mapped low 4 GiB; tests: a
/// byte vector).
pub trait PhysRead {
    /// Fills `buf` with the bytes at `paddr..paddr + buf.len()`, or refuses the whole read
    /// if any of it is out of reach (including when the range wraps).
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), OutOfRange>;
}

/// Which boot protocol delivered the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Xen's PVH entry (QEMU `-kernel` with a PVH ELF note).
    Pvh,
    /// Multiboot2 (GRUB and others).
    Multiboot2,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pvh => "PVH",
            Self::Multiboot2 => "Multiboot2",
        })
    }
}

/// Everything the kernel keeps from the boot loader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// How we were booted.
    pub protocol: Protocol,
    /// The normalised firmware memory map.
    pub memory_map: MemoryMap,
    /// The kernel command line (empty if none), cut at [`CMDLINE_MAX`] bytes; invalid
    /// UTF-8 is replaced by U+FFFD.
    pub cmdline: heapless::String<CMDLINE_MAX>,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub rsdp: Option<u64>,
    /// The boot loader's name ("PVH" for PVH), cut at [`LOADER_NAME_MAX`] bytes.
    pub loader_name: heapless::String<LOADER_NAME_MAX>,
}

/// Why the boot information was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// The structure does not start with its magic number.
    BadMagic {
        /// The magic the protocol defines.
        expected: u32,
        /// What was there.
        found: u32,
    },
    /// A pointer in the boot information leads outside readable memory.
    Unreadable(OutOfRange),
    /// The loader passed no memory map (PVH version 0, zero entries, no Multiboot2 tag 6).
    NoMemoryMap,
    /// More than [`memmap::MAX_REGIONS`] regions remain after normalising the memory map.
    TooManyRegions,
    /// A field holds a value that makes no sense.
    Malformed {
        /// Which field, and what is wrong with it.
        what: &'static str,
        /// Physical address of the offending field.
        offset: u64,
    },
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { expected, found } => write!(
                f,
                "boot information has magic {found:#010x}, expected {expected:#010x}"
            ),
            Self::Unreadable(out_of_range) => {
                write!(f, "boot information is unreadable: {out_of_range}")
            }
            Self::NoMemoryMap => f.write_str("the boot loader passed no memory map"),
            Self::TooManyRegions => write!(
                f,
                "the memory map has more than {} regions after normalisation",
                memmap::MAX_REGIONS
            ),
            Self::Malformed { what, offset } => write!(
                f,
                "malformed boot information: {what} (field at physical address {offset:#x})"
            ),
        }
    }
}

impl From<OutOfRange> for BootInfoError {
    fn from(out_of_range: OutOfRange) -> Self {
        Self::Unreadable(out_of_range)
    }
}

/// `base + offset`, or the read of `len` bytes there is out of range.
fn field_address(base: u64, offset: u64, len: usize) -> Result<u64, BootInfoError> {
    base.checked_add(offset)
        .ok_or(BootInfoError::Unreadable(OutOfRange { paddr: base, len }))
}

/// Reads `N` bytes at `base + offset`.
fn read_array<const N: usize>(
    mem: &impl PhysRead,
    base: u64,
    offset: u64,
) -> Result<[u8; N], BootInfoError> {
    let mut bytes = [0; N];
    mem.read(field_address(base, offset, N)?, &mut bytes)?;
    Ok(bytes)
}

/// Reads a little-endian `u32` at `base + offset`.
fn read_u32(mem: &impl PhysRead, base: u64, offset: u64) -> Result<u32, BootInfoError> {
    read_array(mem, base, offset).map(u32::from_le_bytes)
}

/// Reads a little-endian `u64` at `base + offset`.
fn read_u64(mem: &impl PhysRead, base: u64, offset: u64) -> Result<u64, BootInfoError> {
    read_array(mem, base, offset).map(u64::from_le_bytes)
}

/// Reads the NUL-terminated string at `paddr`, looking at no more than `available`
/// bytes and keeping at most `N`. A string without NUL in that span is cut there.
fn read_c_string<const N: usize>(
    mem: &impl PhysRead,
    paddr: u64,
    available: u64,
) -> Result<heapless::String<N>, BootInfoError> {
    let mut bytes = heapless::Vec::<u8, N>::new();
    for index in 0..available.min(N as u64) {
        let [byte] = read_array::<1>(mem, paddr, index)?;
        if byte == 0 || bytes.push(byte).is_err() {
            break;
        }
    }
    Ok(lossy_string(&bytes))
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD, cut at `N` bytes on a character
/// boundary.
fn lossy_string<const N: usize>(bytes: &[u8]) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for chunk in bytes.utf8_chunks() {
        let replacement = (!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER);
        for ch in chunk.valid().chars().chain(replacement) {
            if out.push(ch).is_err() {
                return out;
            }
        }
    }
    out
}

/// Adapts a reader of memory-map entries to the infallible iterator
/// [`MemoryMap::from_e820`] takes: stops at the first failed read and keeps its error.
struct EntryReader<'e, I> {
    entries: I,
    error: &'e mut Option<BootInfoError>,
}

impl<I> Iterator for EntryReader<'_, I>
where
    I: Iterator<Item = Result<(u64, u64, u32), BootInfoError>>,
{
    type Item = (u64, u64, u32);

    fn next(&mut self) -> Option<Self::Item> {
        if self.error.is_some() {
            return None;
        }
        match self.entries.next()? {
            Ok(entry) => Some(entry),
            Err(error) => {
                *self.error = Some(error);
                None
            }
        }
    }
}

/// Builds a memory map from fallible entry reads, reporting the first read error before
/// any normalisation error.
fn memory_map_from_reads(
    entries: impl Iterator<Item = Result<(u64, u64, u32), BootInfoError>>,
) -> Result<MemoryMap, BootInfoError> {
    let mut error = None;
    let map = MemoryMap::from_e820(EntryReader {
        entries,
        error: &mut error,
    });
    match error {
        Some(error) => Err(error),
        None => map,
    }
}

#[cfg(test)]
pub(crate) mod test_memory {
    //! A byte-vector [`PhysRead`] and helpers to build boot images, shared by the boot
    //! parsers' tests.

    use super::*;

    /// `bytes` visible at physical addresses `base..base + bytes.len()`.
    #[derive(Clone, Debug)]
    pub struct VecMemory {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl VecMemory {
        pub fn new(base: u64, size: usize) -> Self {
            Self {
                base,
                bytes: vec![0; size],
            }
        }

        pub fn put(&mut self, paddr: u64, data: &[u8]) {
            let at = (paddr - self.base) as usize;
            self.bytes[at..at + data.len()].copy_from_slice(data);
        }

        pub fn put_u32(&mut self, paddr: u64, value: u32) {
            self.put(paddr, &value.to_le_bytes());
        }

        pub fn put_u64(&mut self, paddr: u64, value: u64) {
            self.put(paddr, &value.to_le_bytes());
        }
    }

    impl PhysRead for VecMemory {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
            let out = OutOfRange {
                paddr,
                len: buf.len(),
            };
            let start = paddr.checked_sub(self.base).ok_or(out)?;
            let start = usize::try_from(start).map_err(|_| out)?;
            let end = start.checked_add(buf.len()).ok_or(out)?;
            buf.copy_from_slice(self.bytes.get(start..end).ok_or(out)?);
            Ok(())
        }
    }

    /// The E820 map QEMU gives a 512 MiB guest: (base, length, type).
    pub const QEMU_E820: [(u64, u64, u32); 6] = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x400, 2),
        (0xf0000, 0x10000, 2),
        (0x10_0000, 0x1ffe_0000 - 0x10_0000, 1),
        (0x1ffe_0000, 0x2_0000, 2),
        (0xfffc_0000, 0x4_0000, 2),
    ];
}

#[cfg(test)]
mod tests {
    use super::test_memory::VecMemory;
    use super::*;

    #[test]
    fn strings_stop_at_nul_and_are_cut_at_capacity() {
        let mut mem = VecMemory::new(0x1000, 0x100);
        mem.put(0x1000, b"hello\0world");
        let got: heapless::String<16> = read_c_string(&mem, 0x1000, 0x100).unwrap();
        assert_eq!(got, "hello");
        let got: heapless::String<3> = read_c_string(&mem, 0x1000, 0x100).unwrap();
        assert_eq!(got, "hel");
        let got: heapless::String<16> = read_c_string(&mem, 0x1000, 2).unwrap();
        assert_eq!(got, "he");
    }

    #[test]
    fn strings_running_off_memory_are_unreadable() {
        let mut mem = VecMemory::new(0x1000, 4);
        mem.put(0x1000, b"abcd");
        let got = read_c_string::<16>(&mem, 0x1000, 100);
        assert_eq!(
            got,
            Err(BootInfoError::Unreadable(OutOfRange {
                paddr: 0x1004,
                len: 1
            }))
        );
        let got = read_c_string::<16>(&mem, u64::MAX, 100);
        assert!(matches!(got, Err(BootInfoError::Unreadable(_))));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let got: heapless::String<16> = lossy_string(b"a\xffb\xe2\x82");
        assert_eq!(got, "a\u{fffd}b\u{fffd}");
        // A replacement that does not fit is dropped, the string is not split mid-char.
        let got: heapless::String<3> = lossy_string(b"ab\xff");
        assert_eq!(got, "ab");
    }

    #[test]
    fn errors_explain_themselves() {
        let bad_magic = BootInfoError::BadMagic {
            expected: 0x336e_c578,
            found: 0,
        };
        assert_eq!(
            bad_magic.to_string(),
            "boot information has magic 0x00000000, expected 0x336ec578"
        );
        let unreadable = BootInfoError::Unreadable(OutOfRange {
            paddr: 0x9000,
            len: 8,
        });
        assert_eq!(
            unreadable.to_string(),
            "boot information is unreadable: 8 bytes at physical address 0x9000 are outside readable memory"
        );
        let malformed = BootInfoError::Malformed {
            what: "tag size below 8",
            offset: 0x10,
        };
        assert_eq!(
            malformed.to_string(),
            "malformed boot information: tag size below 8 (field at physical address 0x10)"
        );
        assert_eq!(Protocol::Pvh.to_string(), "PVH");
        assert_eq!(Protocol::Multiboot2.to_string(), "Multiboot2");
    }
}
