//! `esker-manifest check system.toml`: checks a manifest and prints what it compiles to,
//! or every diagnostic (exit code 1).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use esker_manifest::{CompiledOwned, Manifest};

#[derive(Parser)]
#[command(
    name = "esker-manifest",
    about = "Check and compile Esker's system manifest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a manifest and summarise the worlds, objects and capabilities it creates.
    Check {
        /// The manifest (usually system.toml).
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let Command::Check { path } = Cli::parse().command;
    match esker_manifest::load(&path) {
        Ok(manifest) => {
            print!("{}", summary(&manifest, &manifest.compile()));
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("{}: {} error(s)", path.display(), diagnostics.len());
            ExitCode::FAILURE
        }
    }
}

fn summary(manifest: &Manifest, compiled: &CompiledOwned) -> String {
    let caps: usize = compiled.worlds.iter().map(|w| w.caps.len()).sum();
    let mut out = format!(
        "{}: ok: {}, {}, {}, {}, {}; {}, {}\n",
        manifest.file,
        count(manifest.worlds.len(), "world"),
        count(manifest.channels.len(), "channel"),
        count(manifest.devices.len(), "device"),
        count(manifest.memory.len(), "memory region"),
        count(manifest.notifications.len(), "notification"),
        count(compiled.objects.len(), "kernel object"),
        count(caps, "capability"),
    );
    for world in &compiled.worlds {
        let names: Vec<&str> = world.caps.iter().map(|c| c.name.as_str()).collect();
        out += &format!(
            "  {:<10} {:>5} KiB  {}\n",
            world.name,
            world.memory_kib,
            names.join(" ")
        );
    }
    out
}

/// `1 world`, `2 worlds`, `3 capabilities`.
fn count(n: usize, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}
