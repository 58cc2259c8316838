//! How Esker is started in QEMU — the one place the QEMU command line is built.
//!
//! `cargo xtask run`, `cargo xtask bench` and the `qemu-tests` harness all describe a boot
//! with a [`QemuConfig`] and start it with [`QemuRun::spawn`], which reads COM1 from QEMU's
//! stdout, decodes it on a thread and hands out [`TimedEvent`]s. [`Outcome`] maps QEMU's
//! exit status back to the kernel's exit codes (`contract::exit_code`).

mod run;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use esker_kernel_core::contract::{self, exit_code};

pub use run::{QemuRun, TimedEvent};

use crate::decoder::KERNEL_ELF;

/// The QEMU binary.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";

/// The virtual CPU: AMD SVM with nested paging (TCG emulates both), NX, SMEP, SMAP and
/// 1 GiB pages. Every flag here is one TCG implements; QEMU 7.2 warns about (and drops)
/// flags it cannot emulate, such as `invtsc`, `x2apic`, `pcid`, `invpcid` and
/// `tsc-deadline`, so those are left out.
pub const CPU_MODEL: &str = "qemu64,+svm,+npt,+nx,+smep,+smap,+pdpe1gb";

/// Guest memory unless told otherwise.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Virtual CPUs unless told otherwise.
pub const DEFAULT_CPUS: u32 = 2;
/// File name of the GRUB rescue ISO inside an image directory.
pub const ISO_NAME: &str = "esker.iso";

/// GRUB's UEFI platform files (Debian `grub-efi-amd64-bin`); when present,
/// `grub-mkrescue` makes the ISO bootable under UEFI as well.
pub const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Where Debian's `ovmf` package puts a combined UEFI firmware image usable with `-bios`.
pub const UEFI_FIRMWARE_CANDIDATES: [&str; 2] =
    ["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];

/// The first UEFI firmware image present on this host, if any.
pub fn find_uefi_firmware() -> Option<PathBuf> {
    UEFI_FIRMWARE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

/// How the kernel is brought up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// QEMU loads the ELF itself and enters it through its PVH note (`-kernel`).
    Pvh {
        /// The kernel ELF.
        kernel: PathBuf,
        /// Kernel command line (`-append`).
        append: Option<String>,
    },
    /// SeaBIOS boots GRUB from the CD image, which loads the kernel as Multiboot2.
    Iso {
        /// The GRUB rescue ISO.
        iso: PathBuf,
    },
    /// OVMF (UEFI) boots GRUB from the CD image, which loads the kernel as Multiboot2.
    UefiIso {
        /// The GRUB rescue ISO (built with the x86_64-efi platform).
        iso: PathBuf,
        /// The OVMF image passed with `-bios`.
        firmware: PathBuf,
    },
}

/// A QEMU machine to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuConfig {
    /// How the kernel is booted.
    pub boot: Boot,
    /// Guest memory in MiB (`-m`).
    pub memory_mib: u32,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    /// How they are laid out, appended to `-smp`'s CPU count (e.g.
    /// `sockets=1,cores=2,threads=2`); `None`: as QEMU chooses (one thread per core).
    pub smp_topology: Option<String>,
    /// Deterministic time: one nanosecond (one TSC tick) per instruction, and no clock
    /// running on in real time while the guest halts (`-icount shift=0,sleep=off`), so
    /// TSC deltas count instructions identically on every run.
    pub icount: bool,
    /// Arguments appended verbatim.
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// Default machine booting `image_dir/esker.elf` through PVH.
    pub fn pvh(image_dir: &Path, append: Option<String>) -> Self {
        Self::with_boot(Boot::Pvh {
            kernel: image_dir.join(KERNEL_ELF),
            append,
        })
    }

    /// Default machine booting `image_dir/esker.iso` with the legacy BIOS.
    pub fn iso(image_dir: &Path) -> Self {
        Self::with_boot(Boot::Iso {
            iso: image_dir.join(ISO_NAME),
        })
    }

    /// Default machine booting `image_dir/esker.iso` with the UEFI `firmware`.
    pub fn uefi_iso(image_dir: &Path, firmware: &Path) -> Self {
        Self::with_boot(Boot::UefiIso {
            iso: image_dir.join(ISO_NAME),
            firmware: firmware.to_path_buf(),
        })
    }

    fn with_boot(boot: Boot) -> Self {
        Self {
            boot,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            smp_topology: None,
            icount: false,
            extra_args: Vec::new(),
        }
    }

    /// The file QEMU boots from (to check it exists before starting).
    pub fn boot_file(&self) -> &Path {
        match &self.boot {
            Boot::Pvh { kernel, .. } => kernel,
            Boot::Iso { iso } | Boot::UefiIso { iso, .. } => iso,
        }
    }

    /// QEMU's arguments. COM1 is QEMU's stdout (`-serial stdio`); the monitor is off.
    pub fn args(&self) -> Vec<String> {
        let smp = match &self.smp_topology {
            Some(topology) => format!("{},{topology}", self.cpus),
            None => self.cpus.to_string(),
        };
        let mut args: Vec<String> = [
            "-machine",
            "q35",
            "-cpu",
            CPU_MODEL,
            "-smp",
            &smp,
            "-m",
            &self.memory_mib.to_string(),
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-device",
            &format!(
                "isa-debug-exit,iobase={:#x},iosize=0x04",
                contract::DEBUG_EXIT_PORT
            ),
            "-serial",
            "stdio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.icount {
            args.extend(["-icount".into(), "shift=0,sleep=off".into()]);
        }
        match &self.boot {
            Boot::Pvh { kernel, append } => {
                args.extend(["-kernel".into(), kernel.display().to_string()]);
                if let Some(append) = append {
                    args.extend(["-append".into(), append.clone()]);
                }
            }
            Boot::Iso { iso } => {
                args.extend(["-cdrom".into(), iso.display().to_string()]);
                args.extend(["-boot".into(), "d".into()]);
            }
            Boot::UefiIso { iso, firmware } => {
                args.extend(["-bios".into(), firmware.display().to_string()]);
                args.extend(["-cdrom".into(), iso.display().to_string()]);
                args.extend(["-boot".into(), "d".into()]);
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The command, with stdin (COM1's input), stdout (COM1's output) and stderr piped.
    pub fn command(&self) -> Command {
        let mut command = Command::new(QEMU_PROGRAM);
        command
            .args(self.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The command as one shell-like line, for printing.
    pub fn command_line(&self) -> String {
        std::iter::once(QEMU_PROGRAM.to_string())
            .chain(self.args().into_iter().map(|arg| {
                if arg.is_empty() || arg.contains([' ', '"', '\'']) {
                    format!("'{}'", arg.replace('\'', r"'\''"))
                } else {
                    arg
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What QEMU's exit status says about how the kernel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel powered off with `exit_code::SUCCESS`.
    Success,
    /// The kernel reported a CPU exception (`exit_code::EXCEPTION`).
    Exception,
    /// The kernel panicked (`exit_code::PANIC`).
    Panic,
    /// The kernel could not use its boot information (`exit_code::BAD_BOOT`).
    BadBoot,
    /// QEMU exited with a status that is no kernel exit code (0 after a triple fault with
    /// `-no-reboot`, 1 for a QEMU error, or an odd status for an unknown code).
    Status(i32),
    /// QEMU was killed by a signal (timeout, Ctrl-C).
    Killed,
}

impl Outcome {
    /// Classifies QEMU's exit status.
    pub fn from_status(status: ExitStatus) -> Self {
        let Some(code) = status.code() else {
            return Outcome::Killed;
        };
        [
            (exit_code::SUCCESS, Outcome::Success),
            (exit_code::EXCEPTION, Outcome::Exception),
            (exit_code::PANIC, Outcome::Panic),
            (exit_code::BAD_BOOT, Outcome::BadBoot),
        ]
        .into_iter()
        .find(|&(kernel_code, _)| contract::qemu_exit_status(kernel_code) == code)
        .map_or(Outcome::Status(code), |(_, outcome)| outcome)
    }

    /// Whether the kernel ended the way it should.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }

    /// One sentence for the user.
    pub fn describe(self) -> String {
        let status = |code: u32| contract::qemu_exit_status(code);
        match self {
            Outcome::Success => format!(
                "kernel powered off normally (exit code {:#x}, QEMU status {})",
                exit_code::SUCCESS,
                status(exit_code::SUCCESS)
            ),
            Outcome::Exception => format!(
                "kernel stopped on a CPU exception (exit code {:#x}, QEMU status {})",
                exit_code::EXCEPTION,
                status(exit_code::EXCEPTION)
            ),
            Outcome::Panic => format!(
                "kernel panicked (exit code {:#x}, QEMU status {})",
                exit_code::PANIC,
                status(exit_code::PANIC)
            ),
            Outcome::BadBoot => format!(
                "kernel rejected its boot information (exit code {:#x}, QEMU status {})",
                exit_code::BAD_BOOT,
                status(exit_code::BAD_BOOT)
            ),
            Outcome::Status(0) => "QEMU exited with status 0 without a kernel exit code \
                                   (a triple fault or reset with -no-reboot?)"
                .to_string(),
            Outcome::Status(1) => "QEMU failed (status 1; see its messages above)".to_string(),
            Outcome::Status(code) => {
                format!("QEMU exited with status {code}, which is no kernel exit code")
            }
            Outcome::Killed => "QEMU was killed by a signal".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_statuses_map_to_kernel_exit_codes() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let status = contract::qemu_exit_status;
        assert_eq!(
            Outcome::from_status(exited(status(exit_code::SUCCESS))),
            Outcome::Success
        );
        assert_eq!(
            Outcome::from_status(exited(status(exit_code::EXCEPTION))),
            Outcome::Exception
        );
        assert_eq!(
            Outcome::from_status(exited(status(exit_code::PANIC))),
            Outcome::Panic
        );
        assert_eq!(Outcome::from_status(exited(0)), Outcome::Status(0));
        assert_eq!(
            Outcome::from_status(ExitStatus::from_raw(9)),
            Outcome::Killed
        );
    }

    #[test]
    fn pvh_command_line_has_the_machine_and_the_kernel() {
        let config = QemuConfig::pvh(Path::new("/img"), Some("esker.selftest=power-off".into()));
        let args = config.args();
        let after = |flag: &str| {
            let at = args.iter().position(|a| a == flag).expect(flag);
            args[at + 1].as_str()
        };
        assert_eq!(after("-cpu"), CPU_MODEL);
        assert_eq!(after("-m"), "512");
        assert_eq!(after("-smp"), "2");
        assert_eq!(after("-kernel"), "/img/esker.elf");
        assert_eq!(after("-append"), "esker.selftest=power-off");
        assert_eq!(after("-device"), "isa-debug-exit,iobase=0xf4,iosize=0x04");
        assert!(
            config
                .command_line()
                .contains("-append esker.selftest=power-off")
        );
    }

    #[test]
    fn smp_topology_follows_the_cpu_count() {
        let mut config = QemuConfig::pvh(Path::new("/img"), None);
        config.cpus = 4;
        config.smp_topology = Some("sockets=1,cores=2,threads=2".into());
        let args = config.args();
        let at = args.iter().position(|a| a == "-smp").expect("-smp");
        assert_eq!(args[at + 1], "4,sockets=1,cores=2,threads=2");
        assert_eq!(args.iter().filter(|a| *a == "-smp").count(), 1);
    }

    #[test]
    fn iso_boots_from_cdrom() {
        let mut config = QemuConfig::uefi_iso(Path::new("/img"), Path::new("/fw/OVMF.fd"));
        config.icount = true;
        config.extra_args = vec!["-s".into()];
        let line = config.command_line();
        assert!(
            line.contains("-bios /fw/OVMF.fd -cdrom /img/esker.iso -boot d"),
            "{line}"
        );
        assert!(line.contains("-icount shift=0"), "{line}");
        assert!(line.ends_with(" -s"), "{line}");
    }
}
