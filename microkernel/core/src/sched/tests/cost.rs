//! The cost of a decision, in steps (heap comparisons plus CPUs and queue entries
//! examined), against the number of runnable entities; and the scheduler's size.

use super::*;
use std::println;
use std::time::Instant;

/// Average steps per decision with `entities` busy entities on `cpus` CPUs.
fn steps_per_decision(cpus: usize, entities: u16) -> f64 {
    let mut sim = Sim::new(cpus, 1000, Topology::Flat);
    sim.check = false;
    for id in 0..entities {
        // Mixed shares and some reservations, so every queue is exercised.
        let shares = 500 + 250 * u32::from(id % 7);
        let params = if id % 16 == 5 {
            reserving(shares, 50)
        } else {
            Params::with_shares(shares)
        };
        sim.add_busy(id, params);
    }
    sim.run_until(SECOND);
    let (picks, steps) = (sim.picks, sim.steps);
    sim.run_until(3 * SECOND);
    (sim.steps - steps) as f64 / (sim.picks - picks) as f64
}

#[test]
fn decision_cost_grows_sublinearly_with_runnable_entities() {
    let one = steps_per_decision(1, 1);
    let sixteen = steps_per_decision(1, 16);
    let many = steps_per_decision(1, 128);
    println!("steps per decision on 1 CPU: 1 -> {one:.1}, 16 -> {sixteen:.1}, 128 -> {many:.1}");
    assert!(many < 4.0 * sixteen, "128 entities: {many}, 16: {sixteen}");
    // Logarithmic: eight times the entities adds a few levels, it does not multiply.
    assert!(many < sixteen + 24.0, "128 entities: {many}, 16: {sixteen}");
    let smp_sixteen = steps_per_decision(4, 16);
    let smp_many = steps_per_decision(4, 128);
    println!("steps per decision on 4 CPUs: 16 -> {smp_sixteen:.1}, 128 -> {smp_many:.1}");
    assert!(smp_many < 4.0 * smp_sixteen);
}

#[test]
fn decision_time_on_the_host() {
    // Informational: wall time per pick with 128 busy entities on one CPU (no checks).
    let mut sched = Box::new(TestScheduler::new());
    sched.configure(1, 1000, Topology::Flat).unwrap();
    for id in 0..128 {
        sched
            .add(id, Params::with_shares(1000 + u32::from(id)), 0)
            .unwrap();
        sched.wake(id, 0).unwrap();
    }
    let (mut now, picks) = (0, 100_000u64);
    let start = Instant::now();
    for _ in 0..picks {
        now += sched.pick(0, now).run_for_ns.unwrap_or(SLICE_NS);
    }
    let elapsed = start.elapsed();
    println!(
        "{} ns per pick with 128 runnable entities (host, this build)",
        elapsed.as_nanos() / u128::from(picks)
    );
}

#[test]
fn the_kernel_scheduler_fits_in_a_static() {
    let size = core::mem::size_of::<Scheduler>();
    println!(
        "size_of::<Scheduler>() = {size} bytes ({} CPUs, {} entities); Entity {} bytes",
        MAX_CPUS,
        MAX_ENTITIES,
        core::mem::size_of::<entity::Entity>()
    );
    assert!(size < 192 * 1024);
    let sched = Box::new(Scheduler::new());
    assert!(sched.is_empty());
    assert_eq!(sched.cpus(), 0);
}
