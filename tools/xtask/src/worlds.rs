//! The worlds of an image: build every program the manifest names for bare metal, pack
//! them with the compiled manifest into the bundle the kernel embeds, and keep each
//! world's ELF next to the kernel's so the log decoder can read its frames.
//!
//! A world's `binary = "vmkauthd"` is the bare-metal executable of the package
//! `esker-vmkauthd` (servers and test worlds follow that naming).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use esker_logdecode::WORLDS_DIR;

use crate::cargo;
use crate::image::KERNEL_TARGET;

/// Every bare-metal user-world package (linted for the target by `cargo xtask test`).
pub const WORLD_PACKAGES: &[&str] = &[
    "esker-rt",
    "esker-vmkauthd",
    "esker-storage",
    "esker-vswitch",
    "esker-hostd",
    "esker-vmx",
    "esker-hostile",
    "esker-faulter",
    "esker-revoker",
    "esker-ticker",
    "esker-spinner",
    "esker-tuner",
    "esker-ping",
    "esker-pong",
];

/// The bundle file written into an image directory.
pub const BUNDLE_FILE: &str = "bundle.bin";

/// The package that provides binary `name`.
pub fn package_of(binary: &str) -> String {
    format!("esker-{binary}")
}

/// Loads the manifest, printing every diagnostic (`file:line: …`) on failure.
pub fn load_manifest(path: &Path) -> Result<esker_manifest::Manifest> {
    esker_manifest::load(path).map_err(|diagnostics| {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "the manifest has {} error(s):\n  {}",
            lines.len(),
            lines.join("\n  ")
        )
    })
}

/// Builds the worlds of `manifest_path` and writes `dir/bundle.bin` and
/// `dir/worlds/<world>.elf`. Returns the bundle's path.
pub fn build_bundle(manifest_path: &Path, dir: &Path) -> Result<PathBuf> {
    let manifest = load_manifest(manifest_path)?;
    let names: Vec<&str> = {
        let mut names: Vec<&str> = manifest.worlds.iter().map(|w| w.binary.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    let executables = build_programs(&names)?;
    let mut binaries = Vec::new();
    for name in &names {
        let path = executables.get(*name).with_context(|| {
            format!(
                "cargo built no executable for binary \"{name}\" (package {})",
                package_of(name)
            )
        })?;
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        binaries.push(((*name).to_owned(), bytes));
    }
    let worlds_dir = dir.join(WORLDS_DIR);
    std::fs::create_dir_all(&worlds_dir)
        .with_context(|| format!("cannot create {}", worlds_dir.display()))?;
    for world in &manifest.worlds {
        let (_, bytes) = binaries
            .iter()
            .find(|(n, _)| *n == world.binary)
            .expect("built above");
        let path = worlds_dir.join(format!("{}.elf", world.name));
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The decoder reads the full ELFs above (their .defmt sections); the bundle, which is
    // loaded into RAM with the kernel, carries copies without debug sections.
    for (name, bytes) in &mut binaries {
        *bytes = strip_debug(bytes)
            .with_context(|| format!("cannot strip the debug sections of \"{name}\""))?;
    }
    // VM packages sit next to the manifest as <package>.pkg (`cargo xtask run --vm`
    // writes them there).
    let manifest_dir = manifest_path.parent().unwrap_or(Path::new("."));
    for vm in &manifest.vms {
        let Some(package) = &vm.package else { continue };
        let path = manifest_dir.join(format!("{package}.pkg"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "vm \"{}\" names package \"{package}\": cannot read {}",
                vm.name,
                path.display()
            )
        })?;
        binaries.push((package.clone(), bytes));
    }
    let bundle = esker_manifest::build_bundle(&manifest, &binaries)
        .map_err(|e| anyhow::anyhow!("packing the bundle failed: {e}"))?;
    let path = dir.join(BUNDLE_FILE);
    std::fs::write(&path, &bundle).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "image: {} world(s) from {}, bundle {} KiB",
        manifest.worlds.len(),
        cargo::display(manifest_path),
        bundle.len().div_ceil(1024)
    );
    Ok(path)
}

/// `cargo build --release --target x86_64-unknown-none` of every program; returns binary
/// name → executable path.
fn build_programs(names: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut command = cargo::command();
    command.args(["build", "--release", "--target", KERNEL_TARGET]);
    for name in names {
        command.args(["--package", &package_of(name)]);
    }
    let (status, built) = cargo::build_executables(command, "image").context("cannot run cargo")?;
    if !status.success() {
        bail!("building the world programs failed ({status})");
    }
    let mut executables = BTreeMap::new();
    for (target, path) in built {
        for name in names {
            if target == *name || target == package_of(name) {
                executables.insert((*name).to_owned(), path.clone());
            }
        }
    }
    Ok(executables)
}

/// The ELF without its `.debug_*` sections.
fn strip_debug(elf: &[u8]) -> Result<Vec<u8>> {
    let mut builder =
        object::build::elf::Builder::read(elf).context("not an ELF the builder reads")?;
    for section in builder.sections.iter_mut() {
        if section.name.as_slice().starts_with(b".debug_") {
            section.delete = true;
        }
    }
    let mut out = Vec::new();
    builder
        .write(&mut out)
        .context("writing the stripped ELF")?;
    Ok(out)
}
