//! COM1, the 16550 UART at I/O port 0x3f8: the one line that every log source shares.
//!
//! Input (when a world holds the console) by the receive interrupt, IRQ 4. Output:
//! bytes are written by polling the transmitter; a UART that never becomes
//! ready (no COM1 on this machine) costs a bounded wait per byte and the byte is dropped,
//! so logging can never hang the kernel.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const DATA: u16 = COM1;
const INTERRUPT_ENABLE: u16 = COM1 + 1;
const FIFO_CONTROL: u16 = COM1 + 2;
const LINE_CONTROL: u16 = COM1 + 3;
const MODEM_CONTROL: u16 = COM1 + 4;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMITTER_EMPTY: u8 = 1 << 5;
const DATA_READY: u8 = 1 << 0;
/// The legacy interrupt line of COM1.
pub const IRQ: u8 = 4;
/// Polls of the line status before a byte is given up.
const MAX_POLLS: u32 = 100_000;

fn outb(port: u16, value: u8) {
    // SAFETY: the COM1 register block (0x3f8..0x400) belongs to the kernel alone (no
    // world is ever granted it) and writing its registers has no effect on memory.
    unsafe { Port::<u8>::new(port).write(value) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: as in `outb`; reading the line status register has no side effects.
    unsafe { Port::<u8>::new(port).read() }
}

/// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, 0x80); // divisor latch access
    outb(DATA, 0x01); // divisor 1: 115200 baud
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, 0x03); // 8 bits, no parity, one stop bit
    outb(FIFO_CONTROL, 0xc7); // enable and clear FIFOs, 14-byte threshold
    outb(MODEM_CONTROL, 0x03); // DTR, RTS
    // End whatever firmware or boot-loader text came before, so that it cannot run into
    // the first packet (a zero byte is the packet delimiter).
    write_byte(0);
}

/// Turns on the receive interrupt (IER bit 0; OUT2 gates the line to the PIC on a PC).
pub fn enable_receive_interrupt() {
    outb(MODEM_CONTROL, 0x0b); // DTR, RTS, OUT2
    outb(INTERRUPT_ENABLE, 0x01);
}

/// A byte received, if one is waiting.
pub fn read_byte() -> Option<u8> {
    (inb(LINE_STATUS) & DATA_READY != 0).then(|| inb(DATA))
}

/// Sends one byte, waiting (boundedly) for room in the transmitter.
pub fn write_byte(byte: u8) {
    for _ in 0..MAX_POLLS {
        if inb(LINE_STATUS) & TRANSMITTER_EMPTY != 0 {
            outb(DATA, byte);
            return;
        }
        core::hint::spin_loop();
    }
}
