//! Guests for Esker's virtual machines.
//!
//! * [`build_testguest`]: the bare-metal Multiboot v1 test guest of `guests/testguest`,
//!   built for `x86_64-unknown-none` and checked for a loadable Multiboot header.
//! * [`linux`] (`cargo xtask guest linux`): a Linux guest made from Debian's packages:
//!   the kernel of `linux-image-cloud-amd64` and a busybox initramfs whose `/init` prints
//!   `esker-guest: userspace up` and leaves a shell on the serial console, plus the VM
//!   configuration that boots them.
//! * [`Cpio`]: the newc cpio writer the initramfs is made with (no `cpio` program needed).
//!
//! Errors are [`GuestError`]s: one readable message each, naming the command or file
//! involved. The type is a `std::error::Error + Send + Sync`, so `?` turns it into the
//! `anyhow::Error` the rest of xtask uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cargo;
use crate::host::find_program;
use crate::image::KERNEL_TARGET;

/// The test guest's package and executable.
pub const TESTGUEST_PACKAGE: &str = "esker-testguest";
/// See [`TESTGUEST_PACKAGE`].
pub const TESTGUEST_BINARY: &str = "testguest";
/// Where the test guest is loaded (the Multiboot loader puts its PT_LOAD segment here).
pub const TESTGUEST_LOAD_ADDRESS: u64 = 0x10_0000;

/// Debian's meta package that depends on the current cloud kernel.
pub const LINUX_META_PACKAGE: &str = "linux-image-cloud-amd64";
/// Debian's statically linked busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The Linux guest's kernel command line.
pub const LINUX_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 \
                                 noapic nolapic tsc=reliable no_timer_check";
/// The kernel command line of the Linux guest with several vCPUs: its local APICs are
/// used (timers, IPIs), the legacy PIC still delivers device interrupts (no I/O APIC).
pub const LINUX_SMP_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 \
                                     noapic tsc=reliable no_timer_check esker.hotplug \
                                     esker.poweroff";
/// vCPUs of the SMP Linux guest.
pub const LINUX_SMP_VCPUS: u32 = 2;
/// The SMP Linux guest's configuration file (same directory, same kernel and initrd).
pub const LINUX_SMP_CONFIG: &str = "linux-smp.toml";
/// The line the Linux guest's `/init` prints once user space runs.
pub const LINUX_READY_LINE: &str = "esker-guest: userspace up";
/// File names inside a Linux guest directory.
pub const LINUX_CONFIG: &str = "linux.toml";
/// See [`LINUX_CONFIG`].
pub const LINUX_KERNEL: &str = "vmlinuz";
/// See [`LINUX_CONFIG`].
pub const LINUX_INITRD: &str = "initramfs.cpio";

/// Multiboot v1 header magic.
const MULTIBOOT1_MAGIC: u32 = 0x1BAD_B002;
/// The Multiboot v1 header must lie within this many bytes of the file's start...
const MULTIBOOT1_SEARCH: usize = 8 * 1024;
/// ... at an offset that is a multiple of this.
const MULTIBOOT1_ALIGN: usize = 4;
/// Multiboot v1 header flag: the a.out kludge (load addresses in the header).
const MULTIBOOT1_AOUT_KLUDGE: u32 = 1 << 16;

/// The `/init` of the Linux guest's initramfs. `/proc` is mounted first because
/// `busybox --install` finds its own path through `/proc/self/exe`.
pub const LINUX_INIT: &str = r#"#!/bin/busybox sh
# Esker's Linux guest (cargo xtask guest linux): busybox on the serial console.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "esker-guest: userspace up"
echo "esker-guest: kernel $(uname -r)"
echo "esker-guest: cpus $(grep -c ^processor /proc/cpuinfo)"
echo "esker-guest: memory $(grep MemTotal /proc/meminfo)"
if grep -q esker.hotplug /proc/cmdline; then
    # CPU 1 offline (it halts with interrupts off) and back (INIT and start-up IPIs).
    echo 0 > /sys/devices/system/cpu/cpu1/online
    echo "esker-guest: offline, online cpus $(cat /sys/devices/system/cpu/online)"
    echo 1 > /sys/devices/system/cpu/cpu1/online
    echo "esker-guest: online again, online cpus $(cat /sys/devices/system/cpu/online)"
fi
if grep -q esker.poweroff /proc/cmdline; then
    echo "esker-guest: powering off"
    poweroff -f
fi
exec setsid cttyhack sh
"#;

/// Why a guest could not be built: one message naming what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError(String);

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuestError {}

/// This module's result type.
pub type Result<T, E = GuestError> = std::result::Result<T, E>;

/// Adds what was being done to an error (`"cannot read x: No such file or directory"`).
trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|err| GuestError(format!("{what}: {err}")))
    }

    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|err| GuestError(format!("{}: {err}", what())))
    }
}

/// `return Err(GuestError)` with a formatted message.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(GuestError(format!($($arg)*)))
    };
}

// ---- The test guest -------------------------------------------------------------------

/// Builds the test guest (`cargo build -p esker-testguest --target x86_64-unknown-none
/// --release`, its progress shown as usual), checks that a Multiboot v1 loader can load
/// it, and returns the path of the ELF.
pub fn build_testguest() -> Result<PathBuf> {
    let mut command = cargo::command();
    command.args([
        "build",
        "--package",
        TESTGUEST_PACKAGE,
        "--release",
        "--target",
        KERNEL_TARGET,
    ]);
    let (status, built) = cargo::build_executables(command, "guest").context("cannot run cargo")?;
    let executable = built
        .into_iter()
        .find(|(target, _)| target == TESTGUEST_BINARY)
        .map(|(_, path)| path);
    if !status.success() {
        fail!("building the test guest failed ({status})");
    }
    let Some(elf) = executable else {
        fail!("cargo built {TESTGUEST_PACKAGE} but reported no executable \"{TESTGUEST_BINARY}\"");
    };
    let bytes = std::fs::read(&elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let loadable = check_testguest(&bytes)
        .map_err(|err| GuestError(format!("{} cannot be booted: {err}", cargo::display(&elf))))?;
    println!(
        "guest: built {} (loads [{:#x}, {:#x}), entry {:#x}, Multiboot header at file offset {:#x})",
        cargo::display(&elf),
        loadable.start,
        loadable.end,
        loadable.entry,
        loadable.multiboot_offset
    );
    Ok(elf)
}

/// What [`check_testguest`] found in the test guest's ELF.
#[derive(Debug, PartialEq, Eq)]
struct Loadable {
    multiboot_offset: usize,
    entry: u64,
    /// Lowest physical address of a PT_LOAD segment.
    start: u64,
    /// One past the highest.
    end: u64,
}

/// Checks what an ELF-loading Multiboot v1 loader needs: a valid header in the first
/// 8 KiB without the a.out kludge, and an x86-64 ELF whose PT_LOAD segments start at
/// [`TESTGUEST_LOAD_ADDRESS`], with the entry point inside them.
fn check_testguest(bytes: &[u8]) -> Result<Loadable> {
    use object::Object;
    use object::read::elf::ProgramHeader;

    let multiboot_offset = multiboot1_header(bytes)?;
    let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes)
        .context("not a 64-bit ELF file")?;
    if elf.architecture() != object::Architecture::X86_64 {
        fail!("not an x86_64 ELF (architecture {:?})", elf.architecture());
    }
    let endian = elf.endian();
    let entry = elf.entry();
    let mut range: Option<(u64, u64)> = None;
    for header in elf.elf_program_headers() {
        if header.p_type(endian) != object::elf::PT_LOAD || header.p_memsz(endian) == 0 {
            continue;
        }
        let start = header.p_paddr(endian);
        let end = start + header.p_memsz(endian);
        range = Some(range.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
    }
    let Some((start, end)) = range else {
        fail!("no PT_LOAD segment");
    };
    if start != TESTGUEST_LOAD_ADDRESS {
        fail!("loads at {start:#x}, expected {TESTGUEST_LOAD_ADDRESS:#x} (linker script?)");
    }
    if !(start..end).contains(&entry) {
        fail!("entry point {entry:#x} lies outside the loaded range [{start:#x}, {end:#x})");
    }
    Ok(Loadable {
        multiboot_offset,
        entry,
        start,
        end,
    })
}

/// The file offset of a valid Multiboot v1 header (magic, flags, checksum summing to 0)
/// that asks for ELF loading (no a.out kludge).
fn multiboot1_header(bytes: &[u8]) -> Result<usize> {
    let word = |offset: usize| {
        bytes
            .get(offset..offset + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    };
    let mut problem = None;
    for offset in (0..MULTIBOOT1_SEARCH.min(bytes.len())).step_by(MULTIBOOT1_ALIGN) {
        if word(offset) != Some(MULTIBOOT1_MAGIC) {
            continue;
        }
        let (Some(flags), Some(checksum)) = (word(offset + 4), word(offset + 8)) else {
            problem = Some(format!("header at {offset:#x} is cut off"));
            continue;
        };
        if MULTIBOOT1_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
            problem = Some(format!("header at {offset:#x} has a bad checksum"));
        } else if flags & MULTIBOOT1_AOUT_KLUDGE != 0 {
            problem = Some(format!(
                "header at {offset:#x} uses the a.out kludge (flags {flags:#x}); the test \
                 guest is meant to be loaded as an ELF"
            ));
        } else {
            return Ok(offset);
        }
    }
    match problem {
        Some(problem) => fail!("Multiboot v1 header unusable: {problem}"),
        None => fail!(
            "no Multiboot v1 header (magic {MULTIBOOT1_MAGIC:#x}, 4-byte aligned, within the \
             first {} KiB)",
            MULTIBOOT1_SEARCH / 1024
        ),
    }
}

// ---- The Linux guest ------------------------------------------------------------------

/// Where `cargo xtask guest linux` puts the Linux guest unless told otherwise.
pub fn default_linux_dir() -> PathBuf {
    cargo::target_dir().join("guests/linux")
}

/// `cargo xtask guest linux`: downloads Debian's cloud kernel and `busybox-static` into
/// `out_dir/debs` (or reuses the ones already there), writes `out_dir/vmlinuz`,
/// `out_dir/initramfs.cpio` and `out_dir/linux.toml`, and returns the configuration's
/// path.
pub fn linux(out_dir: &Path) -> Result<PathBuf> {
    for program in ["apt-get", "apt-cache", "dpkg-deb"] {
        if find_program(program).is_none() {
            fail!(
                "`{program}` not found: `cargo xtask guest linux` takes the kernel and busybox \
                 from Debian's packages with apt-get, apt-cache and dpkg-deb, so it needs a \
                 Debian (or Debian-derived) host with apt"
            );
        }
    }
    let debs = out_dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("cannot create {}", debs.display()))?;

    let kernel_package = resolve_kernel_package()?;
    println!("guest: {LINUX_META_PACKAGE} depends on {kernel_package}");
    let kernel_deb = fetch_deb(&debs, &kernel_package)?;
    let busybox_deb = fetch_deb(&debs, BUSYBOX_PACKAGE)?;

    let unpacked = out_dir.join("unpacked");
    let kernel_root = unpack(&kernel_deb, &unpacked.join("kernel"))?;
    let (vmlinuz, release) = find_vmlinuz(&kernel_root)?;
    let kernel_path = out_dir.join(LINUX_KERNEL);
    std::fs::copy(&vmlinuz, &kernel_path).with_context(|| {
        format!(
            "cannot copy {} to {}",
            vmlinuz.display(),
            kernel_path.display()
        )
    })?;
    let busybox_root = unpack(&busybox_deb, &unpacked.join("busybox"))?;
    let busybox_path = busybox_root.join("bin/busybox");
    let busybox = std::fs::read(&busybox_path).with_context(|| {
        format!(
            "{BUSYBOX_PACKAGE} has no usable bin/busybox ({})",
            busybox_path.display()
        )
    })?;
    // The kernel package unpacks to ~100 MiB of modules the guest does not use.
    std::fs::remove_dir_all(&unpacked)
        .with_context(|| format!("cannot remove {}", unpacked.display()))?;

    let initramfs = initramfs(&busybox)?;
    let initrd_path = out_dir.join(LINUX_INITRD);
    std::fs::write(&initrd_path, &initramfs)
        .with_context(|| format!("cannot write {}", initrd_path.display()))?;
    let config = out_dir.join(LINUX_CONFIG);
    std::fs::write(&config, linux_config(&kernel_package))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let smp_config = out_dir.join(LINUX_SMP_CONFIG);
    std::fs::write(&smp_config, linux_smp_config(&kernel_package))
        .with_context(|| format!("cannot write {}", smp_config.display()))?;

    let kernel_size = std::fs::metadata(&kernel_path).map_or(0, |m| m.len());
    println!(
        "guest: wrote {} (Linux {release}, {} KiB), {} ({} KiB: busybox, /init) and {}",
        cargo::display(&kernel_path),
        kernel_size.div_ceil(1024),
        cargo::display(&initrd_path),
        initramfs.len().div_ceil(1024),
        cargo::display(&config)
    );
    println!(
        "guest: boot it with: cargo xtask run --vm {} --expect \"{LINUX_READY_LINE}\"",
        cargo::display(&config)
    );
    Ok(config)
}

/// The VM configuration of the Linux guest (paths relative to its own directory).
fn linux_config(kernel_package: &str) -> String {
    format!(
        "# Written by `cargo xtask guest linux`: Debian's {kernel_package} and a busybox\n\
         # initramfs whose /init prints \"{LINUX_READY_LINE}\" and starts a shell on ttyS0.\n\
         name = \"linux\"\n\
         memory_mb = 256\n\
         vcpus = 1\n\
         kernel = \"{LINUX_KERNEL}\"\n\
         initrd = \"{LINUX_INITRD}\"\n\
         cmdline = \"{LINUX_CMDLINE}\"\n"
    )
}

/// The configuration of the same guest with [`LINUX_SMP_VCPUS`] vCPUs: it powers off once
/// its `/init` has reported what it sees.
fn linux_smp_config(kernel_package: &str) -> String {
    format!(
        "# Written by `cargo xtask guest linux`: Debian's {kernel_package} on\n\
         # {LINUX_SMP_VCPUS} vCPUs (local APICs, MP table); /init reports and powers off.\n\
         name = \"linuxsmp\"\n\
         memory_mb = 256\n\
         vcpus = {LINUX_SMP_VCPUS}\n\
         kernel = \"{LINUX_KERNEL}\"\n\
         initrd = \"{LINUX_INITRD}\"\n\
         cmdline = \"{LINUX_SMP_CMDLINE}\"\n"
    )
}

/// Runs `command`, returning its standard output; a failure carries its standard error.
fn output_of(mut command: Command) -> Result<String> {
    let line = cargo::describe(&command);
    let output = command
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !output.status.success() {
        fail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether we run as root (`id -u` prints 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The concrete kernel package `linux-image-cloud-amd64` depends on, from
/// `apt-cache depends`. Without package lists apt knows no such package: as root the
/// lists are fetched (`apt-get update`) and the question asked again.
fn resolve_kernel_package() -> Result<String> {
    let ask = || {
        let mut command = Command::new("apt-cache");
        command.args(["depends", LINUX_META_PACKAGE]);
        output_of(command)
    };
    let answer = match ask() {
        Ok(answer) => answer,
        Err(first) if is_root() => {
            println!(
                "guest: apt does not know {LINUX_META_PACKAGE} ({first}); running apt-get update"
            );
            let mut update = Command::new("apt-get");
            update.arg("update");
            let status = update.status().context("cannot run `apt-get update`")?;
            if !status.success() {
                fail!("`apt-get update` failed ({status})");
            }
            ask()?
        }
        Err(err) => fail!(
            "{err}\napt has no package lists that name {LINUX_META_PACKAGE}: run \
             `sudo apt-get update` (on a Debian host with the main component)"
        ),
    };
    kernel_package_from_depends(&answer).ok_or_else(|| {
        GuestError(format!(
            "`apt-cache depends {LINUX_META_PACKAGE}` names no linux-image-<version>-cloud-amd64 \
             package:\n{answer}"
        ))
    })
}

/// The first `linux-image-*-cloud-amd64` dependency in `apt-cache depends` output
/// (`  Depends: linux-image-6.1.0-48-cloud-amd64`, alternatives marked `|Depends:`,
/// virtual packages in `<...>` skipped).
fn kernel_package_from_depends(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches('|');
            line.strip_prefix("Depends:")
        })
        .map(str::trim)
        .find(|name| {
            name.starts_with("linux-image-")
                && name.ends_with("-cloud-amd64")
                && *name != LINUX_META_PACKAGE
                && !name.contains(char::is_whitespace)
        })
        .map(str::to_owned)
}

/// `apt-get download`'s file name for `package` at `version` on `arch` (an epoch's `:`
/// is written `%3a`).
fn deb_file_name(package: &str, version: &str, arch: &str) -> String {
    format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"))
}

/// The version and architecture apt would install of `package`.
fn candidate(package: &str) -> Result<(String, String)> {
    let mut command = Command::new("apt-cache");
    command.args(["show", "--no-all-versions", package]);
    let text = output_of(command)?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
    };
    match (field("Version:"), field("Architecture:")) {
        (Some(version), Some(arch)) => Ok((version, arch)),
        _ => fail!("`apt-cache show {package}` gives no Version and Architecture:\n{text}"),
    }
}

/// The `.deb` of `package` in `debs`: reused if the candidate version is already there,
/// downloaded with `apt-get download` otherwise.
fn fetch_deb(debs: &Path, package: &str) -> Result<PathBuf> {
    let (version, arch) = candidate(package)?;
    let path = debs.join(deb_file_name(package, &version, &arch));
    if path.is_file() {
        println!(
            "guest: reusing {} (already downloaded)",
            cargo::display(&path)
        );
        return Ok(path);
    }
    let mut command = Command::new("apt-get");
    command.args(["download", package]).current_dir(debs);
    println!(
        "guest: {} (in {})",
        cargo::describe(&command),
        cargo::display(debs)
    );
    let status = command
        .status()
        .with_context(|| format!("cannot run `apt-get download {package}`"))?;
    if !status.success() {
        fail!(
            "`apt-get download {package}` failed ({status}); is the Debian mirror reachable \
             and are apt's lists current (`sudo apt-get update`)?"
        );
    }
    if !path.is_file() {
        fail!(
            "`apt-get download {package}` succeeded but {} is not there",
            path.display()
        );
    }
    Ok(path)
}

/// `dpkg-deb -x deb dir` into a fresh `dir`; returns `dir`.
fn unpack(deb: &Path, dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut command = Command::new("dpkg-deb");
    command.arg("-x").arg(deb).arg(dir);
    println!("guest: {}", cargo::describe(&command));
    output_of(command)?;
    Ok(dir.to_path_buf())
}

/// The one `boot/vmlinuz-<release>` under `root`, and its release.
fn find_vmlinuz(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    let entries = std::fs::read_dir(&boot)
        .with_context(|| format!("the kernel package has no {}", boot.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", boot.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            found.push((entry.path(), release.to_owned()));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => fail!(
            "the kernel package has no boot/vmlinuz-* ({})",
            boot.display()
        ),
        _ => fail!(
            "the kernel package has {} boot/vmlinuz-* files, expected one: {}",
            found.len(),
            found
                .iter()
                .map(|(path, _)| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The Linux guest's initramfs: the directories a busybox system needs, `bin/busybox`,
/// `init` ([`LINUX_INIT`]) and the `dev/console` node the kernel opens for `/init`.
pub fn initramfs(busybox: &[u8]) -> Result<Vec<u8>> {
    let mut cpio = Cpio::new();
    for dir in [
        "bin", "sbin", "proc", "sys", "dev", "etc", "usr", "usr/bin", "usr/sbin",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.dir("root", 0o700)?;
    cpio.dir("tmp", 0o1777)?;
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.file("bin/busybox", 0o755, busybox)?;
    cpio.file("init", 0o755, LINUX_INIT.as_bytes())?;
    Ok(cpio.finish())
}

// ---- newc cpio ------------------------------------------------------------------------

/// `S_IFDIR`, `S_IFREG`, `S_IFCHR`.
const MODE_DIR: u32 = 0o040_000;
const MODE_FILE: u32 = 0o100_000;
const MODE_CHAR: u32 = 0o020_000;
/// The newc magic.
const NEWC_MAGIC: &str = "070701";
/// Bytes of a newc header: the magic and 13 eight-digit hex fields.
const NEWC_HEADER_LEN: usize = 110;
/// The name of the last entry.
const NEWC_TRAILER: &str = "TRAILER!!!";

/// A cpio archive in the "newc" format (what the Linux kernel unpacks as an initramfs):
/// per entry a 110-byte ASCII header (`070701` and 13 eight-digit hex fields), the
/// NUL-terminated name padded to a multiple of 4 bytes (counting from the header's
/// start), then the data padded likewise; a `TRAILER!!!` entry ends it. Owner root,
/// modification time 0, so equal inputs give equal archives.
#[derive(Debug, Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

/// One newc header's fields.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Cpio {
            bytes: Vec::new(),
            next_inode: 1,
        }
    }

    /// A directory; `permissions` are the low 12 mode bits (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, permissions: u32) -> Result<()> {
        self.entry(Header {
            name: path,
            mode: MODE_DIR | (permissions & 0o7777),
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> Result<()> {
        self.entry(Header {
            name: path,
            mode: MODE_FILE | (permissions & 0o7777),
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// A character device node `major:minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.entry(Header {
            name: path,
            mode: MODE_CHAR | (permissions & 0o7777),
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// The archive, ended by the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.write_header(
            0,
            &Header {
                name: NEWC_TRAILER,
                mode: 0,
                nlink: 1,
                rdev: (0, 0),
                data: &[],
            },
        );
        self.bytes
    }

    fn entry(&mut self, header: Header<'_>) -> Result<()> {
        let name = header.name.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') || name == NEWC_TRAILER {
            fail!("cpio: unusable entry name {:?}", header.name);
        }
        if u32::try_from(header.data.len()).is_err() {
            fail!(
                "cpio: {name} is {} bytes, more than newc's 4 GiB limit",
                header.data.len()
            );
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        self.write_header(inode, &Header { name, ..header });
        Ok(())
    }

    fn write_header(&mut self, inode: u32, header: &Header<'_>) {
        let start = self.bytes.len();
        let fields = [
            inode,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            header.data.len() as u32,
            0, // devmajor
            0, // devminor
            header.rdev.0,
            header.rdev.1,
            header.name.len() as u32 + 1, // with the NUL
            0,                            // check (newc: always 0)
        ];
        self.bytes.extend_from_slice(NEWC_MAGIC.as_bytes());
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        debug_assert_eq!(self.bytes.len() - start, NEWC_HEADER_LEN);
        self.bytes.extend_from_slice(header.name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(header.data);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = self.bytes.len().next_multiple_of(4);
        self.bytes.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back from a newc archive.
    #[derive(Debug)]
    struct Entry {
        offset: usize,
        fields: [u32; 13],
        name: String,
        data: Vec<u8>,
    }

    /// A strict newc reader: every header aligned, hex fields, NUL-terminated names,
    /// zero padding, trailer last and nothing after it.
    fn read_newc(bytes: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(offset % 4, 0, "header at {offset} not 4-byte aligned");
            let header = &bytes[offset..offset + NEWC_HEADER_LEN];
            assert_eq!(&header[..6], b"070701", "magic at {offset}");
            let mut fields = [0u32; 13];
            for (i, field) in fields.iter_mut().enumerate() {
                let hex = std::str::from_utf8(&header[6 + i * 8..14 + i * 8]).unwrap();
                assert!(
                    hex.bytes().all(|b| b.is_ascii_hexdigit()),
                    "field {i}: {hex:?}"
                );
                *field = u32::from_str_radix(hex, 16).unwrap();
            }
            let name_len = fields[11] as usize;
            let name_start = offset + NEWC_HEADER_LEN;
            let name_bytes = &bytes[name_start..name_start + name_len];
            assert_eq!(name_bytes.last(), Some(&0), "name not NUL-terminated");
            let name = String::from_utf8(name_bytes[..name_len - 1].to_vec()).unwrap();
            let data_start = (name_start + name_len).next_multiple_of(4);
            assert!(
                bytes[name_start + name_len..data_start]
                    .iter()
                    .all(|&b| b == 0)
            );
            let size = fields[6] as usize;
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (data_start + size).next_multiple_of(4);
            assert!(bytes[data_start + size..next].iter().all(|&b| b == 0));
            let done = name == NEWC_TRAILER;
            entries.push(Entry {
                offset,
                fields,
                name,
                data,
            });
            offset = next;
            if done {
                assert_eq!(offset, bytes.len(), "bytes after the trailer");
                return entries;
            }
        }
    }

    fn sample() -> Vec<u8> {
        let mut cpio = Cpio::new();
        cpio.dir("/bin", 0o755).unwrap();
        cpio.dir("tmp", 0o1777).unwrap();
        cpio.char_device("dev/console", 0o600, 5, 1).unwrap();
        // Names and sizes that exercise every padding remainder.
        for (i, len) in [0usize, 1, 2, 3, 4, 5, 4099].into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            cpio.file(&format!("bin/f{}", "x".repeat(i)), 0o644, &data)
                .unwrap();
        }
        cpio.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        cpio.finish()
    }

    #[test]
    fn newc_headers_fields_and_alignment() {
        let bytes = sample();
        let entries = read_newc(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "tmp",
                "dev/console",
                "bin/f",
                "bin/fx",
                "bin/fxx",
                "bin/fxxx",
                "bin/fxxxx",
                "bin/fxxxxx",
                "bin/fxxxxxx",
                "init",
                "TRAILER!!!"
            ]
        );
        let by_name = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
        // mode, nlink, rdev major/minor, namesize (with NUL).
        let bin = by_name("bin");
        assert_eq!((bin.fields[1], bin.fields[4]), (0o040_755, 2));
        assert_eq!(by_name("tmp").fields[1], 0o041_777);
        let console = by_name("dev/console");
        assert_eq!(console.fields[1], 0o020_600);
        assert_eq!((console.fields[9], console.fields[10]), (5, 1));
        assert_eq!(console.fields[6], 0);
        let init = by_name("init");
        assert_eq!(init.fields[1], 0o100_755);
        assert_eq!(init.fields[11], 5);
        assert_eq!(init.data, b"#!/bin/sh\n");
        let big = by_name("bin/fxxxxxx");
        assert_eq!(big.fields[6], 4099);
        assert_eq!(big.data.len(), 4099);
        assert_eq!(big.data[4098], ((4098 * 7 + 6) % 256) as u8);
        // Inodes unique and non-zero except the trailer's; uid, gid, mtime, check all 0.
        let mut inodes: Vec<u32> = entries.iter().map(|e| e.fields[0]).collect();
        assert_eq!(inodes.pop(), Some(0));
        assert!(inodes.iter().all(|&i| i != 0));
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), entries.len() - 1);
        for entry in &entries {
            assert_eq!(
                [
                    entry.fields[2],
                    entry.fields[3],
                    entry.fields[5],
                    entry.fields[12]
                ],
                [0; 4]
            );
            assert_eq!(entry.offset % 4, 0);
        }
        assert_eq!(bytes.len() % 4, 0);
        // The first header, byte for byte: "bin", inode 1, dir 0755, namesize 4.
        let fields = [
            "00000001", "000041ed", "00000000", "00000000", "00000002", "00000000", "00000000",
            "00000000", "00000000", "00000000", "00000000", "00000004", "00000000",
        ];
        assert_eq!(
            std::str::from_utf8(&bytes[..NEWC_HEADER_LEN + 4]).unwrap(),
            format!("070701{}bin\0", fields.concat())
        );
        // Equal inputs, equal archives.
        assert_eq!(bytes, sample());
    }

    #[test]
    fn newc_refuses_bad_names() {
        let mut cpio = Cpio::new();
        assert!(cpio.file("", 0o644, b"").is_err());
        assert!(cpio.file("/", 0o644, b"").is_err());
        assert!(cpio.file("a\0b", 0o644, b"").is_err());
        let err = cpio.dir("TRAILER!!!", 0o755).unwrap_err();
        assert!(err.to_string().contains("TRAILER!!!"), "{err}");
    }

    /// Lists (and extracts) the archive with the system's `cpio`, when there is one.
    #[test]
    fn system_cpio_reads_the_archive() {
        use std::io::Write;
        let Some(cpio_program) = find_program("cpio") else {
            eprintln!("skipped: no `cpio` program on this machine (Debian package cpio)");
            return;
        };
        let bytes = sample();
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let mut child = Command::new(&cpio_program)
                .args(args)
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&bytes).unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "cpio {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        let listing = run(&["-i", "-t", "-v", "--quiet"]);
        let names: Vec<&str> = listing
            .lines()
            .map(|line| line.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(names.len(), 11, "{listing}");
        assert!(
            names.contains(&"dev/console") && names.contains(&"init"),
            "{listing}"
        );
        let console = listing
            .lines()
            .find(|l| l.ends_with("dev/console"))
            .unwrap();
        assert!(console.starts_with("crw-------"), "{console}");
        assert!(console.contains("5,"), "{console}");
        let init = listing.lines().find(|l| l.ends_with(" init")).unwrap();
        assert!(init.starts_with("-rwxr-xr-x"), "{init}");
        // Extract the regular files (device nodes need root) and compare their bytes.
        run(&[
            "-i",
            "-d",
            "--quiet",
            "--no-absolute-filenames",
            "init",
            "bin/*",
        ]);
        assert_eq!(
            std::fs::read(dir.path().join("init")).unwrap(),
            b"#!/bin/sh\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join("bin/fxxxxxx")).unwrap().len(),
            4099
        );
    }

    #[test]
    fn initramfs_holds_busybox_init_and_console() {
        let busybox = b"\x7fELF pretend busybox".to_vec();
        let entries = read_newc(&initramfs(&busybox).unwrap());
        let by_name = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("no {name} in the initramfs"))
        };
        for dir in ["bin", "sbin", "proc", "sys", "dev", "etc", "root", "tmp"] {
            assert_eq!(by_name(dir).fields[1] & 0o170_000, MODE_DIR, "{dir}");
        }
        assert_eq!(by_name("bin/busybox").data, busybox);
        assert_eq!(by_name("bin/busybox").fields[1], 0o100_755);
        let console = by_name("dev/console");
        assert_eq!(
            (console.fields[1], console.fields[9], console.fields[10]),
            (0o020_600, 5, 1)
        );
        let init = by_name("init");
        assert_eq!(init.fields[1], 0o100_755);
        let script = std::str::from_utf8(&init.data).unwrap();
        assert!(script.starts_with("#!/bin/busybox sh\n"));
        // /proc before --install (it reads /proc/self/exe), the ready line, then the shell.
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("no {needle:?}"))
        };
        assert!(at("mount -t proc") < at("--install -s"));
        assert!(at("--install -s") < at("mount -t devtmpfs"));
        assert!(at(LINUX_READY_LINE) < at("exec setsid cttyhack sh"));
        for line in [
            "esker-guest: kernel $(uname -r)",
            "esker-guest: cpus $(",
            "MemTotal",
        ] {
            at(line);
        }
        // A directory must come before what it holds.
        let position = |name: &str| entries.iter().position(|e| e.name == name).unwrap();
        assert!(position("bin") < position("bin/busybox"));
        assert!(position("dev") < position("dev/console"));
    }

    #[test]
    fn kernel_package_comes_from_apt_cache_depends() {
        let output = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-48-cloud-amd64\n";
        assert_eq!(
            kernel_package_from_depends(output).as_deref(),
            Some("linux-image-6.1.0-48-cloud-amd64")
        );
        let alternatives = "linux-image-cloud-amd64\n |Depends: <linux-image-virtual>\n  \
                            Depends: linux-image-6.12.9+bpo-cloud-amd64\n  Recommends: foo\n";
        assert_eq!(
            kernel_package_from_depends(alternatives).as_deref(),
            Some("linux-image-6.12.9+bpo-cloud-amd64")
        );
        assert_eq!(
            kernel_package_from_depends("linux-image-cloud-amd64\n"),
            None
        );
        assert_eq!(
            kernel_package_from_depends("  Depends: linux-image-6.1.0-48-amd64\n"),
            None
        );
    }

    #[test]
    fn deb_file_names_follow_apt_get_download() {
        assert_eq!(
            deb_file_name("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64"),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
        assert_eq!(
            deb_file_name("linux-image-6.1.0-48-cloud-amd64", "6.1.172-1", "amd64"),
            "linux-image-6.1.0-48-cloud-amd64_6.1.172-1_amd64.deb"
        );
    }

    #[test]
    fn linux_config_names_the_files_relative_to_itself() {
        let config = linux_config("linux-image-6.1.0-48-cloud-amd64");
        let lines: Vec<&str> = config.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "name = \"linux\"",
                "memory_mb = 256",
                "vcpus = 1",
                "kernel = \"vmlinuz\"",
                "initrd = \"initramfs.cpio\"",
                "cmdline = \"console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 noapic \
                 nolapic tsc=reliable no_timer_check\"",
            ]
        );
        assert!(config.contains("linux-image-6.1.0-48-cloud-amd64"));
    }

    fn with_multiboot1(offset: usize, flags: u32, checksum_delta: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x3000];
        let checksum = 0u32
            .wrapping_sub(MULTIBOOT1_MAGIC)
            .wrapping_sub(flags)
            .wrapping_add(checksum_delta);
        for (i, word) in [MULTIBOOT1_MAGIC, flags, checksum].into_iter().enumerate() {
            bytes[offset + i * 4..offset + i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn multiboot1_header_is_found_and_checked() {
        assert_eq!(
            multiboot1_header(&with_multiboot1(0x1000, 2, 0)).unwrap(),
            0x1000
        );
        let message = |bytes: &[u8]| multiboot1_header(bytes).unwrap_err().to_string();
        assert!(message(&with_multiboot1(0x1000, 2, 1)).contains("bad checksum"));
        assert!(message(&with_multiboot1(0x1000, 0x1_0002, 0)).contains("a.out kludge"));
        // Past the first 8 KiB, or misaligned: not found at all.
        assert!(message(&with_multiboot1(0x2000, 2, 0)).contains("no Multiboot v1 header"));
        assert!(message(&with_multiboot1(0x1002, 2, 0)).contains("no Multiboot v1 header"));
    }

    #[test]
    fn a_non_elf_with_a_header_is_refused() {
        let err = check_testguest(&with_multiboot1(0x1000, 2, 0)).unwrap_err();
        assert!(err.to_string().contains("not a 64-bit ELF"), "{err}");
    }
}
