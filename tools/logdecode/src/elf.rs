//! The section layout of an Esker ELF: which bytes are code, read-only data, data and bss.
//!
//! Shared by `cargo xtask bench` (kernel size) and the QEMU tests (is a faulting address
//! inside the kernel's text?), so both read the ELF the same way.

use std::path::Path;

use object::{Object, ObjectSection, SectionFlags, SectionKind};

use crate::error::Error;

const SHF_WRITE: u64 = object::elf::SHF_WRITE.0;
const SHF_ALLOC: u64 = object::elf::SHF_ALLOC.0;
const SHF_EXECINSTR: u64 = object::elf::SHF_EXECINSTR.0;

/// One section that occupies memory at run time (`SHF_ALLOC`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocSection {
    /// Section name (`.text`, `.rodata`, ...).
    pub name: String,
    /// Virtual address.
    pub address: u64,
    /// Size in memory.
    pub size: u64,
    /// `SHF_EXECINSTR`.
    pub executable: bool,
    /// `SHF_WRITE`.
    pub writable: bool,
    /// No bytes in the file (`SHT_NOBITS`, i.e. bss).
    pub zero_filled: bool,
}

impl AllocSection {
    /// Whether `address` lies inside the section.
    pub fn contains(&self, address: u64) -> bool {
        address >= self.address && address - self.address < self.size
    }
}

/// Byte counts of an ELF's allocated sections by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizeSummary {
    /// Executable sections.
    pub text: u64,
    /// Read-only, non-executable sections.
    pub rodata: u64,
    /// Writable sections, bss included.
    pub data: u64,
    /// The zero-filled part of `data`.
    pub bss: u64,
}

impl SizeSummary {
    /// Sums the sizes of `sections`.
    pub fn of(sections: &[AllocSection]) -> Self {
        let mut sum = Self::default();
        for section in sections {
            if section.executable {
                sum.text += section.size;
            } else if section.writable {
                sum.data += section.size;
                if section.zero_filled {
                    sum.bss += section.size;
                }
            } else {
                sum.rodata += section.size;
            }
        }
        sum
    }
}

/// Reads the ELF at `path` and lists its allocated sections.
pub fn alloc_sections(path: &Path) -> Result<Vec<AllocSection>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    alloc_sections_of(&bytes).map_err(|message| Error::BadElf {
        path: path.to_path_buf(),
        message,
    })
}

/// Lists the allocated sections of the ELF in `bytes`.
pub fn alloc_sections_of(bytes: &[u8]) -> Result<Vec<AllocSection>, String> {
    let file = object::File::parse(bytes).map_err(|err| format!("not an ELF file: {err}"))?;
    let mut sections = Vec::new();
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags, .. } = section.flags() else {
            return Err("not an ELF file".to_string());
        };
        let sh_flags = sh_flags.0;
        if sh_flags & SHF_ALLOC == 0 || section.size() == 0 {
            continue;
        }
        sections.push(AllocSection {
            name: section.name().unwrap_or("?").to_string(),
            address: section.address(),
            size: section.size(),
            executable: sh_flags & SHF_EXECINSTR != 0,
            writable: sh_flags & SHF_WRITE != 0,
            zero_filled: matches!(
                section.kind(),
                SectionKind::UninitializedData | SectionKind::UninitializedTls
            ),
        });
    }
    Ok(sections)
}
