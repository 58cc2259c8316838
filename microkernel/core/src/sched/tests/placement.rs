//! Affinity, hyper-threading-aware placement, stealing and balancing across CPUs.

use super::*;
use std::println;

#[test]
fn affinity_keeps_an_entity_on_its_cpus() {
    let mut sim = Sim::new(2, 1000, Topology::Flat);
    sim.add_busy(0, pinned(0b10));
    for id in 1..=3 {
        sim.add_busy(id, Params::default());
    }
    sim.run_until(5 * SECOND);
    let runs = sim.all_runs();
    assert!(runs.iter().filter(|r| r.entity == 0).all(|r| r.cpu == 1));
    assert!(sim.used(0) > SECOND, "the pinned entity hardly ran");
    // Re-pinned at run time, it moves and stays.
    sim.update(0, pinned(0b01)).unwrap();
    let moved = sim.now;
    sim.run_for(5 * SECOND);
    let runs = sim.all_runs();
    assert!(
        runs.iter()
            .filter(|r| r.entity == 0 && r.start >= moved)
            .all(|r| r.cpu == 0)
    );
    assert!(sim.ran_between(0, moved, sim.now) > SECOND);
}

#[test]
fn hyper_threading_places_on_an_idle_core_before_a_busy_cores_sibling() {
    for (topology, expected) in [(Topology::SmtPairs, 2), (Topology::Flat, 1)] {
        let mut sim = Sim::new(4, 1000, topology);
        sim.add_busy(0, Params::default());
        sim.run_for(MS);
        assert_eq!(sim.sched.running(0), Some(0));
        sim.add_busy(1, Params::default());
        sim.run_for(MS);
        let cpu = sim.sched.stats(1, sim.now).unwrap().cpu;
        println!("{topology:?}: second entity placed on CPU {cpu}");
        assert_eq!(cpu, expected);
        assert_eq!(sim.sched.running(expected), Some(1));
    }
}

#[test]
fn hyper_threading_moves_off_a_shared_core_when_a_core_idles() {
    let mut sim = Sim::new(4, 1000, Topology::SmtPairs);
    for id in 0..3 {
        sim.add_busy(id, Params::default());
        sim.run_for(MS);
    }
    // 0 on CPU 0, 1 on CPU 2 (an idle core), 2 on CPU 1 (no idle core left).
    let cpus: Vec<usize> = (0..3)
        .map(|id| sim.sched.stats(id, sim.now).unwrap().cpu)
        .collect();
    assert_eq!(cpus, [0, 2, 1]);
    sim.block(1);
    sim.run_for(2 * SLICE_NS);
    // At the next slice end one of the two on core 0 moves to the idle core 1.
    let cores = [0, 2].map(|id| sim.sched.stats(id, sim.now).unwrap().cpu / 2);
    assert_ne!(cores[0], cores[1], "entities 0 and 2 still share a core");
    let busy = (0..4)
        .filter(|&cpu| sim.sched.running(cpu).is_some())
        .count();
    assert_eq!(busy, 2);
}

#[test]
fn idle_cpus_take_waiting_work() {
    let mut sim = Sim::new(2, 1000, Topology::Flat);
    for id in 0..4 {
        sim.add_busy(id, Params::default());
    }
    sim.run_until(4 * SECOND);
    for cpu in 0..2 {
        assert_eq!(sim.sched.cpu_stats(cpu, sim.now).unwrap().idle_ns, 0);
    }
    for id in 0..4 {
        let got = fraction(sim.used(id), sim.now);
        assert!((got - 0.5).abs() < 0.02, "entity {id}: {got}");
    }
    // One blocks for good: the three left keep both CPUs busy.
    sim.block(3);
    let from = sim.now;
    sim.run_for(4 * SECOND);
    let idle: u64 = (0..2)
        .map(|cpu| sim.sched.cpu_stats(cpu, sim.now).unwrap().idle_ns)
        .sum();
    assert_eq!(idle, 0);
    for id in 0..3 {
        let got = fraction(sim.ran_between(id, from, sim.now), sim.now - from);
        println!("three equal entities on two CPUs: entity {id} got {got:.3}");
        assert!((got - 2.0 / 3.0).abs() < 0.05, "entity {id}: {got}");
    }
}

#[test]
fn shares_hold_across_cpus() {
    // 2000/1000/1000/1000/1000 on two CPUs: the 2000 entity should get about twice each
    // of the others (2000 / 6000 of 2 CPUs = 0.667, the others 0.333).
    let mut sim = Sim::new(2, 1000, Topology::Flat);
    sim.add_busy(0, Params::with_shares(2000));
    for id in 1..=4 {
        sim.add_busy(id, Params::default());
    }
    sim.run_until(10 * SECOND);
    let split: Vec<f64> = (0..5).map(|id| fraction(sim.used(id), sim.now)).collect();
    println!("2000/1000x4 on two CPUs: {split:?}");
    assert!((split[0] - 2.0 / 3.0).abs() < 0.05, "got {split:?}");
    for got in &split[1..] {
        assert!((got - 1.0 / 3.0).abs() < 0.05, "got {split:?}");
    }
}

#[test]
fn a_reserving_entity_moves_only_where_its_reservation_fits() {
    let mut sim = Sim::new(2, 1000, Topology::Flat);
    sim.add_busy(0, reserving(1000, 900));
    sim.add_busy(1, reserving(1000, 900));
    for id in 2..6 {
        sim.add_busy(id, Params::default());
    }
    let homes = [0, 1].map(|id| sim.sched.stats(id, sim.now).unwrap().cpu);
    assert_ne!(homes[0], homes[1]);
    sim.run_until(5 * SECOND);
    let runs = sim.all_runs();
    for (id, home) in homes.iter().enumerate() {
        assert!(
            runs.iter()
                .filter(|r| usize::from(r.entity) == id)
                .all(|r| r.cpu == *home)
        );
        assert!(fraction(sim.used(id as EntityId), sim.now) >= 0.9);
    }
}

#[test]
fn shares_2000_1000_1000_on_two_cpus_give_the_big_one_a_cpu_and_the_others_half_each() {
    // The 2000 entity cannot use more than one CPU (50 % of the host); the two others
    // share the second CPU. None may starve.
    let mut sim = Sim::new(2, 1000, Topology::Flat);
    sim.add_busy(0, Params::with_shares(2000));
    sim.add_busy(1, Params::default());
    sim.add_busy(2, Params::default());
    sim.run_until(3 * SECOND);
    let split: Vec<f64> = (0..3).map(|id| fraction(sim.used(id), sim.now)).collect();
    println!("2000/1000/1000 on two CPUs: {split:?}");
    assert!((split[0] - 1.0).abs() < 0.05, "got {split:?}");
    for got in &split[1..] {
        assert!((got - 0.5).abs() < 0.05, "got {split:?}");
    }
}
