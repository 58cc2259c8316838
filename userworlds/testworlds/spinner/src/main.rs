//! The spinner world: spins for three seconds of TSC time, then logs one line the
//! scheduling tests parse: `spinner <name>: <n> iterations, ran <p> permille of <w> us,
//! on CPUs <mask>` (the CPUs it was seen on: asked at the start, after every gap that
//! shows it was descheduled, and every 2^16 iterations).
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_rt::sys;
    use esker_spinner::Measurement;

    const WINDOW_SECONDS: u64 = 3;
    let khz = sys::tsc_khz().unwrap_or(1_000_000).max(1);
    let window = khz * 1000 * WINDOW_SECONDS;
    // SAFETY: rdtsc only reads the time-stamp counter; the kernel leaves CR4.TSD clear.
    let rdtsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let start = rdtsc();
    let mut previous = start;
    let mut measurement = Measurement::default();
    let cpu_bit = || sys::current_cpu().map_or(0, |(cpu, _)| 1u64 << (cpu % 64));
    let mut cpus = cpu_bit();
    while previous.wrapping_sub(start) < window {
        let now = rdtsc();
        measurement.step(previous, now);
        if now.wrapping_sub(previous) > esker_spinner::MAX_RUNNING_GAP_TICKS
            || measurement.iterations % (1 << 16) == 0
        {
            cpus |= cpu_bit();
        }
        previous = now;
    }
    defmt::info!(
        "spinner {=str}: {=u64} iterations, ran {=u64} permille of {=u64} us, on CPUs {=u64:#x}",
        rt.world_name(),
        measurement.iterations,
        measurement.permille(),
        measurement.window_ticks * 1000 / khz,
        cpus
    );
    sys::exit(0)
}
