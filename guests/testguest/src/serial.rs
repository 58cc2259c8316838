//! COM1 (16550 at 0x3f8), polled: every line the guest prints starts with `testguest: `.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};

use crate::cpu::{inb, outb};

/// COM1's register block.
pub const COM1: u16 = 0x3f8;
const DATA: u16 = COM1;
const INTERRUPT_ENABLE: u16 = COM1 + 1;
const FIFO_CONTROL: u16 = COM1 + 2;
const LINE_CONTROL: u16 = COM1 + 3;
const MODEM_CONTROL: u16 = COM1 + 4;
const LINE_STATUS: u16 = COM1 + 5;
/// The scratch register (the `ports` check round-trips values through it).
pub const SCRATCH: u16 = COM1 + 7;
/// Line status: transmitter holding register empty.
const THRE: u8 = 1 << 5;
/// Polls of the line status before a byte is sent regardless: a UART whose THRE never
/// comes on still gets the text, slowly, instead of hanging the guest silently.
const MAX_POLLS: u32 = 1_000_000;

/// Programs 115200 baud 8N1, FIFOs on, UART interrupts off.
pub fn init() {
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, 0x80); // divisor latch access
    outb(DATA, 0x01); // divisor 1: 115200 baud
    outb(INTERRUPT_ENABLE, 0x00);
    outb(LINE_CONTROL, 0x03); // 8 bits, no parity, one stop bit
    outb(FIFO_CONTROL, 0xc7); // enable and clear FIFOs
    outb(MODEM_CONTROL, 0x03); // DTR, RTS
}

fn write_byte(byte: u8) {
    for _ in 0..MAX_POLLS {
        if inb(LINE_STATUS) & THRE != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(DATA, byte);
}

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                write_byte(b'\r');
            }
            write_byte(byte);
        }
        Ok(())
    }
}

/// Prints `testguest: <args>` and a line end.
pub fn say(args: fmt::Arguments<'_>) {
    // Writing to the UART cannot fail; a formatting error only truncates the line.
    let _ = writeln!(Uart, "testguest: {args}");
}

/// `say!("format", args...)`: one line of output.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::serial::say(format_args!($($arg)*)) };
}

/// What the guest is doing, for the `FAILED <what>:` line of an exception or panic.
static STAGE: AtomicU8 = AtomicU8::new(0);

const STAGES: [&str; 11] = [
    "boot",
    "cpuid",
    "ports",
    "mmio",
    "memory",
    "timer",
    "isolation",
    "triple-fault",
    "garbage",
    "spin",
    "exit",
];

/// Records the current stage (one of the names above; unknown names read as "boot").
pub fn set_stage(name: &str) {
    let index = STAGES.iter().position(|s| *s == name).unwrap_or(0);
    STAGE.store(index as u8, Ordering::Relaxed);
}

/// The current stage.
pub fn stage() -> &'static str {
    STAGES
        .get(usize::from(STAGE.load(Ordering::Relaxed)))
        .copied()
        .unwrap_or("boot")
}

/// Prints `testguest: FAILED <what>: <detail>` and ends the VM with `code`.
pub fn fail(what: &str, code: u32, detail: fmt::Arguments<'_>) -> ! {
    say(format_args!("FAILED {what}: {detail}"));
    crate::cpu::exit(code)
}

/// `fail!(what, code, "format", args...)`: see [`fail`].
#[macro_export]
macro_rules! fail {
    ($what:expr, $code:expr, $($arg:tt)*) => {
        $crate::serial::fail($what, $code, format_args!($($arg)*))
    };
}
