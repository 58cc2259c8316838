//! Virtual-machine benchmarks: the CPUID exit round trip (guest → kernel → vmx → guest) in
//! instructions under `-icount shift=0`, and Linux's boot under Esker against the same
//! kernel and initramfs booted directly by the same QEMU.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use esker_logdecode::LogDecoder;
use esker_logdecode::qemu::{QemuConfig, QemuRun};
use esker_testguest::SpinSummary;

use crate::host::Host;
use crate::image::{self, Flavor};
use crate::{cargo, guest, vms};

/// Longest a CPUID benchmark run may take (boot included, TCG with icount).
const CPUID_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest one Linux boot may take.
const LINUX_TIMEOUT: Duration = Duration::from_secs(900);
/// Linux boots per side (alternating); the median is used.
pub const LINUX_RUNS: usize = 3;
/// The CPUID round trip the issue asks for now, and its goal.
pub const CPUID_TARGET: u64 = 5_000;
/// See [`CPUID_TARGET`].
pub const CPUID_GOAL: u64 = 2_000;
/// The Linux boot ratio the issue asks for now, and its goal.
pub const LINUX_RATIO_TARGET: f64 = 3.0;
/// See [`LINUX_RATIO_TARGET`].
pub const LINUX_RATIO_GOAL: f64 = 1.5;

/// The CPUID benchmark's result.
pub struct Cpuid {
    /// Median instructions per round trip (timing included).
    pub median: u64,
    /// Minimum.
    pub min: u64,
    /// Two back-to-back RDTSCs.
    pub rdtsc: u64,
}

/// Boots the test guest in `cpuid-bench` mode with one CPU under icount and reads its
/// figures.
pub fn cpuid(host: &Host) -> Result<Cpuid> {
    let line = test_guest_line(
        host,
        "cpuid",
        "memory_mb = 16\nkernel = \"testguest.elf\"\ncmdline = \"cpuid-bench\"\n",
        "the CPUID benchmark",
        |text| text.contains("cpuid round trip:"),
    )?;
    let number = |key: &str| super::number_after(&line, key);
    match (number("median "), number("min "), number("rdtsc ")) {
        (Some(median), Some(min), Some(rdtsc)) => Ok(Cpuid { median, min, rdtsc }),
        _ => bail!("cannot read the CPUID figures in {line:?}"),
    }
}

/// Boots the test guest as VM `name` (its configuration `config` after the name line) in
/// an image of its own (`target/image-bench-<name>`), on one CPU under icount, and returns
/// the first line of its world's for which `wanted` holds; fails (naming `what`) if the
/// VM powers off or fails first, or nothing comes within [`CPUID_TIMEOUT`].
fn test_guest_line(
    host: &Host,
    name: &str,
    config: &str,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<String> {
    let guest = guest::build_testguest().map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = cargo::target_dir().join(format!("image-bench-{name}"));
    let files = dir.join("files");
    std::fs::create_dir_all(&files)?;
    std::fs::copy(&guest, files.join("testguest.elf"))?;
    let config_file = files.join(format!("{name}.toml"));
    std::fs::write(&config_file, format!("name = \"{name}\"\n{config}"))?;
    let vm = vms::load(&config_file)?;
    let manifest = vms::write_manifest(&image::default_manifest(), &[vm], &dir)?;
    let image = image::build_with(host, Flavor::Normal, &manifest, &dir)?;
    let mut qemu_config = QemuConfig::pvh(&image.dir, None);
    qemu_config.icount = true;
    qemu_config.cpus = 1;
    println!("bench: {}", qemu_config.command_line());
    let mut qemu = QemuRun::spawn(&qemu_config, LogDecoder::new(&image.dir)?, None)?;
    let mut log = Vec::new();
    let line = loop {
        let left = CPUID_TIMEOUT.saturating_sub(qemu.started().elapsed());
        let event = match qemu.recv_timeout(left) {
            Ok(timed) => timed.event,
            Err(_) => bail!(
                "no figures from {what} within {CPUID_TIMEOUT:?}; log:\n{}",
                log.join("\n")
            ),
        };
        log.push(event.to_string());
        if event.source != name {
            continue;
        }
        if wanted(&event.text) {
            break event.text;
        }
        if ["powered off", "not powered on", "FAILED"]
            .iter()
            .any(|failure| event.text.contains(failure))
        {
            bail!("{what} VM failed: {}", event.text);
        }
    };
    qemu.kill();
    println!("bench: {name}: {line}");
    Ok(line)
}

/// Guest time the co-scheduling benchmark's vCPUs take turns on their lock (ms).
pub const COSPIN_MS: u64 = 1500;

/// Boots a two-vCPU test guest whose vCPUs take turns on one spinlock, on one host CPU
/// under icount (so the vCPUs share it and a lock holder is sometimes descheduled), with
/// relaxed co-scheduling (`coschedule`) or without; returns what the guest measured.
pub fn cospin(host: &Host, coschedule: bool) -> Result<SpinSummary> {
    let line = test_guest_line(
        host,
        if coschedule { "cospin" } else { "cospin-off" },
        &format!(
            "memory_mb = 32\nvcpus = 2\nkernel = \"testguest.elf\"\n\
             cmdline = \"spin={COSPIN_MS}\"\ncpu.coschedule = \"{}\"\n",
            if coschedule { "relaxed" } else { "off" }
        ),
        "the co-scheduling benchmark",
        |text| SpinSummary::parse(text).is_some(),
    )?;
    SpinSummary::parse(&line).with_context(|| format!("cannot read the spin figures in {line:?}"))
}

/// The Linux boot comparison.
pub struct LinuxBoot {
    /// Median wall time from QEMU's start to the first user-space line, Esker.
    pub esker: Duration,
    /// The same, the kernel booted directly by QEMU.
    pub direct: Duration,
    /// Exits by reason, from the monitor's power-off line of the last Esker boot.
    pub exits: String,
}

impl LinuxBoot {
    /// Esker's time over the direct boot's.
    pub fn ratio(&self) -> f64 {
        self.esker.as_secs_f64() / self.direct.as_secs_f64()
    }
}

/// Boots Linux (from `cargo xtask guest linux`, built if missing) under Esker and directly,
/// alternating, [`LINUX_RUNS`] times each.
pub fn linux(host: &Host) -> Result<LinuxBoot> {
    let dir = guest::default_linux_dir();
    let config_path = dir.join(guest::LINUX_CONFIG);
    if !config_path.is_file() {
        guest::linux(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let text = std::fs::read_to_string(&config_path)?;
    let mut config = esker_vmx::config::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    // The guest powers off after its first lines, so the monitor reports its exits.
    config.cmdline.push_str(" esker.poweroff");
    let bench_config = dir.join("bench-linux.toml");
    std::fs::write(&bench_config, config.to_toml())?;
    let vm = vms::load(&bench_config)?;
    let image_dir = cargo::target_dir().join("image-bench-linux");
    let manifest = vms::write_manifest(&image::default_manifest(), &[vm], &image_dir)?;
    let image = image::build_with(host, Flavor::Normal, &manifest, &image_dir)?;
    let kernel = dir.join(&config.kernel);
    let initrd = config.initrd.as_ref().map(|i| dir.join(i));
    let mut esker = Vec::new();
    let mut direct = Vec::new();
    let mut exits = String::new();
    for run in 1..=LINUX_RUNS {
        let (time, counts) = boot_under_esker(&image.dir, &config.name)?;
        println!(
            "bench: linux {run}/{LINUX_RUNS} under Esker: {:.2} s to user space",
            time.as_secs_f64()
        );
        esker.push(time);
        exits = counts;
        let time = boot_directly(
            &kernel,
            initrd.as_deref(),
            &config.cmdline,
            config.memory_mb,
        )?;
        println!(
            "bench: linux {run}/{LINUX_RUNS} directly:    {:.2} s to user space",
            time.as_secs_f64()
        );
        direct.push(time);
    }
    esker.sort();
    direct.sort();
    Ok(LinuxBoot {
        esker: esker[LINUX_RUNS / 2],
        direct: direct[LINUX_RUNS / 2],
        exits,
    })
}

/// One boot under Esker: time to the ready line, then the monitor's exit counts.
fn boot_under_esker(image_dir: &Path, vm: &str) -> Result<(Duration, String)> {
    let config = QemuConfig::pvh(image_dir, None);
    let mut qemu = QemuRun::spawn(&config, LogDecoder::new(image_dir)?, None)?;
    let started = Instant::now();
    let mut ready = None;
    let mut log: Vec<String> = Vec::new();
    loop {
        let left = LINUX_TIMEOUT.saturating_sub(started.elapsed());
        let event = match qemu.recv_timeout(left) {
            Ok(timed) => timed.event,
            Err(_) => bail!(
                "Linux under Esker: no power-off within {LINUX_TIMEOUT:?}; log tail:\n{}",
                log[log.len().saturating_sub(30)..].join("\n")
            ),
        };
        log.push(event.to_string());
        if event.source != vm {
            continue;
        }
        if ready.is_none() && event.text.contains(guest::LINUX_READY_LINE) {
            ready = Some(started.elapsed());
        }
        if event.text.starts_with("vmx: vm") && event.text.contains("powered off") {
            qemu.kill();
            let Some(time) = ready else {
                bail!("Linux powered off before user space: {}", event.text);
            };
            let exits = event
                .text
                .split_once("; ")
                .map_or(String::new(), |(_, counts)| counts.to_owned());
            return Ok((time, exits));
        }
        if event.text.contains("not powered on") {
            bail!("Linux under Esker: {}", event.text);
        }
    }
}

/// One direct boot: `qemu-system-x86_64 -kernel … -initrd … -append …` until the ready
/// line appears on its serial console.
fn boot_directly(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    memory_mb: u32,
) -> Result<Duration> {
    let mut command = Command::new("qemu-system-x86_64");
    command.args(["-machine", "q35", "-cpu", "qemu64", "-smp", "1"]);
    command.args(["-m", &memory_mb.to_string()]);
    command.args(["-display", "none", "-monitor", "none", "-no-reboot"]);
    command.args(["-serial", "stdio"]);
    command.arg("-kernel").arg(kernel);
    if let Some(initrd) = initrd {
        command.arg("-initrd").arg(initrd);
    }
    command.args(["-append", cmdline]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let result = loop {
        match receive.recv_timeout(LINUX_TIMEOUT.saturating_sub(started.elapsed())) {
            Ok(line) if line.contains(guest::LINUX_READY_LINE) => break Ok(started.elapsed()),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!(
                    "Linux booted directly by QEMU printed no {:?} within {LINUX_TIMEOUT:?}",
                    guest::LINUX_READY_LINE
                ));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}
