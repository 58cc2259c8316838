//! The PC devices a guest finds on its I/O ports and in its memory-mapped space.
//!
//! [`PcDevices`] bundles the models and routes accesses to them: the 8259A pair ([`pic`]),
//! the 8254 timer ([`pit`]), the RTC/CMOS ([`cmos`]), COM1 ([`uart`]) and PCI configuration
//! space ([`pci`]), plus a handful of one-register ports a PC has (system control 0x61,
//! POST 0x80, fast A20/reset 0x92, a minimal i8042, reset control 0xcf9, and the 0xe9
//! debug console and 0xf4 debug-exit ports emulators offer).
//!
//! Every entry point takes the guest's notion of time (`now_ns`); nothing here keeps a
//! clock of its own. All inputs come from the guest and are hostile: no port, size, value
//! or address makes anything panic.
//!
//! Width: a 16- or 32-bit access to byte-wide devices is split into byte accesses at
//! successive ports, as the ISA bus does. Two exceptions: the PCI address register at
//! 0xcf8 is a dword register (narrower accesses there reach byte ports such as 0xcf9), and
//! the debug-exit port takes the whole value written.

pub mod cmos;
pub mod lapic;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod uart;

use alloc::vec::Vec;

use cmos::Cmos;
use pci::PciHost;
use pic::PicPair;
use pit::Pit;
use uart::Uart;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's IRQ line.
pub const COM1_IRQ: u8 = 4;
/// The PIT's (channel 0's) IRQ line.
pub const PIT_IRQ: u8 = 0;
/// The PIT's first port.
pub const PIT_BASE: u16 = 0x40;
/// The system control port (PIT channel 2 gate and output, speaker).
pub const SYSTEM_CONTROL_PORT: u16 = 0x61;
/// The i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The i8042 status/command port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The POST code port, also written for short I/O delays.
pub const POST_PORT: u16 = 0x80;
/// System control port A: fast A20 (bit 1) and fast reset (bit 0).
pub const FAST_A20_PORT: u16 = 0x92;
/// The reset control register.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// The debug console port: bytes written join the UART's output.
pub const DEBUG_CONSOLE_PORT: u16 = 0xe9;
/// The debug-exit port: a write ends the VM with [`IoEffect::DebugExit`].
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// i8042 status with nothing to read: keyboard unlocked, last write a command, system flag.
const I8042_STATUS_IDLE: u8 = 0x1c;
/// i8042 command: the next data byte goes to the controller's output port.
const I8042_WRITE_OUTPUT_PORT: u8 = 0xd1;
/// Refresh-request toggle period seen through port 0x61 bit 4 (15.085 µs).
const REFRESH_TOGGLE_NS: u64 = 15_085;

/// What an I/O write asks of the monitor beyond the device state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEffect {
    /// Nothing further.
    None,
    /// The guest wrote this value to the debug-exit port: end the VM, report the code.
    DebugExit(u32),
    /// The guest asked for a system reset (0x92, 0xcf9 or the i8042).
    Reset,
}

/// All the PC devices of one VM.
#[derive(Clone, Debug)]
pub struct PcDevices {
    uart: Uart,
    pit: Pit,
    pic: PicPair,
    cmos: Cmos,
    pci: PciHost,
    /// Port 0x61 bits 0–3 as written (gate 2, speaker, parity and channel-check enables).
    system_control: u8,
    /// Port 0x92 as written (fast A20 in bit 1).
    port_a: u8,
    /// Port 0xcf9 as written (bits 1 and 3: system and full reset selection).
    reset_control: u8,
    /// The i8042 expects its output port in the next data byte.
    i8042_output_port_next: bool,
    unknown_port_accesses: u64,
    last_unknown_port: Option<u16>,
}

impl PcDevices {
    /// The devices of a VM with `ram_bytes` of RAM from guest-physical 0, a wall clock
    /// reading `unix_time_s` at guest time 0, and the PCI ECAM window at `ecam_base`.
    ///
    /// RAM below the ECAM window (or 4 GiB) is reported to the guest (through CMOS) as low
    /// memory, any rest as memory above 4 GiB.
    pub fn new(ram_bytes: u64, unix_time_s: u64, ecam_base: u64) -> Self {
        let low_limit = ecam_base.min(1 << 32);
        let ram_below_4g = ram_bytes.min(low_limit);
        let ram_above_4g = ram_bytes - ram_below_4g;
        Self {
            uart: Uart::new(),
            pit: Pit::new(),
            pic: PicPair::new(),
            cmos: Cmos::new(unix_time_s, ram_below_4g, ram_above_4g),
            pci: PciHost::new(ecam_base),
            system_control: 0,
            port_a: 0,
            reset_control: 0,
            i8042_output_port_next: false,
            unknown_port_accesses: 0,
            last_unknown_port: None,
        }
    }

    /// An `IN` of `size` bytes (1, 2 or 4) from `port`. Unclaimed ports and other sizes
    /// read all-ones.
    pub fn io_read(&mut self, port: u16, size: u8, now_ns: u64) -> u32 {
        self.update(now_ns);
        if !matches!(size, 1 | 2 | 4) {
            self.note_unknown(port);
            return u32::MAX;
        }
        if port == pci::CONFIG_ADDRESS && size == 4 {
            return self.pci.read_address();
        }
        let mut value = 0;
        let mut unclaimed = None;
        for i in 0..size {
            let byte_port = port.wrapping_add(u16::from(i));
            let byte = self.read_byte(byte_port, now_ns).unwrap_or_else(|| {
                unclaimed.get_or_insert(byte_port);
                0xff
            });
            value |= u32::from(byte) << (8 * i);
        }
        if let Some(port) = unclaimed {
            self.note_unknown(port);
        }
        value
    }

    /// An `OUT` of `size` bytes (1, 2 or 4) of `value` to `port`. Writes to unclaimed ports
    /// and of other sizes are ignored.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) -> IoEffect {
        self.update(now_ns);
        if !matches!(size, 1 | 2 | 4) {
            self.note_unknown(port);
            return IoEffect::None;
        }
        let value = value & (u32::MAX >> (32 - 8 * u32::from(size)));
        if port == DEBUG_EXIT_PORT {
            return IoEffect::DebugExit(value);
        }
        if port == pci::CONFIG_ADDRESS && size == 4 {
            self.pci.write_address(value);
            return IoEffect::None;
        }
        let mut effect = IoEffect::None;
        let mut unclaimed = None;
        for i in 0..size {
            let byte_port = port.wrapping_add(u16::from(i));
            match self.write_byte(byte_port, (value >> (8 * i)) as u8, now_ns) {
                Some(IoEffect::None) => {}
                Some(other) => {
                    if effect == IoEffect::None {
                        effect = other;
                    }
                }
                None => {
                    unclaimed.get_or_insert(byte_port);
                }
            }
        }
        if let Some(port) = unclaimed {
            self.note_unknown(port);
        }
        effect
    }

    /// A memory-mapped read of `size` bytes at `gpa`, or `None` if no device claims it.
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> Option<u64> {
        let offset = self.pci.ecam_offset(gpa)?;
        Some(self.pci.mmio_read(offset, size))
    }

    /// A memory-mapped write of `size` bytes of `value` at `gpa`; `false` if no device
    /// claims it.
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) -> bool {
        match self.pci.ecam_offset(gpa) {
            Some(offset) => {
                self.pci.mmio_write(offset, size, value);
                true
            }
            None => false,
        }
    }

    /// Brings the interrupt lines up to `now_ns`: channel 0's edges to IRQ 0, the UART's
    /// line to IRQ 4.
    pub fn update(&mut self, now_ns: u64) {
        if self.pit.irq0_edges(now_ns) > 0 {
            // Edges that pile up between updates coalesce, as in a real IRR.
            self.pic.set_irq(PIT_IRQ, true);
            self.pic.set_irq(PIT_IRQ, false);
        }
        self.sync_uart_irq();
    }

    /// The vector the guest should take next, if any (after [`Self::update`]).
    pub fn pending_vector(&mut self, now_ns: u64) -> Option<u8> {
        self.update(now_ns);
        self.pic.pending_vector()
    }

    /// The interrupt acknowledge as the vector is injected: see [`PicPair::acknowledge`].
    pub fn acknowledge(&mut self) -> Option<u8> {
        self.pic.acknowledge()
    }

    /// When the monitor should next look at the devices even if the guest does nothing:
    /// channel 0's next edge, unless IRQ 0 is masked (then its edges can wait for the
    /// guest's next port access, which collects them).
    pub fn next_event_ns(&self, now_ns: u64) -> Option<u64> {
        if self.pic.is_masked(PIT_IRQ) {
            return None;
        }
        self.pit.next_event_ns(now_ns)
    }

    /// Takes the bytes the guest wrote to COM1 (and the debug console) since the last call.
    pub fn uart_output(&mut self) -> Vec<u8> {
        self.uart.take_output()
    }

    /// Queues bytes for the guest to read from COM1; returns how many fit.
    pub fn uart_input(&mut self, bytes: &[u8]) -> usize {
        let taken = self.uart.push_input(bytes);
        self.sync_uart_irq();
        taken
    }

    /// Accesses to ports no device claims (and accesses of impossible sizes).
    pub fn unknown_port_accesses(&self) -> u64 {
        self.unknown_port_accesses
    }

    /// The last port counted in [`Self::unknown_port_accesses`].
    pub fn last_unknown_port(&self) -> Option<u16> {
        self.last_unknown_port
    }

    /// The UART, for diagnostics.
    pub fn uart(&self) -> &Uart {
        &self.uart
    }

    /// The PIT, for diagnostics.
    pub fn pit(&self) -> &Pit {
        &self.pit
    }

    /// The interrupt controllers, for diagnostics.
    pub fn pic(&self) -> &PicPair {
        &self.pic
    }

    /// The RTC/CMOS, for diagnostics.
    pub fn cmos(&self) -> &Cmos {
        &self.cmos
    }

    /// PCI configuration space, for diagnostics.
    pub fn pci(&self) -> &PciHost {
        &self.pci
    }

    fn note_unknown(&mut self, port: u16) {
        self.unknown_port_accesses = self.unknown_port_accesses.saturating_add(1);
        self.last_unknown_port = Some(port);
    }

    fn sync_uart_irq(&mut self) {
        self.pic.set_irq(COM1_IRQ, self.uart.irq_level());
    }

    /// One byte read from `port`; `None` if no device claims it.
    fn read_byte(&mut self, port: u16, now_ns: u64) -> Option<u8> {
        let byte = match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => self.pic.read_port(port),
            0x40..=0x43 => self.pit.read((port - PIT_BASE) as u8, now_ns),
            SYSTEM_CONTROL_PORT => {
                let refresh = (now_ns / REFRESH_TOGGLE_NS) & 1 != 0;
                let out2 = self.pit.out2(now_ns);
                self.system_control | u8::from(refresh) << 4 | u8::from(out2) << 5
            }
            I8042_DATA_PORT => 0,
            I8042_COMMAND_PORT => I8042_STATUS_IDLE,
            0x70 | 0x71 => self.cmos.read((port - cmos::INDEX_PORT) as u8, now_ns),
            POST_PORT => 0xff,
            FAST_A20_PORT => self.port_a,
            0x3f8..=0x3ff => {
                let byte = self.uart.read((port - COM1_BASE) as u8);
                self.sync_uart_irq();
                byte
            }
            DEBUG_CONSOLE_PORT => DEBUG_CONSOLE_PORT as u8, // Bochs's "present" answer
            DEBUG_EXIT_PORT => 0xff,
            RESET_CONTROL_PORT => self.reset_control,
            0xcfc..=0xcff => self.pci.read_data((port - pci::CONFIG_DATA) as u8),
            _ => return None,
        };
        Some(byte)
    }

    /// One byte written to `port`; `None` if no device claims it.
    fn write_byte(&mut self, port: u16, value: u8, now_ns: u64) -> Option<IoEffect> {
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => self.pic.write_port(port, value),
            0x40..=0x43 => self.pit.write((port - PIT_BASE) as u8, value, now_ns),
            SYSTEM_CONTROL_PORT => {
                self.system_control = value & 0x0f;
                self.pit.set_gate2(value & 1 != 0, now_ns);
            }
            I8042_DATA_PORT => {
                if core::mem::take(&mut self.i8042_output_port_next) && value & 1 == 0 {
                    // Output port bit 0 is the CPU reset line, active low.
                    return Some(IoEffect::Reset);
                }
            }
            I8042_COMMAND_PORT => {
                self.i8042_output_port_next = value == I8042_WRITE_OUTPUT_PORT;
                // 0xf0–0xff pulse the output-port lines whose bits are clear; bit 0 is reset.
                if value & 0xf1 == 0xf0 {
                    return Some(IoEffect::Reset);
                }
            }
            0x70 | 0x71 => self
                .cmos
                .write((port - cmos::INDEX_PORT) as u8, value, now_ns),
            POST_PORT => {}
            FAST_A20_PORT => {
                self.port_a = value & 0x02;
                if value & 1 != 0 {
                    return Some(IoEffect::Reset);
                }
            }
            0x3f8..=0x3ff => {
                self.uart.write((port - COM1_BASE) as u8, value);
                self.sync_uart_irq();
            }
            DEBUG_CONSOLE_PORT => self.uart.append_output(value),
            DEBUG_EXIT_PORT => return Some(IoEffect::DebugExit(u32::from(value))),
            RESET_CONTROL_PORT => {
                self.reset_control = value & 0x0a;
                if value & 0x04 != 0 {
                    return Some(IoEffect::Reset);
                }
            }
            0xcfc..=0xcff => self.pci.write_data((port - pci::CONFIG_DATA) as u8, value),
            _ => return None,
        }
        Some(IoEffect::None)
    }
}

#[cfg(test)]
pub(crate) mod tests;
