//! The revoker world: proves, on the running kernel, that
//!
//! 1. a copy derived from a capability works like the original,
//! 2. revoking the original's descendants makes the copy fail *at once*, and
//! 3. a slot the manifest never filled cannot be used to call anything.
//!
//! Each step logs one `revoker: …` line that the boot test waits for.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_abi::{Error, Rights};
    use esker_protocols::auth::Auth;
    use esker_rt::channel::Client;
    use esker_rt::ipc::KernelTransport;
    use esker_rt::sys;

    const AUTH: esker_rt::uses::Declared = esker_rt::uses!("call:auth", "call+grant", "status");
    /// A slot the manifest leaves empty (the revoker holds only `log` and `call:auth`).
    const NEVER_GRANTED: u32 = 200;

    let Ok(original) = rt.slot(&AUTH) else {
        sys::exit(2)
    };
    let mut direct = Client::<Auth, _>::new(original, KernelTransport::new());
    match direct.status() {
        Ok(status) => defmt::info!(
            "revoker: original answered status: {=str}",
            status.name.as_str()
        ),
        Err(e) => defmt::error!("revoker: original failed: {}", defmt::Debug2Format(&e)),
    }

    let copy = match sys::cap_derive(original, Rights::CALL, 0) {
        Ok(slot) => slot,
        Err(e) => {
            defmt::error!("revoker: cap_derive failed: {=str}", e.describe());
            sys::exit(1)
        }
    };
    let mut through_copy = Client::<Auth, _>::new(copy, KernelTransport::new());
    match through_copy.status() {
        Ok(_) => defmt::info!("revoker: derived copy in slot {=u32} answered status", copy),
        Err(e) => defmt::error!("revoker: derived copy failed: {}", defmt::Debug2Format(&e)),
    }

    if let Err(e) = sys::cap_revoke(original) {
        defmt::error!("revoker: cap_revoke failed: {=str}", e.describe());
    }
    match sys::cap_info(copy) {
        Err(Error::InvalidCapability) => {
            defmt::info!("revoker: after revoke the copy's slot is empty")
        }
        other => defmt::error!(
            "revoker: after revoke the copy still exists: {}",
            defmt::Debug2Format(&other)
        ),
    }
    match through_copy.status() {
        Err(e) => defmt::info!("revoker: revoked copy refused: {}", defmt::Debug2Format(&e)),
        Ok(_) => defmt::error!("revoker: REVOKED COPY STILL WORKS"),
    }
    match direct.status() {
        Ok(_) => defmt::info!("revoker: original still works after revoking its copies"),
        Err(e) => defmt::error!(
            "revoker: original broken by revoke: {}",
            defmt::Debug2Format(&e)
        ),
    }

    let mut stranger = Client::<Auth, _>::new(NEVER_GRANTED, KernelTransport::new());
    match stranger.status() {
        Err(e) => defmt::info!(
            "revoker: call without a capability refused: {}",
            defmt::Debug2Format(&e)
        ),
        Ok(_) => defmt::error!("revoker: CALL WITHOUT A CAPABILITY SUCCEEDED"),
    }
    defmt::info!("revoker: done");
    sys::exit(0)
}
