//! PCI configuration space with one device, the host bridge at 00:00.0, reached two ways:
//! configuration mechanism #1 (address at 0xcf8, data at 0xcfc–0xcff) and ECAM, the
//! memory-mapped window (4 KiB per function, buses 0–255: 256 MiB).
//!
//! The bridge presents itself as the Q35 MCH (8086:29c0, class 06/00/00, header type 0).
//! Every other bus/device/function reads all-ones, the "no device" answer. Writes land only
//! in the bridge's few writable bits; the rest are read-only and ignore writes.

/// The configuration address port (dword accesses only).
pub const CONFIG_ADDRESS: u16 = 0xcf8;
/// The first configuration data port; 0xcfc–0xcff map to the addressed dword's bytes.
pub const CONFIG_DATA: u16 = 0xcfc;
/// Default guest-physical base of the ECAM window.
pub const DEFAULT_ECAM_BASE: u64 = 0xb000_0000;
/// Bytes of the ECAM window (256 buses × 32 devices × 8 functions × 4 KiB).
pub const ECAM_SIZE: u64 = 256 << 20;

/// The host bridge's vendor (Intel).
pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
/// The host bridge's device ID (Q35/ICH9 memory controller hub).
pub const HOST_BRIDGE_DEVICE: u16 = 0x29c0;

const ENABLE: u32 = 1 << 31;
/// Bits of the address register that hold state: enable, bus, device, function, register.
const ADDRESS_MASK: u32 = ENABLE | 0x00ff_fffc;

/// The MCH's PCI Express register range base (PCIEXBAR), at 0x60.
const PCIEXBAR: usize = 0x60;

/// A function's address: bus, device (0–31), function (0–7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

impl Bdf {
    const HOST_BRIDGE: Bdf = Bdf {
        bus: 0,
        device: 0,
        function: 0,
    };
}

/// The host bridge's 256-byte configuration header and which of its bits are writable.
#[derive(Clone, Debug)]
struct HostBridge {
    config: [u8; 256],
    writable: [u8; 256],
}

impl HostBridge {
    fn new(ecam_base: u64) -> Self {
        let mut config = [0u8; 256];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes)
        };
        put(0x00, &HOST_BRIDGE_VENDOR.to_le_bytes());
        put(0x02, &HOST_BRIDGE_DEVICE.to_le_bytes());
        put(0x04, &0x0006u16.to_le_bytes()); // memory space and bus master: always on
        put(0x09, &[0x00, 0x00, 0x06]); // prog-if, subclass 00 (host), class 06 (bridge)
        put(0x0e, &[0x00]); // header type 0, single function
        // PCIEXBAR: where ECAM lives, enabled, 256 MiB (length field 0).
        let pciexbar = (ecam_base & 0x0000_000f_f000_0000) | 1;
        put(PCIEXBAR, &pciexbar.to_le_bytes());

        let mut writable = [0u8; 256];
        writable[0x04] = 0x40; // command: parity error response
        writable[0x05] = 0x01; // command: SERR# enable
        writable[0x0c] = 0xff; // cache line size
        writable[0x3c] = 0xff; // interrupt line (scratch for software)
        Self { config, writable }
    }

    fn read(&self, register: u16) -> u8 {
        // Beyond the 256-byte header is extended space with no capabilities: zeros.
        self.config.get(usize::from(register)).copied().unwrap_or(0)
    }

    fn write(&mut self, register: u16, value: u8) {
        let register = usize::from(register);
        if let (Some(byte), Some(&mask)) =
            (self.config.get_mut(register), self.writable.get(register))
        {
            *byte = (*byte & !mask) | (value & mask);
        }
    }
}

/// The PCI configuration space: address register, ECAM window and the host bridge.
#[derive(Clone, Debug)]
pub struct PciHost {
    address: u32,
    ecam_base: u64,
    bridge: HostBridge,
}

impl PciHost {
    /// A configuration space whose ECAM window starts at guest-physical `ecam_base`.
    pub fn new(ecam_base: u64) -> Self {
        Self {
            address: 0,
            ecam_base,
            bridge: HostBridge::new(ecam_base),
        }
    }

    /// Guest-physical base of the ECAM window.
    pub fn ecam_base(&self) -> u64 {
        self.ecam_base
    }

    /// The offset of `gpa` into the ECAM window, if it falls inside.
    pub fn ecam_offset(&self, gpa: u64) -> Option<u64> {
        gpa.checked_sub(self.ecam_base)
            .filter(|&offset| offset < ECAM_SIZE)
    }

    /// Reads the configuration address register (port 0xcf8, dword).
    pub fn read_address(&self) -> u32 {
        self.address
    }

    /// Writes the configuration address register (port 0xcf8, dword).
    pub fn write_address(&mut self, value: u32) {
        self.address = value & ADDRESS_MASK;
    }

    /// Reads data port 0xcfc + `offset` (0–3): that byte of the addressed dword, or 0xff
    /// when the enable bit is clear.
    pub fn read_data(&self, offset: u8) -> u8 {
        match self.addressed(offset) {
            Some((bdf, register)) => self.read_byte(bdf, register),
            None => 0xff,
        }
    }

    /// Writes data port 0xcfc + `offset` (0–3); ignored when the enable bit is clear.
    pub fn write_data(&mut self, offset: u8, value: u8) {
        if let Some((bdf, register)) = self.addressed(offset) {
            self.write_byte(bdf, register, value);
        }
    }

    /// Reads `size` bytes (1–8, little-endian) at `offset` into the ECAM window; other
    /// sizes read all-ones.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u64 {
        if !(1..=8).contains(&size) {
            return u64::MAX;
        }
        (0..u64::from(size)).fold(0, |value, i| {
            let byte = match Self::ecam_decode(offset.saturating_add(i)) {
                Some((bdf, register)) => self.read_byte(bdf, register),
                None => 0xff,
            };
            value | u64::from(byte) << (8 * i)
        })
    }

    /// Writes `size` bytes (1–8, little-endian) of `value` at `offset` into the ECAM
    /// window; other sizes are ignored.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) {
        if !(1..=8).contains(&size) {
            return;
        }
        for i in 0..u64::from(size) {
            if let Some((bdf, register)) = Self::ecam_decode(offset.saturating_add(i)) {
                self.write_byte(bdf, register, (value >> (8 * i)) as u8);
            }
        }
    }

    /// The function and register the data port at `offset` reaches, if enabled.
    fn addressed(&self, offset: u8) -> Option<(Bdf, u16)> {
        if self.address & ENABLE == 0 {
            return None;
        }
        let bdf = Bdf {
            bus: (self.address >> 16) as u8,
            device: ((self.address >> 11) & 0x1f) as u8,
            function: ((self.address >> 8) & 7) as u8,
        };
        Some((bdf, (self.address & 0xfc) as u16 + u16::from(offset & 3)))
    }

    /// The function and register at `offset` into the ECAM window; `None` past its end.
    fn ecam_decode(offset: u64) -> Option<(Bdf, u16)> {
        if offset >= ECAM_SIZE {
            return None;
        }
        let bdf = Bdf {
            bus: (offset >> 20) as u8,
            device: ((offset >> 15) & 0x1f) as u8,
            function: ((offset >> 12) & 7) as u8,
        };
        Some((bdf, (offset & 0xfff) as u16))
    }

    fn read_byte(&self, bdf: Bdf, register: u16) -> u8 {
        if bdf == Bdf::HOST_BRIDGE {
            self.bridge.read(register)
        } else {
            0xff
        }
    }

    fn write_byte(&mut self, bdf: Bdf, register: u16, value: u8) {
        if bdf == Bdf::HOST_BRIDGE {
            self.bridge.write(register, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dword(pci: &PciHost) -> u32 {
        u32::from_le_bytes([0, 1, 2, 3].map(|i| pci.read_data(i)))
    }

    #[test]
    fn host_bridge_ids_through_mechanism_1() {
        let mut pci = PciHost::new(DEFAULT_ECAM_BASE);
        pci.write_address(0x8000_0000);
        assert_eq!(pci.read_address(), 0x8000_0000);
        assert_eq!(dword(&pci), 0x29c0_8086);
        assert_eq!(pci.read_data(2), 0xc0);
        assert_eq!(pci.read_data(3), 0x29);
        pci.write_address(0x8000_0008);
        assert_eq!(dword(&pci), 0x0600_0000, "class 06/00/00, revision 0");
        pci.write_address(0x8000_000c);
        assert_eq!(pci.read_data(2), 0x00, "header type 0");
    }

    #[test]
    fn absent_functions_and_disabled_accesses_read_all_ones() {
        let mut pci = PciHost::new(DEFAULT_ECAM_BASE);
        for address in [0x8000_0800, 0x8000_0100, 0x8001_0000, 0x0000_0000] {
            pci.write_address(address);
            assert_eq!(dword(&pci), 0xffff_ffff, "{address:#x}");
        }
        // Reserved and low bits do not stick.
        pci.write_address(0xffff_ffff);
        assert_eq!(pci.read_address(), 0x80ff_fffc);
    }

    #[test]
    fn only_writable_bits_take_writes() {
        let mut pci = PciHost::new(DEFAULT_ECAM_BASE);
        pci.write_address(0x8000_0000);
        for i in 0..4 {
            pci.write_data(i, 0);
        }
        assert_eq!(dword(&pci), 0x29c0_8086);
        pci.write_address(0x8000_0004);
        for i in 0..4 {
            pci.write_data(i, 0xff);
        }
        assert_eq!(
            dword(&pci),
            0x0000_0146,
            "status read-only, command partly writable"
        );
        pci.write_address(0x8000_003c);
        pci.write_data(0, 0x0b);
        assert_eq!(pci.read_data(0), 0x0b);
        pci.write_address(0x8000_0800); // device 1: nothing there to write
        pci.write_data(0, 0);
        assert_eq!(pci.read_data(0), 0xff);
    }

    #[test]
    fn ecam_matches_mechanism_1() {
        let mut pci = PciHost::new(DEFAULT_ECAM_BASE);
        assert_eq!(pci.mmio_read(0, 4), 0x29c0_8086);
        assert_eq!(pci.mmio_read(2, 2), 0x29c0);
        assert_eq!(pci.mmio_read(0, 8), 0x0000_0006_29c0_8086);
        assert_eq!(pci.mmio_read(0x0b, 1), 0x06);
        assert_eq!(pci.mmio_read(0x100, 4), 0, "no extended capabilities");
        assert_eq!(pci.mmio_read(1 << 15, 4), 0xffff_ffff, "device 1");
        assert_eq!(pci.mmio_read(1 << 20, 2), 0xffff, "bus 1");
        assert_eq!(pci.mmio_read(0x60, 8), DEFAULT_ECAM_BASE | 1, "PCIEXBAR");
        pci.mmio_write(0x3c, 1, 0x0a);
        pci.write_address(0x8000_003c);
        assert_eq!(pci.read_data(0), 0x0a);
        assert_eq!(
            pci.mmio_read(ECAM_SIZE - 2, 4),
            0xffff_ffff,
            "past the window's end"
        );
        assert_eq!(pci.ecam_offset(DEFAULT_ECAM_BASE + 0x10), Some(0x10));
        assert_eq!(pci.ecam_offset(DEFAULT_ECAM_BASE + ECAM_SIZE), None);
        assert_eq!(pci.ecam_offset(DEFAULT_ECAM_BASE - 1), None);
    }
}
