//! The vmkauthd world's wiring: draw the ticket key, find the clock, serve `auth` forever.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_rt::time::Monotonic;

    const SERVE: esker_rt::Declared =
        esker_rt::uses!("serve:auth", "receive", "status,issue_ticket,verify_ticket");
    /// Used if the kernel cannot tell the TSC rate: tickets then expire early or late.
    const FALLBACK_TSC_KHZ: u64 = 1_000_000;

    defmt::info!("vmkauthd: started");
    let mut key = [0u8; 32];
    if !esker_rt::arch::entropy(&mut key) {
        defmt::warn!("vmkauthd: no RDRAND; ticket key drawn from TSC jitter (weak)");
    }
    let clock = Monotonic::from_kernel().unwrap_or_else(|error| {
        defmt::warn!(
            "vmkauthd: TSC rate unknown ({=str}); assuming 1 GHz",
            error.describe()
        );
        Monotonic::with_tsc_khz(FALLBACK_TSC_KHZ)
    });
    let mut server = esker_vmkauthd::Vmkauthd::new(key, clock);
    rt.serve::<esker_protocols::auth::Auth, _>(&SERVE, &mut server);
    esker_rt::sys::exit(1)
}
