//! `cargo xtask bench`: how long the kernel takes to boot, how many instructions its
//! initialisation runs, how big it is and how much code it has.
//!
//! Results are printed as a table and written to `target/bench.json` as a list of
//! `{"name", "value", "unit"}`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use esker_kernel_core::contract;
use esker_logdecode::elf::{SizeSummary, alloc_sections};
use esker_logdecode::qemu::{Outcome, QemuConfig, QemuRun};
use esker_logdecode::{LogDecoder, LogEvent};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;

use crate::image::{self, Flavor, Image};
use crate::{cargo, host, loc};

/// Boots measured for the median boot time.
const BOOT_RUNS: usize = 5;
/// Longest a boot may take before the bench gives up on it (the machine is shared).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// One measured value.
#[derive(Serialize)]
struct Measurement {
    name: &'static str,
    value: serde_json::Number,
    unit: &'static str,
}

impl Measurement {
    fn count(name: &'static str, value: u64, unit: &'static str) -> Self {
        Self {
            name,
            value: value.into(),
            unit,
        }
    }
}

/// Runs every measurement.
pub fn run() -> Result<ExitCode> {
    let host = host::ensure_packages()?;
    let image = image::build(&host, Flavor::Normal)?;
    let mut results = Vec::new();

    let mut times = Vec::new();
    for run in 1..=BOOT_RUNS {
        let (elapsed, _) = boot_until_ready(&image, false)?;
        println!("bench: boot {run}/{BOOT_RUNS}: {:.1} ms", millis(elapsed));
        times.push(elapsed);
    }
    times.sort();
    let median = times[times.len() / 2];
    results.push(Measurement {
        name: "boot_time_median",
        value: serde_json::Number::from_f64(round(millis(median), 1))
            .context("boot time is not a finite number")?,
        unit: "ms",
    });

    let (_, ready) = boot_until_ready(&image, true)?;
    let cycles = boot_cycles(&ready.text)
        .with_context(|| format!("no cycle count in the ready line {:?}", ready.text))?;
    println!("bench: -icount shift=0,sleep=off boot: {cycles} TSC cycles (= instructions)");
    results.push(Measurement::count(
        "boot_instructions_icount",
        cycles,
        "instructions",
    ));

    let sizes = SizeSummary::of(&alloc_sections(&image.elf)?);
    for (name, value) in [
        ("kernel_size_text_plus_data", sizes.text + sizes.data),
        ("kernel_text", sizes.text),
        ("kernel_data", sizes.data),
        ("kernel_bss", sizes.bss),
        ("kernel_rodata", sizes.rodata),
    ] {
        results.push(Measurement::count(name, value, "bytes"));
    }

    let code = loc::count_tree(&cargo::workspace_root().join("microkernel"))?;
    results.push(Measurement::count(
        "microkernel_code_lines",
        code.lines as u64,
        "lines",
    ));

    println!();
    println!("{:<28} {:>14}  unit", "measurement", "value");
    for m in &results {
        println!("{:<28} {:>14}  {}", m.name, m.value, m.unit);
    }
    println!(
        "(data includes bss; code lines: {} files under microkernel/, tests excluded)",
        code.files
    );
    let path = cargo::target_dir().join("bench.json");
    let json = serde_json::to_string_pretty(&results).context("serialising results")?;
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("bench: wrote {}", cargo::display(&path));
    Ok(ExitCode::SUCCESS)
}

/// Boots the PVH image with the default machine until the kernel-ready line; returns the
/// wall time from QEMU's start to that line, and the line.
fn boot_until_ready(image: &Image, icount: bool) -> Result<(Duration, LogEvent)> {
    let mut config = QemuConfig::pvh(&image.dir, None);
    config.icount = icount;
    let mut qemu = QemuRun::spawn(&config, LogDecoder::new(&image.dir)?, None)?;
    let mut tail: Vec<String> = Vec::new();
    loop {
        match qemu.recv_timeout(BOOT_TIMEOUT.saturating_sub(qemu.started().elapsed())) {
            Ok(timed) if timed.event.text.contains(contract::READY) => {
                return Ok((timed.elapsed, timed.event));
            }
            Ok(timed) => tail.push(timed.event.to_string()),
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "no `{}` line within {BOOT_TIMEOUT:?}; log:\n{}",
                    contract::READY,
                    tail.join("\n")
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let outcome = Outcome::from_status(qemu.wait()?);
                bail!(
                    "QEMU ended before `{}`: {}; log:\n{}",
                    contract::READY,
                    outcome.describe(),
                    tail.join("\n")
                )
            }
        }
    }
}

/// `N` from `... boot took N TSC cycles ...`.
fn boot_cycles(text: &str) -> Option<u64> {
    let after = text.split("boot took ").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_count_is_read_from_the_ready_line() {
        assert_eq!(
            boot_cycles("kernel ready (boot took 123456 TSC cycles)"),
            Some(123_456)
        );
        assert_eq!(boot_cycles("kernel ready"), None);
    }
}
