//! The local APIC of each vCPU (xAPIC mode, memory-mapped at [`BASE`]) and the
//! routing of inter-processor interrupts between the APICs of one VM.
//!
//! One [`LocalApic`] per vCPU; the APIC ID is the vCPU's index and vCPU 0 is the bootstrap
//! processor. The page holds 32-bit registers at a 16-byte stride (Intel SDM vol. 3
//! ch. 11 "Advanced Programmable Interrupt Controller", AMD APM vol. 2 ch. 16).
//!
//! Modelled: ID (read/write, bits 31:24), version ([`VERSION`]), TPR, PPR (computed), EOI,
//! LDR, DFR (flat and cluster models), SVR (software enable), ISR/TMR/IRR, ESR (write
//! latches the errors seen since the previous write), the seven LVT entries (CMCI, timer,
//! thermal, performance counters, LINT0, LINT1, error), ICR low/high, and the timer
//! (one-shot, periodic, TSC-deadline through [`IA32_TSC_DEADLINE`]); the IA32_APIC_BASE
//! MSR ([`IA32_APIC_BASE`]); INIT, start-up (SIPI) and NMI reception.
//!
//! Simplifications, each deliberate:
//!
//! - APR reads 0 and the remote-read register (0xc0) reads 0; TMR is always 0 (there is no
//!   I/O APIC, so nothing arrives level-triggered); the LVT delivery-status bit and the ICR
//!   delivery-status bit read 0 (every message is delivered at once).
//! - The thermal, performance-counter and CMCI LVTs hold what is written but nothing raises
//!   them; LINT0/LINT1 are not wired to anything except through [`LocalApic::extint_enabled`]
//!   (the 8259's INTR in virtual-wire mode).
//! - Only dword accesses at 16-byte-aligned offsets write; writes of any other width or
//!   alignment are ignored. Reads of 1, 2, 4 or 8 bytes at any offset return those bytes of
//!   the register page (bytes 4–15 of each 16-byte slot read 0); other read sizes give
//!   `None`.
//!   Offsets at or beyond [`SIZE`] read 0 and ignore writes. Reserved offsets
//!   read 0 and ignore writes; writes to read-only registers are ignored. No ESR "illegal
//!   register address" error is logged for either.
//! - While the APIC is hardware-disabled (IA32_APIC_BASE bit 11 clear) its page does not
//!   answer reads ([`LocalApic::mmio_read`] gives `None`), ignores writes, and the APIC accepts no interrupts or messages. Clearing the bit puts
//!   the registers back in their power-up state (except the ID), as the SDM allows.
//! - While it is software-disabled (SVR bit 8 clear) it accepts no fixed or
//!   lowest-priority interrupts (it still takes NMI, INIT and start-up messages), every LVT
//!   entry reads masked and stays masked, and interrupts already in IRR/ISR are held and
//!   still delivered.
//! - The timer counts at [`APIC_BUS_HZ`] (1 GHz, so one tick per nanosecond before the
//!   divider). A periodic timer's period is at least [`MIN_PERIOD_NS`], so a hostile guest
//!   cannot make the monitor wake more than 10,000 times a second.
//! - A fixed or lowest-priority IPI with a vector below 16 is not sent (the sender's ESR
//!   gets "send illegal vector"); a received or LVT vector below 16 is dropped and logged
//!   as "receive illegal vector". SMI messages, INIT level de-assert and reserved delivery
//!   modes do nothing. A "self" shorthand is valid only with fixed delivery.
//! - Lowest-priority delivery goes to the matching, software-enabled APIC with the lowest
//!   TPR (the lowest index among equals); no focus-processor check.
//! - INIT puts every target, the BSP included, in the wait-for-SIPI state (there is no
//!   firmware for a BSP to restart).
//!
//! Every entry point that can observe time takes the guest's clock (`now_ns`); nothing
//! here keeps a clock of its own. All inputs come from the guest and are hostile: no
//! offset, width, value or sequence makes anything panic.

use alloc::vec::Vec;
use core::fmt;

/// Guest-physical address of the local APIC page (the only base accepted).
pub const BASE: u64 = 0xfee0_0000;
/// Bytes of the local APIC page.
pub const SIZE: u64 = 0x1000;
/// The IA32_APIC_BASE MSR.
pub const IA32_APIC_BASE: u32 = 0x1b;
/// The IA32_TSC_DEADLINE MSR.
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_APIC_BASE bit 8: this processor is the bootstrap processor (read-only).
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10: x2APIC mode (refused: the VM has no x2APIC).
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: the APIC is globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// The version register: version 0x14 (an integrated xAPIC), bits 23:16 the highest LVT
/// entry index, 6 (seven entries: CMCI, timer, thermal, performance counters, LINT0, LINT1,
/// error), no EOI-broadcast suppression.
pub const VERSION: u32 = 0x0006_0014;
/// The APIC timer's input clock (the "bus clock" before the divider), in Hz: one tick per
/// nanosecond, so a count of `n` with divider `d` lasts `n × d` ns.
pub const APIC_BUS_HZ: u64 = 1_000_000_000;
/// The shortest period of a periodic timer, in ns (longer periods are exact).
pub const MIN_PERIOD_NS: u64 = 100_000;
/// The most APICs [`route`] considers (a VM's vCPUs, as bits of a `u64` mask).
pub const MAX_APICS: usize = 64;
/// A destination of all ones: every APIC, in physical and in logical mode.
pub const BROADCAST: u8 = 0xff;

/// Local APIC ID register.
pub const REG_ID: u64 = 0x20;
/// Version register (read-only).
pub const REG_VERSION: u64 = 0x30;
/// Task priority register.
pub const REG_TPR: u64 = 0x80;
/// Arbitration priority register (read-only; reads 0 here).
pub const REG_APR: u64 = 0x90;
/// Processor priority register (read-only, computed).
pub const REG_PPR: u64 = 0xa0;
/// End-of-interrupt register (write-only).
pub const REG_EOI: u64 = 0xb0;
/// Remote read register (read-only; reads 0 here).
pub const REG_RRD: u64 = 0xc0;
/// Logical destination register.
pub const REG_LDR: u64 = 0xd0;
/// Destination format register.
pub const REG_DFR: u64 = 0xe0;
/// Spurious-interrupt vector register.
pub const REG_SVR: u64 = 0xf0;
/// First of the eight in-service registers (0x100–0x170).
pub const REG_ISR: u64 = 0x100;
/// First of the eight trigger-mode registers (0x180–0x1f0).
pub const REG_TMR: u64 = 0x180;
/// First of the eight interrupt-request registers (0x200–0x270).
pub const REG_IRR: u64 = 0x200;
/// Error status register.
pub const REG_ESR: u64 = 0x280;
/// LVT corrected machine-check interrupt register.
pub const REG_LVT_CMCI: u64 = 0x2f0;
/// Interrupt command register, low half (writing it sends the IPI).
pub const REG_ICR_LOW: u64 = 0x300;
/// Interrupt command register, high half (destination in bits 31:24).
pub const REG_ICR_HIGH: u64 = 0x310;
/// LVT timer register.
pub const REG_LVT_TIMER: u64 = 0x320;
/// LVT thermal sensor register.
pub const REG_LVT_THERMAL: u64 = 0x330;
/// LVT performance monitoring counters register.
pub const REG_LVT_PERF: u64 = 0x340;
/// LVT LINT0 register.
pub const REG_LVT_LINT0: u64 = 0x350;
/// LVT LINT1 register.
pub const REG_LVT_LINT1: u64 = 0x360;
/// LVT error register.
pub const REG_LVT_ERROR: u64 = 0x370;
/// Timer initial count register.
pub const REG_TIMER_INITIAL: u64 = 0x380;
/// Timer current count register (read-only, computed).
pub const REG_TIMER_CURRENT: u64 = 0x390;
/// Timer divide configuration register.
pub const REG_TIMER_DIVIDE: u64 = 0x3e0;

/// ESR bit 5: this APIC tried to send an IPI with a vector below 16.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: this APIC received (or an LVT entry raised) a vector below 16.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT delivery mode ExtINT (bits 10:8 = 0b111).
pub const LVT_DELIVERY_EXTINT: u32 = 0b111 << 8;
/// LVT delivery mode NMI (bits 10:8 = 0b100).
pub const LVT_DELIVERY_NMI: u32 = 0b100 << 8;
/// SVR bit 8: the APIC is software-enabled.
pub const SVR_ENABLE: u32 = 1 << 8;

/// LVT entry indices, in register order ([`REG_LVT_CMCI`] first, then 0x320..=0x370).
const LVT_CMCI: usize = 0;
const LVT_TIMER: usize = 1;
const LVT_LINT0: usize = 4;
const LVT_LINT1: usize = 5;
const LVT_ERROR: usize = 6;
const LVT_COUNT: usize = 7;
/// Writable bits of each LVT entry: vector, delivery mode where it has one, mask; the
/// timer's mode (18:17); LINT0/1's polarity (13) and trigger mode (15). Delivery status
/// (12) and remote IRR (14) are read-only.
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    0x0001_07ff,
    0x0007_00ff,
    0x0001_07ff,
    0x0001_07ff,
    0x0001_a7ff,
    0x0001_a7ff,
    0x0001_00ff,
];
/// SVR bits software can write: vector, enable, focus-processor checking.
const SVR_WRITABLE: u32 = 0x3ff;
/// SVR after reset.
const SVR_RESET: u32 = 0xff;
/// DFR bits software can write (the model, 31:28); the rest read as ones.
const DFR_MODEL_MASK: u32 = 0xf000_0000;
/// ICR low bits software can write: vector, delivery mode, destination mode, level,
/// trigger mode, shorthand. Delivery status (12) reads 0.
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;
/// Divide configuration bits that exist (0, 1 and 3).
const DIVIDE_WRITABLE: u32 = 0b1011;
/// Vectors below this are illegal for fixed delivery.
const FIRST_LEGAL_VECTOR: u8 = 16;

/// The timer mode selected by LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// 0b00: counts down once from the initial count.
    OneShot,
    /// 0b01: counts down from the initial count again and again.
    Periodic,
    /// 0b10: fires when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
    /// 0b11: reserved; the timer does not run.
    Reserved,
}

impl TimerMode {
    const fn from_lvt(lvt: u32) -> Self {
        match (lvt >> 17) & 3 {
            0 => Self::OneShot,
            1 => Self::Periodic,
            2 => Self::TscDeadline,
            _ => Self::Reserved,
        }
    }
}

/// An IPI's delivery mode (ICR bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 0b000: the vector, to every destination.
    Fixed,
    /// 0b001: the vector, to one destination (see [`route`]).
    LowestPriority,
    /// 0b010: a system-management interrupt (ignored).
    Smi,
    /// 0b100: a non-maskable interrupt (the vector is ignored).
    Nmi,
    /// 0b101 with level assert (or edge trigger): INIT.
    Init,
    /// 0b101 with level de-assert and level trigger: INIT level de-assert (ignored).
    InitDeassert,
    /// 0b110: start-up; the vector is the start page (start at `vector << 12`).
    StartUp,
    /// 0b011 or 0b111: reserved (ignored); the raw bits.
    Reserved(u8),
}

/// How an IPI's destination field is read (ICR bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// The destination is an APIC ID.
    Physical,
    /// The destination is matched against each APIC's LDR under its DFR model.
    Logical,
}

/// An IPI's destination shorthand (ICR bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// 0b00: the destination field decides.
    None,
    /// 0b01: the sender only (fixed delivery only).
    ToSelf,
    /// 0b10: every APIC, the sender included.
    AllIncludingSelf,
    /// 0b11: every APIC but the sender.
    AllExcludingSelf,
}

/// An inter-processor interrupt as written to the ICR, for [`route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// The vector (ICR bits 7:0).
    pub vector: u8,
    /// The delivery mode.
    pub mode: DeliveryMode,
    /// The destination mode.
    pub destination_mode: DestinationMode,
    /// The destination shorthand.
    pub shorthand: Shorthand,
    /// The destination (ICR high bits 31:24), used without a shorthand.
    pub destination: u8,
}

impl Ipi {
    /// Decodes the ICR's low and high halves.
    pub const fn from_icr(low: u32, high: u32) -> Self {
        let level_assert = low & (1 << 14) != 0;
        let level_triggered = low & (1 << 15) != 0;
        let mode = match (low >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 if !level_assert && level_triggered => DeliveryMode::InitDeassert,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            bits => DeliveryMode::Reserved(bits as u8),
        };
        let destination_mode = if low & (1 << 11) != 0 {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        };
        let shorthand = match (low >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::ToSelf,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Self {
            vector: low as u8,
            mode,
            destination_mode,
            shorthand,
            destination: (high >> 24) as u8,
        }
    }
}

/// Why a write to IA32_APIC_BASE was refused; the monitor injects #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicBaseError {
    /// Reserved bits (0–7, 9) were set.
    Reserved {
        /// The value written.
        value: u64,
    },
    /// The write asked for x2APIC mode (bit 10), which the VM does not offer.
    X2Apic,
    /// The write moved the APIC page away from [`BASE`].
    BaseMoved {
        /// The base the guest asked for.
        base: u64,
    },
}

impl fmt::Display for ApicBaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Reserved { value } => {
                write!(f, "IA32_APIC_BASE write {value:#x} sets reserved bits")
            }
            Self::X2Apic => f.write_str("IA32_APIC_BASE write asks for x2APIC mode"),
            Self::BaseMoved { base } => write!(
                f,
                "IA32_APIC_BASE write moves the local APIC to {base:#x} (only {BASE:#x} is supported)"
            ),
        }
    }
}

impl core::error::Error for ApicBaseError {}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct LocalApic {
    /// The APIC ID (register bits 31:24).
    id: u8,
    bsp: bool,
    /// IA32_APIC_BASE bit 11.
    hardware_enabled: bool,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    /// The ESR as software reads it (latched at the last ESR write).
    esr: u32,
    /// Errors seen since the last ESR write.
    esr_pending: u32,
    lvt: [u32; LVT_COUNT],
    icr_low: u32,
    icr_high: u32,
    initial_count: u32,
    divide: u32,
    /// One-shot/periodic: when the count next reaches 0; `None` when not counting.
    expiry_ns: Option<u64>,
    /// IA32_TSC_DEADLINE as written; 0 when disarmed.
    tsc_deadline: u64,
    /// The deadline in the monitor's clock, while armed.
    deadline_ns: Option<u64>,
    nmi_pending: bool,
    waiting_for_sipi: bool,
    startup_vector: Option<u8>,
    init_received: bool,
}

impl LocalApic {
    /// The APIC of vCPU `index` after power-up: APIC ID `index`, the bootstrap processor
    /// if `index` is 0, globally enabled, registers in their reset state (SVR 0xff, so
    /// software-disabled; every LVT entry masked; DFR all ones). Application processors
    /// start in the wait-for-SIPI state.
    pub fn new(index: u8) -> Self {
        let mut apic = Self {
            id: index,
            bsp: index == 0,
            hardware_enabled: true,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: SVR_RESET,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            icr_low: 0,
            icr_high: 0,
            initial_count: 0,
            divide: 0,
            expiry_ns: None,
            tsc_deadline: 0,
            deadline_ns: None,
            nmi_pending: false,
            waiting_for_sipi: index != 0,
            startup_vector: None,
            init_received: false,
        };
        apic.reset_registers();
        apic
    }

    /// The APICs of a VM with `vcpus` vCPUs (at most [`MAX_APICS`]) as firmware leaves
    /// them: vCPU 0's in virtual-wire mode ([`Self::enter_virtual_wire`]), the others at
    /// reset, waiting for SIPI.
    pub fn for_vm(vcpus: usize) -> Vec<Self> {
        (0..vcpus.min(MAX_APICS))
            .map(|index| {
                let mut apic = Self::new(index as u8);
                if index == 0 {
                    apic.enter_virtual_wire();
                }
                apic
            })
            .collect()
    }

    /// Programs the APIC as a BIOS does for MP-specification virtual-wire mode: software
    /// enabled (spurious vector 0xff), LINT0 unmasked in ExtINT mode (the 8259's INTR
    /// passes through), LINT1 unmasked in NMI mode.
    pub fn enter_virtual_wire(&mut self) {
        self.svr = SVR_ENABLE | 0xff;
        self.lvt[LVT_LINT0] = LVT_DELIVERY_EXTINT;
        self.lvt[LVT_LINT1] = LVT_DELIVERY_NMI;
    }

    /// The APIC ID.
    pub const fn id(&self) -> u8 {
        self.id
    }

    /// Whether this is the bootstrap processor's APIC.
    pub const fn is_bsp(&self) -> bool {
        self.bsp
    }

    /// Whether the APIC is globally enabled (IA32_APIC_BASE bit 11). While it is not, the
    /// monitor should report CPUID.01H:EDX.APIC (bit 9) clear.
    pub const fn is_hardware_enabled(&self) -> bool {
        self.hardware_enabled
    }

    /// Whether the APIC is software-enabled (SVR bit 8) and globally enabled.
    pub const fn is_software_enabled(&self) -> bool {
        self.hardware_enabled && self.svr & SVR_ENABLE != 0
    }

    /// Whether the 8259's INTR reaches this CPU: the APIC is globally disabled (LINT0 is
    /// then the plain INTR pin), or it is software-enabled with LINT0 unmasked in ExtINT
    /// mode (virtual wire).
    pub const fn extint_enabled(&self) -> bool {
        if !self.hardware_enabled {
            return true;
        }
        let lint0 = self.lvt[LVT_LINT0];
        self.is_software_enabled()
            && lint0 & LVT_MASKED == 0
            && lint0 & (7 << 8) == LVT_DELIVERY_EXTINT
    }

    /// The task priority (TPR bits 7:0). CR8 is `tpr() >> 4`.
    pub const fn tpr(&self) -> u8 {
        self.tpr
    }

    /// Sets the task priority, as a write to the TPR or (`cr8 << 4`) to CR8 does.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// The processor priority: the TPR, or the class of the highest in-service vector if
    /// that class is higher.
    pub fn ppr(&self) -> u8 {
        let in_service = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= in_service >> 4 {
            self.tpr
        } else {
            in_service & 0xf0
        }
    }

    /// Whether `vector` is waiting in the IRR.
    pub fn is_requested(&self, vector: u8) -> bool {
        test_bit(&self.irr, vector)
    }

    /// Whether `vector` is in service (in the ISR).
    pub fn is_in_service(&self, vector: u8) -> bool {
        test_bit(&self.isr, vector)
    }

    /// The timer mode the LVT timer entry selects.
    pub const fn timer_mode(&self) -> TimerMode {
        TimerMode::from_lvt(self.lvt[LVT_TIMER])
    }

    /// A memory-mapped read of `size` bytes (1, 2, 4 or 8) at `offset` into the APIC page.
    /// Each 16-byte slot holds its register in bytes 0–3 and zeros after; offsets past the
    /// page read 0. `None` (nothing answers: the monitor reads all ones) for other sizes and
    /// while the APIC is globally disabled.
    pub fn mmio_read(&mut self, offset: u64, size: u8, now_ns: u64) -> Option<u64> {
        if !matches!(size, 1 | 2 | 4 | 8) || !self.hardware_enabled {
            return None;
        }
        self.update(now_ns);
        let mut value = 0u64;
        let mut slot: Option<(u64, u32)> = None;
        for i in 0..u64::from(size) {
            let Some(address) = offset.checked_add(i) else {
                break;
            };
            let register = address & !0xf;
            let byte_in_slot = address & 0xf;
            if byte_in_slot >= 4 {
                continue;
            }
            let word = match slot {
                Some((cached, word)) if cached == register => word,
                _ => {
                    let word = self.read_register(register, now_ns);
                    slot = Some((register, word));
                    word
                }
            };
            let byte = (word >> (8 * byte_in_slot)) & 0xff;
            value |= u64::from(byte) << (8 * i);
        }
        Some(value)
    }

    /// A memory-mapped write of `size` bytes of `value` at `offset` into the APIC page.
    /// Only 4-byte writes at 16-byte-aligned offsets within the page take effect. A write
    /// to the ICR's low half returns the IPI it sends, for [`route`].
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64, now_ns: u64) -> Option<Ipi> {
        if size != 4 || offset & 0xf != 0 || offset >= SIZE || !self.hardware_enabled {
            return None;
        }
        self.update(now_ns);
        self.write_register(offset, value as u32, now_ns)
    }

    /// The value of the register at `offset` (16-byte aligned, within the page).
    fn read_register(&self, offset: u64, now_ns: u64) -> u32 {
        match offset {
            REG_ID => u32::from(self.id) << 24,
            REG_VERSION => VERSION,
            REG_TPR => u32::from(self.tpr),
            REG_PPR => u32::from(self.ppr()),
            REG_LDR => self.ldr,
            REG_DFR => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr[((offset - REG_ISR) >> 4) as usize],
            0x180..=0x1f0 => self.tmr[((offset - REG_TMR) >> 4) as usize],
            0x200..=0x270 => self.irr[((offset - REG_IRR) >> 4) as usize],
            REG_ESR => self.esr,
            REG_LVT_CMCI => self.lvt[LVT_CMCI],
            REG_ICR_LOW => self.icr_low,
            REG_ICR_HIGH => self.icr_high,
            0x320..=0x370 => self.lvt[((offset - REG_LVT_TIMER) >> 4) as usize + LVT_TIMER],
            REG_TIMER_INITIAL => self.initial_count,
            REG_TIMER_CURRENT => self.current_count(now_ns),
            REG_TIMER_DIVIDE => self.divide,
            // APR, EOI, RRD, reserved offsets.
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32, now_ns: u64) -> Option<Ipi> {
        match offset {
            REG_ID => self.id = (value >> 24) as u8,
            REG_TPR => self.tpr = value as u8,
            REG_EOI => self.eoi(),
            REG_LDR => self.ldr = value & 0xff00_0000,
            REG_DFR => self.dfr = (value & DFR_MODEL_MASK) | !DFR_MODEL_MASK,
            REG_SVR => {
                self.svr = value & SVR_WRITABLE;
                if self.svr & SVR_ENABLE == 0 {
                    for entry in &mut self.lvt {
                        *entry |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => self.esr = core::mem::take(&mut self.esr_pending),
            REG_LVT_CMCI => self.write_lvt(LVT_CMCI, value),
            REG_ICR_LOW => return self.write_icr(value),
            REG_ICR_HIGH => self.icr_high = value & 0xff00_0000,
            0x320..=0x370 => {
                self.write_lvt(((offset - REG_LVT_TIMER) >> 4) as usize + LVT_TIMER, value)
            }
            REG_TIMER_INITIAL => self.write_initial_count(value, now_ns),
            REG_TIMER_DIVIDE => self.write_divide(value, now_ns),
            // Read-only registers and reserved offsets.
            _ => {}
        }
        None
    }

    fn write_lvt(&mut self, index: usize, value: u32) {
        let Some(&writable) = LVT_WRITABLE.get(index) else {
            return;
        };
        let mut entry = value & writable;
        if self.svr & SVR_ENABLE == 0 {
            entry |= LVT_MASKED;
        }
        if index == LVT_TIMER && TimerMode::from_lvt(entry) != self.timer_mode() {
            // A mode change disarms the timer.
            self.expiry_ns = None;
            self.tsc_deadline = 0;
            self.deadline_ns = None;
        }
        self.lvt[index] = entry;
    }

    fn write_icr(&mut self, value: u32) -> Option<Ipi> {
        self.icr_low = value & ICR_LOW_WRITABLE;
        let ipi = Ipi::from_icr(self.icr_low, self.icr_high);
        let carries_vector = matches!(ipi.mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
        if carries_vector && ipi.vector < FIRST_LEGAL_VECTOR {
            self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        Some(ipi)
    }

    /// The divider the divide configuration register selects (1–128).
    fn divisor(&self) -> u64 {
        let encoded = ((self.divide >> 1) & 0b100) | (self.divide & 0b11);
        1 << ((encoded + 1) & 7)
    }

    /// Nanoseconds from one periodic expiry to the next (or of a one-shot count).
    fn period_ns(&self) -> u64 {
        let ns = u64::from(self.initial_count) * self.divisor();
        if self.timer_mode() == TimerMode::Periodic {
            ns.max(MIN_PERIOD_NS)
        } else {
            ns
        }
    }

    fn write_initial_count(&mut self, value: u32, now_ns: u64) {
        let mode = self.timer_mode();
        if mode == TimerMode::TscDeadline {
            return;
        }
        self.initial_count = value;
        self.expiry_ns = if value == 0 || mode == TimerMode::Reserved {
            None
        } else {
            Some(now_ns.saturating_add(self.period_ns()))
        };
    }

    fn write_divide(&mut self, value: u32, now_ns: u64) {
        let count = self.current_count(now_ns);
        self.divide = value & DIVIDE_WRITABLE;
        if self.expiry_ns.is_some() {
            // The ticks left run at the new rate.
            self.expiry_ns = Some(now_ns.saturating_add(u64::from(count) * self.divisor()));
        }
    }

    /// The current count: what is left of the initial count at `now_ns`.
    fn current_count(&self, now_ns: u64) -> u32 {
        let periodic = match self.timer_mode() {
            TimerMode::OneShot => false,
            TimerMode::Periodic => true,
            TimerMode::TscDeadline | TimerMode::Reserved => return 0,
        };
        let Some(expiry) = self.expiry_ns else {
            return 0;
        };
        let remaining_ns = if now_ns < expiry {
            expiry - now_ns
        } else if periodic {
            let period = self.period_ns().max(1);
            period - (now_ns - expiry) % period
        } else {
            return 0;
        };
        let count = remaining_ns.div_ceil(self.divisor());
        count.min(u64::from(self.initial_count)) as u32
    }

    /// Brings the timer up to `now_ns`: an expiry since the last call raises the timer
    /// LVT once (expiries that pile up coalesce, as in a real IRR).
    fn update(&mut self, now_ns: u64) {
        if !self.hardware_enabled {
            return;
        }
        match self.timer_mode() {
            TimerMode::OneShot => {
                if self.expiry_ns.is_some_and(|expiry| now_ns >= expiry) {
                    self.expiry_ns = None;
                    self.raise_lvt(LVT_TIMER);
                }
            }
            TimerMode::Periodic => {
                if let Some(expiry) = self.expiry_ns.filter(|&expiry| now_ns >= expiry) {
                    let period = self.period_ns().max(1);
                    let periods = (now_ns - expiry) / period + 1;
                    let next = u128::from(expiry) + u128::from(periods) * u128::from(period);
                    self.expiry_ns = Some(u64::try_from(next).unwrap_or(u64::MAX));
                    self.raise_lvt(LVT_TIMER);
                }
            }
            TimerMode::TscDeadline => {
                if self.deadline_ns.is_some_and(|deadline| now_ns >= deadline) {
                    self.deadline_ns = None;
                    self.tsc_deadline = 0;
                    self.raise_lvt(LVT_TIMER);
                }
            }
            TimerMode::Reserved => {}
        }
    }

    /// An LVT entry's interrupt (fixed delivery): into the IRR unless masked.
    fn raise_lvt(&mut self, index: usize) {
        let entry = self.lvt[index];
        if !self.is_software_enabled() || entry & LVT_MASKED != 0 {
            return;
        }
        let vector = entry as u8;
        if vector < FIRST_LEGAL_VECTOR {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
        } else {
            set_bit(&mut self.irr, vector);
        }
    }

    /// Logs an error for the next ESR write and raises the error LVT.
    fn record_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let entry = self.lvt[LVT_ERROR];
        if self.is_software_enabled() && entry & LVT_MASKED == 0 {
            let vector = entry as u8;
            if vector < FIRST_LEGAL_VECTOR {
                // No second error interrupt for the error interrupt's own bad vector.
                self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
            } else {
                set_bit(&mut self.irr, vector);
            }
        }
    }

    /// A fixed interrupt arrives with `vector`: into the IRR. Vectors below 16 are
    /// dropped and logged in the ESR; a software- or hardware-disabled APIC accepts
    /// nothing. Returns whether it was accepted.
    pub fn deliver(&mut self, vector: u8) -> bool {
        if !self.hardware_enabled {
            return false;
        }
        if vector < FIRST_LEGAL_VECTOR {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        if !self.is_software_enabled() {
            return false;
        }
        set_bit(&mut self.irr, vector);
        true
    }

    /// The vector the vCPU should take next, if any: after moving an expired timer into
    /// the IRR, the highest requested vector whose priority class (`vector >> 4`) is above
    /// the processor priority's class.
    pub fn pending_vector(&mut self, now_ns: u64) -> Option<u8> {
        self.update(now_ns);
        if !self.hardware_enabled {
            return None;
        }
        let vector = highest(&self.irr)?;
        (vector >> 4 > self.ppr() >> 4).then_some(vector)
    }

    /// The interrupt acknowledge as the monitor injects the vector: the
    /// [`Self::pending_vector`] moves from the IRR to the ISR and is returned.
    pub fn acknowledge(&mut self, now_ns: u64) -> Option<u8> {
        let vector = self.pending_vector(now_ns)?;
        clear_bit(&mut self.irr, vector);
        set_bit(&mut self.isr, vector);
        Some(vector)
    }

    /// An EOI: the highest in-service vector leaves the ISR.
    pub fn eoi(&mut self) {
        if let Some(vector) = highest(&self.isr) {
            clear_bit(&mut self.isr, vector);
        }
    }

    /// When the timer next raises its interrupt, if it is armed, unmasked and the APIC is
    /// enabled: the monitor's latest wake-up time for this vCPU. A time in the past means
    /// now.
    pub fn next_event_ns(&self, now_ns: u64) -> Option<u64> {
        if !self.is_software_enabled() || self.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        let at = match self.timer_mode() {
            TimerMode::OneShot | TimerMode::Periodic => self.expiry_ns?,
            TimerMode::TscDeadline => self.deadline_ns?,
            TimerMode::Reserved => return None,
        };
        Some(at.max(now_ns))
    }

    /// A WRMSR to IA32_TSC_DEADLINE of `deadline_tsc` when the guest's TSC reads `now_tsc`
    /// and the monitor's clock `now_ns`, the TSC running at `tsc_khz` kHz (0 is taken as
    /// 1 GHz). Only in TSC-deadline mode: 0 disarms the timer, anything else arms it for
    /// the first nanosecond at which the TSC has reached the deadline (a deadline already
    /// passed fires at once). In other modes the write is ignored.
    pub fn write_tsc_deadline(
        &mut self,
        deadline_tsc: u64,
        now_tsc: u64,
        now_ns: u64,
        tsc_khz: u64,
    ) {
        self.update(now_ns);
        if !self.hardware_enabled || self.timer_mode() != TimerMode::TscDeadline {
            return;
        }
        self.tsc_deadline = deadline_tsc;
        if deadline_tsc == 0 {
            self.deadline_ns = None;
            return;
        }
        let khz = if tsc_khz == 0 { 1_000_000 } else { tsc_khz };
        let ticks = u128::from(deadline_tsc.saturating_sub(now_tsc));
        let delta_ns = (ticks * 1_000_000).div_ceil(u128::from(khz));
        let delta_ns = u64::try_from(delta_ns).unwrap_or(u64::MAX);
        self.deadline_ns = Some(now_ns.saturating_add(delta_ns));
    }

    /// A RDMSR of IA32_TSC_DEADLINE: the armed deadline, or 0 (disarmed, fired, or not in
    /// TSC-deadline mode). A deadline that has passed reads 0 once the expiry is collected
    /// (by [`Self::pending_vector`] or any other call that takes the time).
    pub const fn read_tsc_deadline(&self) -> u64 {
        if matches!(self.timer_mode(), TimerMode::TscDeadline) {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// A RDMSR of IA32_APIC_BASE: [`BASE`], the enable bit, and the BSP bit on
    /// the bootstrap processor.
    pub const fn read_base_msr(&self) -> u64 {
        let mut value = BASE;
        if self.bsp {
            value |= APIC_BASE_BSP;
        }
        if self.hardware_enabled {
            value |= APIC_BASE_ENABLE;
        }
        value
    }

    /// A WRMSR to IA32_APIC_BASE. Reserved bits, x2APIC mode and any other base are
    /// refused (the monitor injects #GP); the BSP bit is read-only. Clearing the enable
    /// bit disables the APIC and puts its registers in their power-up state (the ID kept);
    /// setting it again re-enables it.
    pub fn write_base_msr(&mut self, value: u64) -> Result<(), ApicBaseError> {
        if value & 0x2ff != 0 {
            return Err(ApicBaseError::Reserved { value });
        }
        if value & APIC_BASE_X2APIC != 0 {
            return Err(ApicBaseError::X2Apic);
        }
        let base = value & !0xfff;
        if base != BASE {
            return Err(ApicBaseError::BaseMoved { base });
        }
        let enable = value & APIC_BASE_ENABLE != 0;
        if self.hardware_enabled && !enable {
            self.reset_registers();
        }
        self.hardware_enabled = enable;
        Ok(())
    }

    /// Takes a pending NMI (from an NMI IPI); the monitor injects it.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    /// Whether an NMI is waiting for [`Self::take_nmi`].
    pub const fn is_nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// Takes the news that an INIT arrived since the last call: the monitor stops the
    /// vCPU, which waits for a start-up IPI.
    pub fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.init_received)
    }

    /// Whether the vCPU is in the wait-for-SIPI state (after INIT, or an AP after
    /// power-up): it must not run until [`Self::take_startup`] gives a vector.
    pub const fn is_waiting_for_sipi(&self) -> bool {
        self.waiting_for_sipi
    }

    /// Takes the start-up vector a SIPI delivered, once. The monitor starts the vCPU in
    /// real mode at CS selector `vector << 8`, CS base `vector << 12`, IP 0.
    pub fn take_startup(&mut self) -> Option<u8> {
        self.startup_vector.take()
    }

    /// An INIT message: the registers go to their reset state (the ID and IA32_APIC_BASE
    /// kept), pending NMIs and start-ups are dropped, and the vCPU waits for SIPI.
    fn receive_init(&mut self) {
        self.reset_registers();
        self.nmi_pending = false;
        self.startup_vector = None;
        self.waiting_for_sipi = true;
        self.init_received = true;
    }

    /// A start-up message: accepted only while waiting for SIPI.
    fn receive_startup(&mut self, vector: u8) -> bool {
        if !self.waiting_for_sipi {
            return false;
        }
        self.waiting_for_sipi = false;
        self.startup_vector = Some(vector);
        true
    }

    /// Power-up values of every register but the ID (SDM "Local APIC State After
    /// Power-Up or Reset").
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = SVR_RESET;
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.irr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.lvt = [LVT_MASKED; LVT_COUNT];
        self.icr_low = 0;
        self.icr_high = 0;
        self.initial_count = 0;
        self.divide = 0;
        self.expiry_ns = None;
        self.tsc_deadline = 0;
        self.deadline_ns = None;
    }

    /// Whether a destination field (without shorthand) selects this APIC.
    fn is_destination(&self, mode: DestinationMode, destination: u8) -> bool {
        if destination == BROADCAST {
            return true;
        }
        match mode {
            DestinationMode::Physical => self.id == destination,
            DestinationMode::Logical => {
                let logical_id = (self.ldr >> 24) as u8;
                match self.dfr >> 28 {
                    // Flat: a bit mask of up to eight APICs.
                    0xf => logical_id & destination != 0,
                    // Cluster: cluster number in the high nibble, a mask in the low.
                    0x0 => {
                        logical_id >> 4 == destination >> 4 && logical_id & destination & 0xf != 0
                    }
                    _ => false,
                }
            }
        }
    }
}

/// Delivers `ipi`, sent by the APIC at index `from`, to the APICs of its VM (the first
/// [`MAX_APICS`] of `apics`), and returns the bit mask of vCPU indices that received
/// something (fixed vector accepted, NMI, INIT, start-up) and must be woken or kicked; it
/// may include `from` itself.
///
/// Destinations: a shorthand, else the destination field — physical (an APIC ID, 0xff
/// every APIC) or logical (each APIC's LDR under its DFR: flat, a mask; cluster, the high
/// nibble a cluster and the low a mask; 0xff every APIC). Globally disabled APICs receive
/// nothing. Lowest-priority delivery picks one of the matching software-enabled APICs,
/// the one with the lowest TPR (the lowest index among equals). SMI, INIT level de-assert,
/// reserved modes and non-fixed "self" IPIs deliver nothing. Each target's timer is
/// brought up to `now_ns` first, so an expiry before the message is not lost to an INIT.
pub fn route(apics: &mut [LocalApic], from: usize, ipi: &Ipi, now_ns: u64) -> u64 {
    let count = apics.len().min(MAX_APICS);
    let apics = &mut apics[..count];
    match ipi.mode {
        DeliveryMode::Smi | DeliveryMode::InitDeassert | DeliveryMode::Reserved(_) => return 0,
        _ => {}
    }
    if ipi.shorthand == Shorthand::ToSelf && ipi.mode != DeliveryMode::Fixed {
        return 0;
    }
    let is_target = |index: usize, apic: &LocalApic| {
        apic.hardware_enabled
            && match ipi.shorthand {
                Shorthand::None => apic.is_destination(ipi.destination_mode, ipi.destination),
                Shorthand::ToSelf => index == from,
                Shorthand::AllIncludingSelf => true,
                Shorthand::AllExcludingSelf => index != from,
            }
    };
    let mut targets: u64 = 0;
    for (index, apic) in apics.iter().enumerate() {
        if is_target(index, apic) {
            targets |= 1 << index;
        }
    }
    if ipi.mode == DeliveryMode::LowestPriority {
        let chosen = apics
            .iter()
            .enumerate()
            .filter(|&(index, apic)| targets & (1 << index) != 0 && apic.is_software_enabled())
            .min_by_key(|&(_, apic)| apic.tpr)
            .map(|(index, _)| index);
        targets = chosen.map_or(0, |index| 1 << index);
    }
    let mut woken = 0;
    for (index, apic) in apics.iter_mut().enumerate() {
        if targets & (1 << index) == 0 {
            continue;
        }
        apic.update(now_ns);
        let received = match ipi.mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => apic.deliver(ipi.vector),
            DeliveryMode::Nmi => {
                apic.nmi_pending = true;
                true
            }
            DeliveryMode::Init => {
                apic.receive_init();
                true
            }
            DeliveryMode::StartUp => apic.receive_startup(ipi.vector),
            DeliveryMode::Smi | DeliveryMode::InitDeassert | DeliveryMode::Reserved(_) => false,
        };
        if received {
            woken |= 1 << index;
        }
    }
    woken
}

/// The highest set bit of a 256-bit register (eight 32-bit words, word 0 lowest).
fn highest(bits: &[u32; 8]) -> Option<u8> {
    bits.iter()
        .enumerate()
        .rev()
        .find(|&(_, &word)| word != 0)
        .map(|(index, &word)| (index as u32 * 32 + 31 - word.leading_zeros()) as u8)
}

fn set_bit(bits: &mut [u32; 8], vector: u8) {
    bits[usize::from(vector >> 5)] |= 1 << (vector & 31);
}

fn clear_bit(bits: &mut [u32; 8], vector: u8) {
    bits[usize::from(vector >> 5)] &= !(1 << (vector & 31));
}

fn test_bit(bits: &[u32; 8], vector: u8) -> bool {
    bits[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every register offset the model implements.
    const REGISTERS: [u64; 44] = [
        0x20, 0x30, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x100, 0x110, 0x120, 0x130,
        0x140, 0x150, 0x160, 0x170, 0x180, 0x190, 0x1a0, 0x1b0, 0x1c0, 0x1d0, 0x1e0, 0x1f0, 0x200,
        0x210, 0x220, 0x230, 0x240, 0x250, 0x260, 0x270, 0x280, 0x2f0, 0x300, 0x310, 0x320, 0x330,
        0x340, 0x350, 0x360, 0x370,
    ];
    const LVTS: [u64; 7] = [0x2f0, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370];
    const TIMER_REGISTERS: [u64; 3] = [0x380, 0x390, 0x3e0];

    /// A dword read; all ones if nothing answers.
    fn rd_at(apic: &mut LocalApic, offset: u64, now_ns: u64) -> u32 {
        apic.mmio_read(offset, 4, now_ns)
            .map_or(u32::MAX, |value| value as u32)
    }

    fn rd(apic: &mut LocalApic, offset: u64) -> u32 {
        rd_at(apic, offset, 0)
    }

    fn wr_at(apic: &mut LocalApic, offset: u64, value: u32, now_ns: u64) -> Option<Ipi> {
        apic.mmio_write(offset, 4, u64::from(value), now_ns)
    }

    fn wr(apic: &mut LocalApic, offset: u64, value: u32) -> Option<Ipi> {
        wr_at(apic, offset, value, 0)
    }

    /// A software-enabled APIC with ID `index`.
    fn enabled(index: u8) -> LocalApic {
        let mut apic = LocalApic::new(index);
        wr(&mut apic, REG_SVR, 0x1ff);
        apic
    }

    /// `count` software-enabled APICs, vCPU 0 in virtual wire.
    fn vm(count: usize) -> Vec<LocalApic> {
        let mut apics = LocalApic::for_vm(count);
        for apic in &mut apics {
            wr(apic, REG_SVR, 0x1ff);
        }
        apics
    }

    fn fixed(vector: u8, destination: u8) -> Ipi {
        Ipi {
            vector,
            mode: DeliveryMode::Fixed,
            destination_mode: DestinationMode::Physical,
            shorthand: Shorthand::None,
            destination,
        }
    }

    fn with_mode(ipi: Ipi, mode: DeliveryMode) -> Ipi {
        Ipi { mode, ..ipi }
    }

    fn requested(apics: &[LocalApic], vector: u8) -> u64 {
        apics
            .iter()
            .enumerate()
            .filter(|(_, apic)| apic.is_requested(vector))
            .fold(0, |mask, (index, _)| mask | 1 << index)
    }

    /// Reads the ESR the way software does: write, then read.
    fn esr(apic: &mut LocalApic) -> u32 {
        wr(apic, REG_ESR, 0);
        rd(apic, REG_ESR)
    }

    #[test]
    fn reset_state_follows_the_sdm() {
        let mut bsp = LocalApic::new(0);
        let mut ap = LocalApic::new(3);
        assert_eq!(rd(&mut bsp, REG_ID), 0);
        assert_eq!(rd(&mut ap, REG_ID), 3 << 24);
        assert_eq!(ap.id(), 3);
        assert!(bsp.is_bsp() && !ap.is_bsp());
        for apic in [&mut bsp, &mut ap] {
            assert_eq!(rd(apic, REG_VERSION), 0x0006_0014);
            assert_eq!(rd(apic, REG_SVR), 0xff);
            assert_eq!(rd(apic, REG_DFR), 0xffff_ffff);
            for offset in LVTS {
                assert_eq!(rd(apic, offset), 0x0001_0000, "LVT {offset:#x}");
            }
            for offset in [
                REG_TPR,
                REG_PPR,
                REG_LDR,
                REG_ESR,
                REG_ICR_LOW,
                REG_ICR_HIGH,
            ] {
                assert_eq!(rd(apic, offset), 0, "{offset:#x}");
            }
            for offset in TIMER_REGISTERS {
                assert_eq!(rd(apic, offset), 0, "{offset:#x}");
            }
            for offset in (0x100..0x280).step_by(16) {
                assert_eq!(rd(apic, offset), 0, "{offset:#x}");
            }
            assert!(apic.is_hardware_enabled());
            assert!(!apic.is_software_enabled());
            assert!(!apic.extint_enabled());
            assert_eq!(apic.timer_mode(), TimerMode::OneShot);
            assert_eq!(apic.next_event_ns(0), None);
        }
        // Max LVT entry 6: the seven LVT registers above.
        assert_eq!((VERSION >> 16) & 0xff, LVTS.len() as u32 - 1);
        assert_eq!(bsp.read_base_msr(), 0xfee0_0900);
        assert_eq!(ap.read_base_msr(), 0xfee0_0800);
        assert!(!bsp.is_waiting_for_sipi());
        assert!(ap.is_waiting_for_sipi());
    }

    #[test]
    fn firmware_leaves_the_bsp_in_virtual_wire_mode() {
        let mut apics = LocalApic::for_vm(3);
        assert_eq!(apics.len(), 3);
        assert_eq!(LocalApic::for_vm(100).len(), MAX_APICS);
        let bsp = &mut apics[0];
        assert!(bsp.extint_enabled());
        assert_eq!(rd(bsp, REG_SVR), 0x1ff);
        assert_eq!(rd(bsp, REG_LVT_LINT0), 0x700);
        assert_eq!(rd(bsp, REG_LVT_LINT1), 0x400);
        wr(bsp, REG_LVT_LINT0, 0x1_0700);
        assert!(!bsp.extint_enabled(), "LINT0 masked");
        wr(bsp, REG_LVT_LINT0, 0x700);
        wr(bsp, REG_SVR, 0xff);
        assert!(!bsp.extint_enabled(), "software-disabled");
        bsp.write_base_msr(0xfee0_0000).unwrap();
        assert!(bsp.extint_enabled(), "globally disabled: LINT0 is INTR");
        let ap = &mut apics[1];
        assert!(!ap.extint_enabled());
        assert!(ap.is_waiting_for_sipi());
        assert_eq!(rd(ap, REG_SVR), 0xff);
    }

    #[test]
    fn reserved_offsets_read_zero_and_ignore_writes() {
        let mut apic = enabled(1);
        for offset in (0..SIZE).step_by(16) {
            if REGISTERS.contains(&offset) || TIMER_REGISTERS.contains(&offset) {
                continue;
            }
            assert_eq!(wr(&mut apic, offset, u32::MAX), None);
            assert_eq!(rd(&mut apic, offset), 0, "{offset:#x}");
        }
        // Nothing else changed either.
        assert_eq!(rd(&mut apic, REG_SVR), 0x1ff);
        assert_eq!(rd(&mut apic, REG_TPR), 0);
        assert_eq!(rd(&mut apic, REG_LVT_TIMER), 0x1_0000);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut apic = enabled(1);
        apic.deliver(0x40);
        assert_eq!(apic.acknowledge(0), Some(0x40));
        apic.deliver(0x41);
        for offset in [REG_VERSION, REG_APR, REG_PPR, REG_RRD, REG_TIMER_CURRENT] {
            let before = rd(&mut apic, offset);
            wr(&mut apic, offset, 0xdead_beef);
            assert_eq!(rd(&mut apic, offset), before, "{offset:#x}");
        }
        for offset in (REG_ISR..REG_ESR).step_by(16) {
            wr(&mut apic, offset, u32::MAX);
        }
        assert_eq!(rd(&mut apic, REG_ISR + 0x20), 1, "ISR holds 0x40 only");
        assert_eq!(rd(&mut apic, REG_IRR + 0x20), 2, "IRR holds 0x41 only");
        assert_eq!(rd(&mut apic, REG_TMR + 0x20), 0);
        assert_eq!(rd(&mut apic, REG_APR), 0);
        assert_eq!(rd(&mut apic, REG_RRD), 0);
        assert_eq!(rd(&mut apic, REG_EOI), 0, "EOI is write-only");
        assert_eq!(rd(&mut apic, REG_PPR), 0x40);
    }

    #[test]
    fn writable_registers_keep_only_their_defined_bits() {
        let mut apic = enabled(1);
        let cases: [(u64, u32); 13] = [
            (REG_ID, 0xff00_0000),
            (REG_TPR, 0xff),
            (REG_LDR, 0xff00_0000),
            (REG_DFR, 0xffff_ffff),
            (REG_ICR_HIGH, 0xff00_0000),
            (REG_LVT_CMCI, 0x0001_07ff),
            (REG_LVT_TIMER, 0x0007_00ff),
            (REG_LVT_THERMAL, 0x0001_07ff),
            (REG_LVT_PERF, 0x0001_07ff),
            (REG_LVT_LINT0, 0x0001_a7ff),
            (REG_LVT_LINT1, 0x0001_a7ff),
            (REG_LVT_ERROR, 0x0001_00ff),
            (REG_TIMER_DIVIDE, 0b1011),
        ];
        for (offset, expected) in cases {
            wr(&mut apic, offset, u32::MAX);
            assert_eq!(rd(&mut apic, offset), expected, "{offset:#x}");
        }
        wr(&mut apic, REG_DFR, 0);
        assert_eq!(rd(&mut apic, REG_DFR), 0x0fff_ffff, "low bits read as ones");
        wr(&mut apic, REG_SVR, u32::MAX);
        assert_eq!(rd(&mut apic, REG_SVR), 0x3ff);
        wr(&mut apic, REG_ID, 0x0700_00ff);
        assert_eq!(rd(&mut apic, REG_ID), 0x0700_0000);
        assert_eq!(apic.id(), 7);
        wr(&mut apic, REG_ICR_LOW, u32::MAX);
        assert_eq!(
            rd(&mut apic, REG_ICR_LOW),
            0x000c_cfff,
            "delivery status reads 0"
        );
        wr(&mut apic, REG_TPR, 0x1234_5678);
        assert_eq!(apic.tpr(), 0x78);
        apic.set_tpr(0x30);
        assert_eq!(rd(&mut apic, REG_TPR), 0x30);
    }

    #[test]
    fn narrow_and_wide_reads_return_the_right_bytes() {
        let mut apic = enabled(0x12);
        assert_eq!(apic.mmio_read(0x23, 1, 0), Some(0x12));
        assert_eq!(apic.mmio_read(0x22, 2, 0), Some(0x1200));
        assert_eq!(apic.mmio_read(0x20, 1, 0), Some(0));
        assert_eq!(apic.mmio_read(0xf0, 1, 0), Some(0xff));
        assert_eq!(apic.mmio_read(0xf1, 1, 0), Some(0x01));
        assert_eq!(apic.mmio_read(0xf0, 2, 0), Some(0x1ff));
        assert_eq!(
            apic.mmio_read(0xf0, 8, 0),
            Some(0x1ff),
            "bytes 4-7 of a slot read 0"
        );
        assert_eq!(
            apic.mmio_read(0xec, 8, 0),
            Some(0x1ff << 32),
            "straddles DFR's slot and SVR"
        );
        assert_eq!(
            apic.mmio_read(0x24, 4, 0),
            Some(0),
            "inside a slot, past the register"
        );
        assert_eq!(apic.mmio_read(0x30, 4, 0), Some(u64::from(VERSION)));
        for size in [0, 3, 5, 16, 255] {
            assert_eq!(apic.mmio_read(0xf0, size, 0), None, "size {size}");
        }
        assert_eq!(apic.mmio_read(0xffc, 8, 0), Some(0));
        assert_eq!(apic.mmio_read(0x10f0, 4, 0), Some(0), "past the page");
        assert_eq!(apic.mmio_read(u64::MAX, 8, 0), Some(0));
        assert_eq!(apic.mmio_read(u64::MAX - 0xf, 4, 0), Some(0));
    }

    #[test]
    fn only_aligned_dword_writes_take_effect() {
        let mut apic = enabled(1);
        assert_eq!(apic.mmio_write(REG_TPR, 1, 0x50, 0), None);
        assert_eq!(apic.mmio_write(REG_TPR, 2, 0x50, 0), None);
        assert_eq!(apic.mmio_write(REG_TPR, 8, 0x50, 0), None);
        assert_eq!(apic.mmio_write(REG_TPR + 1, 4, 0x50, 0), None);
        assert_eq!(apic.mmio_write(REG_TPR + 4, 4, 0x50, 0), None);
        assert_eq!(apic.mmio_write(REG_TPR | 0x1000, 4, 0x50, 0), None);
        assert_eq!(apic.mmio_write(u64::MAX - 0xf, 4, 0x50, 0), None);
        assert_eq!(rd(&mut apic, REG_TPR), 0);
        // An ICR write of the wrong width sends nothing.
        assert_eq!(apic.mmio_write(REG_ICR_LOW, 8, 0x4041, 0), None);
        assert_eq!(rd(&mut apic, REG_ICR_LOW), 0);
        assert_eq!(apic.mmio_write(REG_TPR, 4, 0xffff_ff50, 0), None);
        assert_eq!(rd(&mut apic, REG_TPR), 0x50);
    }

    #[test]
    fn priorities_gate_delivery_and_eoi_unwinds_nesting() {
        let mut apic = enabled(0);
        for vector in [0x51, 0x62, 0x30] {
            assert!(apic.deliver(vector));
        }
        assert_eq!(apic.pending_vector(0), Some(0x62));
        wr(&mut apic, REG_TPR, 0x60);
        assert_eq!(rd(&mut apic, REG_PPR), 0x60);
        assert_eq!(
            apic.pending_vector(0),
            None,
            "class 6 is not above PPR class 6"
        );
        assert_eq!(apic.acknowledge(0), None);
        wr(&mut apic, REG_TPR, 0x5f);
        assert_eq!(apic.acknowledge(0), Some(0x62));
        assert!(apic.is_in_service(0x62) && !apic.is_requested(0x62));
        assert_eq!(apic.ppr(), 0x60, "the in-service class");
        wr(&mut apic, REG_TPR, 0x65);
        assert_eq!(apic.ppr(), 0x65, "TPR in the in-service class wins");
        wr(&mut apic, REG_TPR, 0x5f);
        assert_eq!(apic.pending_vector(0), None, "0x51 waits for the EOI");
        apic.deliver(0x71);
        assert_eq!(apic.acknowledge(0), Some(0x71), "a higher class nests");
        assert_eq!(apic.ppr(), 0x70);
        wr(&mut apic, REG_TPR, 0x85);
        assert_eq!(apic.ppr(), 0x85, "TPR above the in-service class");
        wr(&mut apic, REG_TPR, 0x5f);
        wr(&mut apic, REG_EOI, 0);
        assert!(!apic.is_in_service(0x71) && apic.is_in_service(0x62));
        assert_eq!(apic.ppr(), 0x60);
        wr(&mut apic, REG_EOI, 0);
        assert_eq!(apic.ppr(), 0x5f);
        assert_eq!(apic.pending_vector(0), None, "0x51 is class 5, TPR class 5");
        wr(&mut apic, REG_TPR, 0);
        assert_eq!(apic.acknowledge(0), Some(0x51));
        assert_eq!(
            apic.acknowledge(0),
            None,
            "0x30 is blocked by 0x51 in service"
        );
        apic.eoi();
        assert_eq!(apic.acknowledge(0), Some(0x30));
        apic.eoi();
        apic.eoi(); // Nothing in service: no effect.
        assert_eq!(apic.ppr(), 0);
        assert_eq!(apic.acknowledge(0), None);
        // The ISR words show in-service vectors bit by bit.
        apic.deliver(0xff);
        apic.acknowledge(0);
        assert_eq!(rd(&mut apic, REG_ISR + 0x70), 1 << 31);
    }

    #[test]
    fn illegal_vectors_are_dropped_and_logged() {
        let mut apic = enabled(0);
        assert_eq!(rd(&mut apic, REG_ESR), 0);
        assert!(!apic.deliver(5));
        assert_eq!(apic.pending_vector(0), None);
        assert_eq!(rd(&mut apic, REG_ESR), 0, "nothing until ESR is written");
        assert_eq!(esr(&mut apic), ESR_RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(esr(&mut apic), 0, "the write clears what it latched");
        // Sending a fixed IPI with vector 3 sends nothing.
        assert_eq!(wr(&mut apic, REG_ICR_LOW, 0x4003), None);
        assert_eq!(wr(&mut apic, REG_ICR_LOW, 0x4103), None, "lowest priority");
        assert_eq!(esr(&mut apic), ESR_SEND_ILLEGAL_VECTOR);
        // NMI, INIT and start-up carry no interrupt vector: low ones are fine.
        assert!(wr(&mut apic, REG_ICR_LOW, 0x4400).is_some());
        assert!(wr(&mut apic, REG_ICR_LOW, 0x0603).is_some());
        assert_eq!(esr(&mut apic), 0);
        // The timer's LVT with a low vector logs an error when it fires.
        wr(&mut apic, REG_LVT_TIMER, 0x02);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011);
        wr(&mut apic, REG_TIMER_INITIAL, 10);
        assert_eq!(apic.pending_vector(10), None);
        assert_eq!(esr(&mut apic), ESR_RECEIVE_ILLEGAL_VECTOR);
    }

    #[test]
    fn errors_raise_the_error_lvt() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_LVT_ERROR, 0xfe);
        apic.deliver(7);
        assert_eq!(apic.acknowledge(0), Some(0xfe));
        apic.eoi();
        // A bad error vector is logged, not raised again.
        wr(&mut apic, REG_LVT_ERROR, 0x05);
        apic.deliver(7);
        assert_eq!(apic.pending_vector(0), None);
        assert_eq!(esr(&mut apic), ESR_RECEIVE_ILLEGAL_VECTOR);
        // Masked: logged only.
        wr(&mut apic, REG_LVT_ERROR, 0x1_00fe);
        wr(&mut apic, REG_ICR_LOW, 0x4001);
        assert_eq!(apic.pending_vector(0), None);
        assert_eq!(esr(&mut apic), ESR_SEND_ILLEGAL_VECTOR);
    }

    #[test]
    fn software_disable_masks_the_lvt_and_refuses_fixed_interrupts() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_LVT_LINT0, 0x700);
        wr(&mut apic, REG_LVT_TIMER, 0x2_0030);
        assert!(apic.deliver(0x50));
        wr(&mut apic, REG_SVR, 0xff);
        assert!(!apic.is_software_enabled());
        assert_eq!(rd(&mut apic, REG_LVT_LINT0), 0x1_0700);
        assert_eq!(rd(&mut apic, REG_LVT_TIMER), 0x3_0030);
        for offset in LVTS {
            wr(&mut apic, offset, 0x40);
            assert_eq!(
                rd(&mut apic, offset) & LVT_MASKED,
                LVT_MASKED,
                "{offset:#x}"
            );
        }
        assert!(!apic.deliver(0x60));
        assert!(!apic.is_requested(0x60));
        assert_eq!(
            apic.acknowledge(0),
            Some(0x50),
            "held interrupts still go out"
        );
        // Re-enabled: the entries stay masked until rewritten.
        wr(&mut apic, REG_SVR, 0x1ff);
        assert_eq!(rd(&mut apic, REG_LVT_LINT0), 0x1_0040);
        wr(&mut apic, REG_LVT_LINT0, 0x700);
        assert_eq!(rd(&mut apic, REG_LVT_LINT0), 0x700);
        assert!(apic.deliver(0x60));
    }

    #[test]
    fn one_shot_timer_fires_once() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011); // divide by 1
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 0);
        assert_eq!(rd_at(&mut apic, REG_TIMER_INITIAL, 0), 1000);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 0), 1000);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 250), 750);
        assert_eq!(apic.next_event_ns(250), Some(1000));
        assert_eq!(apic.pending_vector(999), None);
        assert_eq!(apic.pending_vector(1000), Some(0x40));
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 1000), 0);
        assert_eq!(apic.next_event_ns(1000), None);
        assert_eq!(apic.acknowledge(1000), Some(0x40));
        apic.eoi();
        assert_eq!(apic.pending_vector(1_000_000), None, "one shot only");
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 1_000_000), 0);
        // A new initial count restarts the count.
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 2000);
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 2900);
        assert_eq!(apic.pending_vector(3000), None);
        assert_eq!(apic.next_event_ns(3000), Some(3900));
        assert_eq!(apic.pending_vector(3900), Some(0x40));
        apic.acknowledge(3900);
        apic.eoi();
        // Writing 0 stops it.
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 5000);
        wr_at(&mut apic, REG_TIMER_INITIAL, 0, 5500);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 5500), 0);
        assert_eq!(apic.next_event_ns(5500), None);
        assert_eq!(apic.pending_vector(10_000), None);
    }

    #[test]
    fn a_masked_timer_counts_but_raises_nothing() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_LVT_TIMER, 0x1_0040);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011);
        wr_at(&mut apic, REG_TIMER_INITIAL, 100, 0);
        assert_eq!(apic.next_event_ns(0), None);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 40), 60);
        assert_eq!(apic.pending_vector(100), None);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 100), 0);
        // Unmasking later does not bring back the lost expiry.
        wr_at(&mut apic, REG_LVT_TIMER, 0x40, 200);
        assert_eq!(apic.pending_vector(300), None);
    }

    #[test]
    fn the_divider_scales_the_count() {
        let encodings = [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ];
        for (bits, divisor) in encodings {
            let mut apic = enabled(0);
            wr(&mut apic, REG_LVT_TIMER, 0x40);
            wr(&mut apic, REG_TIMER_DIVIDE, bits);
            wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 0);
            assert_eq!(
                apic.next_event_ns(0),
                Some(1000 * divisor),
                "divide {bits:#b}"
            );
            assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 10 * divisor), 990);
        }
        // Changing the divider mid-count: the ticks left run at the new rate.
        let mut apic = enabled(0);
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011);
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 0);
        wr_at(&mut apic, REG_TIMER_DIVIDE, 0b0000, 400);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 1000), 300);
        assert_eq!(apic.next_event_ns(1000), Some(1600));
        assert_eq!(apic.pending_vector(1599), None);
        assert_eq!(apic.pending_vector(1600), Some(0x40));
    }

    #[test]
    fn periodic_timer_rearms_and_coalesces() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_LVT_TIMER, 0x2_0040);
        assert_eq!(apic.timer_mode(), TimerMode::Periodic);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011);
        wr_at(&mut apic, REG_TIMER_INITIAL, 200_000, 0);
        assert_eq!(apic.next_event_ns(0), Some(200_000));
        assert_eq!(apic.acknowledge(200_000), Some(0x40));
        apic.eoi();
        assert_eq!(apic.next_event_ns(200_000), Some(400_000));
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 250_000), 150_000);
        assert_eq!(apic.pending_vector(399_999), None);
        assert_eq!(apic.acknowledge(400_000), Some(0x40));
        apic.eoi();
        // Four periods pass unobserved: one interrupt, and the phase is kept.
        assert_eq!(apic.acknowledge(1_000_005), Some(0x40));
        apic.eoi();
        assert_eq!(apic.pending_vector(1_000_010), None);
        assert_eq!(apic.next_event_ns(1_000_010), Some(1_200_000));
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 1_100_000), 100_000);
        // Past an expiry nobody has collected yet, the count reads as if reloaded.
        assert_eq!(apic.current_count(1_250_000), 150_000);
        // Too short a period is stretched to the minimum.
        wr_at(&mut apic, REG_TIMER_INITIAL, 10, 2_000_000);
        assert_eq!(
            apic.next_event_ns(2_000_000),
            Some(2_000_000 + MIN_PERIOD_NS)
        );
    }

    #[test]
    fn changing_the_timer_mode_disarms_it() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011);
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 0);
        wr_at(&mut apic, REG_LVT_TIMER, 0x2_0040, 100);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 100), 0);
        assert_eq!(apic.next_event_ns(100), None);
        assert_eq!(apic.pending_vector(5000), None);
        // Rewriting the same mode (vector or mask change) keeps it running.
        wr_at(&mut apic, REG_TIMER_INITIAL, 200_000, 0);
        wr_at(&mut apic, REG_LVT_TIMER, 0x2_0041, 10);
        assert_eq!(apic.pending_vector(200_000), Some(0x41));
        // The reserved mode never counts.
        wr(&mut apic, REG_LVT_TIMER, 0x6_0040);
        assert_eq!(apic.timer_mode(), TimerMode::Reserved);
        wr_at(&mut apic, REG_TIMER_INITIAL, 100, 0);
        assert_eq!(apic.next_event_ns(0), None);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 50), 0);
    }

    #[test]
    fn tsc_deadline_timer() {
        const KHZ: u64 = 2_000_000; // 2 GHz: two ticks per ns
        let mut apic = enabled(0);
        // Outside TSC-deadline mode the MSR reads 0 and ignores writes.
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        apic.write_tsc_deadline(30_000, 10_000, 5_000, KHZ);
        assert_eq!(apic.read_tsc_deadline(), 0);
        assert_eq!(apic.next_event_ns(5_000), None);
        wr(&mut apic, REG_LVT_TIMER, 0x4_0040);
        assert_eq!(apic.timer_mode(), TimerMode::TscDeadline);
        // Initial count writes are ignored; the current count reads 0.
        wr(&mut apic, REG_TIMER_INITIAL, 1000);
        assert_eq!(rd(&mut apic, REG_TIMER_INITIAL), 0);
        assert_eq!(rd_at(&mut apic, REG_TIMER_CURRENT, 10), 0);
        assert_eq!(apic.next_event_ns(10), None);
        apic.write_tsc_deadline(30_000, 10_000, 5_000, KHZ);
        assert_eq!(apic.read_tsc_deadline(), 30_000);
        assert_eq!(apic.next_event_ns(5_000), Some(15_000));
        assert_eq!(apic.pending_vector(14_999), None);
        assert_eq!(apic.pending_vector(15_000), Some(0x40));
        assert_eq!(apic.read_tsc_deadline(), 0, "fired: disarmed and cleared");
        assert_eq!(apic.next_event_ns(15_000), None);
        apic.acknowledge(15_000);
        apic.eoi();
        assert_eq!(apic.pending_vector(100_000), None);
        // Writing 0 disarms.
        apic.write_tsc_deadline(1_000_000, 0, 0, KHZ);
        apic.write_tsc_deadline(0, 0, 0, KHZ);
        assert_eq!(apic.next_event_ns(0), None);
        assert_eq!(apic.pending_vector(10_000_000), None);
        // A deadline already passed fires at once; part of a nanosecond rounds up.
        apic.write_tsc_deadline(5, 1000, 20_000_000, KHZ);
        assert_eq!(apic.next_event_ns(20_000_000), Some(20_000_000));
        assert_eq!(apic.acknowledge(20_000_000), Some(0x40));
        apic.eoi();
        apic.write_tsc_deadline(1001, 1000, 0, 3_000_000);
        assert_eq!(apic.next_event_ns(0), Some(1));
        // tsc_khz 0 is taken as 1 GHz.
        apic.write_tsc_deadline(1500, 1000, 0, 0);
        assert_eq!(apic.next_event_ns(0), Some(500));
        // A mode change disarms and clears the MSR.
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        wr(&mut apic, REG_LVT_TIMER, 0x4_0040);
        assert_eq!(apic.read_tsc_deadline(), 0);
        assert_eq!(apic.next_event_ns(0), None);
        // Masked: the deadline passes without an interrupt but still disarms.
        wr(&mut apic, REG_LVT_TIMER, 0x5_0040);
        apic.write_tsc_deadline(2000, 1000, 0, 1_000_000);
        assert_eq!(apic.next_event_ns(0), None);
        assert_eq!(apic.pending_vector(1000), None);
        assert_eq!(apic.read_tsc_deadline(), 0);
        // Huge deadlines saturate.
        wr(&mut apic, REG_LVT_TIMER, 0x4_0040);
        apic.write_tsc_deadline(u64::MAX, 0, u64::MAX - 1, 1);
        assert_eq!(apic.next_event_ns(u64::MAX - 1), Some(u64::MAX));
    }

    #[test]
    fn apic_base_msr() {
        let mut apic = enabled(2);
        assert_eq!(apic.read_base_msr(), 0xfee0_0800);
        assert_eq!(apic.write_base_msr(0xfee0_0800), Ok(()));
        assert_eq!(apic.write_base_msr(0xfee0_0900), Ok(()));
        assert_eq!(
            apic.read_base_msr(),
            0xfee0_0800,
            "the BSP bit is read-only"
        );
        assert_eq!(apic.write_base_msr(0xfee0_0c00), Err(ApicBaseError::X2Apic));
        assert_eq!(
            apic.write_base_msr(0xfec0_0800),
            Err(ApicBaseError::BaseMoved { base: 0xfec0_0000 })
        );
        assert_eq!(
            apic.write_base_msr(0x1_fee0_0800),
            Err(ApicBaseError::BaseMoved {
                base: 0x1_fee0_0000
            })
        );
        for value in [0xfee0_0801, 0xfee0_0880, 0xfee0_0a00] {
            assert_eq!(
                apic.write_base_msr(value),
                Err(ApicBaseError::Reserved { value })
            );
        }
        assert!(apic.is_hardware_enabled(), "refused writes change nothing");
        assert!(!std::format!("{}", ApicBaseError::X2Apic).is_empty());

        // Configure, then disable globally.
        wr(&mut apic, REG_ID, 0x0900_0000);
        wr(&mut apic, REG_TPR, 0x20);
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        wr(&mut apic, REG_TIMER_INITIAL, 5000);
        apic.deliver(0x70);
        assert_eq!(apic.write_base_msr(0xfee0_0000), Ok(()));
        assert!(!apic.is_hardware_enabled() && !apic.is_software_enabled());
        assert_eq!(apic.read_base_msr(), 0xfee0_0000);
        assert_eq!(
            apic.mmio_read(REG_ID, 4, 0),
            None,
            "the page does not answer"
        );
        assert_eq!(apic.mmio_read(REG_VERSION, 1, 0), None);
        assert_eq!(wr(&mut apic, REG_ICR_LOW, 0x4041), None);
        assert!(!apic.deliver(0x80));
        assert_eq!(apic.pending_vector(1_000_000), None);
        assert_eq!(apic.next_event_ns(0), None);
        // Enabled again: power-up state, ID kept.
        assert_eq!(apic.write_base_msr(0xfee0_0800), Ok(()));
        assert_eq!(rd(&mut apic, REG_ID), 0x0900_0000);
        assert_eq!(rd(&mut apic, REG_SVR), 0xff);
        assert_eq!(rd(&mut apic, REG_TPR), 0);
        assert_eq!(rd(&mut apic, REG_LVT_TIMER), 0x1_0000);
        assert_eq!(rd(&mut apic, REG_TIMER_INITIAL), 0);
        assert_eq!(rd(&mut apic, REG_IRR + 0x30), 0);
        assert_eq!(apic.pending_vector(0), None);
    }

    #[test]
    fn icr_writes_decode_to_ipis() {
        let mut apic = enabled(0);
        assert_eq!(wr(&mut apic, REG_ICR_HIGH, 0x0500_00ff), None);
        assert_eq!(rd(&mut apic, REG_ICR_HIGH), 0x0500_0000);
        let ipi = wr(&mut apic, REG_ICR_LOW, 0x0000_5031).unwrap();
        assert_eq!(ipi, fixed(0x31, 5));
        assert_eq!(
            rd(&mut apic, REG_ICR_LOW),
            0x4031,
            "delivery status reads 0"
        );
        let modes = [
            (0x0100, DeliveryMode::LowestPriority),
            (0x0200, DeliveryMode::Smi),
            (0x0300, DeliveryMode::Reserved(3)),
            (0x0400, DeliveryMode::Nmi),
            (0xc500, DeliveryMode::Init),
            (0x4500, DeliveryMode::Init),
            (0x0500, DeliveryMode::Init),
            (0x8500, DeliveryMode::InitDeassert),
            (0x0600, DeliveryMode::StartUp),
            (0x0700, DeliveryMode::Reserved(7)),
        ];
        for (low, mode) in modes {
            let ipi = Ipi::from_icr(low | 0x20, 0);
            assert_eq!(ipi.mode, mode, "{low:#x}");
            assert_eq!(ipi.vector, 0x20);
        }
        let logical = Ipi::from_icr(0x0841, 0x0300_0000);
        assert_eq!(logical.destination_mode, DestinationMode::Logical);
        assert_eq!(logical.destination, 3);
        let shorthands = [
            (0x0_0000, Shorthand::None),
            (0x4_0000, Shorthand::ToSelf),
            (0x8_0000, Shorthand::AllIncludingSelf),
            (0xc_0000, Shorthand::AllExcludingSelf),
        ];
        for (bits, shorthand) in shorthands {
            assert_eq!(Ipi::from_icr(bits | 0x41, 0).shorthand, shorthand);
        }
        // Only the defined bits are kept; the vector arrives intact.
        let ipi = wr(&mut apic, REG_ICR_LOW, 0xfffc_26ab).unwrap();
        assert_eq!(ipi.mode, DeliveryMode::StartUp);
        assert_eq!(ipi.vector, 0xab);
        assert_eq!(ipi.shorthand, Shorthand::AllExcludingSelf);
        assert_eq!(rd(&mut apic, REG_ICR_LOW), 0x000c_06ab);
    }

    #[test]
    fn fixed_ipis_reach_their_physical_destinations() {
        let mut apics = vm(4);
        assert_eq!(route(&mut apics, 0, &fixed(0x41, 2), 0), 0b0100);
        assert_eq!(requested(&apics, 0x41), 0b0100);
        assert_eq!(route(&mut apics, 1, &fixed(0x42, BROADCAST), 0), 0b1111);
        assert_eq!(requested(&apics, 0x42), 0b1111);
        assert_eq!(route(&mut apics, 0, &fixed(0x43, 9), 0), 0);
        assert_eq!(requested(&apics, 0x43), 0);
        // The ID register decides, not the index.
        wr(&mut apics[3], REG_ID, 0x0900_0000);
        assert_eq!(route(&mut apics, 0, &fixed(0x44, 9), 0), 0b1000);
        // A software-disabled APIC takes no fixed interrupt and is not woken.
        wr(&mut apics[1], REG_SVR, 0xff);
        assert_eq!(route(&mut apics, 0, &fixed(0x45, BROADCAST), 0), 0b1101);
        // A globally disabled one receives nothing at all.
        apics[2].write_base_msr(0xfee0_0000).unwrap();
        let nmi = with_mode(fixed(0, BROADCAST), DeliveryMode::Nmi);
        assert_eq!(route(&mut apics, 0, &nmi, 0), 0b1011);
        assert!(!apics[2].is_nmi_pending());
    }

    #[test]
    fn logical_destinations_in_flat_and_cluster_models() {
        let mut apics = vm(4);
        for (index, apic) in apics.iter_mut().enumerate() {
            wr(apic, REG_LDR, 1 << (24 + index));
        }
        let logical = |vector, destination| Ipi {
            destination_mode: DestinationMode::Logical,
            ..fixed(vector, destination)
        };
        assert_eq!(route(&mut apics, 0, &logical(0x50, 0b0110), 0), 0b0110);
        assert_eq!(requested(&apics, 0x50), 0b0110);
        assert_eq!(route(&mut apics, 0, &logical(0x51, 0b1_0000), 0), 0);
        assert_eq!(route(&mut apics, 0, &logical(0x52, BROADCAST), 0), 0b1111);
        // Physical destination 1 is APIC ID 1, not logical bit 0.
        assert_eq!(route(&mut apics, 0, &fixed(0x53, 1), 0), 0b0010);
        // Cluster model: cluster in the high nibble, member mask in the low.
        for (apic, ldr) in apics.iter_mut().zip([0x11, 0x12, 0x21, 0x22]) {
            wr(apic, REG_DFR, 0x0fff_ffff);
            wr(apic, REG_LDR, ldr << 24);
        }
        assert_eq!(route(&mut apics, 0, &logical(0x54, 0x13), 0), 0b0011);
        assert_eq!(route(&mut apics, 0, &logical(0x55, 0x22), 0), 0b1000);
        assert_eq!(route(&mut apics, 0, &logical(0x56, 0x31), 0), 0);
        assert_eq!(
            route(&mut apics, 0, &logical(0x57, 0x20), 0),
            0,
            "empty member mask"
        );
        // A reserved DFR model matches nothing but broadcast.
        wr(&mut apics[0], REG_DFR, 0x5fff_ffff);
        assert_eq!(route(&mut apics, 1, &logical(0x58, 0x11), 0), 0);
        assert_eq!(route(&mut apics, 1, &logical(0x59, BROADCAST), 0), 0b1111);
    }

    #[test]
    fn shorthands_pick_the_sender_or_everyone() {
        let mut apics = vm(4);
        let with = |shorthand, vector| Ipi {
            shorthand,
            ..fixed(vector, 3)
        };
        assert_eq!(
            route(&mut apics, 2, &with(Shorthand::ToSelf, 0x60), 0),
            0b0100
        );
        assert_eq!(
            route(&mut apics, 2, &with(Shorthand::AllIncludingSelf, 0x61), 0),
            0b1111
        );
        assert_eq!(
            route(&mut apics, 1, &with(Shorthand::AllExcludingSelf, 0x62), 0),
            0b1101
        );
        assert_eq!(requested(&apics, 0x62), 0b1101);
        // "Self" is for fixed interrupts only.
        let self_nmi = with_mode(with(Shorthand::ToSelf, 0), DeliveryMode::Nmi);
        assert_eq!(route(&mut apics, 2, &self_nmi, 0), 0);
        // A sender outside the VM: nobody is "self".
        assert_eq!(route(&mut apics, 100, &with(Shorthand::ToSelf, 0x63), 0), 0);
        assert_eq!(
            route(&mut apics, 100, &with(Shorthand::AllExcludingSelf, 0x64), 0),
            0b1111
        );
    }

    #[test]
    fn lowest_priority_goes_to_one_apic() {
        let mut apics = vm(4);
        for (apic, tpr) in apics.iter_mut().zip([0x30, 0x20, 0x10, 0x10]) {
            wr(apic, REG_TPR, tpr);
        }
        let ipi = with_mode(fixed(0x70, BROADCAST), DeliveryMode::LowestPriority);
        assert_eq!(route(&mut apics, 0, &ipi, 0), 0b0100);
        assert_eq!(requested(&apics, 0x70), 0b0100);
        wr(&mut apics[2], REG_SVR, 0xff);
        assert_eq!(
            route(&mut apics, 0, &ipi, 0),
            0b1000,
            "skips a disabled APIC"
        );
        let only_first_two = with_mode(
            Ipi {
                destination_mode: DestinationMode::Logical,
                ..fixed(0x71, 0b0011)
            },
            DeliveryMode::LowestPriority,
        );
        for (index, apic) in apics.iter_mut().enumerate() {
            wr(apic, REG_LDR, 1 << (24 + index));
        }
        assert_eq!(route(&mut apics, 0, &only_first_two, 0), 0b0010);
        assert_eq!(
            route(
                &mut apics,
                0,
                &with_mode(fixed(0x72, 7), DeliveryMode::LowestPriority),
                0
            ),
            0
        );
    }

    #[test]
    fn nmi_smi_and_reserved_modes() {
        let mut apics = vm(3);
        let nmi = with_mode(fixed(0, 1), DeliveryMode::Nmi);
        wr(&mut apics[1], REG_SVR, 0xff); // software-disabled still takes NMIs
        assert_eq!(route(&mut apics, 0, &nmi, 0), 0b010);
        assert!(apics[1].is_nmi_pending());
        assert!(apics[1].take_nmi());
        assert!(!apics[1].take_nmi());
        assert!(!apics[0].take_nmi());
        for mode in [
            DeliveryMode::Smi,
            DeliveryMode::Reserved(3),
            DeliveryMode::Reserved(7),
            DeliveryMode::InitDeassert,
        ] {
            assert_eq!(
                route(&mut apics, 0, &with_mode(fixed(0x40, BROADCAST), mode), 0),
                0
            );
        }
        assert_eq!(requested(&apics, 0x40), 0);
        assert!(!apics[2].take_init());
    }

    #[test]
    fn init_resets_the_apic_and_waits_for_sipi() {
        let mut apics = vm(3);
        let target = &mut apics[2];
        target.write_base_msr(0xfee0_0800).unwrap();
        wr(target, REG_ID, 0x0200_0000);
        wr(target, REG_TPR, 0x30);
        wr(target, REG_LDR, 0x0400_0000);
        wr(target, REG_DFR, 0x0fff_ffff);
        wr(target, REG_LVT_TIMER, 0x2_0040);
        wr(target, REG_TIMER_INITIAL, 500_000);
        target.deliver(0x90);
        target.acknowledge(0);
        target.deliver(0x91);
        target.take_startup(); // clear anything from power-up
        let nmi = with_mode(fixed(0, 2), DeliveryMode::Nmi);
        route(&mut apics, 0, &nmi, 0);
        let init = with_mode(fixed(0, 2), DeliveryMode::Init);
        assert_eq!(route(&mut apics, 0, &init, 0), 0b100);
        let target = &mut apics[2];
        assert!(target.is_waiting_for_sipi());
        assert!(target.take_init());
        assert!(!target.take_init());
        assert!(!target.take_nmi(), "INIT drops a pending NMI");
        assert_eq!(rd(target, REG_ID), 0x0200_0000, "ID kept");
        assert_eq!(target.read_base_msr(), 0xfee0_0800, "APIC base kept");
        assert_eq!(rd(target, REG_SVR), 0xff);
        assert_eq!(rd(target, REG_TPR), 0);
        assert_eq!(rd(target, REG_LDR), 0);
        assert_eq!(rd(target, REG_DFR), 0xffff_ffff);
        assert_eq!(rd(target, REG_LVT_TIMER), 0x1_0000);
        assert_eq!(rd(target, REG_TIMER_INITIAL), 0);
        assert_eq!(target.next_event_ns(0), None);
        assert!(!target.is_in_service(0x90) && !target.is_requested(0x91));
        assert_eq!(target.pending_vector(10_000_000), None);
        // The others were not touched.
        assert!(!apics[1].take_init() && !apics[0].take_init());
        assert!(!apics[0].is_waiting_for_sipi());
    }

    #[test]
    fn startup_is_taken_once_and_only_while_waiting() {
        let mut apics = vm(3);
        let sipi = |vector| with_mode(fixed(vector, 1), DeliveryMode::StartUp);
        assert!(apics[1].is_waiting_for_sipi(), "APs wait from power-up");
        assert_eq!(route(&mut apics, 0, &sipi(0x9a), 0), 0b010);
        assert!(!apics[1].is_waiting_for_sipi());
        assert_eq!(apics[1].take_startup(), Some(0x9a));
        assert_eq!(apics[1].take_startup(), None);
        assert_eq!(
            route(&mut apics, 0, &sipi(0x9b), 0),
            0,
            "second SIPI ignored"
        );
        assert_eq!(apics[1].take_startup(), None);
        // To the running BSP: ignored.
        let to_bsp = with_mode(fixed(0x10, 0), DeliveryMode::StartUp);
        assert_eq!(route(&mut apics, 1, &to_bsp, 0), 0);
        assert_eq!(apics[0].take_startup(), None);
        // INIT, then SIPI again.
        let init = with_mode(fixed(0, 1), DeliveryMode::Init);
        route(&mut apics, 0, &init, 0);
        assert_eq!(route(&mut apics, 0, &sipi(0x08), 0), 0b010);
        assert_eq!(apics[1].take_startup(), Some(0x08));
        // Broadcast to all but self wakes every waiting AP.
        let all = Ipi {
            shorthand: Shorthand::AllExcludingSelf,
            ..with_mode(fixed(0, 0), DeliveryMode::Init)
        };
        assert_eq!(route(&mut apics, 0, &all, 0), 0b110);
        let all_sipi = Ipi {
            mode: DeliveryMode::StartUp,
            vector: 0x20,
            ..all
        };
        assert_eq!(route(&mut apics, 0, &all_sipi, 0), 0b110);
        assert_eq!(apics[2].take_startup(), Some(0x20));
    }

    #[test]
    fn linux_wakes_an_ap_with_init_sipi_sipi() {
        let mut apics = LocalApic::for_vm(2);
        // What Linux's wakeup_secondary_cpu_via_init does for each message.
        fn send(apics: &mut [LocalApic], high: u32, low: u32) -> u64 {
            wr(&mut apics[0], REG_ESR, 0);
            wr(&mut apics[0], REG_ICR_HIGH, high);
            let sent = wr(&mut apics[0], REG_ICR_LOW, low);
            assert_eq!(
                rd(&mut apics[0], REG_ICR_LOW) & (1 << 12),
                0,
                "idle at once"
            );
            sent.map_or(0, |ipi| route(apics, 0, &ipi, 0))
        }
        assert_eq!(send(&mut apics, 1 << 24, 0xc500), 0b10, "INIT assert");
        assert_eq!(send(&mut apics, 1 << 24, 0x8500), 0, "INIT de-assert");
        assert_eq!(send(&mut apics, 1 << 24, 0x0600 | 0x9a), 0b10, "first SIPI");
        assert_eq!(send(&mut apics, 1 << 24, 0x0600 | 0x9a), 0, "second SIPI");
        assert_eq!(esr(&mut apics[0]), 0);
        assert!(apics[1].take_init());
        assert_eq!(apics[1].take_startup(), Some(0x9a));
        assert!(!apics[1].is_waiting_for_sipi());
        // Then the AP enables its APIC and gets a reschedule IPI.
        wr(&mut apics[1], REG_SVR, 0x1ff);
        assert_eq!(send(&mut apics, 1 << 24, 0x40fd), 0b10);
        assert_eq!(apics[1].acknowledge(0), Some(0xfd));
    }

    #[test]
    fn routing_covers_at_most_64_apics() {
        let mut apics: Vec<LocalApic> = (0..70u8)
            .map(|index| {
                let mut apic = LocalApic::new(index);
                wr(&mut apic, REG_SVR, 0x1ff);
                apic
            })
            .collect();
        assert_eq!(route(&mut apics, 0, &fixed(0x40, BROADCAST), 0), u64::MAX);
        assert!(!apics[65].is_requested(0x40));
        assert_eq!(route(&mut apics, 0, &fixed(0x41, 66), 0), 0);
        assert_eq!(route(&mut apics, 0, &fixed(0x42, 63), 0), 1 << 63);
        assert_eq!(route(&mut [], 0, &fixed(0x42, BROADCAST), 0), 0);
    }

    #[test]
    fn next_event_needs_an_unmasked_timer_on_an_enabled_apic() {
        let mut apic = enabled(0);
        wr(&mut apic, REG_TIMER_DIVIDE, 0b1011);
        wr(&mut apic, REG_LVT_TIMER, 0x40);
        wr_at(&mut apic, REG_TIMER_INITIAL, 1000, 0);
        assert_eq!(apic.next_event_ns(0), Some(1000));
        assert_eq!(apic.next_event_ns(5000), Some(5000), "overdue: now");
        let mut disabled = apic.clone();
        wr(&mut disabled, REG_SVR, 0xff);
        assert_eq!(disabled.next_event_ns(0), None);
        let mut masked = apic.clone();
        wr(&mut masked, REG_LVT_TIMER, 0x1_0040);
        assert_eq!(masked.next_event_ns(0), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(usize, u64, u8, u64),
        Read(usize, u64, u8),
        Deliver(usize, u8),
        Acknowledge(usize),
        Eoi(usize),
        ApicBase(usize, u64),
        TscDeadline(usize, u64, u64),
        Ipi(usize, u32, u32),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let apic = 0usize..3;
        let offset = prop_oneof![
            (0u64..0x40).prop_map(|slot| slot * 16),
            0u64..0x1100,
            any::<u64>(),
        ];
        let size = prop_oneof![Just(4u8), Just(1u8), Just(2u8), Just(8u8), any::<u8>()];
        let value = prop_oneof![
            any::<u64>(),
            (0u64..0x100).prop_map(|v| v | 0x100),
            (0u64..0x8_0000),
            0u64..2000,
        ];
        let base = prop_oneof![Just(0xfee0_0800u64), Just(0xfee0_0000u64), any::<u64>()];
        prop_oneof![
            4 => (apic.clone(), offset.clone(), size.clone(), value)
                .prop_map(|(a, o, s, v)| Op::Write(a, o, s, v)),
            2 => (apic.clone(), offset, size).prop_map(|(a, o, s)| Op::Read(a, o, s)),
            2 => (apic.clone(), any::<u8>()).prop_map(|(a, v)| Op::Deliver(a, v)),
            2 => apic.clone().prop_map(Op::Acknowledge),
            1 => apic.clone().prop_map(Op::Eoi),
            1 => (apic.clone(), base).prop_map(|(a, v)| Op::ApicBase(a, v)),
            1 => (apic.clone(), any::<u64>(), any::<u64>())
                .prop_map(|(a, d, k)| Op::TscDeadline(a, d, k)),
            2 => (apic, any::<u32>(), any::<u32>()).prop_map(|(a, l, h)| Op::Ipi(a, l, h)),
            2 => prop_oneof![0u64..2000, any::<u64>()].prop_map(Op::Advance),
        ]
    }

    fn check_invariants(apic: &LocalApic, now_ns: u64) {
        for vector in 0..FIRST_LEGAL_VECTOR {
            assert!(!apic.is_requested(vector), "IRR holds illegal {vector}");
            assert!(!apic.is_in_service(vector), "ISR holds illegal {vector}");
        }
        assert!(apic.ppr() >= apic.tpr());
        assert!(apic.ppr() >> 4 >= apic.tpr() >> 4);
        if let Some(at) = apic.next_event_ns(now_ns) {
            assert!(at >= now_ns);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn hostile_sequences_never_panic_and_keep_the_invariants(
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let mut apics = LocalApic::for_vm(3);
            let mut now: u64 = 0;
            for op in ops {
                match op {
                    Op::Write(index, offset, size, value) => {
                        if let Some(ipi) = apics[index].mmio_write(offset, size, value, now) {
                            let woken = route(&mut apics, index, &ipi, now);
                            prop_assert_eq!(woken & !0b111, 0);
                        }
                    }
                    Op::Read(index, offset, size) => {
                        let value = apics[index].mmio_read(offset, size, now);
                        match size {
                            1 | 2 | 4 => prop_assert!(
                                value.is_none_or(|value| value < 1 << (8 * u32::from(size)))
                            ),
                            8 => {}
                            _ => prop_assert_eq!(value, None),
                        }
                    }
                    Op::Deliver(index, vector) => {
                        apics[index].deliver(vector);
                    }
                    Op::Acknowledge(index) => {
                        let apic = &mut apics[index];
                        let ppr = apic.ppr();
                        if let Some(vector) = apic.acknowledge(now) {
                            prop_assert!(vector >> 4 > ppr >> 4, "{vector:#x} vs PPR {ppr:#x}");
                            prop_assert!(apic.is_in_service(vector));
                            prop_assert!(!apic.is_requested(vector));
                        }
                    }
                    Op::Eoi(index) => apics[index].eoi(),
                    Op::ApicBase(index, value) => {
                        let before = apics[index].read_base_msr();
                        if apics[index].write_base_msr(value).is_err() {
                            prop_assert_eq!(apics[index].read_base_msr(), before);
                        }
                    }
                    Op::TscDeadline(index, deadline, khz) => {
                        apics[index].write_tsc_deadline(deadline, now / 2, now, khz);
                        apics[index].read_tsc_deadline();
                    }
                    Op::Ipi(index, low, high) => {
                        let woken = route(&mut apics, index, &Ipi::from_icr(low, high), now);
                        prop_assert_eq!(woken & !0b111, 0);
                    }
                    Op::Advance(delta) => now = now.saturating_add(delta),
                }
                for apic in &mut apics {
                    check_invariants(apic, now);
                    apic.pending_vector(now);
                    apic.take_nmi();
                    apic.take_startup();
                    apic.take_init();
                    check_invariants(apic, now);
                }
            }
        }
    }
}
