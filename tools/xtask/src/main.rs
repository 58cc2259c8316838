//! `cargo xtask`: builds Esker's images, runs them in QEMU, decodes their serial logs,
//! runs the whole test suite and measures the kernel.
//!
//! Every command that needs host tools (QEMU, GRUB, xorriso, mtools) checks for them first
//! and installs the missing Debian packages when running as root ([`host`]). QEMU is
//! always started through `esker_logdecode::qemu`, the one place its command line is built.

mod audit;
mod bench;
mod bootcheck;
mod cargo;
mod guest;
mod host;
mod image;
mod loc;
mod run;
mod test_suite;
mod vms;
mod worlds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Esker's build, run and test driver.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel and its boot images (target/image: esker.elf, esker.iso).
    Image {
        /// Build the self-test kernel (feature `selftest`) into target/image-selftest.
        #[arg(long)]
        selftest: bool,
        /// The system manifest whose worlds the image carries [default: system.toml].
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Where to write the image [default: target/image, or target/image-selftest].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build the image and boot it in QEMU, printing the decoded serial log.
    Run(run::RunArgs),
    /// Decode a captured serial stream (QEMU `-serial file:...`) to readable lines.
    Decode {
        /// The captured bytes.
        file: PathBuf,
        /// Image directory holding esker.elf (and worlds/*.elf) of the run that produced it
        /// [default: the workspace's target/image].
        #[arg(long)]
        image_dir: Option<PathBuf>,
    },
    /// Run everything: host check, fmt, clippy, unit tests, images, QEMU tests.
    Test,
    /// Measure boot time, boot instruction count, kernel size and code lines.
    Bench,
    /// Build a guest: `linux` (a Debian cloud kernel and a busybox initramfs, with its VM
    /// configuration file) or `testguest` (the Rust test guest).
    Guest {
        /// Which guest.
        #[arg(value_parser = ["linux", "testguest"])]
        which: String,
        /// Where to write it [default: target/guest/<which>].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Audit the capability policy of a manifest against the built world programs.
    Audit {
        /// The system manifest [default: system.toml].
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The rule file [default: audit.toml].
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audit { manifest, rules } => audit::run(
            &manifest.unwrap_or_else(audit::default_manifest),
            &rules.unwrap_or_else(audit::default_rules),
        )
        .map(|()| ExitCode::SUCCESS),
        Command::Image {
            selftest,
            manifest,
            out,
        } => host::ensure_packages()
            .and_then(|host| {
                let flavor = image::Flavor::from_selftest(selftest);
                image::build_with(
                    &host,
                    flavor,
                    &manifest.unwrap_or_else(image::default_manifest),
                    &out.unwrap_or_else(|| flavor.image_dir()),
                )
            })
            .map(|_| ExitCode::SUCCESS),
        Command::Run(args) => run::run(&args),
        Command::Decode { file, image_dir } => run::decode(
            &file,
            &image_dir.unwrap_or_else(|| image::Flavor::Normal.image_dir()),
        ),
        Command::Test => test_suite::run(),
        Command::Bench => bench::run(),
        Command::Guest { which, out } => match which.as_str() {
            "linux" => guest::linux(&out.unwrap_or_else(guest::default_linux_dir))
                .map(|_| ExitCode::SUCCESS)
                .map_err(|e| anyhow::anyhow!("{e}")),
            _ => guest::build_testguest()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|built| {
                    if let Some(out) = out {
                        std::fs::copy(&built, &out).map_err(|e| {
                            anyhow::anyhow!(
                                "cannot copy {} to {}: {e}",
                                built.display(),
                                out.display()
                            )
                        })?;
                        println!("guest: wrote {}", out.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
