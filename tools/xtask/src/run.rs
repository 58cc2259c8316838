//! `cargo xtask run` (boot the image in QEMU, show its log live) and `cargo xtask decode`
//! (show a captured serial stream).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use esker_kernel_core::contract;
use esker_logdecode::LogDecoder;
use esker_logdecode::qemu::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB, Outcome, QemuConfig, QemuRun};

use crate::cargo;
use crate::host;
use crate::image::{self, Flavor};

/// Exit status after Ctrl-C, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

/// Options of `cargo xtask run`.
#[derive(Args)]
pub struct RunArgs {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = DEFAULT_CPUS)]
    cpus: u32,
    /// Boot the GRUB ISO (Multiboot2) instead of the ELF through PVH.
    #[arg(long)]
    iso: bool,
    /// Boot the GRUB ISO under UEFI firmware (OVMF); implies --iso.
    #[arg(long)]
    uefi: bool,
    /// Kernel command line (PVH boots only).
    #[arg(long)]
    append: Option<String>,
    /// Boot the self-test build and run this self-test (esker.selftest=NAME).
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(contract::selftest::ALL))]
    selftest: Option<String>,
    /// Power on the VM this configuration file describes (repeatable).
    #[arg(long = "vm", value_name = "FILE.toml")]
    vms: Vec<std::path::PathBuf>,
    /// Exit 0 as soon as TEXT appears on a guest console (non-zero on timeout, VM or kernel
    /// failure).
    #[arg(long, value_name = "TEXT")]
    expect: Option<String>,
    /// With --expect: give up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
    /// Extra arguments passed to QEMU verbatim.
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

/// Builds, boots and follows the kernel until QEMU exits or Ctrl-C.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let iso = args.iso || args.uefi;
    if iso && (args.append.is_some() || args.selftest.is_some()) {
        bail!("--append and --selftest need a PVH boot: the ISO's GRUB command line is fixed");
    }
    if args.expect.is_some() && args.vms.is_empty() {
        bail!("--expect watches guest consoles: give at least one --vm FILE.toml");
    }
    let vms = args
        .vms
        .iter()
        .map(|path| crate::vms::load(path))
        .collect::<Result<Vec<_>>>()?;
    let host = host::ensure_packages()?;
    let flavor = Flavor::from_selftest(args.selftest.is_some());
    let image = if vms.is_empty() {
        image::build(&host, flavor)?
    } else {
        let dir = cargo::target_dir().join("image-vms");
        let manifest = crate::vms::write_manifest(&image::default_manifest(), &vms, &dir)?;
        image::build_with(&host, flavor, &manifest, &dir)?
    };
    let vm_names: Vec<String> = vms.iter().map(|vm| vm.config.name.clone()).collect();
    let started = std::time::Instant::now();
    let append = match (&args.selftest, &args.append) {
        (None, append) => append.clone(),
        (Some(test), None) => Some(format!("{}={test}", contract::SELFTEST_KEY)),
        (Some(test), Some(append)) => Some(format!("{append} {}={test}", contract::SELFTEST_KEY)),
    };
    let mut config = if args.uefi {
        let firmware = host
            .uefi_firmware
            .clone()
            .context("--uefi needs OVMF: apt-get install -y ovmf")?;
        if !host.grub_efi {
            bail!(
                "--uefi needs GRUB's UEFI files in the ISO: apt-get install -y grub-efi-amd64-bin"
            );
        }
        QemuConfig::uefi_iso(&image.dir, &firmware)
    } else if iso {
        QemuConfig::iso(&image.dir)
    } else {
        QemuConfig::pvh(&image.dir, append)
    };
    config.memory_mib = args.memory;
    config.cpus = args.cpus;
    config.extra_args = args.qemu_args.clone();

    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    let capture = cargo::target_dir().join("run/serial.bin");
    let decoder = LogDecoder::new(&image.dir)?;
    println!("run: {}", config.command_line());
    println!("run: raw serial bytes go to {}", cargo::display(&capture));
    let mut qemu = QemuRun::spawn(&config, decoder, Some(&capture))?;
    let colour = std::io::stdout().is_terminal();
    // Lines typed here go to COM1's input: the kernel hands them to the first VM's
    // console (a guest shell), if a VM runs.
    let typed = forward_stdin();
    loop {
        while let Ok(line) = typed.try_recv() {
            let _ = qemu.send(&line);
        }
        match qemu.recv_timeout(Duration::from_millis(100)) {
            Ok(timed) => {
                println!("{}", timed.event.render(colour));
                if let Some(expect) = &args.expect {
                    match watch(&timed.event, expect, &vm_names) {
                        Watch::Found => {
                            qemu.kill();
                            let _ = qemu.wait();
                            println!("run: found \"{expect}\" on a guest console");
                            return Ok(ExitCode::SUCCESS);
                        }
                        Watch::Failed(why) => {
                            qemu.kill();
                            let _ = qemu.wait();
                            println!("run: {why} before \"{expect}\" appeared");
                            return Ok(ExitCode::FAILURE);
                        }
                        Watch::Nothing => {}
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(expect) = &args.expect
            && started.elapsed() > Duration::from_secs(args.timeout)
        {
            qemu.kill();
            let _ = qemu.wait();
            println!(
                "run: \"{expect}\" did not appear on a guest console within {} s",
                args.timeout
            );
            return Ok(ExitCode::FAILURE);
        }
        if interrupted.load(Ordering::SeqCst) {
            qemu.kill();
            // QEMU is gone: drain what was decoded, including the flushed tail.
            while let Ok(timed) = qemu.recv_timeout(Duration::from_secs(5)) {
                println!("{}", timed.event.render(colour));
            }
            let _ = qemu.wait();
            println!("run: interrupted, QEMU stopped");
            return Ok(ExitCode::from(INTERRUPTED));
        }
    }
    let status = qemu.wait().context("waiting for QEMU")?;
    let outcome = Outcome::from_status(status);
    println!("run: {}", outcome.describe());
    Ok(if outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads this process's stdin line by line on a thread; the lines arrive on the channel.
fn forward_stdin() -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        while stdin.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if send.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    receive
}

/// What an event means to `--expect`.
enum Watch {
    Found,
    Failed(String),
    Nothing,
}

/// Checks one event: the text on a VM's console (its monitor world's lines), a VM
/// failing (its monitor reports a power-off other than a clean exit, stops or is not
/// created), or the kernel failing.
fn watch(event: &esker_logdecode::LogEvent, expect: &str, vms: &[String]) -> Watch {
    let text = &event.text;
    let from_vm = vms.contains(&event.source);
    if from_vm && !text.starts_with("vmx:") && text.contains(expect) {
        return Watch::Found;
    }
    if from_vm
        && text.starts_with("vmx:")
        && (text.contains("powered off") || text.contains("not powered on"))
    {
        return Watch::Failed(format!("VM {}: {text}", event.source));
    }
    if event.source == "kernel" {
        for vm in vms {
            if text.starts_with(&format!("world {vm} stopped"))
                || text.starts_with(&format!("world {vm}: not created"))
                || text.starts_with(&format!("world {vm} exited"))
            {
                return Watch::Failed(text.clone());
            }
        }
        if text.contains("system halted") || text.starts_with("panic") {
            return Watch::Failed(format!("the kernel failed: {text}"));
        }
    }
    Watch::Nothing
}

/// Decodes `file` with the ELFs of `image_dir` and prints one line per event.
pub fn decode(file: &Path, image_dir: &Path) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut decoder = LogDecoder::new(image_dir)
        .with_context(|| format!("image directory {}", image_dir.display()))?;
    let colour = std::io::stdout().is_terminal();
    for event in decoder.push(&bytes).into_iter().chain(decoder.finish()) {
        println!("{}", event.render(colour));
    }
    Ok(ExitCode::SUCCESS)
}
