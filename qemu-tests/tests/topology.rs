//! The kernel learns from the hardware which logical CPUs are hyper-threads of one core
//! (APIC ids and CPUID leaf 0xB, which QEMU fills from `-smp`'s sockets, cores and
//! threads) and schedules on them as SMT pairs only when CPUs `2k` and `2k + 1` are the
//! two threads of core `k`.

use esker_kernel_core::contract;
use esker_logdecode::qemu::QemuConfig;
use esker_qemu_tests::{Failure, Machine, PVH_TIMEOUT, image_dir};

/// Boots the default image on `cpus` CPUs laid out as `topology` says (`None`: plain
/// `-smp cpus`, one thread per core).
fn boot(cpus: u32, topology: Option<&str>) -> Result<Machine, Failure> {
    let image = image_dir()?;
    let mut config = QemuConfig::pvh(&image, None);
    config.cpus = cpus;
    config.smp_topology = topology.map(str::to_string);
    Machine::boot(&config, &image)
}

/// One socket of two cores with two threads each: APIC ids 0-3, thread bit 0, so CPUs
/// 0/1 and 2/3 are siblings and the scheduler gets SMT pairs; the system still runs on
/// all four CPUs.
#[test]
fn two_cores_of_two_threads_are_scheduled_as_smt_pairs() -> Result<(), Failure> {
    let mut machine = boot(4, Some("sockets=1,cores=2,threads=2"))?;
    machine.expect("sched: scheduling on 4 CPUs", PVH_TIMEOUT)?;
    machine.expect(
        "sched: topology: 2 cores x 2 threads (SMT pairs); APIC ids [0, 1, 2, 3], SMT shift 1 \
         from CPUID 0xB",
        PVH_TIMEOUT,
    )?;
    machine.expect(contract::READY, PVH_TIMEOUT)?;
    machine.expect_all(
        &[
            "hostd: vmkauthd answered status",
            "hostd: storage answered status",
            "hostd: vswitch answered status",
            "hostd: vmx answered status",
        ],
        PVH_TIMEOUT,
    )?;
    Ok(())
}

/// Plain `-smp 4`: four cores of one thread (leaf 0xB's SMT level reports shift 0).
#[test]
fn four_cores_of_one_thread_are_flat() -> Result<(), Failure> {
    let mut machine = boot(4, None)?;
    machine.expect(
        "sched: topology: 4 cores, no SMT; APIC ids [0, 1, 2, 3], SMT shift 0 from CPUID 0xB",
        PVH_TIMEOUT,
    )?;
    machine.expect(contract::READY, PVH_TIMEOUT)?;
    Ok(())
}

/// Three threads per core (APIC ids 0, 1, 2 and 4, 5, 6 with a thread shift of 2): the
/// siblings are real but not pairs, so they are scheduled flat and the kernel says why.
#[test]
fn three_threads_per_core_are_flat_and_the_kernel_says_why() -> Result<(), Failure> {
    let mut machine = boot(6, Some("sockets=1,cores=2,threads=3"))?;
    machine.expect(
        "sched: topology: 6 CPUs on 2 cores, up to 3 threads per core: more than two threads \
         per core are not modelled; scheduled as flat; APIC ids [0, 1, 2, 4, 5, 6], SMT shift 2 \
         from CPUID 0xB",
        PVH_TIMEOUT,
    )?;
    machine.expect(contract::READY, PVH_TIMEOUT)?;
    Ok(())
}
