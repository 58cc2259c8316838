//! The kernel's fixed capacities, checked against a compiled manifest.
//!
//! The kernel decodes the manifest into fixed-size `heapless` vectors
//! (`esker_kernel_core::manifest`); a manifest that does not fit is refused here, at the
//! line of the declaration that first goes over a limit, instead of at boot.

use std::collections::BTreeSet;

use esker_kernel_core::manifest::{MAX_BINARIES, MAX_OBJECTS, MAX_WORLD_CAPS, MAX_WORLDS};

use crate::diagnostic::Diagnostics;

/// Longest kernel object name: the kernel keeps names in a `heapless::String<32>` and would
/// truncate a longer one, so its installed-capabilities report would not match the audit's.
pub const KERNEL_NAME_LEN: usize = 32;
use crate::model::Manifest;

/// Reports every limit the compiled `manifest` exceeds.
pub(crate) fn check(manifest: &Manifest, diags: &mut Diagnostics<'_>) {
    if let Some(world) = manifest.worlds.get(MAX_WORLDS) {
        diags.error_at_line(
            world.line,
            format!(
                "world \"{}\" is world number {}; the kernel creates at most {MAX_WORLDS} worlds (MAX_WORLDS)",
                world.name,
                MAX_WORLDS + 1
            ),
        );
    }
    let mut binaries = BTreeSet::new();
    for world in manifest.worlds.iter().take(MAX_WORLDS) {
        if binaries.insert(world.binary.as_str()) && binaries.len() == MAX_BINARIES + 1 {
            diags.error_at_line(
                world.line,
                format!(
                    "world \"{}\": binary \"{}\" is binary number {}; an image carries at most {MAX_BINARIES} (MAX_BINARIES)",
                    world.name,
                    world.binary,
                    MAX_BINARIES + 1
                ),
            );
        }
    }
    let compiled = manifest.compile();
    if compiled.objects.len() > MAX_OBJECTS
        && let Some((what, line)) = compiled.origin(MAX_OBJECTS)
    {
        diags.error_at_line(
            line,
            format!(
                "{what} needs kernel object number {}; the kernel creates at most {MAX_OBJECTS} objects (MAX_OBJECTS)",
                MAX_OBJECTS + 1
            ),
        );
    }
    for (index, object) in compiled.objects.iter().enumerate() {
        if object.name().len() > KERNEL_NAME_LEN
            && let Some((what, line)) = compiled.origin(index)
        {
            diags.error_at_line(
                line,
                format!(
                    "{what}: kernel object name \"{}\" is longer than the kernel's {KERNEL_NAME_LEN} bytes",
                    object.name()
                ),
            );
        }
    }
    for (world, declared) in compiled.worlds.iter().zip(&manifest.worlds) {
        if world.caps.len() > MAX_WORLD_CAPS {
            diags.error_at_line(
                declared.line,
                format!(
                    "world \"{}\" would hold {} capabilities; the kernel installs at most {MAX_WORLD_CAPS} per world (MAX_WORLD_CAPS)",
                    world.name,
                    world.caps.len()
                ),
            );
        }
    }
    if diags.is_empty()
        && let Err(e) = compiled.to_kernel()
    {
        diags.error_at_line(1, e);
    }
}
