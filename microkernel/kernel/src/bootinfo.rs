//! Reading the boot loader's information while the boot stub's identity map is live.

use esker_kernel_core::boot::{self, BootInfo, BootInfoError, OutOfRange, PhysRead};

use crate::arch::x86_64::boot::{MULTIBOOT2_LOADER_MAGIC, PROTOCOL_MULTIBOOT2, PROTOCOL_PVH};

/// Physical memory below 4 GiB, reached through the boot stub's identity map.
struct IdentityMappedLow4G;

impl PhysRead for IdentityMappedLow4G {
    fn read(&self, paddr: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let out_of_range = OutOfRange {
            paddr,
            len: buf.len(),
        };
        let end = paddr.checked_add(buf.len() as u64).ok_or(out_of_range)?;
        if paddr == 0 || end > 1 << 32 {
            return Err(OutOfRange {
                paddr,
                len: buf.len(),
            });
        }
        // SAFETY: [paddr, end) is non-null and below 4 GiB, which the boot stub maps
        // (identity, readable); boot structures are not modified concurrently (one CPU
        // runs), and `buf` is a distinct kernel buffer.
        unsafe { core::ptr::copy_nonoverlapping(paddr as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// Why the boot information is unusable.
pub enum BootError {
    /// The stub recorded no known protocol.
    UnknownProtocol(u32),
    /// Multiboot2 entry with the wrong magic in `%eax`.
    BadLoaderMagic(u32),
    /// The structures themselves are bad.
    Parse(BootInfoError),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownProtocol(p) => write!(f, "unknown boot protocol {p}"),
            Self::BadLoaderMagic(m) => write!(
                f,
                "Multiboot2 entry with magic {m:#x} in eax (expected {MULTIBOOT2_LOADER_MAGIC:#x}): not loaded by a Multiboot2 loader"
            ),
            Self::Parse(e) => write!(f, "{e}"),
        }
    }
}

/// Parses the boot information the stub recorded.
pub fn read(protocol: u32, info_paddr: u32, loader_magic: u32) -> Result<BootInfo, BootError> {
    let info_paddr = u64::from(info_paddr);
    match protocol {
        PROTOCOL_PVH => {
            boot::pvh::parse(&IdentityMappedLow4G, info_paddr).map_err(BootError::Parse)
        }
        PROTOCOL_MULTIBOOT2 if loader_magic != MULTIBOOT2_LOADER_MAGIC => {
            Err(BootError::BadLoaderMagic(loader_magic))
        }
        PROTOCOL_MULTIBOOT2 => {
            boot::multiboot2::parse(&IdentityMappedLow4G, info_paddr).map_err(BootError::Parse)
        }
        other => Err(BootError::UnknownProtocol(other)),
    }
}

/// Reads the ACPI MADT (processors, interrupt controllers) through the identity map.
pub fn read_madt(
    boot: &esker_kernel_core::boot::BootInfo,
) -> Result<esker_kernel_core::acpi::Madt, esker_kernel_core::acpi::AcpiError> {
    esker_kernel_core::acpi::read_madt(&IdentityMappedLow4G, boot.rsdp)
}
