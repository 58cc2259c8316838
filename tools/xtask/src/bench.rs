//! `cargo xtask bench`: how long the kernel takes to boot, how many instructions its
//! initialisation runs, how many an IPC round trip and a null system call take, how big
//! the kernel is and how much code it has.
//!
//! Results are printed as a table (with the target next to figures that have one) and
//! written to `target/bench.json` as a list of `{"name", "value", "unit"}`.
//!
//! The IPC figures come from a separate image (`tools/xtask/manifests/ipc-bench.toml`,
//! built into `target/image-bench-ipc`): `ping` calls `pong` with raw zero-length `call`s
//! and times each with `rdtsc`; booted with `-smp 1` under `-icount shift=0,sleep=off`, a
//! TSC tick is one guest instruction, so the figures count instructions (kernel and user)
//! and are identical on every run.
//!
//! The scheduling figures ([`sched`]) are the policy's decision cost, computed on the host,
//! and the CPU split the booted kernel gives spinners with shares 2000/1000/1000.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use esker_kernel_core::contract;
use esker_logdecode::elf::{SizeSummary, alloc_sections};
use esker_logdecode::qemu::{Outcome, QemuConfig, QemuRun};
use esker_logdecode::{Level, LogDecoder, LogEvent};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;

use crate::host::Host;
use crate::image::{self, Flavor, Image};
use crate::{cargo, host, loc};

mod sched;
mod vm;

/// Boots measured for the median boot time.
const BOOT_RUNS: usize = 5;
/// The scheduler's time slice (µs), for the co-scheduling figures.
const SLICE_US: u64 = esker_kernel_core::sched::SLICE_NS / 1000;
/// Longest a boot may take before the bench gives up on it (the machine is shared).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The IPC benchmark's manifest, relative to the workspace root.
const IPC_MANIFEST: &str = "tools/xtask/manifests/ipc-bench.toml";
/// The IPC benchmark's image directory, under the target directory.
const IPC_IMAGE_DIR: &str = "image-bench-ipc";
/// Longest the IPC benchmark may run, boot included (TCG with icount on a shared machine).
const IPC_TIMEOUT: Duration = Duration::from_secs(600);
/// Most instructions an IPC round trip may take (the target).
const IPC_TARGET_INSTRUCTIONS: u64 = 1_000;
/// What an IPC round trip should take in the end (the goal).
const IPC_GOAL_INSTRUCTIONS: u64 = 300;

/// `ping`'s summary lines (see userworlds/testworlds/ping) and its last line.
const IPC_LINE: &str = "ping: ipc round trip:";
const NULL_SYSCALL_LINE: &str = "ping: null syscall (cap_info on an empty slot):";
const POLL_LINE: &str = "ping: notification poll:";
const RDTSC_LINE: &str = "ping: rdtsc back to back:";
const YIELD_LINE: &str = "ping: yield round trip (two context switches):";
const DONE_LINE: &str = "ping: done";
/// The benchmark's worlds (their failures end the run at once).
const IPC_WORLDS: [&str; 2] = ["ping", "pong"];

/// One measured value.
#[derive(Serialize)]
struct Measurement {
    name: &'static str,
    value: serde_json::Number,
    unit: &'static str,
    /// What the figure should be, shown in the table only.
    #[serde(skip)]
    target: Option<String>,
}

impl Measurement {
    fn count(name: &'static str, value: u64, unit: &'static str) -> Self {
        Self {
            name,
            value: value.into(),
            unit,
            target: None,
        }
    }

    fn decimal(name: &'static str, value: f64, decimals: i32, unit: &'static str) -> Result<Self> {
        Ok(Self {
            name,
            value: serde_json::Number::from_f64(round(value, decimals))
                .with_context(|| format!("{name} is not a finite number: {value}"))?,
            unit,
            target: None,
        })
    }

    fn with_target(mut self, target: String) -> Self {
        self.target = Some(target);
        self
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
        target: None,
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

    let ipc = ipc_bench(&host)?;
    let ipc_target =
        format!("target <= {IPC_TARGET_INSTRUCTIONS}, goal <= {IPC_GOAL_INSTRUCTIONS}");
    results.push(
        Measurement::count(
            "ipc_round_trip_instructions",
            ipc.round_trip.median,
            "instructions",
        )
        .with_target(format!("{ipc_target} ({})", verdict(ipc.round_trip.median))),
    );
    results.push(
        Measurement::count(
            "ipc_round_trip_min_instructions",
            ipc.round_trip.min,
            "instructions",
        )
        .with_target(ipc_target),
    );
    results.push(Measurement::count(
        "null_syscall_instructions",
        ipc.null_syscall.median,
        "instructions",
    ));
    results.push(Measurement::count(
        "notification_poll_instructions",
        ipc.poll.median,
        "instructions",
    ));
    // A yield that runs the other world and comes back is two world-to-world switches,
    // each a system call plus a scheduling decision plus an address-space switch.
    let switch = ipc.yield_round_trip.median / 2;
    println!(
        "bench: context switch world to world: {switch} instructions (half the yield round \
         trip's median {}, min {})",
        ipc.yield_round_trip.median, ipc.yield_round_trip.min
    );
    results.push(Measurement::count(
        "context_switch_instructions",
        switch,
        "instructions",
    ));

    let cpuid = vm::cpuid(&host)?;
    let cpuid_target = format!(
        "target <= {}, goal <= {} ({}; timing included: {} for two back-to-back rdtsc)",
        vm::CPUID_TARGET,
        vm::CPUID_GOAL,
        if cpuid.median <= vm::CPUID_GOAL {
            "goal met"
        } else if cpuid.median <= vm::CPUID_TARGET {
            "target met"
        } else {
            "over target"
        },
        cpuid.rdtsc
    );
    results.push(
        Measurement::count(
            "vm_cpuid_exit_round_trip_instructions",
            cpuid.median,
            "instructions",
        )
        .with_target(cpuid_target),
    );
    results.push(Measurement::count(
        "vm_cpuid_exit_round_trip_min_instructions",
        cpuid.min,
        "instructions",
    ));
    let linux = vm::linux(&host)?;
    println!(
        "bench: linux to user space: {:.2} s under Esker, {:.2} s directly: {:.2}x; exits: {}",
        linux.esker.as_secs_f64(),
        linux.direct.as_secs_f64(),
        linux.ratio(),
        linux.exits
    );
    results.push(
        Measurement::decimal("linux_boot_esker_s", linux.esker.as_secs_f64(), 2, "s")?.with_target(
            format!(
                "median of {}, QEMU start to first user-space line",
                vm::LINUX_RUNS
            ),
        ),
    );
    results.push(
        Measurement::decimal("linux_boot_direct_s", linux.direct.as_secs_f64(), 2, "s")?
            .with_target("same kernel, initramfs and command line, booted by QEMU itself".into()),
    );
    results.push(
        Measurement::decimal("linux_boot_ratio", linux.ratio(), 2, "x")?.with_target(format!(
            "target <= {}, goal <= {}; exits: {}",
            vm::LINUX_RATIO_TARGET,
            vm::LINUX_RATIO_GOAL,
            linux.exits
        )),
    );

    let costs = sched::decision_costs()?;
    let steps_at = |entities| {
        costs
            .iter()
            .find(|c| c.entities == entities)
            .map_or(f64::NAN, |c| c.steps)
    };
    let growth = steps_at(128) / steps_at(16);
    for cost in &costs {
        println!(
            "bench: scheduler, 1 CPU, {} busy entities: {:.2} steps, {:.0} ns per pick ({})",
            cost.entities,
            cost.steps,
            cost.ns_per_pick,
            sched::host_build()
        );
    }
    println!(
        "bench: scheduler decision steps, 128 entities / 16 entities: {growth:.2}x (linear: 8x)"
    );
    for cost in &costs {
        let (steps_name, ns_name) = decision_names(cost.entities);
        let mut steps = Measurement::decimal(steps_name, cost.steps, 2, "steps")?;
        if cost.entities == 128 {
            steps = steps.with_target(format!(
                "sublinear: {growth:.2}x the 16-entity cost (linear: 8x)"
            ));
        }
        results.push(steps);
        results.push(
            Measurement::decimal(ns_name, cost.ns_per_pick, 1, "ns")?
                .with_target(format!("host, {}", sched::host_build())),
        );
    }

    let split = sched::fairness(&host)?;
    let fractions = split.fractions();
    let shown = |values: [f64; 3]| {
        values
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "bench: CPU split for shares 2000/1000/1000: {} (want {}); together the spinners \
         ran {} permille of their windows (less: the host took the vCPU away)",
        shown(fractions),
        shown(sched::SPINNERS.map(|(_, want)| want)),
        split.spins.iter().map(|s| s.permille).sum::<u64>()
    );
    results.push(
        Measurement::decimal(
            "sched_fairness_error_percent",
            split.error_percent(),
            2,
            "percent",
        )?
        .with_target(format!("split {} of 0.5/0.25/0.25", shown(fractions))),
    );

    // A guest spinning on a lock its descheduled sibling holds: how long at most, with
    // relaxed co-scheduling and without (1 host CPU, icount: guest time).
    let relaxed = vm::cospin(&host, true)?;
    let off = vm::cospin(&host, false)?;
    println!(
        "bench: 2 vCPUs on one lock, 1 host CPU: longest spin {} us with relaxed \
         co-scheduling, {} us without (slice {} us); spun {} vs {} per mille; {} vs {} \
         acquisitions in {} ms",
        relaxed.longest_us,
        off.longest_us,
        SLICE_US,
        relaxed.spun_permille,
        off.spun_permille,
        relaxed.acquisitions,
        off.acquisitions,
        vm::COSPIN_MS
    );
    for (name, value, unit) in [
        ("vsmp_longest_spin_us_coscheduled", relaxed.longest_us, "us"),
        ("vsmp_longest_spin_us_independent", off.longest_us, "us"),
        (
            "vsmp_spin_permille_coscheduled",
            relaxed.spun_permille,
            "permille",
        ),
        (
            "vsmp_spin_permille_independent",
            off.spun_permille,
            "permille",
        ),
        (
            "vsmp_lock_acquisitions_coscheduled",
            relaxed.acquisitions,
            "acquisitions",
        ),
        (
            "vsmp_lock_acquisitions_independent",
            off.acquisitions,
            "acquisitions",
        ),
    ] {
        results.push(Measurement::count(name, value, unit));
    }

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
    println!(
        "{:<32} {:>14}  {:<13} target",
        "measurement", "value", "unit"
    );
    for m in &results {
        let line = format!(
            "{:<32} {:>14}  {:<13} {}",
            m.name,
            m.value,
            m.unit,
            m.target.as_deref().unwrap_or("")
        );
        println!("{}", line.trim_end());
    }
    println!(
        "(data includes bss; code lines: {} files under microkernel/, tests excluded; \
         IPC figures are medians over {} calls under icount, where a cycle is an \
         instruction, kernel and user, timing included: {} for two back-to-back rdtsc)",
        code.files, ipc.round_trip.count, ipc.rdtsc.median
    );
    println!(
        "(scheduler: one CPU, equal shares, one slice per pick, steps averaged over 10000 \
         picks; ns per pick measured in this xtask build ({}){}; fairness: iterations of \
         three spinners over 3 s, booted with {} CPU under icount, largest deviation relative to \
         the share)",
        sched::host_build(),
        if cfg!(debug_assertions) {
            ", slower than an optimised build: compare them only between runs of this bench"
        } else {
            ""
        },
        sched::FAIRNESS_CPUS
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

/// What `ping` measured.
struct IpcFigures {
    /// `call` to `pong` and back.
    round_trip: Summary,
    /// `cap_info` on an empty slot.
    null_syscall: Summary,
    /// `poll` on a notification no one signals.
    poll: Summary,
    /// Two `rdtsc`s back to back: what the timing adds to each sample.
    rdtsc: Summary,
    /// `yield` to a yielding `pong` and back: two context switches.
    yield_round_trip: Summary,
}

/// One of `ping`'s summary lines: `median M cycles, min A, p90 B, max C over N calls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Summary {
    median: u64,
    min: u64,
    p90: u64,
    max: u64,
    count: u64,
}

impl Summary {
    /// Reads the line `text` if it starts with `prefix`.
    fn parse(text: &str, prefix: &str) -> Option<Self> {
        let rest = text.strip_prefix(prefix)?;
        Some(Self {
            median: number_after(rest, "median ")?,
            min: number_after(rest, "min ")?,
            p90: number_after(rest, "p90 ")?,
            max: number_after(rest, "max ")?,
            count: number_after(rest, "over ")?,
        })
    }
}

/// Builds the IPC benchmark image, boots it with one CPU under icount until `ping` is done,
/// and reads its summary lines.
fn ipc_bench(host: &Host) -> Result<IpcFigures> {
    let manifest = cargo::workspace_root().join(IPC_MANIFEST);
    let image = image::build_with(
        host,
        Flavor::Normal,
        &manifest,
        &cargo::target_dir().join(IPC_IMAGE_DIR),
    )?;
    let mut config = QemuConfig::pvh(&image.dir, None);
    config.icount = true;
    config.cpus = 1;
    println!("bench: {}", config.command_line());
    let mut qemu = QemuRun::spawn(&config, LogDecoder::new(&image.dir)?, None)?;
    let mut log: Vec<String> = Vec::new();
    let mut summaries: Vec<String> = Vec::new();
    loop {
        let event = match qemu.recv_timeout(IPC_TIMEOUT.saturating_sub(qemu.started().elapsed())) {
            Ok(timed) => timed.event,
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "no `{DONE_LINE}` line within {IPC_TIMEOUT:?}; log:\n{}",
                    tail(&log)
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let outcome = Outcome::from_status(qemu.wait()?);
                bail!(
                    "QEMU ended before `{DONE_LINE}`: {}; log:\n{}",
                    outcome.describe(),
                    tail(&log)
                )
            }
        };
        log.push(event.to_string());
        if event.level == Some(Level::Error) || world_ended(&event.text) {
            bail!(
                "the IPC benchmark failed: {}; log:\n{}",
                event.text,
                tail(&log)
            );
        }
        if event.source == "ping" && event.text.starts_with("ping: ") {
            println!("bench: {}", event.text);
            if event.text == DONE_LINE {
                break;
            }
            summaries.push(event.text);
        }
    }
    qemu.kill();
    let find = |prefix: &str| {
        summaries
            .iter()
            .find_map(|line| Summary::parse(line, prefix))
            .with_context(|| {
                format!(
                    "ping logged no readable `{prefix} median ...` line; log:\n{}",
                    tail(&log)
                )
            })
    };
    Ok(IpcFigures {
        round_trip: find(IPC_LINE)?,
        null_syscall: find(NULL_SYSCALL_LINE)?,
        poll: find(POLL_LINE)?,
        rdtsc: find(RDTSC_LINE)?,
        yield_round_trip: find(YIELD_LINE)?,
    })
}

/// Whether a kernel line says one of the benchmark's worlds stopped, exited or was not
/// created (before `ping: done`, any of these is a failure).
fn world_ended(text: &str) -> bool {
    world_ended_in(&IPC_WORLDS, text)
}

/// Whether a kernel line says one of `worlds` stopped, exited or was not created.
fn world_ended_in(worlds: &[&str], text: &str) -> bool {
    worlds.iter().any(|world| {
        text.strip_prefix("world ")
            .and_then(|rest| rest.strip_prefix(world))
            .is_some_and(|rest| {
                rest.starts_with(" stopped")
                    || rest.starts_with(" exited")
                    || rest.starts_with(": not created")
            })
    })
}

/// The measurement names of the decision cost with `entities` runnable entities.
fn decision_names(entities: u16) -> (&'static str, &'static str) {
    match entities {
        1 => ("sched_decision_steps_1", "sched_decision_ns_1"),
        16 => ("sched_decision_steps_16", "sched_decision_ns_16"),
        128 => ("sched_decision_steps_128", "sched_decision_ns_128"),
        _ => ("sched_decision_steps", "sched_decision_ns"),
    }
}

/// How a round trip of `instructions` compares with the target and the goal.
fn verdict(instructions: u64) -> &'static str {
    if instructions <= IPC_GOAL_INSTRUCTIONS {
        "goal met"
    } else if instructions <= IPC_TARGET_INSTRUCTIONS {
        "target met"
    } else {
        "ABOVE TARGET"
    }
}

/// The last lines of a log, for error messages.
fn tail(log: &[String]) -> String {
    log[log.len().saturating_sub(60)..].join("\n")
}

/// `N` from `... boot took N TSC cycles ...`.
fn boot_cycles(text: &str) -> Option<u64> {
    number_after(text, "boot took ")
}

/// The decimal number right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let after = text.split(key).nth(1)?;
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

    #[test]
    fn ping_summaries_are_read_by_their_prefix() {
        let line = "ping: ipc round trip: median 1234 cycles, min 1200, p90 1300, max 9999 \
                    over 2000 calls";
        assert_eq!(
            Summary::parse(line, IPC_LINE),
            Some(Summary {
                median: 1234,
                min: 1200,
                p90: 1300,
                max: 9999,
                count: 2000
            })
        );
        assert_eq!(Summary::parse(line, NULL_SYSCALL_LINE), None);
        let null = "ping: null syscall (cap_info on an empty slot): median 310 cycles, min 305, \
                    p90 312, max 400 over 2000 calls";
        assert_eq!(
            Summary::parse(null, NULL_SYSCALL_LINE).map(|s| s.median),
            Some(310)
        );
        assert_eq!(
            Summary::parse("ping: ipc round trip: median x cycles", IPC_LINE),
            None
        );
    }

    #[test]
    fn the_benchmark_worlds_ending_early_is_noticed() {
        assert!(world_ended("world ping stopped: #PF at rip 0x401000"));
        assert!(world_ended("world pong exited with code 1"));
        assert!(world_ended("world ping: not created: out of memory"));
        assert!(!world_ended("world pingpong exited with code 1"));
        assert!(!world_ended("worlds: 2 created, 5 capabilities installed"));
    }

    #[test]
    fn verdicts_follow_target_and_goal() {
        assert_eq!(verdict(300), "goal met");
        assert_eq!(verdict(1000), "target met");
        assert_eq!(verdict(1001), "ABOVE TARGET");
    }
}
