//! ELF64 parsing and load planning for user-world programs.
//!
//! This module owns the reading of a world's program file: it checks the ELF header
//! (64-bit, little-endian, x86-64, an executable), finds the `PT_LOAD` segments and, in
//! [`ElfImage::check_user_layout`], decides whether they can be mapped into a user address
//! space as they are: W^X, inside the user range, no page shared by two segments, an entry
//! point in executable code.
//!
//! The files come from our own image, but they are parsed as hostile input anyway: every
//! field is read with bounds and overflow checks, so no input makes this module panic or
//! read outside the bytes it was given. It never maps, allocates or copies anything; the
//! kernel's loader does that from the [`Segment`]s it hands out.

use crate::addr::PAGE_SIZE;
use core::fmt;

/// Size of the ELF64 file header.
const HEADER_SIZE: usize = 64;
/// Size of one ELF64 program header.
const PROGRAM_HEADER_SIZE: usize = 56;
/// Most program headers a user program may have.
pub const MAX_PROGRAM_HEADERS: usize = 32;

const MAGIC: [u8; 4] = *b"\x7fELF";
const CLASS_64: u8 = 2;
const DATA_LITTLE_ENDIAN: u8 = 1;
const VERSION_CURRENT: u32 = 1;
const TYPE_EXEC: u16 = 2;
const MACHINE_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// Why an ELF file was refused. Segment numbers are indices in the program-header table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The file is `len` bytes long, shorter than an ELF64 header.
    TooShort { len: usize },
    /// The file does not start with `\x7fELF`.
    BadMagic,
    /// `EI_CLASS` is `class`, not ELFCLASS64.
    NotElf64 { class: u8 },
    /// `EI_DATA` is `data`, not little-endian.
    NotLittleEndian { data: u8 },
    /// `EI_VERSION` or `e_version` is `version`, not 1.
    BadVersion { version: u32 },
    /// `e_machine` is `machine`, not x86-64.
    WrongMachine { machine: u16 },
    /// `e_type` is `elf_type`, not `ET_EXEC` (a relocatable or shared object cannot be
    /// loaded as is).
    NotExecutable { elf_type: u16 },
    /// `e_phentsize` is `entry_size`, not 56.
    BadProgramHeaderSize { entry_size: u16 },
    /// `e_phnum` is `count`, more than [`MAX_PROGRAM_HEADERS`].
    TooManyProgramHeaders { count: u16 },
    /// The `count` program headers at `e_phoff` = `offset` do not lie inside the file.
    ProgramHeadersOutOfFile { offset: u64, count: u16 },
    /// A loadable segment's `file_size` bytes at `offset` do not lie inside the file.
    SegmentOutOfFile {
        segment: usize,
        offset: u64,
        file_size: u64,
    },
    /// There is no `PT_LOAD` segment.
    NoLoadSegments,
    /// The segment at `vaddr` is both writable and executable.
    WritableAndExecutable { segment: usize, vaddr: u64 },
    /// A segment has more file bytes than memory.
    FileLargerThanMemory {
        segment: usize,
        file_size: u64,
        mem_size: u64,
    },
    /// The segment's end (rounded up to a page) overflows the address space.
    SegmentOverflows {
        segment: usize,
        vaddr: u64,
        mem_size: u64,
    },
    /// The pages the segment touches, `[start, end)`, are not all inside the user range.
    OutsideUserRange {
        segment: usize,
        start: u64,
        end: u64,
    },
    /// Segments `first` and `second` both touch `page` (the first shared page).
    SegmentsOverlap {
        first: usize,
        second: usize,
        page: u64,
    },
    /// The entry point is not inside an executable segment.
    EntryNotExecutable { entry: u64 },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => {
                write!(
                    f,
                    "ELF file is {len} bytes long, shorter than the {HEADER_SIZE}-byte header"
                )
            }
            Self::BadMagic => f.write_str("not an ELF file (bad magic)"),
            Self::NotElf64 { class } => write!(f, "ELF class {class} is not 64-bit"),
            Self::NotLittleEndian { data } => {
                write!(f, "ELF data encoding {data} is not little-endian")
            }
            Self::BadVersion { version } => write!(f, "ELF version {version} is not 1"),
            Self::WrongMachine { machine } => write!(f, "ELF machine {machine} is not x86-64 (62)"),
            Self::NotExecutable { elf_type } => {
                write!(f, "ELF type {elf_type} is not an executable (2)")
            }
            Self::BadProgramHeaderSize { entry_size } => {
                write!(
                    f,
                    "program-header size {entry_size} is not {PROGRAM_HEADER_SIZE}"
                )
            }
            Self::TooManyProgramHeaders { count } => {
                write!(
                    f,
                    "{count} program headers, more than {MAX_PROGRAM_HEADERS}"
                )
            }
            Self::ProgramHeadersOutOfFile { offset, count } => {
                write!(
                    f,
                    "{count} program headers at offset {offset:#x} run past the end of the file"
                )
            }
            Self::SegmentOutOfFile {
                segment,
                offset,
                file_size,
            } => write!(
                f,
                "segment {segment}: {file_size:#x} file bytes at offset {offset:#x} run past the end of the file"
            ),
            Self::NoLoadSegments => f.write_str("no loadable segment"),
            Self::WritableAndExecutable { segment, vaddr } => {
                write!(
                    f,
                    "segment {segment} at {vaddr:#x} is both writable and executable"
                )
            }
            Self::FileLargerThanMemory {
                segment,
                file_size,
                mem_size,
            } => write!(
                f,
                "segment {segment} has {file_size:#x} file bytes but only {mem_size:#x} bytes of memory"
            ),
            Self::SegmentOverflows {
                segment,
                vaddr,
                mem_size,
            } => {
                write!(
                    f,
                    "segment {segment} at {vaddr:#x} of {mem_size:#x} bytes overflows the address space"
                )
            }
            Self::OutsideUserRange {
                segment,
                start,
                end,
            } => {
                write!(
                    f,
                    "segment {segment} pages {start:#x}..{end:#x} are outside the user range"
                )
            }
            Self::SegmentsOverlap {
                first,
                second,
                page,
            } => {
                write!(
                    f,
                    "segments {first} and {second} share the page at {page:#x}"
                )
            }
            Self::EntryNotExecutable { entry } => {
                write!(
                    f,
                    "entry point {entry:#x} is not inside an executable segment"
                )
            }
        }
    }
}

/// A loadable segment: map `mem_size` bytes at `vaddr`, copy `file_bytes` to the start and
/// zero the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Virtual address of the first byte (not necessarily page-aligned).
    pub vaddr: u64,
    /// Bytes of memory the segment occupies.
    pub mem_size: u64,
    /// The bytes to copy from the file (at most `mem_size` once the layout is checked).
    pub file_bytes: &'a [u8],
    /// Mapped writable.
    pub writable: bool,
    /// Mapped executable.
    pub executable: bool,
}

/// A parsed ELF64 executable, borrowing the file.
#[derive(Clone, Copy, Debug)]
pub struct ElfImage<'a> {
    bytes: &'a [u8],
    entry: u64,
    /// The program-header table (a whole number of entries, checked in `parse`).
    program_headers: &'a [u8],
}

/// One program header's fields that matter here.
struct ProgramHeader {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    file_size: u64,
    mem_size: u64,
}

impl ProgramHeader {
    fn read(entry: &[u8]) -> Option<Self> {
        Some(Self {
            kind: read_u32(entry, 0)?,
            flags: read_u32(entry, 4)?,
            offset: read_u64(entry, 8)?,
            vaddr: read_u64(entry, 16)?,
            file_size: read_u64(entry, 32)?,
            mem_size: read_u64(entry, 40)?,
        })
    }

    /// The file bytes, if they lie inside `file`.
    fn file_bytes<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        let len = usize::try_from(self.file_size).ok()?;
        file.get(start..start.checked_add(len)?)
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(*bytes.get(at..)?.first_chunk()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*bytes.get(at..)?.first_chunk()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(*bytes.get(at..)?.first_chunk()?))
}

impl<'a> ElfImage<'a> {
    /// Checks the header and the program-header table, and that every loadable segment's
    /// file bytes lie inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let header: &[u8; HEADER_SIZE] = bytes
            .first_chunk()
            .ok_or(ElfError::TooShort { len: bytes.len() })?;
        // `header` is complete, so these reads only fail on a bug; they still never panic.
        let too_short = ElfError::TooShort { len: bytes.len() };
        let u16_at = |at| read_u16(header, at).ok_or(too_short);
        let u32_at = |at| read_u32(header, at).ok_or(too_short);
        let u64_at = |at| read_u64(header, at).ok_or(too_short);
        if header[..4] != MAGIC {
            return Err(ElfError::BadMagic);
        }
        if header[4] != CLASS_64 {
            return Err(ElfError::NotElf64 { class: header[4] });
        }
        if header[5] != DATA_LITTLE_ENDIAN {
            return Err(ElfError::NotLittleEndian { data: header[5] });
        }
        if u32::from(header[6]) != VERSION_CURRENT {
            return Err(ElfError::BadVersion {
                version: u32::from(header[6]),
            });
        }
        let elf_type = u16_at(16)?;
        let machine = u16_at(18)?;
        let version = u32_at(20)?;
        let entry = u64_at(24)?;
        let ph_offset = u64_at(32)?;
        let ph_entry_size = u16_at(54)?;
        let ph_count = u16_at(56)?;
        if machine != MACHINE_X86_64 {
            return Err(ElfError::WrongMachine { machine });
        }
        if version != VERSION_CURRENT {
            return Err(ElfError::BadVersion { version });
        }
        if elf_type != TYPE_EXEC {
            return Err(ElfError::NotExecutable { elf_type });
        }
        if usize::from(ph_entry_size) != PROGRAM_HEADER_SIZE {
            return Err(ElfError::BadProgramHeaderSize {
                entry_size: ph_entry_size,
            });
        }
        if usize::from(ph_count) > MAX_PROGRAM_HEADERS {
            return Err(ElfError::TooManyProgramHeaders { count: ph_count });
        }
        let out_of_file = ElfError::ProgramHeadersOutOfFile {
            offset: ph_offset,
            count: ph_count,
        };
        let table_start = usize::try_from(ph_offset).map_err(|_| out_of_file)?;
        let table_end = table_start
            .checked_add(usize::from(ph_count) * PROGRAM_HEADER_SIZE)
            .ok_or(out_of_file)?;
        let program_headers = bytes.get(table_start..table_end).ok_or(out_of_file)?;
        let image = Self {
            bytes,
            entry,
            program_headers,
        };
        for (segment, header) in image.load_headers() {
            if header.file_bytes(bytes).is_none() {
                return Err(ElfError::SegmentOutOfFile {
                    segment,
                    offset: header.offset,
                    file_size: header.file_size,
                });
            }
        }
        Ok(image)
    }

    /// The entry point (`e_entry`).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The `PT_LOAD` segments that occupy memory, in program-header order (empty ones are
    /// left out: they map nothing). The iterator borrows the file, not the `ElfImage`.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + use<'a> {
        let bytes = self.bytes;
        self.load_headers().filter_map(move |(_, header)| {
            if header.mem_size == 0 {
                return None;
            }
            Some(Segment {
                vaddr: header.vaddr,
                mem_size: header.mem_size,
                // Always present: `parse` checked every loadable segment's file range.
                file_bytes: header.file_bytes(bytes)?,
                writable: header.flags & PF_W != 0,
                executable: header.flags & PF_X != 0,
            })
        })
    }

    /// Checks that the segments can be mapped with 4 KiB pages into a user address space
    /// whose programs may occupy `[lowest, highest)`: at least one non-empty segment; none
    /// writable and executable, larger in the file than in memory, or overflowing; every
    /// page a segment touches inside the range; no page touched by two segments; and the
    /// entry point inside an executable segment. Empty segments are only checked for W^X
    /// and file size; they occupy no page.
    pub fn check_user_layout(&self, lowest: u64, highest: u64) -> Result<(), ElfError> {
        let mut pages = [(0usize, 0u64, 0u64); MAX_PROGRAM_HEADERS];
        let mut count = 0;
        let mut entry_ok = false;
        for (segment, header) in self.load_headers() {
            let vaddr = header.vaddr;
            if header.flags & PF_W != 0 && header.flags & PF_X != 0 {
                return Err(ElfError::WritableAndExecutable { segment, vaddr });
            }
            if header.file_size > header.mem_size {
                return Err(ElfError::FileLargerThanMemory {
                    segment,
                    file_size: header.file_size,
                    mem_size: header.mem_size,
                });
            }
            if header.mem_size == 0 {
                // Occupies no page (a linker script's segment with nothing in it).
                continue;
            }
            let overflows = ElfError::SegmentOverflows {
                segment,
                vaddr,
                mem_size: header.mem_size,
            };
            let end = vaddr.checked_add(header.mem_size).ok_or(overflows)?;
            let start_page = vaddr - vaddr % PAGE_SIZE;
            let end_page = end.checked_next_multiple_of(PAGE_SIZE).ok_or(overflows)?;
            if start_page < lowest || end_page > highest {
                return Err(ElfError::OutsideUserRange {
                    segment,
                    start: start_page,
                    end: end_page,
                });
            }
            for &(first, other_start, other_end) in &pages[..count] {
                if start_page < other_end && other_start < end_page {
                    let page = start_page.max(other_start);
                    return Err(ElfError::SegmentsOverlap {
                        first,
                        second: segment,
                        page,
                    });
                }
            }
            // At most MAX_PROGRAM_HEADERS loadable headers exist (checked in `parse`).
            if let Some(free) = pages.get_mut(count) {
                *free = (segment, start_page, end_page);
                count += 1;
            }
            entry_ok |= header.flags & PF_X != 0 && (vaddr..end).contains(&self.entry);
        }
        if count == 0 {
            return Err(ElfError::NoLoadSegments);
        }
        if !entry_ok {
            return Err(ElfError::EntryNotExecutable { entry: self.entry });
        }
        Ok(())
    }

    /// The `PT_LOAD` headers with their indices in the program-header table.
    fn load_headers(&self) -> impl Iterator<Item = (usize, ProgramHeader)> + use<'a> {
        self.program_headers
            .chunks_exact(PROGRAM_HEADER_SIZE)
            .enumerate()
            .filter_map(|(index, entry)| Some((index, ProgramHeader::read(entry)?)))
            .filter(|(_, header)| header.kind == PT_LOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    const R: u32 = 4;
    const RX: u32 = R | PF_X;
    const RW: u32 = R | PF_W;
    const LOW: u64 = 0x40_0000;
    const HIGH: u64 = 0x7fff_0000_0000;

    /// A program header to write: `data` goes into the file, `mem_size` into memory.
    #[derive(Clone)]
    struct Ph {
        kind: u32,
        flags: u32,
        vaddr: u64,
        mem_size: u64,
        data: Vec<u8>,
    }

    fn load(flags: u32, vaddr: u64, mem_size: u64, data: &[u8]) -> Ph {
        let data = data.to_vec();
        Ph {
            kind: PT_LOAD,
            flags,
            vaddr,
            mem_size,
            data,
        }
    }

    /// A `PT_NOTE` header: not loaded, and its offset is never checked.
    fn note(data: &[u8]) -> Ph {
        Ph {
            kind: 4,
            flags: R,
            vaddr: 0,
            mem_size: 0,
            data: data.to_vec(),
        }
    }

    /// Writes an ELF64 x86-64 executable: header, program headers, then each segment's data.
    fn build(entry: u64, headers: &[Ph]) -> Vec<u8> {
        let mut file = vec![0u8; HEADER_SIZE];
        file[..4].copy_from_slice(&MAGIC);
        file[4] = CLASS_64;
        file[5] = DATA_LITTLE_ENDIAN;
        file[6] = 1;
        file[16..18].copy_from_slice(&TYPE_EXEC.to_le_bytes());
        file[18..20].copy_from_slice(&MACHINE_X86_64.to_le_bytes());
        file[20..24].copy_from_slice(&1u32.to_le_bytes());
        file[24..32].copy_from_slice(&entry.to_le_bytes());
        file[32..40].copy_from_slice(&(HEADER_SIZE as u64).to_le_bytes());
        file[52..54].copy_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
        file[54..56].copy_from_slice(&(PROGRAM_HEADER_SIZE as u16).to_le_bytes());
        file[56..58].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        let mut offset = (HEADER_SIZE + headers.len() * PROGRAM_HEADER_SIZE) as u64;
        for h in headers {
            let mut entry = [0u8; PROGRAM_HEADER_SIZE];
            entry[0..4].copy_from_slice(&h.kind.to_le_bytes());
            entry[4..8].copy_from_slice(&h.flags.to_le_bytes());
            entry[8..16].copy_from_slice(&offset.to_le_bytes());
            entry[16..24].copy_from_slice(&h.vaddr.to_le_bytes());
            entry[24..32].copy_from_slice(&h.vaddr.to_le_bytes());
            entry[32..40].copy_from_slice(&(h.data.len() as u64).to_le_bytes());
            entry[40..48].copy_from_slice(&h.mem_size.to_le_bytes());
            entry[48..56].copy_from_slice(&PAGE_SIZE.to_le_bytes());
            file.extend_from_slice(&entry);
            offset += h.data.len() as u64;
        }
        for h in headers {
            file.extend_from_slice(&h.data);
        }
        file
    }

    /// Text, read-only data, and data + bss: what a small linked program looks like.
    fn typical() -> Vec<u8> {
        build(
            0x40_1010,
            &[
                load(RX, 0x40_1000, 0x20, &[0xc3; 0x20]),
                note(&[1, 2, 3]),
                load(R, 0x40_2000, 0x10, b"read-only data!!"),
                load(RW, 0x40_3008, 0x2000, &[7; 8]),
            ],
        )
    }

    /// Why the layout of this program is refused, as the message the kernel would log.
    fn refusal(entry: u64, headers: &[Ph]) -> String {
        let file = build(entry, headers);
        let image = ElfImage::parse(&file).expect("the test image parses");
        let error = image
            .check_user_layout(LOW, HIGH)
            .expect_err("the layout is refused");
        error.to_string()
    }

    #[test]
    fn a_typical_program_parses_and_its_layout_is_accepted() {
        let file = typical();
        let image = ElfImage::parse(&file).unwrap();
        assert_eq!(image.entry(), 0x40_1010);
        // The segments outlive the parsed image: they borrow only the file.
        let segments: Vec<Segment<'_>> = ElfImage::parse(&file).unwrap().segments().collect();
        assert_eq!(segments.len(), 3, "only PT_LOAD segments are listed");
        assert_eq!(
            segments[0],
            Segment {
                vaddr: 0x40_1000,
                mem_size: 0x20,
                file_bytes: &[0xc3; 0x20],
                writable: false,
                executable: true
            }
        );
        assert_eq!(segments[1].file_bytes, b"read-only data!!");
        assert!(!segments[1].writable && !segments[1].executable);
        assert_eq!(
            (segments[2].vaddr, segments[2].mem_size),
            (0x40_3008, 0x2000)
        );
        assert!(segments[2].writable && !segments[2].executable);
        assert_eq!(image.check_user_layout(LOW, HIGH), Ok(()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let file = typical();
        for len in 0..file.len() {
            assert!(
                ElfImage::parse(&file[..len]).is_err(),
                "truncated to {len} bytes parsed"
            );
        }
        assert_eq!(
            ElfImage::parse(&file[..10]).unwrap_err(),
            ElfError::TooShort { len: 10 }
        );
        assert_eq!(
            ElfImage::parse(&file[..100]).unwrap_err(),
            ElfError::ProgramHeadersOutOfFile {
                offset: 64,
                count: 4
            }
        );
        let last = file.len() - 1;
        assert_eq!(
            ElfImage::parse(&file[..last]).unwrap_err(),
            ElfError::SegmentOutOfFile {
                segment: 3,
                offset: last as u64 - 7,
                file_size: 8
            }
        );
    }

    #[test]
    fn each_header_field_is_checked() {
        let good = typical();
        let cases: [(usize, &[u8], ElfError); 8] = [
            (0, b"\x7fELG", ElfError::BadMagic),
            (4, &[1], ElfError::NotElf64 { class: 1 }),
            (5, &[2], ElfError::NotLittleEndian { data: 2 }),
            (6, &[0], ElfError::BadVersion { version: 0 }),
            (16, &[3, 0], ElfError::NotExecutable { elf_type: 3 }),
            (18, &[3, 0], ElfError::WrongMachine { machine: 3 }),
            (20, &[2, 0, 0, 0], ElfError::BadVersion { version: 2 }),
            (
                54,
                &[64, 0],
                ElfError::BadProgramHeaderSize { entry_size: 64 },
            ),
        ];
        for (at, patch, expected) in cases {
            let mut file = good.clone();
            file[at..at + patch.len()].copy_from_slice(patch);
            assert_eq!(ElfImage::parse(&file).unwrap_err(), expected);
        }
    }

    #[test]
    fn program_header_tables_that_are_too_long_or_out_of_file_are_refused() {
        let mut file = typical();
        file[56..58].copy_from_slice(&33u16.to_le_bytes());
        assert_eq!(
            ElfImage::parse(&file).unwrap_err(),
            ElfError::TooManyProgramHeaders { count: 33 }
        );
        file[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(
            ElfImage::parse(&file).unwrap_err(),
            ElfError::TooManyProgramHeaders { count: 0xffff }
        );
        let mut file = typical();
        for offset in [u64::MAX, u64::MAX - 100, file.len() as u64] {
            file[32..40].copy_from_slice(&offset.to_le_bytes());
            assert_eq!(
                ElfImage::parse(&file).unwrap_err(),
                ElfError::ProgramHeadersOutOfFile { offset, count: 4 }
            );
        }
    }

    #[test]
    fn segment_file_ranges_out_of_the_file_are_refused() {
        let mut file = typical();
        // Segment 2's p_offset at the end of the table entry 2.
        let at = HEADER_SIZE + 2 * PROGRAM_HEADER_SIZE + 8;
        file[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ElfImage::parse(&file).unwrap_err(),
            ElfError::SegmentOutOfFile {
                segment: 2,
                offset: u64::MAX,
                file_size: 16
            }
        );
        // A non-loadable header may point anywhere.
        let mut file = typical();
        let at = HEADER_SIZE + PROGRAM_HEADER_SIZE + 8;
        file[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ElfImage::parse(&file).is_ok());
    }

    #[test]
    fn writable_and_executable_segments_are_refused() {
        let wx = load(RX | PF_W, 0x40_1000, 0x10, &[0; 4]);
        let expected = "segment 0 at 0x401000 is both writable and executable";
        assert_eq!(refusal(0x40_1000, &[wx]), expected);
    }

    #[test]
    fn segments_outside_the_range_or_overflowing_are_refused() {
        let text = load(RX, 0x40_1000, 0x10, &[0; 4]);
        let cases = [
            (
                load(R, 0x3f_f800, 0x1000, &[]),
                "segment 1 pages 0x3ff000..0x401000 are outside the user range",
            ),
            (
                load(R, HIGH - 0x10, 0x11, &[]),
                "segment 1 pages 0x7ffefffff000..0x7fff00001000 are outside the user range",
            ),
            (
                load(R, u64::MAX - 0x10, 0x20, &[]),
                "segment 1 at 0xffffffffffffffef of 0x20 bytes overflows the address space",
            ),
            (
                load(R, u64::MAX - 0x10, 0x10, &[]),
                "segment 1 at 0xffffffffffffffef of 0x10 bytes overflows the address space",
            ),
        ];
        for (segment, expected) in cases {
            assert_eq!(refusal(0x40_1000, &[text.clone(), segment]), expected);
        }
        // A segment ending exactly at the top is fine.
        let file = build(0x40_1000, &[text, load(R, HIGH - 0x1000, 0x1000, &[])]);
        let image = ElfImage::parse(&file).unwrap();
        assert_eq!(image.check_user_layout(LOW, HIGH), Ok(()));
    }

    #[test]
    fn more_file_than_memory_is_refused_and_empty_segments_are_left_out() {
        let error = refusal(0x40_1000, &[load(RX, 0x40_1000, 0x4, &[0; 8])]);
        assert_eq!(
            error,
            "segment 0 has 0x8 file bytes but only 0x4 bytes of memory"
        );
        // An empty segment, even at an odd address in a page another segment uses, maps
        // nothing and is not listed.
        let text = load(RX, 0x40_1000, 0x10, &[0; 4]);
        let file = build(0x40_1000, &[text, load(RW, 0x40_1008, 0, &[])]);
        let image = ElfImage::parse(&file).unwrap();
        assert_eq!(image.check_user_layout(LOW, HIGH), Ok(()));
        assert_eq!(image.segments().count(), 1);
        let error = refusal(0x40_1000, &[load(RX, 0x40_1000, 0, &[])]);
        assert_eq!(error, "no loadable segment");
    }

    #[test]
    fn segments_sharing_a_page_are_refused() {
        let text = load(RX, 0x40_1000, 0x800, &[0; 4]);
        let data = load(RW, 0x40_1800, 0x800, &[0; 4]);
        let error = refusal(0x40_1000, &[text.clone(), data]);
        assert_eq!(error, "segments 0 and 1 share the page at 0x401000");
        let spanning = load(R, 0x40_0000, 0x3000, &[]);
        let rodata = load(R, 0x40_5000, 0x10, &[]);
        let error = refusal(0x40_1000, &[rodata, text, spanning]);
        assert_eq!(error, "segments 1 and 2 share the page at 0x401000");
    }

    #[test]
    fn the_entry_point_must_be_in_an_executable_segment() {
        let text = load(RX, 0x40_1000, 0x10, &[0; 4]);
        let data = load(RW, 0x40_2000, 0x10, &[0; 4]);
        for entry in [0x40_2000, 0x40_1010, 0x40_0fff, 0] {
            let error = refusal(entry, &[text.clone(), data.clone()]);
            assert_eq!(
                error,
                format!("entry point {entry:#x} is not inside an executable segment")
            );
        }
    }

    #[test]
    fn programs_without_loadable_segments_are_refused() {
        assert_eq!(refusal(0x40_1000, &[]), "no loadable segment");
        assert_eq!(refusal(0x40_1000, &[note(&[0; 4])]), "no loadable segment");
    }

    #[test]
    fn thirty_two_segments_are_accepted() {
        let headers: Vec<Ph> = (0..32u64)
            .map(|i| {
                load(
                    if i == 0 { RX } else { R },
                    LOW + i * PAGE_SIZE,
                    0x10,
                    &[i as u8],
                )
            })
            .collect();
        let file = build(LOW, &headers);
        let image = ElfImage::parse(&file).unwrap();
        assert_eq!(image.segments().count(), 32);
        assert_eq!(image.check_user_layout(LOW, HIGH), Ok(()));
    }

    /// Whatever parses can be listed and checked without panicking, and what the checks
    /// accept really is W^X, in range and non-overlapping.
    fn exercise(bytes: &[u8], lowest: u64, highest: u64) {
        let Ok(image) = ElfImage::parse(bytes) else {
            return;
        };
        let segments: Vec<Segment<'_>> = image.segments().collect();
        assert!(segments.len() <= MAX_PROGRAM_HEADERS);
        if image.check_user_layout(lowest, highest).is_err() {
            return;
        }
        let pages = |s: &Segment<'_>| {
            (
                s.vaddr / PAGE_SIZE,
                (s.vaddr + s.mem_size).div_ceil(PAGE_SIZE),
            )
        };
        for (i, s) in segments.iter().enumerate() {
            assert!(!(s.writable && s.executable));
            assert!(s.mem_size > 0 && s.file_bytes.len() as u64 <= s.mem_size);
            assert!(s.vaddr >= lowest && s.vaddr + s.mem_size <= highest);
            for other in &segments[..i] {
                let (a, b) = (pages(s), pages(other));
                assert!(a.1 <= b.0 || b.1 <= a.0, "segments share a page");
            }
        }
        let entry = image.entry();
        assert!(
            segments
                .iter()
                .any(|s| s.executable && (s.vaddr..s.vaddr + s.mem_size).contains(&entry))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            exercise(&bytes, LOW, HIGH);
            exercise(&bytes, 0, u64::MAX);
        }

        #[test]
        fn random_mutations_of_a_valid_image_never_panic(
            byte_edits in proptest::collection::vec((0usize..400, any::<u8>()), 0..8),
            word_edits in proptest::collection::vec((0usize..400, any::<u64>()), 0..4),
            cut in 0usize..400,
            lowest in prop_oneof![Just(LOW), any::<u64>()],
            highest in prop_oneof![Just(HIGH), Just(u64::MAX), any::<u64>()],
        ) {
            let mut file = typical();
            let len = file.len();
            for (at, value) in byte_edits {
                file[at % len] = value;
            }
            for (at, value) in word_edits {
                let at = at % (len - 7);
                file[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            exercise(&file, lowest, highest);
            exercise(&file[..cut.min(len)], lowest, highest);
        }
    }
}
