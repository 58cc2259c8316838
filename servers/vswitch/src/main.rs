//! The vswitch world's wiring: map vm1's NIC ring as its one port, then serve the
//! `vswitch` channel forever (draining the ring as it goes).
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_rt::{Declared, uses};
    use esker_vswitch::{NoDoorbell, VswitchServer};

    const SERVE: Declared = uses!("serve:vswitch", "receive", "status");
    const RING: Declared = uses!("memory:ring-vm1-vswitch", "read+write+map");
    const DOORBELL: Declared = uses!("wait:ring-vm1", "wait");

    defmt::info!("vswitch: started");
    match port(&rt, &RING, &DOORBELL) {
        Some(mut server) => {
            defmt::info!("vswitch: port ring-vm1 attached");
            rt.serve::<esker_protocols::vswitch::Vswitch, _>(&SERVE, &mut server);
        }
        None => {
            let mut server: VswitchServer<_, NoDoorbell> = VswitchServer::new();
            rt.serve::<esker_protocols::vswitch::Vswitch, _>(&SERVE, &mut server);
        }
    }
    esker_rt::sys::exit(1)
}

/// Maps the ring region at the start of the map window and attaches to it as consumer.
#[cfg(target_os = "none")]
fn port(
    rt: &esker_rt::Runtime,
    ring: &esker_rt::Declared,
    doorbell: &esker_rt::Declared,
) -> Option<esker_vswitch::VswitchServer<esker_rt::ring::SharedRegion, Doorbell>> {
    use esker_rt::abi::{Rights, layout};

    let (memory, doorbell) = (rt.slot(ring).ok()?, rt.slot(doorbell).ok()?);
    let size =
        match esker_rt::sys::memory_map(memory, layout::MAP_BASE, Rights::READ | Rights::WRITE) {
            Ok(size) => size,
            Err(error) => {
                defmt::warn!("vswitch: cannot map ring-vm1: {=str}", error.describe());
                return None;
            }
        };
    let base = core::ptr::NonNull::new(layout::MAP_BASE as usize as *mut u8)?;
    // SAFETY: the kernel just mapped `size` bytes read-write at MAP_BASE (page-aligned);
    // the mapping is never removed and nothing else in this world refers to it.
    let region = unsafe { esker_rt::ring::SharedRegion::new(base, usize::try_from(size).ok()?) };
    match esker_vswitch::VswitchServer::with_port(region, Doorbell(doorbell)) {
        Ok(server) => Some(server),
        Err(_) => {
            defmt::warn!("vswitch: ring-vm1 is unusable ({=u64} bytes)", size);
            None
        }
    }
}

/// The `wait:ring-vm1` notification, polled before draining.
#[cfg(target_os = "none")]
struct Doorbell(esker_rt::CapSlot);

#[cfg(target_os = "none")]
impl esker_vswitch::Doorbell for Doorbell {
    fn take(&mut self) -> Result<u64, esker_rt::Error> {
        esker_rt::sys::poll(self.0)
    }
}
