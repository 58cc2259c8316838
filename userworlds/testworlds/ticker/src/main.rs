//! The ticker world: proves on the booted kernel that a device interrupt reaches the world
//! holding its capability as a notification bit, and stays masked until acknowledged.
//!
//! It holds the CMOS RTC (ports 0x70–0x71, interrupt line 8): it turns on the RTC's
//! periodic interrupt, waits for the notification five times, reads register C each time
//! (the RTC raises no further interrupt until it is read) and acknowledges the line.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

/// Interrupts to receive before declaring success.
#[cfg(target_os = "none")]
const INTERRUPTS: u32 = 5;

#[cfg(target_os = "none")]
fn world_main(rt: esker_rt::Runtime) -> ! {
    use esker_rt::sys::{self, PortWidth};
    use esker_rt::uses::Declared;

    const PORTS: Declared = esker_rt::uses!("device:rtc:ioports", "device");
    const LINE: Declared = esker_rt::uses!("device:rtc:irq", "device");
    const IRQ: Declared = esker_rt::uses!("irq:rtc", "wait");
    const INDEX: u16 = 0x70;
    const DATA: u16 = 0x71;
    /// Register selects with NMI kept disabled (bit 7), as firmware leaves it.
    const REG_A: u32 = 0x8a;
    const REG_B: u32 = 0x8b;
    const REG_C: u32 = 0x8c;

    let (Ok(ports), Ok(line), Ok(irq)) = (rt.slot(&PORTS), rt.slot(&LINE), rt.slot(&IRQ)) else {
        sys::exit(2)
    };
    let read = |register: u32| -> u32 {
        let _ = sys::port_out(ports, INDEX, PortWidth::Byte, register);
        sys::port_in(ports, DATA, PortWidth::Byte).unwrap_or(0)
    };
    let write = |register: u32, value: u32| {
        let _ = sys::port_out(ports, INDEX, PortWidth::Byte, register);
        let _ = sys::port_out(ports, DATA, PortWidth::Byte, value);
    };
    // Rate 10: 32768 >> 9 = 64 Hz periodic interrupts; then enable them (PIE).
    write(REG_A, (read(REG_A) & 0xf0) | 0x0a);
    write(REG_B, read(REG_B) | 0x40);
    let _ = read(REG_C);
    defmt::info!("ticker: RTC periodic interrupt enabled on line 8");
    for n in 1..=INTERRUPTS {
        match sys::wait(irq) {
            Ok(bits) => defmt::info!(
                "ticker: interrupt {=u32} arrived as notification bits {=u64:#x}",
                n,
                bits
            ),
            Err(e) => {
                defmt::error!(
                    "ticker: waiting for the interrupt failed: {=str}",
                    e.describe()
                );
                sys::exit(1)
            }
        }
        let status = read(REG_C);
        if status & 0x40 == 0 {
            defmt::warn!(
                "ticker: RTC register C {=u32:#x} shows no periodic interrupt",
                status
            );
        }
        if let Err(e) = sys::irq_ack(line) {
            defmt::error!(
                "ticker: acknowledging the line failed: {=str}",
                e.describe()
            );
        }
    }
    write(REG_B, read(REG_B) & !0x40);
    defmt::info!(
        "ticker: {=u32} interrupts delivered as notifications",
        INTERRUPTS
    );
    sys::exit(0)
}
