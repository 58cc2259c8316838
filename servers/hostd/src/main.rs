//! The hostd world's wiring: ask every server for its status and log the answers, then
//! serve the `hostd` channel forever.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_protocols::{
        auth::Auth, hostd::Hostd as HostdProtocol, storage::Storage, vmx::Vmx, vswitch::Vswitch,
    };
    use esker_rt::{Declared, uses};

    const SERVE: Declared = uses!("serve:hostd", "receive", "status");
    const AUTH: Declared = uses!("call:auth", "call", "status,issue_ticket,verify_ticket");
    const STORAGE: Declared = uses!("call:storage", "call", "status");
    const VSWITCH: Declared = uses!("call:vswitch", "call", "status");
    const VMX: Declared = uses!("call:vmx", "call", "status");

    defmt::info!("hostd: started");
    let mut hostd = esker_hostd::Hostd::new();
    survey::<Auth>(&rt, &AUTH, "vmkauthd", &mut hostd);
    survey::<Storage>(&rt, &STORAGE, "storage", &mut hostd);
    survey::<Vswitch>(&rt, &VSWITCH, "vswitch", &mut hostd);
    survey::<Vmx>(&rt, &VMX, "vmx", &mut hostd);
    check_tickets(&rt, &AUTH);
    rt.serve::<HostdProtocol, _>(&SERVE, &mut hostd);
    esker_rt::sys::exit(1)
}

/// Has vmkauthd issue a ticket for `root` and verify it, and logs the outcome.
#[cfg(target_os = "none")]
fn check_tickets(rt: &esker_rt::Runtime, auth: &esker_rt::Declared) {
    use esker_hostd::TicketCheck;

    const USER: &str = "root";
    let Ok(mut client) = rt.client::<esker_protocols::auth::Auth>(auth) else {
        return;
    };
    match esker_hostd::check_tickets(&mut client, USER, 60) {
        Ok(TicketCheck::Verified { serial, expires_at }) => defmt::info!(
            "hostd: vmkauthd issued ticket {=u64} for {=str} (expires at {=u64} s) and verified it",
            serial,
            USER,
            expires_at
        ),
        Ok(TicketCheck::IssueRefused(error)) => defmt::warn!(
            "hostd: vmkauthd refused a ticket for {=str}: {}",
            USER,
            error
        ),
        Ok(TicketCheck::VerifyRefused(error)) => {
            defmt::warn!("hostd: vmkauthd refused its own ticket: {}", error)
        }
        Err(error) => defmt::warn!("hostd: ticket check failed: {}", error),
    }
}

/// Asks one server for its status through `cap`, logs the answer and records it.
#[cfg(target_os = "none")]
fn survey<P: esker_protocols::StatusProtocol>(
    rt: &esker_rt::Runtime,
    cap: &esker_rt::Declared,
    server: &str,
    hostd: &mut esker_hostd::Hostd,
) {
    use esker_rt::{ChannelError, Error};

    let answer = match rt.client::<P>(cap) {
        Ok(mut client) => esker_hostd::ask_status(&mut client),
        Err(_) => Err(ChannelError::Kernel(Error::InvalidCapability)),
    };
    match &answer {
        Ok(status) => defmt::info!("hostd: {=str} answered status: {}", server, status),
        Err(error) => defmt::warn!("hostd: {=str} did not answer status: {}", server, error),
    }
    hostd.record(server, &answer);
}
