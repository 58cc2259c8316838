//! Packing the compiled manifest and the world binaries into the kernel's boot bundle.

use esker_kernel_core::manifest::{Binary, Bundle, MAX_BINARIES};

use crate::model::Manifest;

/// Largest bundle this tool writes (the kernel links it into its image).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// Compiles `manifest` and encodes it with the binaries its worlds name, taken from
/// `binaries` (`(name, ELF bytes)`; extra entries are ignored), with
/// [`Bundle::encode`]. Fails, naming the world and binary, if one is missing.
pub fn build_bundle(
    manifest: &Manifest,
    binaries: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, String> {
    let compiled = manifest.compile();
    let kernel = compiled
        .to_kernel()
        .map_err(|e| format!("{}: {e}", manifest.file))?;
    let mut packed: heapless::Vec<Binary<'_>, MAX_BINARIES> = heapless::Vec::new();
    for world in &manifest.worlds {
        if packed.iter().any(|b| b.name == world.binary) {
            continue;
        }
        let Some((name, elf)) = binaries.iter().find(|(name, _)| *name == world.binary) else {
            let have: Vec<&str> = binaries.iter().map(|(n, _)| n.as_str()).collect();
            return Err(format!(
                "world \"{}\" needs binary \"{}\", which was not provided (provided: {})",
                world.name,
                world.binary,
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            ));
        };
        packed
            .push(Binary { name, elf })
            .map_err(|_| format!("more than {MAX_BINARIES} distinct binaries; a bundle carries at most {MAX_BINARIES}"))?;
    }
    for vm in &manifest.vms {
        let Some(package) = &vm.package else { continue };
        if packed.iter().any(|b| b.name == package) {
            continue;
        }
        let Some((name, bytes)) = binaries.iter().find(|(name, _)| name == package) else {
            return Err(format!(
                "vm \"{}\" needs package \"{package}\", which was not provided",
                vm.name
            ));
        };
        packed
            .push(Binary { name, elf: bytes })
            .map_err(|_| format!("more than {MAX_BINARIES} distinct binaries; a bundle carries at most {MAX_BINARIES}"))?;
    }
    let bundle = Bundle {
        manifest: kernel,
        binaries: packed,
    };
    let elf_bytes: usize = bundle.binaries.iter().map(|b| b.elf.len()).sum();
    let mut capacity = elf_bytes + 64 * 1024;
    loop {
        let mut out = vec![0u8; capacity];
        match bundle.encode(&mut out) {
            Ok(len) => {
                out.truncate(len);
                return Ok(out);
            }
            Err(esker_kernel_core::manifest::BundleError::BufferTooSmall)
                if capacity < MAX_BUNDLE_BYTES =>
            {
                capacity = (capacity * 2).min(MAX_BUNDLE_BYTES);
            }
            Err(e) => {
                return Err(format!(
                    "cannot encode the bundle for {}: {e}",
                    manifest.file
                ));
            }
        }
    }
}
