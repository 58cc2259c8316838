//! The legacy 8259 interrupt controllers, used for device interrupt lines granted to
//! worlds (IOAPIC routing comes later). Remapped to vectors 0x20–0x2f, every line masked
//! until a world is granted it; a line fires once and stays masked until the holder
//! acknowledges it.

use core::sync::atomic::{AtomicU16, Ordering};

use x86_64::instructions::port::Port;

use super::trap::VECTOR_PIC_BASE;

const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_COMMAND: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;
const END_OF_INTERRUPT: u8 = 0x20;
/// Line 2 of the master carries the slave.
const CASCADE_LINE: u8 = 2;

/// Bit set = line masked. Starts all masked.
static MASK: AtomicU16 = AtomicU16::new(0xffff);

fn out(port: u16, value: u8) {
    // SAFETY: the 8259 ports belong to the kernel (never granted to a world); writing them
    // only changes interrupt delivery.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Remaps both controllers away from the exception vectors and masks every line.
pub fn init() {
    out(MASTER_COMMAND, 0x11);
    out(SLAVE_COMMAND, 0x11);
    out(MASTER_DATA, VECTOR_PIC_BASE);
    out(SLAVE_DATA, VECTOR_PIC_BASE + 8);
    out(MASTER_DATA, 1 << CASCADE_LINE);
    out(SLAVE_DATA, CASCADE_LINE);
    out(MASTER_DATA, 0x01);
    out(SLAVE_DATA, 0x01);
    write_mask(0xffff);
}

fn write_mask(mask: u16) {
    MASK.store(mask, Ordering::Relaxed);
    out(MASTER_DATA, mask as u8);
    out(SLAVE_DATA, (mask >> 8) as u8);
}

/// Masks or unmasks one line (0–15); unmasking a slave line also opens the cascade.
pub fn set_enabled(line: u8, enabled: bool) {
    if line >= 16 || line == CASCADE_LINE {
        return;
    }
    let mut mask = MASK.load(Ordering::Relaxed);
    if enabled {
        mask &= !(1 << line);
        if line >= 8 {
            mask &= !(1 << CASCADE_LINE);
        }
    } else {
        mask |= 1 << line;
    }
    write_mask(mask);
}

/// Acknowledges `line` at the controller(s).
pub fn end_of_interrupt(line: u8) {
    if line >= 8 {
        out(SLAVE_COMMAND, END_OF_INTERRUPT);
    }
    out(MASTER_COMMAND, END_OF_INTERRUPT);
}
