//! `--vm FILE.toml`: VM configuration files turned into what the image carries — a monitor
//! world and a `[vms.<name>]` entry per VM in a generated manifest, and a package (the
//! configuration file with the kernel and initrd it names) next to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use esker_vmx::config::{self, VmConfig};

use crate::cargo;

/// A VM configuration file, read and checked, with its package.
pub struct VmFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// What it says.
    pub config: VmConfig,
    /// The package the monitor reads.
    pub package: Vec<u8>,
}

/// Memory budget of a VM's monitor world (heap and stack), KiB.
const MONITOR_MEMORY_KIB: u32 = 4096;
/// World names the default manifest already uses.
const TAKEN: [&str; 5] = ["vmkauthd", "storage", "vswitch", "hostd", "vmx"];

/// Reads `path` and the files it names (relative to its directory).
pub fn load(path: &Path) -> Result<VmFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the VM configuration {}", path.display()))?;
    let config = config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if TAKEN.contains(&config.name.as_str()) {
        bail!(
            "{}: VM name \"{}\" is the name of a system world; choose another",
            path.display(),
            config.name
        );
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let read = |what: &str, file: &str| -> Result<Vec<u8>> {
        let full = dir.join(file);
        std::fs::read(&full).with_context(|| {
            format!(
                "{}: {what} \"{file}\": cannot read {}",
                path.display(),
                full.display()
            )
        })
    };
    let kernel = read("kernel", &config.kernel)?;
    let initrd = match &config.initrd {
        Some(file) => Some(read("initrd", file)?),
        None => None,
    };
    let mut files: Vec<(&str, &[u8])> = vec![
        (esker_vmx::package::CONFIG, text.as_bytes()),
        (&config.kernel, &kernel),
    ];
    if let (Some(name), Some(bytes)) = (&config.initrd, &initrd) {
        files.push((name, bytes));
    }
    let package = esker_vmx::package::encode(&files);
    Ok(VmFile {
        path: path.to_owned(),
        config,
        package,
    })
}

/// Writes `dir/system.toml` — `base` plus a monitor world and a `[vms]` entry per VM —
/// and each VM's package beside it. Returns the manifest's path.
pub fn write_manifest(base: &Path, vms: &[VmFile], dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text =
        std::fs::read_to_string(base).with_context(|| format!("cannot read {}", base.display()))?;
    for (i, vm) in vms.iter().enumerate() {
        let c = &vm.config;
        if vms[..i].iter().any(|other| other.config.name == c.name) {
            bail!(
                "{} and {} both name a VM \"{}\"",
                vms[..i]
                    .iter()
                    .find(|o| o.config.name == c.name)
                    .map_or_else(String::new, |o| o.path.display().to_string()),
                vm.path.display(),
                c.name
            );
        }
        let package = format!("vm-{}", c.name);
        let _ = writeln!(text, "\n# From {}", vm.path.display());
        let _ = writeln!(text, "[worlds.{}]", c.name);
        let _ = writeln!(text, "binary = \"vmx\"");
        let _ = writeln!(text, "memory_kib = {MONITOR_MEMORY_KIB}");
        let _ = writeln!(text, "shares = {}", c.cpu.shares);
        let _ = writeln!(text, "reservation_mhz = {}", c.cpu.reservation_mhz);
        let _ = writeln!(text, "limit_mhz = {}", c.cpu.limit_mhz.unwrap_or(0));
        if let Some(mask) = c.cpu.affinity {
            let cpus: Vec<String> = (0..64)
                .filter(|bit| mask & (1 << bit) != 0)
                .map(|bit: u32| bit.to_string())
                .collect();
            let _ = writeln!(text, "affinity = [{}]", cpus.join(", "));
        }
        if !c.cpu.coschedule {
            let _ = writeln!(text, "coschedule = false");
        }
        if i == 0 {
            // The host console's input goes to the first VM.
            let _ = writeln!(text, "console = true");
        }
        let _ = writeln!(text, "guest_facing = true");
        let _ = writeln!(text, "vm = \"{}\"", c.name);
        let _ = writeln!(text, "\n[vms.{}]", c.name);
        let _ = writeln!(text, "monitor = \"{}\"", c.name);
        let _ = writeln!(text, "memory_mb = {}", c.memory_mb);
        let _ = writeln!(text, "vcpus = {}", c.vcpus);
        let _ = writeln!(text, "package = \"{package}\"");
        let pkg = dir.join(format!("{package}.pkg"));
        std::fs::write(&pkg, &vm.package)
            .with_context(|| format!("cannot write {}", pkg.display()))?;
        println!(
            "vm: {} from {} ({} MiB, {} vCPU, package {} KiB)",
            c.name,
            cargo::display(&vm.path),
            c.memory_mb,
            c.vcpus,
            vm.package.len().div_ceil(1024)
        );
    }
    let manifest = dir.join("system.toml");
    std::fs::write(&manifest, text)
        .with_context(|| format!("cannot write {}", manifest.display()))?;
    Ok(manifest)
}
