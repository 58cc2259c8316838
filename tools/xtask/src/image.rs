//! `cargo xtask image`: the kernel built for bare metal, checked, and packed into a GRUB
//! rescue ISO.
//!
//! An image directory holds everything a boot and its log decoder need: `esker.elf` (booted
//! with QEMU `-kernel`, and the defmt table of the kernel's log), `esker.iso` (GRUB loading
//! the same ELF as Multiboot2) and, later, `worlds/<name>.elf` of each user world.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use esker_logdecode::qemu::ISO_NAME;
use esker_logdecode::{KERNEL_ELF, WORLDS_DIR};

use crate::bootcheck;
use crate::cargo;
use crate::host::Host;

/// The kernel package and its bare-metal target.
pub const KERNEL_PACKAGE: &str = "esker-kernel";
/// Target triple of the kernel.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// GRUB's configuration: boot at once, console left on VGA so COM1 carries only the
/// kernel's packets.
const GRUB_CFG: &str = "\
set timeout=0
set timeout_style=hidden
menuentry \"Esker\" {
    multiboot2 /boot/esker.elf
    boot
}
";

/// Which kernel build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The production kernel (`target/image`).
    Normal,
    /// The kernel with feature `selftest` (`target/image-selftest`).
    Selftest,
}

impl Flavor {
    /// `Selftest` if `selftest`, else `Normal`.
    pub fn from_selftest(selftest: bool) -> Self {
        if selftest {
            Flavor::Selftest
        } else {
            Flavor::Normal
        }
    }

    /// The image directory of this flavour.
    pub fn image_dir(self) -> PathBuf {
        cargo::target_dir().join(match self {
            Flavor::Normal => "image",
            Flavor::Selftest => "image-selftest",
        })
    }
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Directory holding everything below.
    pub dir: PathBuf,
    /// The kernel ELF.
    pub elf: PathBuf,
}

/// The system manifest images are built from unless told otherwise.
pub fn default_manifest() -> PathBuf {
    cargo::workspace_root().join("system.toml")
}

/// Builds the kernel of `flavor` with the worlds of `system.toml`.
pub fn build(host: &Host, flavor: Flavor) -> Result<Image> {
    build_with(host, flavor, &default_manifest(), &flavor.image_dir())
}

/// Builds an image into `dir`: the worlds of `manifest`, their bundle, the kernel of
/// `flavor` embedding it, and the ISO.
pub fn build_with(host: &Host, flavor: Flavor, manifest: &Path, dir: &Path) -> Result<Image> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The kernel embeds the bundle with include_bytes!, which resolves relative paths
    // against its own source file: hand it an absolute one.
    let dir =
        &std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let bundle = crate::worlds::build_bundle(manifest, dir)?;
    let built = build_kernel(flavor, &bundle)?;
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(dir.join(WORLDS_DIR))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let elf = dir.join(KERNEL_ELF);
    let bytes =
        std::fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    let headers = bootcheck::verify(&bytes)
        .with_context(|| format!("{} is not bootable", cargo::display(&built)))?;
    std::fs::write(&elf, &bytes).with_context(|| format!("cannot write {}", elf.display()))?;
    println!(
        "image: wrote {} ({} KiB, PVH entry {:#x}, Multiboot2 header at file offset {:#x})",
        cargo::display(&elf),
        bytes.len().div_ceil(1024),
        headers.pvh_entry,
        headers.multiboot2_offset
    );
    let iso = dir.join(ISO_NAME);
    build_iso(&dir, &bytes, &iso)?;
    println!(
        "image: wrote {} (GRUB, {})",
        cargo::display(&iso),
        if host.grub_efi {
            "BIOS and UEFI"
        } else {
            "BIOS only: grub-efi-amd64-bin is not installed"
        }
    );
    Ok(Image { dir, elf })
}

/// Runs `cargo build` for the kernel (its progress shown as usual) and returns the path of
/// the executable cargo reports.
fn build_kernel(flavor: Flavor, bundle: &Path) -> Result<PathBuf> {
    let mut command = cargo::command();
    command.env("ESKER_BUNDLE", bundle);
    command.args([
        "build",
        "--package",
        KERNEL_PACKAGE,
        "--release",
        "--target",
        KERNEL_TARGET,
    ]);
    if flavor == Flavor::Selftest {
        command.args(["--features", "selftest"]);
    }
    let (status, executables) =
        cargo::build_executables(command, "image").context("cannot run cargo")?;
    if !status.success() {
        bail!("building the kernel failed ({status})");
    }
    executables
        .into_iter()
        .find(|(target, _)| target == KERNEL_PACKAGE)
        .map(|(_, path)| path)
        .context("cargo built the kernel but reported no executable for it")
}

/// Lays out `dir/iso-root` and runs `grub-mkrescue` on it.
fn build_iso(dir: &Path, kernel: &[u8], iso: &Path) -> Result<()> {
    let root = dir.join("iso-root");
    let grub_dir = root.join("boot/grub");
    std::fs::create_dir_all(&grub_dir)
        .with_context(|| format!("cannot create {}", grub_dir.display()))?;
    std::fs::write(grub_dir.join("grub.cfg"), GRUB_CFG).context("cannot write grub.cfg")?;
    std::fs::write(root.join("boot").join(KERNEL_ELF), kernel)
        .context("cannot copy the kernel into the ISO tree")?;
    let mut command = Command::new("grub-mkrescue");
    command.arg("-o").arg(iso).arg(&root);
    let output = command
        .output()
        .with_context(|| format!("cannot run `{}`", cargo::describe(&command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            cargo::describe(&command),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
