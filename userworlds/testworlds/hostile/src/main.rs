//! The hostile world's wiring: run the sweep and the random pass, log the tally, then ask
//! every server it can call for its status.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_hostile::{Plan, RANDOM_CALLS, Rng, Tally, random_call, sweep};
    use esker_rt::uses;

    // What it may call status on, if the manifest hands it over (see `report_statuses`).
    const CALLS: [esker_rt::Declared; 5] = [
        uses!("call:hostd", "call", "status"),
        uses!("call:auth", "call", "status"),
        uses!("call:storage", "call", "status"),
        uses!("call:vswitch", "call", "status"),
        uses!("call:vmx", "call", "status"),
    ];

    let log_slot = rt
        .directory()
        .find(|(_, name)| *name == "log")
        .map(|(slot, _)| slot);
    let plan = Plan::new(rt.directory().map(|(slot, _)| slot), log_slot);
    let seed = Rng::seed_for(rt.world_name());
    defmt::info!("hostile: started, seed {=u64:#x}", seed);

    let mut tally = Tally::default();
    for call in sweep().filter(|call| plan.allows(call)) {
        tally.record(&call, syscall(&call));
    }
    let mut rng = Rng::new(seed);
    for _ in 0..RANDOM_CALLS {
        let call = random_call(&mut rng, &plan);
        tally.record(&call, syscall(&call));
    }

    defmt::info!(
        "hostile: {=u64} calls, {=u64} errors, {=u64} successes",
        tally.calls,
        tally.errors(),
        tally.successes
    );
    for (error, count) in tally.errors_seen() {
        defmt::info!("hostile: {=u64} x {=str}", count, error.describe());
    }
    if tally.unknown > 0 {
        defmt::error!(
            "hostile: {=u64} calls returned codes the ABI does not define",
            tally.unknown
        );
    }
    if tally.invalid_not_refused > 0 {
        defmt::error!(
            "hostile: {=u64} invalid system-call numbers were not refused",
            tally.invalid_not_refused
        );
    }

    for cap in &CALLS {
        report_status(&rt, cap);
    }
    defmt::info!("hostile: done");
    esker_rt::sys::exit(0)
}

/// Makes one planned call.
#[cfg(target_os = "none")]
fn syscall(call: &esker_hostile::Call) -> u64 {
    // SAFETY: this world never borrows its IPC buffer and never uses memory mapped with
    // `memory_map`, so whatever the kernel writes or unmaps cannot invalidate a reference;
    // `log` through the world's own log capability only gets unreadable ranges (the plan
    // checks), and the kernel must refuse every pointer it cannot read.
    unsafe { esker_rt::sys::raw::syscall(call.number, call.args) }.0
}

/// Asks the server behind `cap` for its status, if this world holds `cap`.
///
/// Every protocol's `status` request and reply encode the same way (operation 0, no
/// fields; reply variant 0 holding a `Status`), so the `hostd` protocol types serve for all.
#[cfg(target_os = "none")]
fn report_status(rt: &esker_rt::Runtime, cap: &esker_rt::Declared) {
    if !rt.directory().any(|(_, name)| name == cap.name()) {
        return;
    }
    match rt
        .client::<esker_protocols::hostd::Hostd>(cap)
        .map(|mut client| client.status())
    {
        Ok(Ok(status)) => defmt::info!("hostile: {=str} answered status: {}", cap.name(), status),
        Ok(Err(error)) => defmt::info!(
            "hostile: {=str} did not answer status: {}",
            cap.name(),
            error
        ),
        Err(missing) => defmt::warn!("hostile: {}", missing),
    }
}
