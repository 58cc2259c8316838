//! Checks that a kernel ELF can be booted both ways Esker supports: QEMU's `-kernel`
//! (a Xen PVH entry note) and GRUB (a Multiboot2 header near the start of the file).
//!
//! A kernel that lost either (a linker-script change, a section garbage-collected away)
//! would otherwise fail much later with a QEMU or GRUB message that names neither.

use anyhow::{Context, Result, bail, ensure};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical entry point QEMU's PVH loader uses.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Multiboot2 header magic.
const MULTIBOOT2_MAGIC: u32 = 0xE852_50D6;
/// The header must lie entirely within this many bytes of the file's start.
const MULTIBOOT2_SEARCH: usize = 32 * 1024;
/// ... at an offset that is a multiple of this.
const MULTIBOOT2_ALIGN: usize = 8;

/// What was found.
#[derive(Debug, PartialEq, Eq)]
pub struct BootHeaders {
    /// Physical address the PVH note names.
    pub pvh_entry: u32,
    /// File offset of the Multiboot2 header.
    pub multiboot2_offset: usize,
}

/// Verifies both boot headers of the ELF in `bytes`.
pub fn verify(bytes: &[u8]) -> Result<BootHeaders> {
    let pvh_entry = pvh_entry(bytes)?;
    let multiboot2_offset = multiboot2_header(bytes)?;
    Ok(BootHeaders {
        pvh_entry,
        multiboot2_offset,
    })
}

fn pvh_entry(bytes: &[u8]) -> Result<u32> {
    let elf = ElfFile64::<Endianness>::parse(bytes).context("not a 64-bit ELF file")?;
    ensure!(
        elf.architecture() == object::Architecture::X86_64,
        "not an x86_64 ELF (architecture {:?})",
        elf.architecture()
    );
    let endian = elf.endian();
    for header in elf.elf_program_headers() {
        let Some(mut notes) = header
            .notes(endian, bytes)
            .context("malformed PT_NOTE segment")?
        else {
            continue;
        };
        while let Some(note) = notes.next().context("malformed note in PT_NOTE segment")? {
            if note.name() == b"Xen" && note.n_type(endian).0 == XEN_ELFNOTE_PHYS32_ENTRY {
                let desc = note.desc();
                let Some(entry) = desc.get(..4) else {
                    bail!("PVH note is {} bytes long, needs 4", desc.len());
                };
                return Ok(u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]));
            }
        }
    }
    bail!(
        "no PVH entry note (a PT_NOTE segment with a \"Xen\" note of type \
         {XEN_ELFNOTE_PHYS32_ENTRY}): QEMU -kernel cannot boot it"
    )
}

fn multiboot2_header(bytes: &[u8]) -> Result<usize> {
    let word = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut bad = None;
    for offset in (0..MULTIBOOT2_SEARCH.min(bytes.len())).step_by(MULTIBOOT2_ALIGN) {
        if word(offset) != Some(MULTIBOOT2_MAGIC) {
            continue;
        }
        let (Some(arch), Some(length), Some(checksum)) =
            (word(offset + 4), word(offset + 8), word(offset + 12))
        else {
            continue;
        };
        let sum = MULTIBOOT2_MAGIC
            .wrapping_add(arch)
            .wrapping_add(length)
            .wrapping_add(checksum);
        if sum != 0 {
            bad = Some(format!("bad checksum at offset {offset:#x}"));
        } else if offset + length as usize > MULTIBOOT2_SEARCH {
            bad = Some(format!(
                "header at offset {offset:#x} ({length} bytes) ends beyond the first 32 KiB"
            ));
        } else {
            return Ok(offset);
        }
    }
    match bad {
        Some(why) => bail!("Multiboot2 header unusable: {why}: GRUB cannot boot it"),
        None => bail!(
            "no Multiboot2 header (magic {MULTIBOOT2_MAGIC:#x}, 8-byte aligned, within the \
             first 32 KiB): GRUB cannot boot it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: header, one PT_NOTE program header, optionally the PVH note and a
    /// Multiboot2 header at `mb2_offset`.
    fn elf(pvh: bool, mb2_offset: Option<usize>, checksum_delta: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        b[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        // PT_NOTE at 120, 20 bytes.
        let mut ph = Vec::new();
        ph.extend(4u32.to_le_bytes());
        ph.extend(4u32.to_le_bytes());
        ph.extend(120u64.to_le_bytes());
        ph.extend([0u8; 16]);
        ph.extend(20u64.to_le_bytes());
        ph.extend(20u64.to_le_bytes());
        ph.extend(4u64.to_le_bytes());
        b.extend(ph);
        let note_type: u32 = if pvh { 18 } else { 1 };
        for word in [4, 4, note_type] {
            b.extend(u32::to_le_bytes(word));
        }
        b.extend(b"Xen\0");
        b.extend(0x0010_0040u32.to_le_bytes());
        if let Some(offset) = mb2_offset {
            b.resize(offset, 0);
            let length = 24u32;
            let checksum = 0u32
                .wrapping_sub(MULTIBOOT2_MAGIC)
                .wrapping_sub(length)
                .wrapping_add(checksum_delta);
            for word in [MULTIBOOT2_MAGIC, 0, length, checksum, 0, 8] {
                b.extend(word.to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn finds_both_headers() {
        let found = verify(&elf(true, Some(144), 0)).unwrap();
        assert_eq!(
            found,
            BootHeaders {
                pvh_entry: 0x0010_0040,
                multiboot2_offset: 144
            }
        );
    }

    #[test]
    fn missing_pvh_note_is_named() {
        let err = verify(&elf(false, Some(144), 0)).unwrap_err();
        assert!(format!("{err:#}").contains("no PVH entry note"), "{err:#}");
    }

    #[test]
    fn missing_or_broken_multiboot2_header_is_named() {
        let err = verify(&elf(true, None, 0)).unwrap_err();
        assert!(
            format!("{err:#}").contains("no Multiboot2 header"),
            "{err:#}"
        );
        let err = verify(&elf(true, Some(144), 1)).unwrap_err();
        assert!(format!("{err:#}").contains("bad checksum"), "{err:#}");
        let err = verify(&elf(true, Some(40 * 1024), 0)).unwrap_err();
        assert!(
            format!("{err:#}").contains("no Multiboot2 header"),
            "{err:#}"
        );
    }

    #[test]
    fn a_non_elf_is_rejected() {
        let err = verify(b"MZ not an elf").unwrap_err();
        assert!(format!("{err:#}").contains("not a 64-bit ELF"), "{err:#}");
    }
}
