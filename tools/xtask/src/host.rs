//! The host packages Esker's tools need, found or installed.
//!
//! Required: QEMU, `grub-mkrescue` with the BIOS platform files, `xorriso`, `mtools`.
//! Optional: GRUB's x86_64-efi platform files (the ISO then also boots under UEFI) and OVMF
//! (UEFI firmware for QEMU). Missing packages are installed with `apt-get` when running as
//! root; otherwise the command fails and says exactly what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use esker_logdecode::qemu::{
    GRUB_EFI_DIR, QEMU_PROGRAM, UEFI_FIRMWARE_CANDIDATES, find_uefi_firmware,
};

/// How a requirement is detected.
enum Probe {
    /// An executable on `PATH`.
    Program(&'static str),
    /// A directory.
    Dir(&'static str),
    /// Any one of these files.
    AnyFile(&'static [&'static str]),
}

/// One thing the tools need and the Debian package that provides it.
struct Need {
    probe: Probe,
    package: &'static str,
    optional: bool,
}

const NEEDS: [Need; 7] = [
    Need {
        probe: Probe::Program(QEMU_PROGRAM),
        package: "qemu-system-x86",
        optional: false,
    },
    Need {
        probe: Probe::Program("grub-mkrescue"),
        package: "grub-common",
        optional: false,
    },
    Need {
        probe: Probe::Dir("/usr/lib/grub/i386-pc"),
        package: "grub-pc-bin",
        optional: false,
    },
    Need {
        probe: Probe::Program("xorriso"),
        package: "xorriso",
        optional: false,
    },
    Need {
        probe: Probe::Program("mformat"),
        package: "mtools",
        optional: false,
    },
    Need {
        probe: Probe::Dir(GRUB_EFI_DIR),
        package: "grub-efi-amd64-bin",
        optional: true,
    },
    Need {
        probe: Probe::AnyFile(&UEFI_FIRMWARE_CANDIDATES),
        package: "ovmf",
        optional: true,
    },
];

/// What the host offers, once the required packages are there.
#[derive(Clone, Debug)]
pub struct Host {
    /// GRUB's UEFI files are installed: ISOs boot under UEFI too.
    pub grub_efi: bool,
    /// OVMF image for UEFI boots, if installed.
    pub uefi_firmware: Option<PathBuf>,
}

impl Need {
    fn present(&self) -> bool {
        match self.probe {
            Probe::Program(name) => find_program(name).is_some(),
            Probe::Dir(dir) => Path::new(dir).is_dir(),
            Probe::AnyFile(files) => files.iter().any(|file| Path::new(file).is_file()),
        }
    }

    fn what(&self) -> String {
        match self.probe {
            Probe::Program(name) => name.to_string(),
            Probe::Dir(dir) => dir.to_string(),
            Probe::AnyFile(files) => files.join(" or "),
        }
    }
}

/// Makes sure the required packages are installed (installing them when root) and
/// reports what optional support is available.
pub fn ensure_packages() -> Result<Host> {
    let missing: Vec<&Need> = NEEDS.iter().filter(|need| !need.present()).collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|need| need.package).collect();
        let required: Vec<&str> = missing
            .iter()
            .filter(|need| !need.optional)
            .map(|need| need.package)
            .collect();
        for need in &missing {
            let kind = if need.optional {
                "optional"
            } else {
                "required"
            };
            println!(
                "host: {} not found ({kind}, package {})",
                need.what(),
                need.package
            );
        }
        if is_root()? {
            println!("host: installing {}", packages.join(" "));
            if let Err(err) = apt_install(&packages) {
                if !required.is_empty() {
                    return Err(err);
                }
                println!("host: warning: optional packages not installed: {err:#}");
            }
        } else if !required.is_empty() {
            bail!(
                "missing host packages: {}; install them with `sudo apt-get install -y {}`",
                required.join(", "),
                packages.join(" ")
            );
        } else {
            println!(
                "host: note: UEFI boots need `sudo apt-get install -y {}`",
                packages.join(" ")
            );
        }
        let still: Vec<String> = NEEDS
            .iter()
            .filter(|need| !need.optional && !need.present())
            .map(Need::what)
            .collect();
        if !still.is_empty() {
            bail!(
                "still missing after installing packages: {}",
                still.join(", ")
            );
        }
    }
    let host = Host {
        grub_efi: Path::new(GRUB_EFI_DIR).is_dir(),
        uefi_firmware: find_uefi_firmware(),
    };
    if missing.is_empty() {
        println!("host: QEMU, GRUB (BIOS and UEFI), xorriso, mtools and OVMF present");
    }
    Ok(host)
}

/// `apt-get install -y`, retried once after `apt-get update`.
fn apt_install(packages: &[&str]) -> Result<()> {
    let install = || {
        let mut command = Command::new("apt-get");
        command
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_status(command)
    };
    if install().is_ok() {
        return Ok(());
    }
    println!("host: apt-get install failed; running apt-get update and retrying");
    let mut update = Command::new("apt-get");
    update.arg("update");
    run_status(update)?;
    install()
}

fn run_status(mut command: Command) -> Result<()> {
    let line = crate::cargo::describe(&command);
    let status = command
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Whether we run as root (`id -u` prints 0).
fn is_root() -> Result<bool> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot run `id -u`")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The path of `name` on `PATH`, if it is an executable file there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_not_others() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-no-such-program-esker").is_none());
    }

    #[test]
    fn every_requirement_names_a_package() {
        assert!(NEEDS.iter().all(|need| !need.package.is_empty()));
        assert_eq!(NEEDS.iter().filter(|need| need.optional).count(), 2);
    }
}
