//! Admission control arithmetic and every refusal, with its exact message.

use super::*;
use std::format;
use std::string::ToString;

fn scheduler(cpus: usize, mhz: u32, topology: Topology) -> Box<TestScheduler> {
    let mut sched = Box::new(TestScheduler::new());
    sched.configure(cpus, mhz, topology).unwrap();
    sched
}

#[test]
fn esx_example_four_1000_mhz_cpus_refuse_a_fifth_reservation() {
    let mut sched = scheduler(4, 1000, Topology::Flat);
    for id in 0..4 {
        sched.add(id, reserving(1000, 1000), 0).unwrap();
    }
    for cpu in 0..4 {
        assert_eq!(sched.cpu_stats(cpu, 0).unwrap().reserved_mhz, 1000);
    }
    let refused = sched.add(4, reserving(1000, 250), 0).unwrap_err();
    assert_eq!(
        refused,
        AdmissionError::Reservation {
            requested_mhz: 250,
            available_mhz: 0
        }
    );
    assert_eq!(
        refused.to_string(),
        "reservation of 250 MHz cannot be guaranteed: only 0 MHz unreserved"
    );
    assert!(sched.add(4, reserving(1000, 1), 0).is_err());
    // Without a reservation it powers on; shares still work.
    sched.add(4, Params::default(), 0).unwrap();
    assert_eq!(sched.len(), 5);
    sched.check_invariants();
}

#[test]
fn the_refusal_names_the_shortfall() {
    let mut sched = scheduler(4, 1000, Topology::Flat);
    for (id, mhz) in [(0, 1000), (1, 1000), (2, 1000), (3, 200)] {
        sched.add(id, reserving(1000, mhz), 0).unwrap();
    }
    assert_eq!(sched.unreserved_mhz(0), 800);
    let refused = sched.add(9, reserving(1000, 1000), 0).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "reservation of 1000 MHz cannot be guaranteed: only 800 MHz unreserved"
    );
    // 800 fits exactly (best fit: on CPU 3, the only one with room).
    sched.add(9, reserving(1000, 800), 0).unwrap();
    assert_eq!(sched.stats(9, 0).unwrap().cpu, 3);
    assert_eq!(sched.unreserved_mhz(0), 0);
}

#[test]
fn affinity_narrows_what_can_be_reserved() {
    let mut sched = scheduler(2, 1000, Topology::Flat);
    sched
        .add(
            0,
            Params {
                affinity: 0b01,
                ..reserving(1000, 700)
            },
            0,
        )
        .unwrap();
    let on_cpu0 = Params {
        affinity: 0b01,
        ..reserving(1000, 400)
    };
    assert_eq!(
        sched.add(1, on_cpu0, 0),
        Err(AdmissionError::Reservation {
            requested_mhz: 400,
            available_mhz: 300
        })
    );
    sched.add(1, reserving(1000, 400), 0).unwrap();
    assert_eq!(sched.stats(1, 0).unwrap().cpu, 1);
}

#[test]
fn fragmented_capacity_is_refused_and_named() {
    let mut sched = scheduler(2, 1000, Topology::Flat);
    sched.add(0, reserving(1000, 600), 0).unwrap();
    sched.add(1, reserving(1000, 600), 0).unwrap();
    let refused = sched.add(2, reserving(1000, 600), 0).unwrap_err();
    assert_eq!(
        refused,
        AdmissionError::Fragmented {
            requested_mhz: 600,
            available_mhz: 800,
            largest_mhz: 400
        }
    );
    assert_eq!(
        refused.to_string(),
        "reservation of 600 MHz cannot be guaranteed: 800 MHz are unreserved on its CPUs but \
         at most 400 MHz on any one of them"
    );
    // Best fit keeps the big piece: 300 goes next to a 600, leaving 400 whole elsewhere.
    sched.add(3, reserving(1000, 300), 0).unwrap();
    sched.add(4, reserving(1000, 400), 0).unwrap();
}

#[test]
fn hyper_threads_share_their_cores_capacity() {
    let mut sched = scheduler(4, 1000, Topology::SmtPairs);
    assert_eq!(sched.unreserved_mhz(0), 2000, "two cores of 1000 MHz");
    sched.add(0, reserving(1000, 1000), 0).unwrap();
    sched.add(1, reserving(1000, 600), 0).unwrap();
    let second_core = sched.stats(1, 0).unwrap().cpu / 2;
    assert_ne!(sched.stats(0, 0).unwrap().cpu / 2, second_core);
    assert_eq!(
        sched.add(2, reserving(1000, 500), 0),
        Err(AdmissionError::Reservation {
            requested_mhz: 500,
            available_mhz: 400
        })
    );
    // The 400 left is on the second core, on either thread; the new booking goes on the
    // thread with less booked.
    sched.add(2, reserving(1000, 400), 0).unwrap();
    let cpus = [1, 2].map(|id| sched.stats(id, 0).unwrap().cpu);
    assert_eq!(cpus[0] / 2, cpus[1] / 2);
    assert_ne!(cpus[0], cpus[1]);
    assert_eq!(sched.unreserved_mhz(0), 0);
    sched.check_invariants();
}

#[test]
fn invalid_parameters_are_refused_with_the_value() {
    let mut sched = scheduler(4, 1000, Topology::Flat);
    let cases = [
        (
            Params::with_shares(0),
            AdmissionError::Shares { shares: 0 },
            "shares must be 1 to 1000000, not 0",
        ),
        (
            Params::with_shares(MAX_SHARES + 1),
            AdmissionError::Shares { shares: 1_000_001 },
            "shares must be 1 to 1000000, not 1000001",
        ),
        (
            Params {
                limit_mhz: 300,
                ..reserving(1000, 500)
            },
            AdmissionError::LimitBelowReservation {
                limit_mhz: 300,
                reservation_mhz: 500,
            },
            "limit of 300 MHz is below the reservation of 500 MHz",
        ),
        (
            pinned(0xf0),
            AdmissionError::Affinity {
                affinity: 0xf0,
                cpus: 4,
            },
            "affinity 0xf0 allows none of the host's 4 CPUs",
        ),
        (
            reserving(1000, 1500),
            AdmissionError::ReservationAboveCpu {
                requested_mhz: 1500,
                cpu_mhz: 1000,
            },
            "reservation of 1500 MHz cannot be guaranteed: one entity runs on one CPU at a \
             time and a CPU has 1000 MHz",
        ),
    ];
    for (params, error, text) in cases {
        assert_eq!(sched.add(0, params, 0), Err(error));
        assert_eq!(error.to_string(), text);
    }
    assert!(sched.is_empty());
    // Extra affinity bits are ignored; an equal limit and reservation is fine.
    sched.add(0, pinned(0xff), 0).unwrap();
    sched
        .add(
            1,
            Params {
                limit_mhz: 500,
                ..reserving(1000, 500)
            },
            0,
        )
        .unwrap();
    let ids = [
        (
            sched.add(0, Params::default(), 0),
            "entity 0 already exists",
        ),
        (
            sched.add(160, Params::default(), 0),
            "entity 160 is out of range (the scheduler holds 160 entities)",
        ),
        (
            sched.update(7, Params::default(), 0),
            "entity 7 does not exist",
        ),
    ];
    for (result, text) in ids {
        assert_eq!(result.unwrap_err().to_string(), text);
    }
    assert_eq!(
        sched.wake(7, 0).unwrap_err().to_string(),
        "entity 7 does not exist"
    );
    assert_eq!(sched.block(200, 0), Err(NoSuchEntity { id: 200 }));
    assert!(sched.stats(7, 0).is_none());
    let mut fresh = Box::new(TestScheduler::new());
    assert_eq!(
        fresh.add(0, Params::default(), 0),
        Err(AdmissionError::NotConfigured)
    );
    assert_eq!(fresh.pick(0, 0).entity, None);
}

#[test]
fn a_refused_update_changes_nothing_and_an_accepted_one_rebooks() {
    let mut sched = scheduler(2, 1000, Topology::Flat);
    sched.add(0, reserving(1000, 800), 0).unwrap();
    sched.add(1, reserving(1000, 800), 0).unwrap();
    sched.add(2, reserving(1000, 200), 0).unwrap();
    assert_eq!(sched.stats(2, 0).unwrap().reserved_on, Some(0));
    // Growing within its own CPU's room: its own booking counts as free.
    sched.update(1, reserving(1000, 1000), 0).unwrap();
    let before = sched.params(0).unwrap();
    let refused = sched.update(0, reserving(1000, 900), 0).unwrap_err();
    assert_eq!(
        refused,
        AdmissionError::Reservation {
            requested_mhz: 900,
            available_mhz: 800
        }
    );
    assert_eq!(sched.params(0), Some(before));
    assert_eq!(
        sched.update(0, Params::with_shares(0), 0),
        Err(AdmissionError::Shares { shares: 0 })
    );
    sched.check_invariants();
    // Dropping a reservation frees it for others; a changed one may move.
    sched.update(1, Params::default(), 0).unwrap();
    sched.update(0, reserving(1000, 900), 0).unwrap();
    assert_eq!(
        sched.stats(0, 0).unwrap().reserved_on,
        Some(1),
        "rebooked where it fits"
    );
    assert_eq!(sched.unreserved_mhz(0), 900);
    sched.check_invariants();
    // Removing returns it too.
    sched.add(3, reserving(1000, 800), 0).unwrap();
    assert!(sched.add(4, reserving(1000, 200), 0).is_err());
    sched.remove(3, 0).unwrap();
    sched.add(4, reserving(1000, 200), 0).unwrap();
    sched.check_invariants();
}

#[test]
fn configuration_is_checked() {
    let mut sched = Box::new(TestScheduler::new());
    let cases = [
        (0, 1000, ConfigError::CpuCount { cpus: 0, max: 8 }),
        (9, 1000, ConfigError::CpuCount { cpus: 9, max: 8 }),
        (2, 0, ConfigError::ZeroMhz),
    ];
    for (cpus, mhz, error) in cases {
        assert_eq!(sched.configure(cpus, mhz, Topology::Flat), Err(error));
    }
    assert_eq!(
        ConfigError::CpuCount { cpus: 9, max: 8 }.to_string(),
        "9 CPUs cannot be scheduled (1 to 8 can)"
    );
    sched.configure(2, 1000, Topology::Flat).unwrap();
    sched.add(0, Params::default(), 0).unwrap();
    let refused = sched.configure(4, 1000, Topology::Flat).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the CPUs cannot be reconfigured while 1 entities exist"
    );
    assert_eq!(
        format!("{sched:?}"),
        "Scheduler { cpus: 2, mhz_per_cpu: 1000, topology: Flat, entities: 1 }"
    );
}

#[test]
fn manifest_parameters_convert() {
    let manifest = crate::manifest::SchedParams::default();
    assert_eq!(Params::from(manifest), Params::default());
    let custom = crate::manifest::SchedParams {
        shares: 2000,
        reservation_mhz: 100,
        limit_mhz: 400,
        affinity: 0b11,
        coschedule: true,
    };
    assert_eq!(
        Params::from(custom),
        Params {
            shares: 2000,
            reservation_mhz: 100,
            limit_mhz: 400,
            affinity: 0b11
        }
    );
}
