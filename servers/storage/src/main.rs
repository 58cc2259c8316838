//! The storage world's wiring: probe the ATA controller through its port capabilities,
//! enable its interrupt line, then serve the `storage` channel forever.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main);

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_rt::{Declared, uses};

    const SERVE: Declared = uses!("serve:storage", "receive", "status");
    const COMMAND_BLOCK: Declared = uses!("device:ata0:ioports:0", "device");
    const CONTROL_BLOCK: Declared = uses!("device:ata0:ioports:1", "device");
    const IRQ_LINE: Declared = uses!("device:ata0:irq", "device");
    const IRQ: Declared = uses!("irq:ata0", "wait");

    defmt::info!("storage: started");
    let mut server = esker_storage::StorageServer::new();
    if let (Ok(command), Ok(control)) = (rt.slot(&COMMAND_BLOCK), rt.slot(&CONTROL_BLOCK)) {
        match esker_storage::ata::probe(&mut Ports { command, control }) {
            Ok(disk) => {
                defmt::info!(
                    "storage: ata0 status {=u8:#x}, alternate status {=u8:#x}: {=str}",
                    disk.status,
                    disk.alternate_status,
                    disk.probe.describe()
                );
                server.set_disk(disk);
            }
            Err(error) => defmt::warn!(
                "storage: cannot read the ata0 ports: {=str}",
                error.describe()
            ),
        }
    }
    // Enable the line and drop whatever interrupt the probe left pending; requests are
    // served synchronously for now, so nothing waits on it yet.
    if let (Ok(line), Ok(irq)) = (rt.slot(&IRQ_LINE), rt.slot(&IRQ))
        && let Err(error) = esker_rt::sys::irq_ack(line).and_then(|()| esker_rt::sys::poll(irq))
    {
        defmt::warn!(
            "storage: cannot set up the ata0 interrupt: {=str}",
            error.describe()
        );
    }
    rt.serve::<esker_protocols::storage::Storage, _>(&SERVE, &mut server);
    esker_rt::sys::exit(1)
}

/// The ATA status registers through the world's I/O-port capabilities.
#[cfg(target_os = "none")]
struct Ports {
    command: esker_rt::CapSlot,
    control: esker_rt::CapSlot,
}

#[cfg(target_os = "none")]
impl esker_storage::ata::AtaPorts for Ports {
    fn status(&mut self) -> Result<u8, esker_rt::Error> {
        esker_rt::sys::port_in(
            self.command,
            esker_storage::ata::STATUS,
            esker_rt::sys::PortWidth::Byte,
        )
        .map(|v| v as u8)
    }

    fn alternate_status(&mut self) -> Result<u8, esker_rt::Error> {
        esker_rt::sys::port_in(
            self.control,
            esker_storage::ata::ALTERNATE_STATUS,
            esker_rt::sys::PortWidth::Byte,
        )
        .map(|v| v as u8)
    }
}
