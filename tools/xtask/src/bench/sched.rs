//! Scheduling figures: what a decision of the policy costs (computed on the host by
//! calling `esker_kernel_core::sched` directly) and how fairly the booted kernel splits
//! the CPU between spinners with shares 2000/1000/1000.
//!
//! Decision cost: one CPU, `n` always-runnable entities of equal shares, a simulated clock
//! advanced by one slice per pick. Steps ([`last_decision_steps`]) are exact and the same
//! on every run; the host time per pick depends on how xtask was compiled — `cargo xtask`
//! runs the dev profile (no optimisation), which makes it a few times what an optimised
//! build takes, so the table says which build measured it.
//!
//! Fairness: the image of `qemu-tests/manifests/shares.toml` (built into
//! `target/image-bench-shares`) boots once on one CPU under `-icount shift=0,sleep=off`,
//! as the QEMU test does (guest time follows guest instructions, so the host's load does
//! not enter the figure); each spinner reports its iterations over three seconds and each
//! world's fraction of the total is compared with its share of the shares.
//!
//! [`last_decision_steps`]: esker_kernel_core::sched::SchedulerOf::last_decision_steps

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use esker_kernel_core::sched::{Params, SLICE_NS, Scheduler, Topology};
use esker_logdecode::qemu::{Outcome, QemuConfig, QemuRun};
use esker_logdecode::{Level, LogDecoder};
use std::sync::mpsc::RecvTimeoutError;

use super::{number_after, tail, world_ended_in};

/// CPUs the fairness machine has (the shares are of one CPU).
pub const FAIRNESS_CPUS: u32 = 1;
use crate::cargo;
use crate::host::Host;
use crate::image::{self, Flavor};

/// Runnable entity counts the decision cost is measured at.
pub(super) const DECISION_ENTITIES: [u16; 3] = [1, 16, 128];
/// Picks the steps are averaged over, and picks in each timed round.
const PICKS: u64 = 10_000;
/// Picks made before measuring (the first decisions start from an empty CPU).
const WARMUP_PICKS: u64 = 1_000;
/// Timed rounds; the median is reported.
const TIMING_ROUNDS: usize = 5;
/// Stack of the thread holding the scheduler (about 145 KiB; unoptimised code may keep
/// more than one copy on the stack while boxing it).
const SCHEDULER_STACK: usize = 16 << 20;
/// Any frequency: with shares only, it does not enter the decision.
const CPU_MHZ: u32 = 1000;
/// The shares every entity gets.
const EQUAL_SHARES: u32 = 1000;

/// The fairness benchmark's manifest, relative to the workspace root.
const SHARES_MANIFEST: &str = "qemu-tests/manifests/shares.toml";
/// Its image directory, under the target directory.
const SHARES_IMAGE_DIR: &str = "image-bench-shares";
/// Longest the boot and the spinners' three seconds may take (TCG on a shared machine).
const SHARES_TIMEOUT: Duration = Duration::from_secs(300);
/// The spinners and the fraction of the CPU their shares entitle them to.
pub(super) const SPINNERS: [(&str, f64); 3] = [("spin-a", 0.5), ("spin-b", 0.25), ("spin-c", 0.25)];

/// What one decision costs with a number of runnable entities on one CPU.
#[derive(Clone, Copy, Debug)]
pub(super) struct DecisionCost {
    /// Runnable entities.
    pub entities: u16,
    /// Mean [`last_decision_steps`](esker_kernel_core::sched::SchedulerOf::last_decision_steps)
    /// over [`PICKS`] picks.
    pub steps: f64,
    /// Host nanoseconds per pick (median of [`TIMING_ROUNDS`] rounds of [`PICKS`]).
    pub ns_per_pick: f64,
}

/// The decision cost at each of [`DECISION_ENTITIES`], computed on a thread with a stack
/// large enough for a [`Scheduler`] in any build.
pub(super) fn decision_costs() -> Result<Vec<DecisionCost>> {
    std::thread::Builder::new()
        .name("sched-bench".into())
        .stack_size(SCHEDULER_STACK)
        .spawn(|| {
            DECISION_ENTITIES
                .iter()
                .map(|&entities| decision_cost(entities))
                .collect::<Result<Vec<_>>>()
        })
        .context("cannot start the scheduler benchmark thread")?
        .join()
        .map_err(|_| anyhow!("the scheduler benchmark panicked"))?
}

fn decision_cost(entities: u16) -> Result<DecisionCost> {
    let mut sched = Box::new(Scheduler::new());
    sched
        .configure(1, CPU_MHZ, Topology::Flat)
        .map_err(|err| anyhow!("cannot configure the scheduler: {err}"))?;
    for id in 0..entities {
        sched
            .add(id, Params::with_shares(EQUAL_SHARES), 0)
            .map_err(|err| anyhow!("cannot add entity {id}: {err}"))?;
        sched
            .wake(id, 0)
            .map_err(|err| anyhow!("cannot wake entity {id}: {err}"))?;
    }
    let mut now = 0;
    for _ in 0..WARMUP_PICKS {
        sched.pick(0, now);
        now += SLICE_NS;
    }
    let mut steps = 0;
    for _ in 0..PICKS {
        let decision = sched.pick(0, now);
        if decision.entity.is_none() {
            bail!("the CPU idled at {now} ns with {entities} busy entities");
        }
        steps += sched.last_decision_steps();
        now += SLICE_NS;
    }
    let mut rounds = Vec::with_capacity(TIMING_ROUNDS);
    for _ in 0..TIMING_ROUNDS {
        let start = Instant::now();
        for _ in 0..PICKS {
            black_box(sched.pick(0, black_box(now)));
            now += SLICE_NS;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / PICKS as f64);
    }
    rounds.sort_by(f64::total_cmp);
    Ok(DecisionCost {
        entities,
        steps: steps as f64 / PICKS as f64,
        ns_per_pick: rounds[rounds.len() / 2],
    })
}

/// The build the host figures come from.
pub(super) fn host_build() -> &'static str {
    if cfg!(debug_assertions) {
        "dev profile, unoptimised"
    } else {
        "optimised build"
    }
}

/// One spinner's report: `spinner <name>: <n> iterations, ran <p> permille of <w> us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Spin {
    pub iterations: u64,
    pub permille: u64,
    pub window_us: u64,
}

impl Spin {
    /// Reads `world`'s report from `text`, if it is one.
    fn parse(text: &str, world: &str) -> Option<Self> {
        let rest = text.strip_prefix("spinner ")?.strip_prefix(world)?;
        let rest = rest.strip_prefix(": ")?;
        Some(Self {
            iterations: leading_number(rest)?,
            permille: number_after(rest, "ran ")?,
            window_us: number_after(rest, "permille of ")?,
        })
    }
}

/// The decimal number `text` starts with.
fn leading_number(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// The three spinners' reports, in [`SPINNERS`] order.
#[derive(Clone, Copy, Debug)]
pub(super) struct Split {
    pub spins: [Spin; 3],
}

impl Split {
    /// Each spinner's fraction of all iterations.
    pub fn fractions(&self) -> [f64; 3] {
        let total: u64 = self.spins.iter().map(|s| s.iterations).sum();
        self.spins
            .map(|s| s.iterations as f64 / (total.max(1)) as f64)
    }

    /// The largest deviation of a fraction from its share, relative to the share, in
    /// percent.
    pub fn error_percent(&self) -> f64 {
        self.fractions()
            .iter()
            .zip(SPINNERS)
            .map(|(got, (_, want))| (got - want).abs() / want * 100.0)
            .fold(0.0, f64::max)
    }
}

/// Builds the shares image, boots it once and reads the spinners' reports.
pub(super) fn fairness(host: &Host) -> Result<Split> {
    let manifest = cargo::workspace_root().join(SHARES_MANIFEST);
    let image = image::build_with(
        host,
        Flavor::Normal,
        &manifest,
        &cargo::target_dir().join(SHARES_IMAGE_DIR),
    )?;
    let mut config = QemuConfig::pvh(&image.dir, None);
    config.cpus = FAIRNESS_CPUS;
    config.icount = true;
    println!("bench: {}", config.command_line());
    let mut qemu = QemuRun::spawn(&config, LogDecoder::new(&image.dir)?, None)?;
    let worlds = SPINNERS.map(|(world, _)| world);
    let mut log: Vec<String> = Vec::new();
    let mut spins: [Option<Spin>; 3] = [None; 3];
    while spins.iter().any(Option::is_none) {
        let event = match qemu.recv_timeout(SHARES_TIMEOUT.saturating_sub(qemu.started().elapsed()))
        {
            Ok(timed) => timed.event,
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "not every spinner reported within {SHARES_TIMEOUT:?}; log:\n{}",
                    tail(&log)
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let outcome = Outcome::from_status(qemu.wait()?);
                bail!(
                    "QEMU ended before every spinner reported: {}; log:\n{}",
                    outcome.describe(),
                    tail(&log)
                )
            }
        };
        log.push(event.to_string());
        let reported = |spins: &[Option<Spin>; 3], world: &str| {
            worlds
                .iter()
                .position(|w| *w == world)
                .is_some_and(|i| spins[i].is_some())
        };
        // A spinner exits once it has reported; before that, ending is a failure.
        let ended_early = worlds
            .iter()
            .any(|world| !reported(&spins, world) && world_ended_in(&[world], &event.text));
        if event.level == Some(Level::Error) || ended_early {
            bail!(
                "the fairness benchmark failed: {}; log:\n{}",
                event.text,
                tail(&log)
            );
        }
        for (slot, world) in spins.iter_mut().zip(worlds) {
            if let Some(spin) = Spin::parse(&event.text, world) {
                println!("bench: {}", event.text);
                *slot = Some(spin);
            }
        }
    }
    qemu.kill();
    Ok(Split {
        spins: spins.map(|spin| spin.expect("every spinner reported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinner_reports_are_read_by_world() {
        let line = "spinner spin-a: 123456 iterations, ran 498 permille of 3000000 us";
        assert_eq!(
            Spin::parse(line, "spin-a"),
            Some(Spin {
                iterations: 123_456,
                permille: 498,
                window_us: 3_000_000
            })
        );
        assert_eq!(Spin::parse(line, "spin-b"), None);
        assert_eq!(Spin::parse(line, "spin"), None);
        assert_eq!(Spin::parse("spinner spin-a: x iterations", "spin-a"), None);
    }

    #[test]
    fn the_error_is_the_largest_relative_deviation() {
        let spin = |iterations| Spin {
            iterations,
            permille: 0,
            window_us: 0,
        };
        let split = Split {
            spins: [spin(4950), spin(2500), spin(2550)],
        };
        assert_eq!(split.fractions(), [0.495, 0.25, 0.255]);
        assert!((split.error_percent() - 2.0).abs() < 1e-9);
        let exact = Split {
            spins: [spin(2), spin(1), spin(1)],
        };
        assert_eq!(exact.error_percent(), 0.0);
    }

    #[test]
    fn a_decision_is_measured_without_overflowing_the_stack() {
        let costs = decision_costs().unwrap();
        assert_eq!(costs.len(), DECISION_ENTITIES.len());
        // One entity alone needs no comparison; more need some, and more for more.
        assert!(costs[0].steps < costs[1].steps && costs[1].steps < costs[2].steps);
        assert!(costs.iter().all(|c| c.ns_per_pick > 0.0));
    }
}
