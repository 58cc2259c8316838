//! CPU scheduling on the booted kernel, with ESX semantics: busy `spinner` worlds measure
//! their own progress over a three-second window and the tests check the shares they got.
//!
//! The single-CPU machines run under `-icount` (guest time advances with guest instructions), so the
//! figures do not depend on the host's load: without it a starved QEMU shows up as time
//! no world ran, and absolute figures (a limit, a reservation) came out at half.
//!
//! MHz figures in the manifests are of the calibrated CPU (the TSC rate the kernel logs),
//! so each test reads that rate from the boot log to know what its limit or reservation
//! means as a fraction of the CPU.

use std::time::Duration;

use esker_qemu_tests::{Failure, Machine, PVH_TIMEOUT, hex_field, number_after, test_image_dir};

/// Spinners run three seconds of guest time (3·10⁹ instructions under icount); TCG on a
/// loaded host may stretch that.
const SPIN_TIMEOUT: Duration = Duration::from_secs(120);

/// One spinner's report.
struct Spin {
    iterations: u64,
    permille: u64,
}

fn report(machine: &mut Machine, world: &str) -> Result<Spin, Failure> {
    let prefix = format!("spinner {world}: ");
    let event = machine.expect(&prefix, SPIN_TIMEOUT)?;
    let text = event.text.clone();
    let iterations = number_after(&text, &prefix);
    let permille = number_after(&text, "ran ");
    match (iterations, permille) {
        (Some(iterations), Some(permille)) => Ok(Spin {
            iterations,
            permille,
        }),
        _ => Err(machine.fail(format!("cannot read the spinner's report: {text:?}"))),
    }
}

/// The calibrated CPU rate in MHz, from `timer: … TSC <kHz> kHz)`.
fn cpu_mhz(machine: &mut Machine) -> Result<u64, Failure> {
    let event = machine.expect("timer: LAPIC timer ticking", PVH_TIMEOUT)?;
    number_after(&event.text, "TSC ")
        .map(|khz| khz / 1000)
        .filter(|&mhz| mhz > 0)
        .ok_or_else(|| machine.fail(format!("no TSC rate in {:?}", event.text)))
}

#[test]
fn shares_2000_1000_1000_split_the_cpu_2_1_1() -> Result<(), Failure> {
    let image = test_image_dir("shares")?;
    let mut machine = Machine::pvh_icount(&image)?;
    // Reports come in the order the spinners finish; collect all three.
    let mut spins = Vec::new();
    machine.expect_all(
        &["spinner spin-a: ", "spinner spin-b: ", "spinner spin-c: "],
        SPIN_TIMEOUT,
    )?;
    for world in ["spin-a", "spin-b", "spin-c"] {
        let text = machine
            .history()
            .iter()
            .find(|e| e.text.starts_with(&format!("spinner {world}: ")))
            .map(|e| e.text.clone())
            .unwrap_or_default();
        let iterations = number_after(&text, &format!("spinner {world}: "))
            .ok_or_else(|| machine.fail(format!("no iteration count in {text:?}")))?;
        spins.push(iterations as f64);
    }
    let total: f64 = spins.iter().sum();
    let shares = [spins[0] / total, spins[1] / total, spins[2] / total];
    for (got, want) in shares.iter().zip([0.5, 0.25, 0.25]) {
        if (got - want).abs() > want * 0.05 {
            return Err(machine.fail(format!(
                "CPU split {shares:.4?} is not 2:1:1 within ±5 % (iterations {spins:?})"
            )));
        }
    }
    println!("CPU split for shares 2000/1000/1000: {shares:.4?}");
    Ok(())
}

#[test]
fn a_limit_holds_even_on_an_idle_host() -> Result<(), Failure> {
    const LIMIT_MHZ: u64 = 650;
    let image = test_image_dir("limit")?;
    let mut machine = Machine::pvh_icount(&image)?;
    let mhz = cpu_mhz(&mut machine)?;
    let limit_permille = (LIMIT_MHZ * 1000 / mhz).min(1000);
    let spin = report(&mut machine, "limited")?;
    // At most the limit (plus 2 points for timer granularity), and not starved either.
    if spin.permille > limit_permille + 20 || spin.permille + 50 < limit_permille {
        return Err(machine.fail(format!(
            "a {LIMIT_MHZ} MHz limit on a {mhz} MHz CPU is {limit_permille} permille, but the world ran \
             {} permille ({} iterations)",
            spin.permille, spin.iterations
        )));
    }
    println!(
        "limit {limit_permille} permille of the CPU; the world ran {} permille",
        spin.permille
    );
    Ok(())
}

#[test]
fn a_reservation_holds_against_a_flood_of_equal_competitors() -> Result<(), Failure> {
    const RESERVATION_MHZ: u64 = 400;
    const COMPETITORS: u64 = 6;
    let image = test_image_dir("reservation")?;
    let mut machine = Machine::pvh_icount(&image)?;
    let mhz = cpu_mhz(&mut machine)?;
    let reserved_permille = (RESERVATION_MHZ * 1000 / mhz).min(1000);
    let fair_permille = 1000 / (COMPETITORS + 1);
    if RESERVATION_MHZ >= mhz {
        return Err(machine.fail(format!(
            "a {RESERVATION_MHZ} MHz reservation does not fit on this {mhz} MHz CPU: the \
             kernel refuses it (qemu-tests/manifests/reservation.toml must ask for less)"
        )));
    }
    if reserved_permille <= fair_permille + 20 {
        return Err(machine.fail(format!(
            "on a {mhz} MHz CPU a {RESERVATION_MHZ} MHz reservation ({reserved_permille} permille) is not \
             above the fair share ({fair_permille}); this test cannot tell them apart"
        )));
    }
    let spin = report(&mut machine, "reserved")?;
    if spin.permille + 20 < reserved_permille {
        return Err(machine.fail(format!(
            "reserved {reserved_permille} permille but got {} permille against {COMPETITORS} competitors",
            spin.permille
        )));
    }
    println!(
        "reservation {reserved_permille} permille (fair share {fair_permille}); got {}",
        spin.permille
    );
    Ok(())
}

#[test]
fn shares_change_at_run_time_through_a_world_capability() -> Result<(), Failure> {
    let image = test_image_dir("tuning")?;
    let mut machine = Machine::pvh_icount(&image)?;
    machine.expect_all(
        &[
            "tuner: spin-a shares set to 1000",
            "tuner: reserving",
            "spinner spin-a: ",
            "spinner spin-b: ",
            "tuner: spin-a used ",
        ],
        SPIN_TIMEOUT,
    )?;
    let history = machine.history();
    let count = |world: &str| {
        let prefix = format!("spinner {world}: ");
        history.iter().find_map(|e| number_after(&e.text, &prefix))
    };
    let (Some(a), Some(b)) = (count("spin-a"), count("spin-b")) else {
        return Err(machine.fail("no iteration counts"));
    };
    let ratio = a as f64 / b as f64;
    // 2000:1000 would give 2.0; after the change to 1000:1000 it must be about 1.
    if !(0.85..=1.15).contains(&ratio) {
        return Err(machine.fail(format!(
            "spin-a/spin-b = {ratio:.3} ({a} / {b}); expected about 1 after the change"
        )));
    }
    if !history.iter().any(|e| {
        e.text.contains("scheduling change of world spin-a refused") && e.text.contains("MHz")
    }) {
        return Err(machine.fail(
            "the impossible reservation was not refused with the shortfall in the kernel log",
        ));
    }
    let used = history
        .iter()
        .find_map(|e| number_after(&e.text, "tuner: spin-a used "))
        .unwrap_or(0);
    if used == 0 {
        return Err(machine.fail("spin-a's accounting shows no CPU time"));
    }
    println!("after the run-time change spin-a/spin-b = {ratio:.3}; spin-a used {used} ms");
    Ok(())
}

#[test]
fn affinity_keeps_a_world_on_its_cpu_while_the_others_use_both() -> Result<(), Failure> {
    let image = test_image_dir("affinity")?;
    let mut machine = Machine::pvh_smp(&image, 2)?;
    machine.expect("smp: 2 CPUs online", PVH_TIMEOUT)?;
    let names = ["pinned", "free-1", "free-2", "free-3"];
    let prefixes: Vec<String> = names.iter().map(|n| format!("spinner {n}: ")).collect();
    let wanted: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    machine.expect_all(&wanted, SPIN_TIMEOUT)?;
    let mut masks = Vec::new();
    for prefix in &prefixes {
        let mask = machine
            .history()
            .iter()
            .find(|e| e.text.starts_with(prefix.as_str()))
            .and_then(|e| hex_field(&e.text, "on CPUs"));
        match mask {
            Some(mask) => masks.push(mask),
            None => return Err(machine.fail(format!("no CPU mask in the report of {prefix:?}"))),
        }
    }
    if masks[0] != 0b10 {
        return Err(machine.fail(format!(
            "the world pinned to CPU 1 was seen on CPUs {:#x}",
            masks[0]
        )));
    }
    let union = masks[1..].iter().fold(0, |all, m| all | m);
    if union != 0b11 {
        return Err(machine.fail(format!(
            "the unpinned worlds were seen only on CPUs {union:#x}; both CPUs should run them"
        )));
    }
    println!("pinned seen on {:#x}; the others on {masks:x?}", masks[0]);
    Ok(())
}
