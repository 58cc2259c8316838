//! A 16550A UART as seen through its eight registers (COM1: ports 0x3f8–0x3ff, IRQ 4).
//!
//! Transmission is instantaneous: a byte written to THR lands in an output buffer the
//! monitor drains with [`Uart::take_output`], so THR is always empty (LSR.THRE and
//! LSR.TEMT read 1). Received bytes come from the monitor through [`Uart::push_input`] into
//! a bounded queue that stands in for the receive FIFO.
//!
//! Interrupt sources, highest priority first (IIR identification in brackets):
//! receiver line status [0x6], received data available [0x4], THR empty [0x2], modem
//! status [0x0]. The chip's interrupt output reaches the PIC only while MCR.OUT2 is set and
//! loopback is off, as on a PC, where OUT2 enables the IRQ line driver.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Bytes of received data the UART holds before it drops input.
pub const INPUT_CAPACITY: usize = 4096;

/// Bytes of transmitted data held until the monitor takes them, before output is dropped.
pub const OUTPUT_CAPACITY: usize = 64 * 1024;

// Register offsets from the UART's base port.
const RBR_THR_DLL: u8 = 0;
const IER_DLM: u8 = 1;
const IIR_FCR: u8 = 2;
const LCR: u8 = 3;
const MCR: u8 = 4;
const LSR: u8 = 5;
const MSR: u8 = 6;
const SCR: u8 = 7;

// IER bits.
const IER_RX_DATA: u8 = 1 << 0;
const IER_THRE: u8 = 1 << 1;
const IER_LINE_STATUS: u8 = 1 << 2;
const IER_MODEM_STATUS: u8 = 1 << 3;

// IIR values.
const IIR_NO_INTERRUPT: u8 = 0x01;
const IIR_LINE_STATUS: u8 = 0x06;
const IIR_RX_DATA: u8 = 0x04;
const IIR_THRE: u8 = 0x02;
const IIR_MODEM_STATUS: u8 = 0x00;
const IIR_FIFOS_ENABLED: u8 = 0xc0;

// FCR bits.
const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;

// LCR bits.
const LCR_DLAB: u8 = 1 << 7;

// MCR bits.
const MCR_DTR: u8 = 1 << 0;
const MCR_RTS: u8 = 1 << 1;
const MCR_OUT1: u8 = 1 << 2;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOPBACK: u8 = 1 << 4;

// LSR bits.
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_OVERRUN: u8 = 1 << 1;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TRANSMITTER_EMPTY: u8 = 1 << 6;

// MSR status bits (upper nibble); the lower nibble holds their change flags.
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_RI: u8 = 1 << 6;
const MSR_DCD: u8 = 1 << 7;

/// The emulated 16550A.
#[derive(Clone, Debug)]
pub struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    divisor_low: u8,
    divisor_high: u8,
    fifos_enabled: bool,
    /// LSR error bits (only overrun is ever set), cleared by reading LSR.
    line_errors: u8,
    /// A THR-empty interrupt is raised and not yet taken by an IIR read or THR write.
    thre_pending: bool,
    /// MSR change flags (low nibble), cleared by reading MSR.
    msr_deltas: u8,
    input: VecDeque<u8>,
    output: Vec<u8>,
    input_dropped: u64,
    output_dropped: u64,
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart {
    /// A UART in its power-on state: interrupts off, FIFOs off, 8N1 is left to the guest.
    pub fn new() -> Self {
        Self {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            divisor_low: 0x0c, // 9600 baud, for what it is worth
            divisor_high: 0,
            fifos_enabled: false,
            line_errors: 0,
            thre_pending: false,
            msr_deltas: 0,
            input: VecDeque::new(),
            output: Vec::new(),
            input_dropped: 0,
            output_dropped: 0,
        }
    }

    /// Reads the register at `offset` (0–7) from the base port; other offsets read 0xff.
    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.divisor_low,
            RBR_THR_DLL => self.input.pop_front().unwrap_or(0),
            IER_DLM if dlab => self.divisor_high,
            IER_DLM => self.ier,
            IIR_FCR => self.read_iir(),
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let lsr = self.lsr();
                self.line_errors = 0;
                lsr
            }
            MSR => {
                let msr = self.modem_status() | self.msr_deltas;
                self.msr_deltas = 0;
                msr
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }

    /// Writes `value` to the register at `offset` (0–7) from the base port; writes to other
    /// offsets are ignored.
    pub fn write(&mut self, offset: u8, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.divisor_low = value,
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if dlab => self.divisor_high = value,
            IER_DLM => {
                self.ier = value & 0x0f;
                // THR is always empty, so enabling (or re-enabling) the THRE interrupt
                // raises it at once, as the 8250 driver's probe expects.
                self.thre_pending = self.ier & IER_THRE != 0;
            }
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => {
                let before = self.modem_status();
                self.mcr = value & 0x1f;
                self.note_modem_changes(before, self.modem_status());
            }
            SCR => self.scr = value,
            _ => {} // LSR and MSR (factory-test writes), or beyond the device
        }
    }

    /// Whether the UART drives its IRQ line (interrupt pending, OUT2 set, not in loopback).
    pub fn irq_level(&self) -> bool {
        self.mcr & (MCR_OUT2 | MCR_LOOPBACK) == MCR_OUT2 && self.interrupt_id().is_some()
    }

    /// Takes every byte transmitted since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.output)
    }

    /// Queues bytes for the guest to receive; those beyond [`INPUT_CAPACITY`] are dropped
    /// (counted, and reported to the guest as an overrun). Returns how many were queued.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let room = INPUT_CAPACITY.saturating_sub(self.input.len());
        let taken = bytes.len().min(room);
        self.input.extend(&bytes[..taken]);
        let dropped = bytes.len() - taken;
        if dropped > 0 {
            self.input_dropped = self.input_dropped.saturating_add(dropped as u64);
            self.line_errors |= LSR_OVERRUN;
        }
        taken
    }

    /// Appends a byte to the output stream as if transmitted (used for the 0xe9 debug port).
    pub fn append_output(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_CAPACITY {
            self.output.push(byte);
        } else {
            self.output_dropped = self.output_dropped.saturating_add(1);
        }
    }

    /// Input bytes dropped because the receive queue was full.
    pub fn input_dropped(&self) -> u64 {
        self.input_dropped
    }

    /// Output bytes dropped because the monitor did not take them in time.
    pub fn output_dropped(&self) -> u64 {
        self.output_dropped
    }

    /// The programmed baud-rate divisor (DLM:DLL).
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.divisor_low, self.divisor_high])
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOPBACK != 0 {
            if self.input.len() < INPUT_CAPACITY {
                self.input.push_back(byte);
            } else {
                self.line_errors |= LSR_OVERRUN;
            }
        } else {
            self.append_output(byte);
        }
        // The byte left THR at once: THR is empty again.
        self.thre_pending = true;
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        // Changing the enable bit resets both FIFOs; so does the explicit reset bit.
        if enable != self.fifos_enabled || (enable && value & FCR_CLEAR_RX != 0) {
            self.input.clear();
        }
        self.fifos_enabled = enable;
    }

    fn read_iir(&mut self) -> u8 {
        let fifo_bits = if self.fifos_enabled {
            IIR_FIFOS_ENABLED
        } else {
            0
        };
        match self.interrupt_id() {
            Some(id) => {
                if id == IIR_THRE {
                    // Reading IIR when it reports THRE takes that interrupt.
                    self.thre_pending = false;
                }
                id | fifo_bits
            }
            None => IIR_NO_INTERRUPT | fifo_bits,
        }
    }

    /// The highest-priority pending, enabled interrupt, as its IIR identification.
    fn interrupt_id(&self) -> Option<u8> {
        if self.ier & IER_LINE_STATUS != 0 && self.line_errors != 0 {
            Some(IIR_LINE_STATUS)
        } else if self.ier & IER_RX_DATA != 0 && !self.input.is_empty() {
            Some(IIR_RX_DATA)
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            Some(IIR_THRE)
        } else if self.ier & IER_MODEM_STATUS != 0 && self.msr_deltas != 0 {
            Some(IIR_MODEM_STATUS)
        } else {
            None
        }
    }

    fn lsr(&self) -> u8 {
        let ready = if self.input.is_empty() {
            0
        } else {
            LSR_DATA_READY
        };
        ready | self.line_errors | LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY
    }

    /// MSR's status nibble: wired back from MCR in loopback, else a peer that is present.
    fn modem_status(&self) -> u8 {
        if self.mcr & MCR_LOOPBACK == 0 {
            return MSR_CTS | MSR_DSR | MSR_DCD;
        }
        let wire = |mcr_bit: u8, msr_bit: u8| if self.mcr & mcr_bit != 0 { msr_bit } else { 0 };
        wire(MCR_RTS, MSR_CTS)
            | wire(MCR_DTR, MSR_DSR)
            | wire(MCR_OUT1, MSR_RI)
            | wire(MCR_OUT2, MSR_DCD)
    }

    fn note_modem_changes(&mut self, before: u8, after: u8) {
        let changed = before ^ after;
        if changed & MSR_CTS != 0 {
            self.msr_deltas |= 1 << 0;
        }
        if changed & MSR_DSR != 0 {
            self.msr_deltas |= 1 << 1;
        }
        // RI reports only its trailing edge.
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.msr_deltas |= 1 << 2;
        }
        if changed & MSR_DCD != 0 {
            self.msr_deltas |= 1 << 3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register sequence Linux's 8250 driver uses to find and size a 16550A.
    #[test]
    fn linux_style_probe_finds_a_16550a() {
        let mut uart = Uart::new();
        // IER existence test: 0 then 0x0f read back (upper bits never stick).
        uart.write(IER_DLM, 0);
        assert_eq!(uart.read(IER_DLM), 0);
        uart.write(IER_DLM, 0xff);
        assert_eq!(uart.read(IER_DLM), 0x0f);
        uart.write(IER_DLM, 0);
        // Loopback: RTS and OUT2 come back as CTS and DCD.
        uart.write(MCR, MCR_LOOPBACK | MCR_RTS | MCR_OUT2);
        assert_eq!(uart.read(MSR) & 0xf0, 0x90);
        uart.write(MCR, 0);
        // Scratch register.
        uart.write(SCR, 0xa5);
        assert_eq!(uart.read(SCR), 0xa5);
        uart.write(SCR, 0x5a);
        assert_eq!(uart.read(SCR), 0x5a);
        // FIFO enable shows in IIR bits 6-7; 64-byte-FIFO bit 5 stays clear (not a 16750).
        uart.write(IIR_FCR, 0x21);
        assert_eq!(uart.read(IIR_FCR), 0xc1);
        uart.write(IIR_FCR, 0);
        assert_eq!(uart.read(IIR_FCR), 0x01);
        // DLAB round trip: the divisor latch hides RBR/IER and comes back.
        uart.write(LCR, 0x83);
        uart.write(RBR_THR_DLL, 0x01);
        uart.write(IER_DLM, 0x00);
        assert_eq!(uart.read(RBR_THR_DLL), 0x01);
        assert_eq!(uart.read(IER_DLM), 0x00);
        assert_eq!(uart.divisor(), 1);
        uart.write(LCR, 0x03);
        assert_eq!(uart.read(LCR), 0x03);
        assert_eq!(uart.read(IER_DLM), 0, "IER is back once DLAB is clear");
    }

    #[test]
    fn enabling_the_thre_interrupt_raises_it_and_iir_takes_it() {
        let mut uart = Uart::new();
        uart.write(MCR, MCR_OUT2 | MCR_DTR | MCR_RTS);
        assert!(!uart.irq_level());
        // Twice, as the driver's THRE test does: each IER write with THRI raises it.
        for _ in 0..2 {
            uart.write(IER_DLM, IER_THRE);
            assert!(uart.irq_level());
            assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_THRE);
            assert_eq!(
                uart.read(IIR_FCR) & 0x0f,
                IIR_NO_INTERRUPT,
                "taken by the read"
            );
            assert!(!uart.irq_level());
            uart.write(IER_DLM, 0);
        }
        // Writing THR raises it again.
        uart.write(IER_DLM, IER_THRE);
        let _ = uart.read(IIR_FCR);
        uart.write(RBR_THR_DLL, b'x');
        assert!(uart.irq_level());
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_THRE);
    }

    #[test]
    fn out2_gates_the_irq_line() {
        let mut uart = Uart::new();
        uart.write(IER_DLM, IER_THRE);
        assert!(!uart.irq_level(), "OUT2 clear");
        uart.write(MCR, MCR_OUT2);
        assert!(uart.irq_level());
        uart.write(MCR, MCR_OUT2 | MCR_LOOPBACK);
        assert!(!uart.irq_level(), "loopback disconnects the line");
    }

    #[test]
    fn output_is_captured_and_lsr_shows_an_empty_transmitter() {
        let mut uart = Uart::new();
        assert_eq!(uart.read(LSR), LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY);
        for &b in b"hello\n" {
            uart.write(RBR_THR_DLL, b);
        }
        assert_eq!(uart.take_output(), b"hello\n");
        assert!(uart.take_output().is_empty());
        // With DLAB set the same offset is DLL, not THR.
        uart.write(LCR, LCR_DLAB);
        uart.write(RBR_THR_DLL, b'z');
        assert!(uart.take_output().is_empty());
    }

    #[test]
    fn input_sets_data_ready_and_raises_the_rx_interrupt() {
        let mut uart = Uart::new();
        uart.write(MCR, MCR_OUT2);
        uart.write(IER_DLM, IER_RX_DATA);
        assert!(!uart.irq_level());
        assert_eq!(uart.read(LSR) & LSR_DATA_READY, 0);
        assert_eq!(uart.push_input(b"ab"), 2);
        assert!(uart.irq_level());
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_RX_DATA);
        assert_ne!(uart.read(LSR) & LSR_DATA_READY, 0);
        assert_eq!(uart.read(RBR_THR_DLL), b'a');
        assert!(uart.irq_level());
        assert_eq!(uart.read(RBR_THR_DLL), b'b');
        assert_eq!(uart.read(LSR) & LSR_DATA_READY, 0);
        assert!(!uart.irq_level());
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_NO_INTERRUPT);
    }

    #[test]
    fn rx_data_outranks_thre_and_line_status_outranks_both() {
        let mut uart = Uart::new();
        uart.write(IER_DLM, IER_RX_DATA | IER_THRE | IER_LINE_STATUS);
        uart.push_input(b"q");
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_RX_DATA);
        let _ = uart.read(RBR_THR_DLL);
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_THRE);
        // Overflow the queue: overrun is a line-status interrupt until LSR is read.
        uart.push_input(&[0; INPUT_CAPACITY + 3]);
        assert_eq!(uart.input_dropped(), 3);
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_LINE_STATUS);
        assert_ne!(uart.read(LSR) & LSR_OVERRUN, 0);
        assert_eq!(uart.read(LSR) & LSR_OVERRUN, 0);
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_RX_DATA);
    }

    #[test]
    fn loopback_sends_output_back_as_input() {
        let mut uart = Uart::new();
        uart.write(MCR, MCR_LOOPBACK);
        uart.write(RBR_THR_DLL, 0x42);
        assert!(uart.take_output().is_empty());
        assert_ne!(uart.read(LSR) & LSR_DATA_READY, 0);
        assert_eq!(uart.read(RBR_THR_DLL), 0x42);
    }

    #[test]
    fn modem_status_changes_are_flagged_and_interrupt() {
        let mut uart = Uart::new();
        uart.write(IER_DLM, IER_MODEM_STATUS);
        uart.write(MCR, MCR_LOOPBACK);
        let _ = uart.read(MSR);
        uart.write(MCR, MCR_LOOPBACK | MCR_DTR);
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_MODEM_STATUS);
        assert_eq!(uart.read(MSR), MSR_DSR | 0x02);
        assert_eq!(uart.read(MSR), MSR_DSR);
        assert_eq!(uart.read(IIR_FCR) & 0x0f, IIR_NO_INTERRUPT);
    }

    #[test]
    fn fifo_reset_drops_pending_input() {
        let mut uart = Uart::new();
        uart.push_input(b"stale");
        uart.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(uart.read(LSR) & LSR_DATA_READY, 0);
    }
}
