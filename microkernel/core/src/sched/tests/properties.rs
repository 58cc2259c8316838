//! Property tests: random hosts (1–4 CPUs, with or without hyper-threading), random
//! entities (shares, reservations, limits, affinities) and random sequences of time
//! passing, blocking, waking and parameter changes. What ran is checked against the
//! guarantees: affinity, limits per period, no starvation, reservations honoured and
//! never over-committed, and accounting that adds up.

use super::*;
use proptest::prelude::*;

const MHZ: u32 = 1000;
/// Reservations the test admits in all (the rest are dropped to 0): at most half of any
/// CPU, so shares always have half a CPU to divide. (Reservations may legitimately take
/// a whole CPU, and then unreserved entities pinned there get nothing.)
const RESERVATION_BUDGET_MHZ: u32 = MHZ / 2;

/// Longest entity `id` may wait runnable without running: start-time fair queueing
/// bounds it by a slice for each competitor plus its share's worth of slices
/// (`Σ shares / its shares`), doubled because reservations take up to half the CPU,
/// plus a limit period for a throttled entity.
fn starvation_bound(entries: &[Entry], id: usize) -> u64 {
    fn shares(e: &Entry) -> impl Iterator<Item = u64> + '_ {
        e.history.iter().map(|(_, p)| u64::from(p.shares))
    }
    let total: u64 = entries.iter().filter_map(|e| shares(e).max()).sum();
    let mine = shares(&entries[id]).min().unwrap();
    let competitors = entries.iter().filter(|e| e.admitted).count() as u64;
    2 * SLICE_NS * (total.div_ceil(mine) + competitors + 2) + 2 * LIMIT_PERIOD_NS
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Block(u16),
    Wake(u16),
    Update(u16, Params),
}

fn params() -> impl Strategy<Value = Params> {
    (
        100u32..=4000,
        prop_oneof![3 => Just(0u32), 1 => 50u32..=300],
        prop_oneof![2 => Just(0u32), 1 => 100u32..=900],
        prop_oneof![2 => Just(0u64), 1 => 1u64..16],
    )
        .prop_map(|(shares, reservation_mhz, limit, affinity)| Params {
            shares,
            reservation_mhz,
            limit_mhz: if limit == 0 {
                0
            } else {
                limit.max(reservation_mhz)
            },
            affinity,
        })
}

fn op(entities: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..=300 * MS).prop_map(Op::Advance),
        2 => (0..entities).prop_map(Op::Block),
        2 => (0..entities).prop_map(Op::Wake),
        1 => (0..entities, params()).prop_map(|(id, p)| Op::Update(id, p)),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, bool, Vec<Params>, Vec<Op>)> {
    (
        1usize..=4,
        any::<bool>(),
        prop::collection::vec(params(), 1..=10),
    )
        .prop_flat_map(|(cpus, smt, entities)| {
            let count = entities.len() as u16;
            (
                Just(cpus),
                Just(smt),
                Just(entities),
                prop::collection::vec(op(count), 1..50),
            )
        })
}

/// What the test remembers about one entity.
#[derive(Default)]
struct Entry {
    admitted: bool,
    /// Parameters in force from each time on.
    history: Vec<(u64, Params)>,
    /// Runnable stretches.
    runnable: Vec<(u64, u64)>,
    runnable_since: Option<u64>,
}

impl Entry {
    fn params_at(&self, time: u64) -> Params {
        self.history
            .iter()
            .rev()
            .find(|(from, _)| *from <= time)
            .map(|(_, p)| *p)
            .unwrap()
    }

    fn updated_within(&self, from: u64, to: u64) -> bool {
        self.history
            .iter()
            .skip(1)
            .any(|(at, _)| *at > from && *at < to)
    }
}

fn allowed(params: Params, cpus: usize) -> u64 {
    let online = (1u64 << cpus) - 1;
    match params.affinity {
        0 => online,
        mask => mask & online,
    }
}

fn check_scenario(cpus: usize, smt: bool, entities: &[Params], ops: &[Op]) {
    let topology = if smt {
        Topology::SmtPairs
    } else {
        Topology::Flat
    };
    let mut sim = Sim::new(cpus, MHZ, topology);
    let mut entries: Vec<Entry> = entities.iter().map(|_| Entry::default()).collect();
    let reserved = |entries: &[Entry], except: usize| -> u32 {
        entries
            .iter()
            .enumerate()
            .filter(|(id, e)| *id != except && e.admitted)
            .map(|(_, e)| e.history.last().unwrap().1.reservation_mhz)
            .sum()
    };
    let within_budget = |mut params: Params, already: u32| {
        if already + params.reservation_mhz > RESERVATION_BUDGET_MHZ {
            params.reservation_mhz = 0;
        }
        params
    };
    for (id, params) in entities.iter().enumerate() {
        let params = &within_budget(*params, reserved(&entries, id));
        let entry = &mut entries[id];
        if sim.add(id as EntityId, *params).is_ok() {
            entry.admitted = true;
            entry.history.push((0, *params));
            sim.wake(id as EntityId);
            entry.runnable_since = Some(0);
        }
    }
    let wake = |sim: &mut Sim, entry: &mut Entry, id: u16| {
        sim.wake(id);
        entry.runnable_since.get_or_insert(sim.now);
    };
    for op in ops {
        match *op {
            Op::Advance(ns) => sim.run_for(ns),
            Op::Block(id) | Op::Wake(id) | Op::Update(id, _)
                if !entries[usize::from(id)].admitted =>
            {
                assert!(sim.sched.wake(id, sim.now).is_err());
            }
            Op::Block(id) => {
                sim.block(id);
                let entry = &mut entries[usize::from(id)];
                if let Some(since) = entry.runnable_since.take() {
                    entry.runnable.push((since, sim.now));
                }
            }
            Op::Wake(id) => wake(&mut sim, &mut entries[usize::from(id)], id),
            Op::Update(id, params) => {
                let params = within_budget(params, reserved(&entries, usize::from(id)));
                if sim.update(id, params).is_ok() {
                    entries[usize::from(id)].history.push((sim.now, params));
                }
            }
        }
        sim.sched.check_invariants();
    }
    // Finally everything runs for a while, so starvation would show.
    for id in 0..entities.len() as u16 {
        if entries[usize::from(id)].admitted {
            wake(&mut sim, &mut entries[usize::from(id)], id);
        }
    }
    sim.run_for(3 * SECOND);
    let end = sim.now;
    for entry in &mut entries {
        if let Some(since) = entry.runnable_since.take() {
            entry.runnable.push((since, end));
        }
    }
    let runs = sim.all_runs();

    // Reservations never over-committed (per core also checked by check_invariants).
    let cores = if smt { cpus.div_ceil(2) } else { cpus };
    let booked: u32 = (0..cpus)
        .map(|cpu| sim.sched.cpu_stats(cpu, end).unwrap().reserved_mhz)
        .sum();
    assert!(booked <= cores as u32 * MHZ, "{booked} MHz booked");

    for (id, entry) in entries.iter().enumerate().filter(|(_, e)| e.admitted) {
        let mine: Vec<&Run> = runs
            .iter()
            .filter(|r| usize::from(r.entity) == id)
            .collect();
        // Only on allowed CPUs.
        for run in &mine {
            let params = entry.params_at(run.start);
            assert!(
                allowed(params, cpus) & (1 << run.cpu) != 0,
                "entity {id} ran on CPU {} outside {:#x}: {run:?}",
                run.cpu,
                params.affinity
            );
        }
        // Limits never exceeded in any period (periods with a change are skipped).
        for period in 0..end / LIMIT_PERIOD_NS {
            let (from, to) = (period * LIMIT_PERIOD_NS, (period + 1) * LIMIT_PERIOD_NS);
            let params = entry.params_at(from);
            if params.limit_mhz == 0 || entry.updated_within(from, to) {
                continue;
            }
            let budget = LIMIT_PERIOD_NS * u64::from(params.limit_mhz) / u64::from(MHZ);
            let used = sim.ran_between(id as EntityId, from, to);
            assert!(
                used <= budget,
                "entity {id} used {used} ns of {budget} in period {period}"
            );
        }
        // No starvation: never runnable for long without running.
        for &(from, to) in &entry.runnable {
            let mut covered = from;
            let mut longest = 0;
            for run in mine.iter().filter(|r| r.end > from && r.start < to) {
                longest = longest.max(run.start.saturating_sub(covered));
                covered = covered.max(run.end);
            }
            longest = longest.max(to.saturating_sub(covered));
            let bound = starvation_bound(&entries, id);
            assert!(
                longest <= bound,
                "entity {id} waited {longest} ns (bound {bound}) runnable in {from}..{to}"
            );
        }
        // A reservation held by an entity runnable throughout is honoured.
        let reservation = entry.history[0].1.reservation_mhz;
        if reservation > 0 && entry.history.len() == 1 && entry.runnable == [(0, end)] {
            let owed = end * u64::from(reservation) / u64::from(MHZ);
            let used = sim.used(id as EntityId);
            assert!(
                used + 3 * SLICE_NS + LIMIT_PERIOD_NS >= owed,
                "entity {id} reserved {reservation} MHz but used {used} of {end} ns"
            );
        }
    }

    // Accounting adds up: per CPU, per entity, and between the two.
    let mut cpu_used = 0;
    for cpu in 0..cpus {
        let stats = sim.sched.cpu_stats(cpu, end).unwrap();
        assert_eq!(stats.used_ns + stats.idle_ns, end, "CPU {cpu}");
        cpu_used += stats.used_ns;
    }
    let mut entity_used = 0;
    for id in (0..entities.len()).filter(|&id| entries[id].admitted) {
        let stats = sim.sched.stats(id as EntityId, end).unwrap();
        assert_eq!(stats.used_ns, sim.ran_between(id as EntityId, 0, end));
        assert_eq!(
            stats.used_ns + stats.ready_ns + stats.waited_ns + stats.costop_ns,
            end,
            "entity {id}: {stats:?}"
        );
        assert!(stats.limited_ns <= stats.ready_ns);
        entity_used += stats.used_ns;
    }
    assert_eq!(entity_used, cpu_used);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_hosts_keep_every_guarantee((cpus, smt, entities, ops) in scenario()) {
        check_scenario(cpus, smt, &entities, &ops);
    }
}

#[test]
fn a_fully_reserved_cpu_still_honours_every_reservation() {
    // Two reservations filling a CPU exactly, against busy competitors pinned there.
    let mut sim = Sim::new(1, MHZ, Topology::Flat);
    sim.add_busy(0, reserving(1000, 600));
    sim.add_busy(1, reserving(1000, 400));
    sim.add_busy(2, Params::with_shares(MAX_SHARES));
    sim.run_until(5 * SECOND);
    assert!(fraction(sim.used(0), sim.now) >= 0.6 - 0.002);
    assert!(fraction(sim.used(1), sim.now) >= 0.4 - 0.002);
}
