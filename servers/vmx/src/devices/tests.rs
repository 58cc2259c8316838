//! Tests of the bundle: devices reached through their ports, the way a guest reaches them.

use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const MS: u64 = 1_000_000;
const GIB: u64 = 1 << 30;

fn devices() -> PcDevices {
    PcDevices::new(GIB, 1_700_000_000, pci::DEFAULT_ECAM_BASE)
}

fn outb(dev: &mut PcDevices, port: u16, value: u8, now_ns: u64) -> IoEffect {
    dev.io_write(port, 1, u32::from(value), now_ns)
}

fn inb(dev: &mut PcDevices, port: u16, now_ns: u64) -> u8 {
    dev.io_read(port, 1, now_ns) as u8
}

/// Linux's init_8259A, then everything but the cascade masked.
pub(crate) fn init_pic_like_linux(dev: &mut PcDevices) {
    for (port, value) in [
        (0x21, 0xff),
        (0xa1, 0xff),
        (0x20, 0x11),
        (0x21, 0x30),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, 0x38),
        (0xa1, 0x02),
        (0xa1, 0x01),
        (0x21, 0xfb),
        (0xa1, 0xff),
    ] {
        outb(dev, port, value, 0);
    }
}

/// Unmasks PIC line `line`.
pub(crate) fn unmask(dev: &mut PcDevices, line: u8, now_ns: u64) {
    let (port, bit) = if line < 8 {
        (0x21, line)
    } else {
        (0xa1, line - 8)
    };
    let mask = inb(dev, port, now_ns) & !(1 << bit);
    outb(dev, port, mask, now_ns);
}

#[test]
fn timer_interrupts_arrive_as_vector_0x30_once_per_eoi() {
    let mut dev = devices();
    init_pic_like_linux(&mut dev);
    // Periodic 1 ms tick (Linux: 0x34, then the latch low and high).
    outb(&mut dev, 0x43, 0x34, 0);
    outb(&mut dev, 0x40, 0xa9, 0);
    outb(&mut dev, 0x40, 0x04, 0);
    assert_eq!(dev.next_event_ns(0), None, "IRQ 0 still masked");
    assert_eq!(dev.pending_vector(2 * MS), None);
    // The edges that came while IRQ 0 was masked were latched.
    unmask(&mut dev, 0, 2 * MS);
    assert_eq!(dev.pending_vector(2 * MS), Some(0x30));
    assert_eq!(dev.acknowledge(), Some(0x30));
    // In service: later ticks wait for the EOI.
    assert_eq!(dev.pending_vector(4 * MS), None);
    outb(&mut dev, 0x20, 0x20, 4 * MS);
    assert_eq!(dev.pending_vector(4 * MS), Some(0x30));
    assert_eq!(dev.acknowledge(), Some(0x30));
    outb(&mut dev, 0x20, 0x20, 4 * MS);
    // Nothing until the next edge, which next_event_ns predicts.
    assert_eq!(dev.pending_vector(4 * MS), None);
    let next = dev.next_event_ns(4 * MS).unwrap();
    assert!(next > 4 * MS && next <= 5 * MS);
    assert_eq!(dev.pending_vector(next - 1), None);
    assert_eq!(dev.pending_vector(next), Some(0x30));
}

#[test]
fn about_ten_ticks_in_ten_milliseconds_when_serviced() {
    let mut dev = devices();
    init_pic_like_linux(&mut dev);
    unmask(&mut dev, 0, 0);
    outb(&mut dev, 0x43, 0x34, 0);
    outb(&mut dev, 0x40, 0xa9, 0);
    outb(&mut dev, 0x40, 0x04, 0);
    let mut ticks = 0;
    let mut now = 0;
    while let Some(next) = dev.next_event_ns(now) {
        if next > 10 * MS {
            break;
        }
        now = next;
        if dev.pending_vector(now) == Some(0x30) {
            assert_eq!(dev.acknowledge(), Some(0x30));
            outb(&mut dev, 0x20, 0x20, now);
            ticks += 1;
        }
    }
    assert_eq!(ticks, 10);
}

#[test]
fn slave_irq8_arrives_through_the_cascade() {
    let mut dev = devices();
    init_pic_like_linux(&mut dev);
    unmask(&mut dev, 8, 0);
    dev.pic.set_irq(8, true);
    assert_eq!(dev.pending_vector(0), Some(0x38));
    assert_eq!(dev.acknowledge(), Some(0x38));
}

#[test]
fn tsc_calibration_through_port_0x61() {
    let mut dev = devices();
    // pit_calibrate_tsc: gate on, speaker off; channel 2 mode 0 with a 50 ms latch.
    let control = inb(&mut dev, 0x61, 0);
    outb(&mut dev, 0x61, (control & !0x02) | 0x01, 0);
    outb(&mut dev, 0x43, 0xb0, 0);
    outb(&mut dev, 0x42, (59659 & 0xff) as u8, 0);
    outb(&mut dev, 0x42, (59659 >> 8) as u8, 0);
    assert_eq!(inb(&mut dev, 0x61, 0) & 0x21, 0x01, "gate on, OUT low");
    assert_eq!(inb(&mut dev, 0x61, 49 * MS) & 0x20, 0);
    assert_eq!(inb(&mut dev, 0x61, 50 * MS + 100_000) & 0x20, 0x20);
    // The refresh bit toggles with time.
    let a = inb(&mut dev, 0x61, 0) & 0x10;
    let b = inb(&mut dev, 0x61, REFRESH_TOGGLE_NS) & 0x10;
    assert_ne!(a, b);
}

/// What serial8250 does with COM1, through the ports: probe, then use it.
#[test]
fn com1_probe_output_and_interrupts() {
    let mut dev = devices();
    init_pic_like_linux(&mut dev);
    unmask(&mut dev, COM1_IRQ, 0);
    // Scratch and divisor latch round trips.
    outb(&mut dev, 0x3ff, 0x55, 0);
    assert_eq!(inb(&mut dev, 0x3ff, 0), 0x55);
    outb(&mut dev, 0x3fb, 0x80, 0);
    outb(&mut dev, 0x3f8, 0x01, 0);
    outb(&mut dev, 0x3f9, 0x00, 0);
    assert_eq!(inb(&mut dev, 0x3f8, 0), 0x01);
    outb(&mut dev, 0x3fb, 0x03, 0);
    // Output.
    for &b in b"boot\n" {
        outb(&mut dev, 0x3f8, b, 0);
    }
    outb(&mut dev, DEBUG_CONSOLE_PORT, b'!', 0);
    assert_eq!(dev.uart_output(), b"boot\n!");
    // THRE interrupt via IER, delivered only once OUT2 opens the line.
    outb(&mut dev, 0x3f9, 0x02, 0);
    assert_eq!(dev.pending_vector(0), None);
    outb(&mut dev, 0x3fc, 0x0b, 0); // DTR, RTS, OUT2
    assert_eq!(dev.pending_vector(0), Some(0x34));
    assert_eq!(dev.acknowledge(), Some(0x34));
    assert_eq!(inb(&mut dev, 0x3fa, 0) & 0x0f, 0x02);
    outb(&mut dev, 0x3f9, 0x01, 0); // RX interrupts only
    outb(&mut dev, 0x20, 0x20, 0);
    assert_eq!(dev.pending_vector(0), None);
    // Input.
    assert_eq!(dev.uart_input(b"k"), 1);
    assert_eq!(dev.pending_vector(0), Some(0x34));
    assert_eq!(inb(&mut dev, 0x3fd, 0) & 0x01, 0x01);
    assert_eq!(inb(&mut dev, 0x3f8, 0), b'k');
    assert_eq!(inb(&mut dev, 0x3fd, 0) & 0x01, 0);
}

#[test]
fn pci_mechanism_1_through_the_ports() {
    let mut dev = devices();
    // Linux's pci_check_type1.
    outb(&mut dev, 0xcfb, 0x01, 0);
    dev.io_write(0xcf8, 4, 0x8000_0000, 0);
    assert_eq!(dev.io_read(0xcf8, 4, 0), 0x8000_0000);
    assert_eq!(dev.io_read(0xcfc, 4, 0), 0x29c0_8086);
    assert_eq!(dev.io_read(0xcfc, 2, 0), 0x8086);
    assert_eq!(dev.io_read(0xcfe, 2, 0), 0x29c0);
    assert_eq!(dev.io_read(0xcfe, 1, 0), 0xc0);
    assert_eq!(dev.io_read(0xcff, 1, 0), 0x29);
    dev.io_write(0xcf8, 4, 0x8000_0808, 0);
    assert_eq!(dev.io_read(0xcfc, 4, 0), 0xffff_ffff, "device 1");
    // ECAM agrees.
    assert_eq!(dev.mmio_read(pci::DEFAULT_ECAM_BASE, 4), Some(0x29c0_8086));
    assert_eq!(dev.mmio_read(pci::DEFAULT_ECAM_BASE + 0xa, 2), Some(0x0600));
    assert_eq!(
        dev.mmio_read(pci::DEFAULT_ECAM_BASE + (1 << 15), 4),
        Some(0xffff_ffff)
    );
    assert_eq!(dev.mmio_read(pci::DEFAULT_ECAM_BASE - 4, 4), None);
    assert_eq!(dev.mmio_read(0xfee0_0000, 4), None, "no local APIC here");
    assert!(dev.mmio_write(pci::DEFAULT_ECAM_BASE + 0x3c, 1, 9));
    assert!(!dev.mmio_write(0, 4, 0));
    dev.io_write(0xcf8, 4, 0x8000_003c, 0);
    assert_eq!(dev.io_read(0xcfc, 1, 0), 9);
}

#[test]
fn cmos_time_and_memory_through_the_ports() {
    let mut dev = devices();
    let mut read = |index: u8| {
        outb(&mut dev, 0x70, 0x80 | index, 0);
        inb(&mut dev, 0x71, 0)
    };
    assert_eq!(
        [
            read(0),
            read(2),
            read(4),
            read(7),
            read(8),
            read(9),
            read(0x32)
        ],
        [0x20, 0x13, 0x22, 0x14, 0x11, 0x23, 0x20]
    );
    // 1 GiB: 0x34/0x35 hold (1 GiB - 16 MiB) in 64 KiB units.
    assert_eq!(
        u16::from_le_bytes([read(0x34), read(0x35)]),
        (1024 - 16) * 16
    );
    assert_eq!([read(0x5b), read(0x5c), read(0x5d)], [0, 0, 0]);
    assert_eq!(read(0x0d), 0x80);
}

#[test]
fn ram_beyond_the_pci_hole_is_reported_above_4g() {
    let mut dev = PcDevices::new(4 * GIB, 0, pci::DEFAULT_ECAM_BASE);
    let mut read = |index: u8| {
        outb(&mut dev, 0x70, index, 0);
        inb(&mut dev, 0x71, 0)
    };
    let below = u64::from(u16::from_le_bytes([read(0x34), read(0x35)])) * 65536 + (16 << 20);
    let above = u64::from_le_bytes([read(0x5b), read(0x5c), read(0x5d), 0, 0, 0, 0, 0]) * 65536;
    assert_eq!(below, pci::DEFAULT_ECAM_BASE);
    assert_eq!(below + above, 4 * GIB);
}

#[test]
fn reset_paths() {
    let mut dev = devices();
    assert_eq!(outb(&mut dev, 0x64, 0xfe, 0), IoEffect::Reset);
    assert_eq!(outb(&mut dev, 0x64, 0xd1, 0), IoEffect::None);
    assert_eq!(
        outb(&mut dev, 0x60, 0xdf, 0),
        IoEffect::None,
        "A20 on, reset line high"
    );
    assert_eq!(outb(&mut dev, 0x64, 0xd1, 0), IoEffect::None);
    assert_eq!(outb(&mut dev, 0x60, 0xde, 0), IoEffect::Reset);
    assert_eq!(outb(&mut dev, 0x92, 0x02, 0), IoEffect::None);
    assert_eq!(inb(&mut dev, 0x92, 0), 0x02);
    assert_eq!(outb(&mut dev, 0x92, 0x03, 0), IoEffect::Reset);
    // Linux's reboot=pci: 0x02 then 0x06.
    assert_eq!(outb(&mut dev, 0xcf9, 0x02, 0), IoEffect::None);
    assert_eq!(outb(&mut dev, 0xcf9, 0x06, 0), IoEffect::Reset);
    assert_eq!(inb(&mut dev, 0x64, 0), 0x1c);
}

#[test]
fn debug_exit_reports_the_value_written() {
    let mut dev = devices();
    assert_eq!(
        outb(&mut dev, DEBUG_EXIT_PORT, 0x10, 0),
        IoEffect::DebugExit(0x10)
    );
    assert_eq!(
        dev.io_write(DEBUG_EXIT_PORT, 4, 0x1234_5678, 0),
        IoEffect::DebugExit(0x1234_5678)
    );
    assert_eq!(
        dev.io_write(DEBUG_EXIT_PORT, 2, 0x1234_5678, 0),
        IoEffect::DebugExit(0x5678)
    );
}

#[test]
fn unclaimed_ports_read_all_ones_and_are_counted() {
    let mut dev = devices();
    assert_eq!(dev.io_read(0x1234, 1, 0), 0xff);
    assert_eq!(dev.io_read(0x1234, 2, 0), 0xffff);
    assert_eq!(dev.io_read(0x1234, 4, 0), 0xffff_ffff);
    assert_eq!(dev.io_write(0x5678, 2, 0, 0), IoEffect::None);
    assert_eq!(dev.unknown_port_accesses(), 4);
    assert_eq!(dev.last_unknown_port(), Some(0x5678));
    // Claimed ports are not counted.
    inb(&mut dev, 0x61, 0);
    outb(&mut dev, POST_PORT, 0, 0);
    assert_eq!(dev.unknown_port_accesses(), 4);
    // A byte access to the PCI address register's other bytes is not the register.
    dev.io_write(0xcf8, 4, 0x8000_0000, 0);
    assert_eq!(dev.io_read(0xcf8, 1, 0), 0xff);
    assert_eq!(dev.unknown_port_accesses(), 5);
    assert_eq!(dev.io_read(0xcf8, 4, 0), 0x8000_0000);
    // Impossible sizes.
    assert_eq!(dev.io_read(0x3f8, 3, 0), 0xffff_ffff);
    assert_eq!(dev.unknown_port_accesses(), 6);
}

#[test]
fn wide_accesses_split_into_byte_ports() {
    let mut dev = devices();
    // A word write to 0x70 selects the index and writes it through 0x71.
    dev.io_write(0x70, 2, 0x5a40, 0);
    outb(&mut dev, 0x70, 0x40, 0);
    assert_eq!(inb(&mut dev, 0x71, 0), 0x5a);
    // A word read of the PIC mask ports at 0x20 reads IRR and IMR.
    init_pic_like_linux(&mut dev);
    assert_eq!(dev.io_read(0x20, 2, 0), 0xfb00);
}

#[derive(Clone, Debug)]
enum Op {
    Read { port: u16, size: u8 },
    Write { port: u16, size: u8, value: u32 },
    MmioRead { offset: u64, size: u8 },
    MmioWrite { offset: u64, size: u8, value: u64 },
    Pending,
    Acknowledge,
    Input(Vec<u8>),
    Advance(u64),
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(std::vec![
            0x20u16, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x60, 0x61, 0x64,
            0x70, 0x71, 0x80, 0x92, 0xe9, 0xf4, 0xcf8, 0xcf9, 0xcfa, 0xcfb, 0xcfc, 0xcfd, 0xcfe,
            0xcff, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0xffff,
        ]),
        any::<u16>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![Just(1u8), Just(2), Just(4), 0u8..=9];
    let value = prop_oneof![any::<u32>(), 0u32..=0xff, Just(0x8000_0000)];
    let offset = prop_oneof![
        0u64..0x2000,
        any::<u64>(),
        (0u64..256).prop_map(|b| b << 20)
    ];
    prop_oneof![
        4 => (port(), size.clone()).prop_map(|(port, size)| Op::Read { port, size }),
        6 => (port(), size.clone(), value).prop_map(|(port, size, value)| Op::Write { port, size, value }),
        1 => (offset.clone(), size.clone()).prop_map(|(offset, size)| Op::MmioRead { offset, size }),
        1 => (offset, size, any::<u64>()).prop_map(|(offset, size, value)| Op::MmioWrite { offset, size, value }),
        1 => Just(Op::Pending),
        1 => Just(Op::Acknowledge),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Op::Input),
        2 => prop_oneof![0u64..2_000_000, any::<u64>()].prop_map(Op::Advance),
    ]
}

proptest! {
    /// No sequence of guest accesses, at any time, makes a device panic; reads fit their
    /// width and predicted events are never in the past.
    #[test]
    fn hostile_access_sequences_never_panic(ops in prop::collection::vec(op(), 1..300)) {
        let mut dev = devices();
        let mut now: u64 = 0;
        for op in ops {
            match op {
                Op::Read { port, size } => {
                    let value = dev.io_read(port, size, now);
                    if matches!(size, 1 | 2) {
                        prop_assert!(value < 1 << (8 * u32::from(size)));
                    }
                }
                Op::Write { port, size, value } => {
                    let _ = dev.io_write(port, size, value, now);
                }
                Op::MmioRead { offset, size } => {
                    let _ = dev.mmio_read(pci::DEFAULT_ECAM_BASE.wrapping_add(offset), size);
                }
                Op::MmioWrite { offset, size, value } => {
                    let _ = dev.mmio_write(pci::DEFAULT_ECAM_BASE.wrapping_add(offset), size, value);
                }
                Op::Pending => {
                    let _ = dev.pending_vector(now);
                }
                Op::Acknowledge => {
                    let _ = dev.acknowledge();
                }
                Op::Input(bytes) => {
                    let _ = dev.uart_input(&bytes);
                }
                Op::Advance(delta) => now = now.saturating_add(delta),
            }
            if let Some(at) = dev.next_event_ns(now) {
                prop_assert!(at >= now);
            }
            let _ = dev.uart_output();
        }
    }
}
