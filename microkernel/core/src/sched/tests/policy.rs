//! Shares, reservations, limits, accounting and directed switches, measured on one or
//! two simulated CPUs.

use super::*;
use std::println;

#[test]
fn shares_2000_1000_1000_split_one_cpu_50_25_25() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, Params::with_shares(2000));
    sim.add_busy(1, Params::with_shares(1000));
    sim.add_busy(2, Params::with_shares(1000));
    sim.run_until(10 * SECOND);
    let split: Vec<f64> = (0..3).map(|id| fraction(sim.used(id), sim.now)).collect();
    println!("shares 2000/1000/1000 over 10 s: {split:?}");
    for (got, want) in split.iter().zip([0.5, 0.25, 0.25]) {
        assert!((got - want).abs() < 0.01, "got {split:?}");
    }
    // The recorded stretches agree with the scheduler's accounting.
    for id in 0..3 {
        assert_eq!(sim.ran_between(id, 0, sim.now), sim.used(id));
    }
}

#[test]
fn adding_an_entity_dilutes_everyone() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, Params::default());
    sim.add_busy(1, Params::default());
    sim.run_until(2 * SECOND);
    assert!((fraction(sim.used(0), sim.now) - 0.5).abs() < 0.01);
    sim.add_busy(2, Params::default());
    let (from, to) = (sim.now, sim.now + 3 * SECOND);
    sim.run_until(to);
    for id in 0..3 {
        let got = fraction(sim.ran_between(id, from, to), to - from);
        assert!((got - 1.0 / 3.0).abs() < 0.01, "entity {id} got {got}");
    }
}

#[test]
fn an_idle_entity_banks_no_credit() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, Params::default());
    sim.add_busy(1, Params::default());
    sim.add(2, Params::default()).unwrap();
    sim.run_until(5 * SECOND);
    // Entity 2 slept 5 s while the others ran; waking, it must share from now on, not
    // catch up on what it "missed".
    sim.wake(2);
    let woke = sim.now;
    sim.run_until(woke + SECOND / 2);
    let first = fraction(sim.ran_between(2, woke, sim.now), SECOND / 2);
    sim.run_until(woke + 3 * SECOND);
    let overall = fraction(sim.ran_between(2, woke, sim.now), 3 * SECOND);
    println!("after a 5 s sleep: {first:.3} of the first 0.5 s, {overall:.3} of 3 s");
    assert!(first < 0.4, "the sleeper monopolised the CPU: {first}");
    assert!((overall - 1.0 / 3.0).abs() < 0.01, "got {overall}");
}

#[test]
fn shares_are_worth_nothing_to_an_idle_entity() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add(0, Params::with_shares(4000)).unwrap();
    sim.add_busy(1, Params::with_shares(1000));
    sim.run_until(SECOND);
    assert_eq!(sim.used(1), SECOND);
    assert_eq!(sim.sched.cpu_stats(0, sim.now).unwrap().idle_ns, 0);
}

#[test]
fn a_reservation_holds_against_ten_equal_competitors() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, reserving(1000, 500));
    for id in 1..=10 {
        sim.add_busy(id, Params::default());
    }
    sim.run_until(10 * SECOND);
    let got = fraction(sim.used(0), sim.now);
    let reserved: u64 = sim
        .all_runs()
        .iter()
        .filter(|r| r.entity == 0 && r.reason == Reason::Reservation)
        .map(|r| r.end - r.start)
        .sum();
    println!(
        "500 MHz of 1000 reserved against 10 equal competitors: {got:.4} ({:.4} as reservation)",
        fraction(reserved, sim.now)
    );
    assert!(got >= 0.5, "reservation not honoured: {got}");
    assert!(
        fraction(reserved, sim.now) > 0.45,
        "not through the reservation"
    );
    // The rest is shared equally among the others.
    for id in 1..=10 {
        let other = fraction(sim.used(id), sim.now);
        assert!(
            (other - (1.0 - got) / 10.0).abs() < 0.005,
            "entity {id}: {other}"
        );
    }
}

#[test]
fn an_idle_reservation_is_lent_out_and_reclaimed_at_once() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add(0, reserving(1000, 500)).unwrap();
    sim.add_busy(1, Params::default());
    sim.add_busy(2, Params::default());
    sim.run_until(SECOND);
    // Lent: the borrowers used the whole CPU.
    assert_eq!(sim.used(1) + sim.used(2), SECOND);
    // Mid-slice the owner wakes: the borrower's CPU is kicked and the owner runs now.
    sim.run_until(SECOND + 3 * MS + 700_000);
    let borrower = sim.sched.running(0).unwrap();
    assert_ne!(borrower, 0);
    sim.wake(0);
    assert!(sim.sched.preempt_check(0, sim.now));
    assert_eq!(
        sim.sched.take_kicks() & 1,
        1,
        "the borrower's CPU is not kicked"
    );
    let decision = sim.sched.pick(0, sim.now);
    assert_eq!(decision.entity, Some(0));
    assert_eq!(decision.reason, Reason::Reservation);
    // Restart the simulation's view from here and check it keeps its share.
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add(0, reserving(1000, 500)).unwrap();
    for id in 1..=4 {
        sim.add_busy(id, Params::default());
    }
    sim.run_until(SECOND + 3 * MS + 700_000);
    let woke = sim.now;
    sim.wake(0);
    sim.run_until(woke);
    assert_eq!(
        sim.sched.running(0),
        Some(0),
        "the owner did not preempt at once"
    );
    sim.run_until(woke + 2 * SECOND);
    let got = fraction(sim.ran_between(0, woke, sim.now), 2 * SECOND);
    println!("reclaimed reservation: {got:.4} of the CPU after waking");
    assert!(got >= 0.5, "got {got}");
}

#[test]
fn a_limit_holds_on_an_otherwise_idle_host() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, limited(1000, 250));
    sim.run_until(10 * SECOND);
    let got = fraction(sim.used(0), sim.now);
    println!("250 MHz limit, alone on a 1000 MHz CPU, over 10 s: {got:.4}");
    assert!((0.249..=0.251).contains(&got), "got {got}");
    // In every period, at most the budget.
    let budget = LIMIT_PERIOD_NS / 4;
    for period in 0..(10 * SECOND / LIMIT_PERIOD_NS) {
        let from = period * LIMIT_PERIOD_NS;
        let used = sim.ran_between(0, from, from + LIMIT_PERIOD_NS);
        assert!(used <= budget, "period {period}: {used} ns");
    }
    let cpu = sim.sched.cpu_stats(0, sim.now).unwrap();
    assert_eq!(cpu.used_ns + cpu.idle_ns, sim.now);
    let stats = sim.sched.stats(0, sim.now).unwrap();
    assert_eq!(
        stats.limited_ns, stats.ready_ns,
        "waiting only for its limit"
    );
    assert!(fraction(stats.limited_ns, sim.now) > 0.74);
}

#[test]
fn a_limit_holds_across_cpus_and_caps_shares() {
    let mut sim = Sim::new(2, 1000, Topology::Flat);
    sim.add_busy(0, limited(4000, 300));
    sim.add_busy(1, Params::default());
    sim.run_until(5 * SECOND);
    let limited_share = fraction(sim.used(0), sim.now);
    assert!(limited_share <= 0.3 + 0.001, "got {limited_share}");
    assert!(limited_share >= 0.299, "got {limited_share}");
    // On one CPU, shares 4000:1000 would give 80 %; the limit caps it at 30 %.
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, limited(4000, 300));
    sim.add_busy(1, Params::default());
    sim.run_until(5 * SECOND);
    let got = fraction(sim.used(0), sim.now);
    assert!((0.299..=0.301).contains(&got), "got {got}");
    assert!((fraction(sim.used(1), sim.now) - 0.7).abs() < 0.002);
}

#[test]
fn accounting_adds_up() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, Params::default());
    sim.add_busy(1, Params::default());
    sim.add_busy(2, Params::default());
    for round in 0..20u64 {
        sim.run_for(37 * MS);
        if round % 2 == 0 {
            sim.block(2);
        } else {
            sim.wake(2);
        }
    }
    sim.run_for(5 * MS);
    let cpu = sim.sched.cpu_stats(0, sim.now).unwrap();
    assert_eq!(cpu.used_ns + cpu.idle_ns, sim.now);
    let mut used = 0;
    for id in 0..3 {
        let s = sim.sched.stats(id, sim.now).unwrap();
        assert_eq!(s.used_ns + s.ready_ns + s.waited_ns + s.costop_ns, sim.now);
        assert_eq!(s.used_ns, sim.ran_between(id, 0, sim.now));
        used += s.used_ns;
    }
    assert_eq!(used, cpu.used_ns);
    let blocked = sim.sched.stats(2, sim.now).unwrap();
    assert_eq!(blocked.waited_ns, 10 * 37 * MS);
    assert_ne!(blocked.state, RunState::Blocked);
}

#[test]
fn co_stop_time_is_accounted_and_the_entity_waits() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, Params::default());
    sim.add_busy(1, Params::default());
    sim.run_for(100 * MS);
    sim.sched.co_stop(1, sim.now).unwrap();
    let stopped = sim.now;
    sim.run_for(100 * MS);
    assert_eq!(sim.ran_between(1, stopped, sim.now), 0);
    let s = sim.sched.stats(1, sim.now).unwrap();
    assert_eq!((s.costop_ns, s.state), (100 * MS, RunState::CoStopped));
    // A blocked entity is not co-stopped, and co_start does not wake it.
    sim.sched.co_start(1, sim.now).unwrap();
    sim.block(0);
    sim.sched.co_stop(0, sim.now).unwrap();
    sim.sched.co_start(0, sim.now).unwrap();
    assert_eq!(
        sim.sched.stats(0, sim.now).unwrap().state,
        RunState::Blocked
    );
    sim.run_for(50 * MS);
    assert_eq!(sim.ran_between(1, sim.now - 50 * MS, sim.now), 50 * MS);
}

#[test]
fn a_change_of_shares_takes_effect_at_once() {
    let mut sim = Sim::new(1, 1000, Topology::Flat);
    sim.add_busy(0, Params::default());
    sim.add_busy(1, Params::default());
    sim.run_for(SECOND);
    sim.update(0, Params::with_shares(3000)).unwrap();
    let from = sim.now;
    sim.run_for(4 * SECOND);
    let got = fraction(sim.ran_between(0, from, sim.now), 4 * SECOND);
    assert!((got - 0.75).abs() < 0.01, "got {got}");
    // A limit set at run time applies from the next decision.
    sim.update(0, limited(3000, 100)).unwrap();
    let from = sim.now;
    sim.run_for(2 * SECOND);
    let got = fraction(sim.ran_between(0, from, sim.now), 2 * SECOND);
    assert!(got <= 0.101, "got {got}");
}

#[test]
fn directed_switches_run_the_target_without_starving_others() {
    let mut sched = Box::new(TestScheduler::new());
    sched.configure(1, 1000, Topology::Flat).unwrap();
    for id in 0..3 {
        sched.add(id, Params::default(), 0).unwrap();
    }
    sched.wake(0, 0).unwrap();
    sched.wake(2, 0).unwrap();
    // Entities 0 and 1 call each other every 1 ms; entity 2 computes.
    let (mut now, mut handoffs, mut decision) = (0, 0, sched.pick(0, 0));
    let mut used = [0u64; 3];
    while now < 3 * SECOND {
        let entity = decision.entity.unwrap();
        let slice = decision.run_for_ns.unwrap();
        if entity == 2 {
            now += slice;
            used[2] += slice;
            decision = sched.pick(0, now);
            continue;
        }
        let ran = slice.min(MS);
        now += ran;
        used[usize::from(entity)] += ran;
        if ran < MS {
            decision = sched.pick(0, now);
            continue;
        }
        sched.block(entity, now).unwrap();
        decision = sched.switch_to(0, 1 - entity, now);
        if decision.reason == Reason::Handoff {
            handoffs += 1;
            assert_eq!(decision.entity, Some(1 - entity));
        }
        sched.check_invariants();
    }
    // Each of the three keeps its own virtual time, so the computing entity gets its
    // third (a policy that always granted the switch would give it nothing).
    let computed = fraction(used[2], now);
    println!("{handoffs} handoffs; the computing entity got {computed:.3}");
    assert!(handoffs > 1000);
    assert!(
        computed > 0.32,
        "directed switches starved the others: {computed}"
    );
    for id in 0..3 {
        assert_eq!(sched.stats(id, now).unwrap().used_ns, used[id as usize]);
    }
}
