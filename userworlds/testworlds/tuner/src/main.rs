//! The tuner world: proves on the booted kernel that scheduling parameters change at run
//! time through a capability, and that accounting is readable the same way.
//!
//! It holds `world:spin-a` (read + write). At once it lowers spin-a's shares from 2000 to
//! 1000 (so spin-a and spin-b, both busy, split the CPU evenly instead of 2:1), tries a
//! reservation the CPU cannot guarantee (refused), then reads spin-a's accounting.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_rt::sys;

    const SPIN_A: esker_rt::uses::Declared = esker_rt::uses!("world:spin-a", "read+write");
    let Ok(spin_a) = rt.slot(&SPIN_A) else {
        sys::exit(2)
    };

    match sys::sched_set(spin_a, 1000, 0, 0, 0) {
        Ok(()) => defmt::info!("tuner: spin-a shares set to 1000"),
        Err(e) => defmt::error!(
            "tuner: changing spin-a's shares failed: {=str}",
            e.describe()
        ),
    }
    let khz = sys::tsc_khz().unwrap_or(1_000_000);
    let too_much = u32::try_from(khz / 1000 * 2).unwrap_or(u32::MAX);
    match sys::sched_set(spin_a, 1000, too_much, 0, 0) {
        Err(e) => defmt::info!(
            "tuner: reserving {=u32} MHz for spin-a refused: {=str}",
            too_much,
            e.describe()
        ),
        Ok(()) => defmt::error!(
            "tuner: an impossible reservation of {=u32} MHz was admitted",
            too_much
        ),
    }
    // Let the spinners run a while, then read spin-a's accounting.
    // SAFETY: rdtsc only reads the time-stamp counter; the kernel leaves CR4.TSD clear.
    let rdtsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < khz * 1000 {
        let _ = sys::yield_now();
    }
    match sys::sched_stats(spin_a) {
        Ok(stats) => defmt::info!(
            "tuner: spin-a used {=u64} ms, ready {=u64} ms, dispatched {=u64} times",
            stats.used_ns / 1_000_000,
            stats.ready_ns / 1_000_000,
            stats.dispatches
        ),
        Err(e) => defmt::error!(
            "tuner: reading spin-a's accounting failed: {=str}",
            e.describe()
        ),
    }
    sys::exit(0)
}
