//! Why a guest exited: the EXITCODE values of APM vol. 2 appendix C (table C-1) and the
//! EXITINFO1 formats of the exits a monitor handles most (IOIO, MSR, nested page fault).
//!
//! Decoding is total: any 64-bit EXITCODE gives an [`SvmExitCode`] (unknown ones are kept
//! as [`SvmExitCode::Unknown`]), and the EXITINFO decoders return `None` rather than
//! guess when the hardware's encoding rules are broken.

use core::fmt;

/// An SVM exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvmExitCode {
    /// 0x00–0x0f: read of CRn.
    CrRead(u8),
    /// 0x10–0x1f: write of CRn.
    CrWrite(u8),
    /// 0x20–0x2f: read of DRn.
    DrRead(u8),
    /// 0x30–0x3f: write of DRn.
    DrWrite(u8),
    /// 0x40–0x5f: exception vector n (EXITINFO1 = error code, EXITINFO2 = CR2 for #PF).
    Exception(u8),
    /// 0x60: physical interrupt.
    Intr,
    /// 0x61: physical NMI.
    Nmi,
    /// 0x62: physical SMI.
    Smi,
    /// 0x63: physical INIT.
    Init,
    /// 0x64: virtual interrupt window.
    Vintr,
    /// 0x65: selective CR0 write.
    Cr0SelectiveWrite,
    /// 0x66: SIDT.
    IdtrRead,
    /// 0x67: SGDT.
    GdtrRead,
    /// 0x68: SLDT.
    LdtrRead,
    /// 0x69: STR.
    TrRead,
    /// 0x6a: LIDT.
    IdtrWrite,
    /// 0x6b: LGDT.
    GdtrWrite,
    /// 0x6c: LLDT.
    LdtrWrite,
    /// 0x6d: LTR.
    TrWrite,
    /// 0x6e: RDTSC.
    Rdtsc,
    /// 0x6f: RDPMC.
    Rdpmc,
    /// 0x70: PUSHF.
    Pushf,
    /// 0x71: POPF.
    Popf,
    /// 0x72: CPUID.
    Cpuid,
    /// 0x73: RSM.
    Rsm,
    /// 0x74: IRET.
    Iret,
    /// 0x75: INTn.
    Swint,
    /// 0x76: INVD.
    Invd,
    /// 0x77: PAUSE.
    Pause,
    /// 0x78: HLT.
    Hlt,
    /// 0x79: INVLPG.
    Invlpg,
    /// 0x7a: INVLPGA.
    Invlpga,
    /// 0x7b: IN/OUT/INS/OUTS (EXITINFO1: [`IoioInfo`], EXITINFO2: next RIP).
    Ioio,
    /// 0x7c: RDMSR (EXITINFO1 = 0) or WRMSR (EXITINFO1 = 1).
    Msr,
    /// 0x7d: task switch.
    TaskSwitch,
    /// 0x7e: FERR_FREEZE.
    FerrFreeze,
    /// 0x7f: shutdown (triple fault).
    Shutdown,
    /// 0x80: VMRUN.
    Vmrun,
    /// 0x81: VMMCALL.
    Vmmcall,
    /// 0x82: VMLOAD.
    Vmload,
    /// 0x83: VMSAVE.
    Vmsave,
    /// 0x84: STGI.
    Stgi,
    /// 0x85: CLGI.
    Clgi,
    /// 0x86: SKINIT.
    Skinit,
    /// 0x87: RDTSCP.
    Rdtscp,
    /// 0x88: ICEBP.
    Icebp,
    /// 0x89: WBINVD/WBNOINVD.
    Wbinvd,
    /// 0x8a: MONITOR/MONITORX.
    Monitor,
    /// 0x8b: MWAIT/MWAITX.
    Mwait,
    /// 0x8c: MWAIT/MWAITX with the monitor armed.
    MwaitConditional,
    /// 0x8d: XSETBV.
    Xsetbv,
    /// 0x8e: RDPRU.
    Rdpru,
    /// 0x8f: EFER write trap.
    EferWriteTrap,
    /// 0x90–0x9f: write trap of CRn.
    CrWriteTrap(u8),
    /// 0xa0: INVLPGB.
    Invlpgb,
    /// 0xa1: illegal INVLPGB.
    InvlpgbIllegal,
    /// 0xa2: INVPCID.
    Invpcid,
    /// 0xa3: MCOMMIT.
    Mcommit,
    /// 0xa4: TLBSYNC.
    Tlbsync,
    /// 0xa5: bus lock.
    BusLock,
    /// 0xa6: HLT with no virtual interrupt pending.
    IdleHlt,
    /// 0x400: nested page fault (EXITINFO1: [`NpfInfo`], EXITINFO2: guest-physical address).
    Npf,
    /// 0x401: AVIC incomplete IPI.
    AvicIncompleteIpi,
    /// 0x402: AVIC access not accelerated.
    AvicNoAccel,
    /// 0x403: VMGEXIT (SEV-ES).
    Vmgexit,
    /// -1: VMRUN refused the VMCB (a consistency check failed).
    Invalid,
    /// -2: the VMSA's BUSY bit was set (SEV-SNP).
    Busy,
    /// -3: the sibling thread is not idle.
    IdleRequired,
    /// -4: invalid PMC state.
    InvalidPmc,
    /// Anything else, kept as read.
    Unknown(u64),
}

impl SvmExitCode {
    /// Decodes an EXITCODE.
    ///
    /// The negative codes are 64-bit values (-1 is `0xffff_ffff_ffff_ffff`), but QEMU's
    /// TCG stores its 32-bit exit code zero-extended, so VMEXIT_INVALID arrives there as
    /// `0x0000_0000_ffff_ffff`; both spellings decode to the same variant.
    pub const fn from_raw(raw: u64) -> Self {
        let high = raw >> 32;
        if high == 0 || high == 0xffff_ffff {
            match raw as u32 as i32 {
                -1 => return Self::Invalid,
                -2 => return Self::Busy,
                -3 => return Self::IdleRequired,
                -4 => return Self::InvalidPmc,
                _ => {}
            }
        }
        if high != 0 {
            return Self::Unknown(raw);
        }
        let low = raw as u32;
        let n = (low & 0xf) as u8;
        match low {
            0x00..=0x0f => Self::CrRead(n),
            0x10..=0x1f => Self::CrWrite(n),
            0x20..=0x2f => Self::DrRead(n),
            0x30..=0x3f => Self::DrWrite(n),
            0x40..=0x5f => Self::Exception((low - 0x40) as u8),
            0x60 => Self::Intr,
            0x61 => Self::Nmi,
            0x62 => Self::Smi,
            0x63 => Self::Init,
            0x64 => Self::Vintr,
            0x65 => Self::Cr0SelectiveWrite,
            0x66 => Self::IdtrRead,
            0x67 => Self::GdtrRead,
            0x68 => Self::LdtrRead,
            0x69 => Self::TrRead,
            0x6a => Self::IdtrWrite,
            0x6b => Self::GdtrWrite,
            0x6c => Self::LdtrWrite,
            0x6d => Self::TrWrite,
            0x6e => Self::Rdtsc,
            0x6f => Self::Rdpmc,
            0x70 => Self::Pushf,
            0x71 => Self::Popf,
            0x72 => Self::Cpuid,
            0x73 => Self::Rsm,
            0x74 => Self::Iret,
            0x75 => Self::Swint,
            0x76 => Self::Invd,
            0x77 => Self::Pause,
            0x78 => Self::Hlt,
            0x79 => Self::Invlpg,
            0x7a => Self::Invlpga,
            0x7b => Self::Ioio,
            0x7c => Self::Msr,
            0x7d => Self::TaskSwitch,
            0x7e => Self::FerrFreeze,
            0x7f => Self::Shutdown,
            0x80 => Self::Vmrun,
            0x81 => Self::Vmmcall,
            0x82 => Self::Vmload,
            0x83 => Self::Vmsave,
            0x84 => Self::Stgi,
            0x85 => Self::Clgi,
            0x86 => Self::Skinit,
            0x87 => Self::Rdtscp,
            0x88 => Self::Icebp,
            0x89 => Self::Wbinvd,
            0x8a => Self::Monitor,
            0x8b => Self::Mwait,
            0x8c => Self::MwaitConditional,
            0x8d => Self::Xsetbv,
            0x8e => Self::Rdpru,
            0x8f => Self::EferWriteTrap,
            0x90..=0x9f => Self::CrWriteTrap(n),
            0xa0 => Self::Invlpgb,
            0xa1 => Self::InvlpgbIllegal,
            0xa2 => Self::Invpcid,
            0xa3 => Self::Mcommit,
            0xa4 => Self::Tlbsync,
            0xa5 => Self::BusLock,
            0xa6 => Self::IdleHlt,
            0x400 => Self::Npf,
            0x401 => Self::AvicIncompleteIpi,
            0x402 => Self::AvicNoAccel,
            0x403 => Self::Vmgexit,
            _ => Self::Unknown(raw),
        }
    }

    /// The EXITCODE the hardware writes for this exit (negative codes as 64-bit values;
    /// register numbers and vectors are masked to their field).
    pub const fn to_raw(self) -> u64 {
        match self {
            Self::CrRead(n) => (n & 0xf) as u64,
            Self::CrWrite(n) => 0x10 | (n & 0xf) as u64,
            Self::DrRead(n) => 0x20 | (n & 0xf) as u64,
            Self::DrWrite(n) => 0x30 | (n & 0xf) as u64,
            Self::Exception(v) => 0x40 + (v & 0x1f) as u64,
            Self::Intr => 0x60,
            Self::Nmi => 0x61,
            Self::Smi => 0x62,
            Self::Init => 0x63,
            Self::Vintr => 0x64,
            Self::Cr0SelectiveWrite => 0x65,
            Self::IdtrRead => 0x66,
            Self::GdtrRead => 0x67,
            Self::LdtrRead => 0x68,
            Self::TrRead => 0x69,
            Self::IdtrWrite => 0x6a,
            Self::GdtrWrite => 0x6b,
            Self::LdtrWrite => 0x6c,
            Self::TrWrite => 0x6d,
            Self::Rdtsc => 0x6e,
            Self::Rdpmc => 0x6f,
            Self::Pushf => 0x70,
            Self::Popf => 0x71,
            Self::Cpuid => 0x72,
            Self::Rsm => 0x73,
            Self::Iret => 0x74,
            Self::Swint => 0x75,
            Self::Invd => 0x76,
            Self::Pause => 0x77,
            Self::Hlt => 0x78,
            Self::Invlpg => 0x79,
            Self::Invlpga => 0x7a,
            Self::Ioio => 0x7b,
            Self::Msr => 0x7c,
            Self::TaskSwitch => 0x7d,
            Self::FerrFreeze => 0x7e,
            Self::Shutdown => 0x7f,
            Self::Vmrun => 0x80,
            Self::Vmmcall => 0x81,
            Self::Vmload => 0x82,
            Self::Vmsave => 0x83,
            Self::Stgi => 0x84,
            Self::Clgi => 0x85,
            Self::Skinit => 0x86,
            Self::Rdtscp => 0x87,
            Self::Icebp => 0x88,
            Self::Wbinvd => 0x89,
            Self::Monitor => 0x8a,
            Self::Mwait => 0x8b,
            Self::MwaitConditional => 0x8c,
            Self::Xsetbv => 0x8d,
            Self::Rdpru => 0x8e,
            Self::EferWriteTrap => 0x8f,
            Self::CrWriteTrap(n) => 0x90 | (n & 0xf) as u64,
            Self::Invlpgb => 0xa0,
            Self::InvlpgbIllegal => 0xa1,
            Self::Invpcid => 0xa2,
            Self::Mcommit => 0xa3,
            Self::Tlbsync => 0xa4,
            Self::BusLock => 0xa5,
            Self::IdleHlt => 0xa6,
            Self::Npf => 0x400,
            Self::AvicIncompleteIpi => 0x401,
            Self::AvicNoAccel => 0x402,
            Self::Vmgexit => 0x403,
            Self::Invalid => -1i64 as u64,
            Self::Busy => -2i64 as u64,
            Self::IdleRequired => -3i64 as u64,
            Self::InvalidPmc => -4i64 as u64,
            Self::Unknown(raw) => raw,
        }
    }
}

impl fmt::Display for SvmExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unknown(raw) => write!(f, "unknown SVM exit code {raw:#x}"),
            other => write!(f, "{other:?} (SVM exit code {:#x})", other.to_raw()),
        }
    }
}

/// Direction of a port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoDirection {
    /// IN/INS: the guest reads the port.
    In,
    /// OUT/OUTS: the guest writes the port.
    Out,
}

/// Effective address size of a string port instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressSize {
    /// 16-bit.
    Bits16,
    /// 32-bit.
    Bits32,
    /// 64-bit.
    Bits64,
}

/// EXITINFO1 of an IOIO exit (APM vol. 2 §15.10.2, figure 15-2): bit 0 TYPE (1 = IN),
/// bit 2 STR, bit 3 REP, bits 4–6 SZ8/SZ16/SZ32 (one-hot), bits 7–9 A16/A32/A64
/// (one-hot), bits 10–12 the effective segment (decode assists only), bits 16–31 the port.
/// EXITINFO2 holds the RIP of the next instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoioInfo {
    /// The port (the first one, for a multi-byte access).
    pub port: u16,
    /// In or out.
    pub direction: IoDirection,
    /// Access size in bytes: 1, 2 or 4.
    pub size: u8,
    /// INS/OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// The address size; `None` when the CPU did not report one (QEMU's TCG never does).
    pub address_size: Option<AddressSize>,
    /// Bits 10–12: the effective segment of a string instruction (ES=0 … GS=5), valid
    /// only with decode assists.
    pub segment: u8,
}

impl IoioInfo {
    /// Bit 0: IN.
    pub const TYPE_IN: u64 = 1 << 0;
    /// Bit 2: string instruction.
    pub const STRING: u64 = 1 << 2;
    /// Bit 3: REP prefix.
    pub const REP: u64 = 1 << 3;
    /// Bit 4: 8-bit access.
    pub const SIZE8: u64 = 1 << 4;
    /// Bit 5: 16-bit access.
    pub const SIZE16: u64 = 1 << 5;
    /// Bit 6: 32-bit access.
    pub const SIZE32: u64 = 1 << 6;
    /// Bit 7: 16-bit addresses.
    pub const ADDR16: u64 = 1 << 7;
    /// Bit 8: 32-bit addresses.
    pub const ADDR32: u64 = 1 << 8;
    /// Bit 9: 64-bit addresses.
    pub const ADDR64: u64 = 1 << 9;
    /// Bits 10–12: effective segment.
    pub const SEGMENT_SHIFT: u32 = 10;
    /// Bits 16–31: the port.
    pub const PORT_SHIFT: u32 = 16;

    /// Decodes EXITINFO1, `None` unless exactly one size bit is set.
    pub const fn decode(exit_info1: u64) -> Option<Self> {
        let size = match exit_info1 & (Self::SIZE8 | Self::SIZE16 | Self::SIZE32) {
            Self::SIZE8 => 1,
            Self::SIZE16 => 2,
            Self::SIZE32 => 4,
            _ => return None,
        };
        let address_size = match exit_info1 & (Self::ADDR16 | Self::ADDR32 | Self::ADDR64) {
            Self::ADDR16 => Some(AddressSize::Bits16),
            Self::ADDR32 => Some(AddressSize::Bits32),
            Self::ADDR64 => Some(AddressSize::Bits64),
            _ => None,
        };
        Some(Self {
            port: (exit_info1 >> Self::PORT_SHIFT) as u16,
            direction: if exit_info1 & Self::TYPE_IN != 0 {
                IoDirection::In
            } else {
                IoDirection::Out
            },
            size,
            string: exit_info1 & Self::STRING != 0,
            rep: exit_info1 & Self::REP != 0,
            address_size,
            segment: ((exit_info1 >> Self::SEGMENT_SHIFT) & 7) as u8,
        })
    }

    /// Encodes as the CPU would (a size other than 1, 2 or 4 encodes as 4).
    pub const fn encode(self) -> u64 {
        let mut raw = (self.port as u64) << Self::PORT_SHIFT;
        if let IoDirection::In = self.direction {
            raw |= Self::TYPE_IN;
        }
        if self.string {
            raw |= Self::STRING;
        }
        if self.rep {
            raw |= Self::REP;
        }
        raw |= match self.size {
            1 => Self::SIZE8,
            2 => Self::SIZE16,
            _ => Self::SIZE32,
        };
        raw |= match self.address_size {
            None => 0,
            Some(AddressSize::Bits16) => Self::ADDR16,
            Some(AddressSize::Bits32) => Self::ADDR32,
            Some(AddressSize::Bits64) => Self::ADDR64,
        };
        raw | ((self.segment as u64 & 7) << Self::SEGMENT_SHIFT)
    }
}

/// EXITINFO1 of a nested page fault: a page-fault error code plus where in the walk it
/// happened (APM vol. 2 §15.25.6). EXITINFO2 holds the guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NpfInfo {
    /// Bit 0: the nested entry was present (a protection fault, not a missing page).
    pub present: bool,
    /// Bit 1: a write.
    pub write: bool,
    /// Bit 2: a user access (always set for the nested walk's own accesses).
    pub user: bool,
    /// Bit 3: a reserved bit was set in a nested entry (a misconfiguration).
    pub reserved_bit: bool,
    /// Bit 4: an instruction fetch.
    pub fetch: bool,
    /// Bit 6: a shadow-stack access.
    pub shadow_stack: bool,
    /// Bit 32: the fault was on the final guest-physical address of the access.
    pub final_address: bool,
    /// Bit 33: the fault was on a guest page-table access during the guest's walk.
    pub page_table_walk: bool,
    /// The whole EXITINFO1, for bits not decoded here.
    pub raw: u64,
}

impl NpfInfo {
    /// Bit 0.
    pub const PRESENT: u64 = 1 << 0;
    /// Bit 1.
    pub const WRITE: u64 = 1 << 1;
    /// Bit 2.
    pub const USER: u64 = 1 << 2;
    /// Bit 3.
    pub const RESERVED: u64 = 1 << 3;
    /// Bit 4.
    pub const FETCH: u64 = 1 << 4;
    /// Bit 6.
    pub const SHADOW_STACK: u64 = 1 << 6;
    /// Bit 32.
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    /// Bit 33.
    pub const PAGE_TABLE_WALK: u64 = 1 << 33;

    /// Decodes EXITINFO1 (every value decodes).
    pub const fn decode(exit_info1: u64) -> Self {
        Self {
            present: exit_info1 & Self::PRESENT != 0,
            write: exit_info1 & Self::WRITE != 0,
            user: exit_info1 & Self::USER != 0,
            reserved_bit: exit_info1 & Self::RESERVED != 0,
            fetch: exit_info1 & Self::FETCH != 0,
            shadow_stack: exit_info1 & Self::SHADOW_STACK != 0,
            final_address: exit_info1 & Self::FINAL_ADDRESS != 0,
            page_table_walk: exit_info1 & Self::PAGE_TABLE_WALK != 0,
            raw: exit_info1,
        }
    }
}

/// Read or write, for MSR exits and the MSR permission map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrAccess {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

impl MsrAccess {
    /// EXITINFO1 of an MSR exit: 0 for RDMSR, 1 for WRMSR, `None` otherwise.
    pub const fn from_exit_info1(exit_info1: u64) -> Option<Self> {
        match exit_info1 {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn named_codes_have_the_documented_values() {
        let cases = [
            (SvmExitCode::CrRead(0), 0x00),
            (SvmExitCode::CrWrite(3), 0x13),
            (SvmExitCode::DrRead(7), 0x27),
            (SvmExitCode::DrWrite(6), 0x36),
            (SvmExitCode::Exception(0), 0x40),
            (SvmExitCode::Exception(14), 0x4e),
            (SvmExitCode::Exception(31), 0x5f),
            (SvmExitCode::Intr, 0x60),
            (SvmExitCode::Nmi, 0x61),
            (SvmExitCode::Vintr, 0x64),
            (SvmExitCode::Cpuid, 0x72),
            (SvmExitCode::Swint, 0x75),
            (SvmExitCode::Hlt, 0x78),
            (SvmExitCode::Ioio, 0x7b),
            (SvmExitCode::Msr, 0x7c),
            (SvmExitCode::Shutdown, 0x7f),
            (SvmExitCode::Vmrun, 0x80),
            (SvmExitCode::Vmmcall, 0x81),
            (SvmExitCode::Xsetbv, 0x8d),
            (SvmExitCode::EferWriteTrap, 0x8f),
            (SvmExitCode::CrWriteTrap(8), 0x98),
            (SvmExitCode::Invpcid, 0xa2),
            (SvmExitCode::IdleHlt, 0xa6),
            (SvmExitCode::Npf, 0x400),
            (SvmExitCode::Vmgexit, 0x403),
            (SvmExitCode::Invalid, 0xffff_ffff_ffff_ffff),
            (SvmExitCode::Busy, 0xffff_ffff_ffff_fffe),
            (SvmExitCode::IdleRequired, 0xffff_ffff_ffff_fffd),
            (SvmExitCode::InvalidPmc, 0xffff_ffff_ffff_fffc),
        ];
        for (code, raw) in cases {
            assert_eq!(code.to_raw(), raw, "{code:?}");
            assert_eq!(SvmExitCode::from_raw(raw), code, "{raw:#x}");
        }
    }

    #[test]
    fn every_code_below_0x500_round_trips() {
        let mut known = 0;
        for raw in 0..0x500u64 {
            let code = SvmExitCode::from_raw(raw);
            assert_eq!(code.to_raw(), raw);
            if !matches!(code, SvmExitCode::Unknown(_)) {
                known += 1;
            }
        }
        // 0x00–0xa6 except the unassigned ones, plus 0x400–0x403.
        assert_eq!(known, 0xa7 + 4);
    }

    #[test]
    fn qemu_zero_extended_invalid_decodes_as_invalid() {
        assert_eq!(SvmExitCode::from_raw(0xffff_ffff), SvmExitCode::Invalid);
        assert_eq!(SvmExitCode::from_raw(0xffff_fffe), SvmExitCode::Busy);
        assert_eq!(
            SvmExitCode::from_raw(0x1_ffff_ffff),
            SvmExitCode::Unknown(0x1_ffff_ffff)
        );
        assert_eq!(
            SvmExitCode::from_raw(0xffff_ffff_0000_0072),
            SvmExitCode::Unknown(0xffff_ffff_0000_0072)
        );
    }

    #[test]
    fn ioio_decodes_each_field() {
        // OUT DX, AL to 0x3f8.
        let out = IoioInfo::decode((0x3f8 << 16) | IoioInfo::SIZE8).unwrap();
        assert_eq!(
            out,
            IoioInfo {
                port: 0x3f8,
                direction: IoDirection::Out,
                size: 1,
                string: false,
                rep: false,
                address_size: None,
                segment: 0,
            }
        );
        // REP INSW with 64-bit addresses, segment ES.
        let raw = (0x1f0 << 16)
            | IoioInfo::TYPE_IN
            | IoioInfo::STRING
            | IoioInfo::REP
            | IoioInfo::SIZE16
            | IoioInfo::ADDR64;
        let ins = IoioInfo::decode(raw).unwrap();
        assert_eq!(ins.direction, IoDirection::In);
        assert_eq!(ins.size, 2);
        assert!(ins.string && ins.rep);
        assert_eq!(ins.address_size, Some(AddressSize::Bits64));
        assert_eq!(ins.encode(), raw);
        // 32-bit IN EAX, DX from 0xcfc.
        let inl = IoioInfo::decode((0xcfc << 16) | IoioInfo::TYPE_IN | IoioInfo::SIZE32).unwrap();
        assert_eq!((inl.port, inl.size), (0xcfc, 4));
    }

    #[test]
    fn ioio_without_exactly_one_size_is_refused() {
        assert_eq!(IoioInfo::decode(0x3f8 << 16), None);
        assert_eq!(IoioInfo::decode(IoioInfo::SIZE8 | IoioInfo::SIZE16), None);
    }

    #[test]
    fn npf_bits_decode() {
        let info = NpfInfo::decode(NpfInfo::WRITE | NpfInfo::USER | NpfInfo::FINAL_ADDRESS);
        assert!(info.write && info.user && info.final_address);
        assert!(!info.present && !info.fetch && !info.page_table_walk);
        let walk = NpfInfo::decode(NpfInfo::PRESENT | NpfInfo::FETCH | NpfInfo::PAGE_TABLE_WALK);
        assert!(walk.present && walk.fetch && walk.page_table_walk);
    }

    #[test]
    fn msr_direction_from_exit_info1() {
        assert_eq!(MsrAccess::from_exit_info1(0), Some(MsrAccess::Read));
        assert_eq!(MsrAccess::from_exit_info1(1), Some(MsrAccess::Write));
        assert_eq!(MsrAccess::from_exit_info1(2), None);
    }

    proptest! {
        #[test]
        fn decoding_any_exit_code_never_panics_and_round_trips(raw: u64) {
            let code = SvmExitCode::from_raw(raw);
            let back = code.to_raw();
            // Only QEMU's zero-extended negative codes change spelling.
            if back != raw {
                prop_assert_eq!(raw >> 32, 0);
                prop_assert_eq!(back >> 32, 0xffff_ffff);
                prop_assert_eq!(back as u32, raw as u32);
            }
            let _ = format!("{code}");
        }

        #[test]
        fn ioio_decode_never_panics_and_round_trips(raw: u64) {
            if let Some(info) = IoioInfo::decode(raw) {
                let again = IoioInfo::decode(info.encode()).unwrap();
                prop_assert_eq!(again, info);
            }
            let _ = NpfInfo::decode(raw);
        }
    }
}
