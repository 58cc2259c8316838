//! The vmx world's wiring. With a VM to run (the `vm` capabilities the manifest gives a
//! monitor of a `[vms.<name>]` entry) it reads the VM's package, loads the guest into the
//! VM's RAM and runs it, handling every exit; without one it checks the backends, brings
//! up the virtual NIC on its ring to the switch and serves the `vmx` control channel.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 768 * 1024);

#[cfg(target_os = "none")]
mod run;

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_protocols::{auth::Auth, storage::Storage, vswitch::Vswitch};
    use esker_rt::{Declared, uses};

    const SERVE: Declared = uses!("serve:vmx", "receive", "status");
    const AUTH: Declared = uses!("call:auth", "call", "status");
    const STORAGE: Declared = uses!("call:storage", "call", "status");
    const VSWITCH: Declared = uses!("call:vswitch", "call", "status");
    const NIC_RING: Declared = uses!("memory:ring-vm1-vswitch", "read+write+map");
    const NIC_DOORBELL: Declared = uses!("signal:ring-vm1", "signal");

    if rt.directory().any(|(_, name)| name == "vm") {
        run::power_on(&rt);
    }
    defmt::info!("vmx: started");
    let mut server = esker_vmx::VmxServer::with_nic_memory();
    backend::<Auth>(&rt, &AUTH, "vmkauthd", &mut server);
    backend::<Storage>(&rt, &STORAGE, "storage", &mut server);
    backend::<Vswitch>(&rt, &VSWITCH, "vswitch", &mut server);
    attach_nic(&rt, &NIC_RING, &NIC_DOORBELL, &mut server);
    rt.serve::<esker_protocols::vmx::Vmx, _>(&SERVE, &mut server);
    esker_rt::sys::exit(1)
}

/// Asks one backend for its status and records the answer.
#[cfg(target_os = "none")]
fn backend<P: esker_protocols::StatusProtocol>(
    rt: &esker_rt::Runtime,
    cap: &esker_rt::Declared,
    server_name: &str,
    vmx: &mut esker_vmx::VmxServer<esker_rt::ring::SharedRegion>,
) {
    let Ok(mut client) = rt.client::<P>(cap) else {
        return;
    };
    let answer = client.status();
    match &answer {
        Ok(status) => defmt::info!(
            "vmx: backend {=str} is {=str}",
            server_name,
            status.state.name()
        ),
        Err(error) => defmt::warn!("vmx: backend {=str} did not answer: {}", server_name, error),
    }
    vmx.record_backend(&answer);
}

/// Maps the NIC ring at the start of the map window, announces the link, rings the switch.
#[cfg(target_os = "none")]
fn attach_nic(
    rt: &esker_rt::Runtime,
    ring: &esker_rt::Declared,
    doorbell: &esker_rt::Declared,
    vmx: &mut esker_vmx::VmxServer<esker_rt::ring::SharedRegion>,
) {
    use esker_rt::abi::{Rights, layout};

    let (Ok(memory), Ok(doorbell)) = (rt.slot(ring), rt.slot(doorbell)) else {
        return;
    };
    let size =
        match esker_rt::sys::memory_map(memory, layout::MAP_BASE, Rights::READ | Rights::WRITE) {
            Ok(size) => size,
            Err(error) => {
                defmt::warn!("vmx: cannot map the NIC ring: {=str}", error.describe());
                return;
            }
        };
    let (Some(base), Ok(len)) = (
        core::ptr::NonNull::new(layout::MAP_BASE as usize as *mut u8),
        usize::try_from(size),
    ) else {
        return;
    };
    // SAFETY: the kernel just mapped `size` bytes read-write at MAP_BASE (page-aligned);
    // the mapping is never removed and nothing else in this world refers to it.
    let region = unsafe { esker_rt::ring::SharedRegion::new(base, len) };
    match vmx.attach_nic(region) {
        Ok(()) => {
            let _ = esker_rt::sys::signal(doorbell, 1);
            defmt::info!("vmx: NIC link up on ring-vm1");
        }
        Err(_) => defmt::warn!("vmx: the NIC ring is unusable ({=u64} bytes)", size),
    }
}
