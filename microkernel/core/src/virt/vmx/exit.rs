//! VMX exit reasons (Intel SDM vol. 3C appendix C), the exit-reason field around them
//! (§28.2.1), the exit qualifications a monitor decodes most (I/O, EPT violation, control
//! register access; §28.2.1 tables 28-3, 28-5, 28-7) and the interruption-information
//! format shared by VM-exit interruption information, IDT-vectoring information and VM-entry
//! injection (§25.9.2, §25.8.3).
//!
//! Decoding is total: unknown basic reasons become [`VmxExitReason::Unknown`], and
//! qualification decoders return `None` only for encodings the SDM calls invalid.

use core::fmt;

/// A basic exit reason (bits 0–15 of the exit-reason field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmxExitReason {
    /// 0: exception or NMI (see VM-exit interruption information).
    ExceptionOrNmi,
    /// 1: external interrupt.
    ExternalInterrupt,
    /// 2: triple fault.
    TripleFault,
    /// 3: INIT signal.
    InitSignal,
    /// 4: start-up IPI.
    StartupIpi,
    /// 5: I/O SMI.
    IoSmi,
    /// 6: other SMI.
    OtherSmi,
    /// 7: interrupt window.
    InterruptWindow,
    /// 8: NMI window.
    NmiWindow,
    /// 9: task switch.
    TaskSwitch,
    /// 10: CPUID.
    Cpuid,
    /// 11: GETSEC.
    Getsec,
    /// 12: HLT.
    Hlt,
    /// 13: INVD.
    Invd,
    /// 14: INVLPG.
    Invlpg,
    /// 15: RDPMC.
    Rdpmc,
    /// 16: RDTSC.
    Rdtsc,
    /// 17: RSM.
    Rsm,
    /// 18: VMCALL.
    Vmcall,
    /// 19: VMCLEAR.
    Vmclear,
    /// 20: VMLAUNCH.
    Vmlaunch,
    /// 21: VMPTRLD.
    Vmptrld,
    /// 22: VMPTRST.
    Vmptrst,
    /// 23: VMREAD.
    Vmread,
    /// 24: VMRESUME.
    Vmresume,
    /// 25: VMWRITE.
    Vmwrite,
    /// 26: VMXOFF.
    Vmxoff,
    /// 27: VMXON.
    Vmxon,
    /// 28: control-register access.
    ControlRegisterAccess,
    /// 29: MOV DR.
    MovDr,
    /// 30: I/O instruction.
    IoInstruction,
    /// 31: RDMSR.
    Rdmsr,
    /// 32: WRMSR.
    Wrmsr,
    /// 33: VM-entry failure due to invalid guest state.
    InvalidGuestState,
    /// 34: VM-entry failure due to MSR loading.
    MsrLoading,
    /// 36: MWAIT.
    Mwait,
    /// 37: monitor trap flag.
    MonitorTrapFlag,
    /// 39: MONITOR.
    Monitor,
    /// 40: PAUSE.
    Pause,
    /// 41: VM-entry failure due to a machine-check event.
    MachineCheckDuringEntry,
    /// 43: TPR below threshold.
    TprBelowThreshold,
    /// 44: APIC access.
    ApicAccess,
    /// 45: virtualised EOI.
    VirtualizedEoi,
    /// 46: access to GDTR or IDTR.
    GdtrIdtrAccess,
    /// 47: access to LDTR or TR.
    LdtrTrAccess,
    /// 48: EPT violation.
    EptViolation,
    /// 49: EPT misconfiguration.
    EptMisconfiguration,
    /// 50: INVEPT.
    Invept,
    /// 51: RDTSCP.
    Rdtscp,
    /// 52: VMX-preemption timer expired.
    PreemptionTimer,
    /// 53: INVVPID.
    Invvpid,
    /// 54: WBINVD or WBNOINVD.
    Wbinvd,
    /// 55: XSETBV.
    Xsetbv,
    /// 56: APIC write.
    ApicWrite,
    /// 57: RDRAND.
    Rdrand,
    /// 58: INVPCID.
    Invpcid,
    /// 59: VMFUNC.
    Vmfunc,
    /// 60: ENCLS.
    Encls,
    /// 61: RDSEED.
    Rdseed,
    /// 62: page-modification log full.
    PmlFull,
    /// 63: XSAVES.
    Xsaves,
    /// 64: XRSTORS.
    Xrstors,
    /// 65: PCONFIG.
    Pconfig,
    /// 66: SPP-related event.
    SppEvent,
    /// 67: UMWAIT.
    Umwait,
    /// 68: TPAUSE.
    Tpause,
    /// 69: LOADIWKEY.
    Loadiwkey,
    /// 70: ENCLV.
    Enclv,
    /// 72: ENQCMD PASID translation failure.
    EnqcmdPasidFailure,
    /// 73: ENQCMDS PASID translation failure.
    EnqcmdsPasidFailure,
    /// 74: bus lock.
    BusLock,
    /// 75: instruction timeout (notify VM exit).
    InstructionTimeout,
    /// 76: SEAMCALL.
    Seamcall,
    /// 77: TDCALL.
    Tdcall,
    /// 78: RDMSRLIST.
    Rdmsrlist,
    /// 79: WRMSRLIST.
    Wrmsrlist,
    /// Anything else, kept as read.
    Unknown(u16),
}

impl VmxExitReason {
    /// The reason for a basic exit-reason number.
    pub const fn from_basic(basic: u16) -> Self {
        match basic {
            0 => Self::ExceptionOrNmi,
            1 => Self::ExternalInterrupt,
            2 => Self::TripleFault,
            3 => Self::InitSignal,
            4 => Self::StartupIpi,
            5 => Self::IoSmi,
            6 => Self::OtherSmi,
            7 => Self::InterruptWindow,
            8 => Self::NmiWindow,
            9 => Self::TaskSwitch,
            10 => Self::Cpuid,
            11 => Self::Getsec,
            12 => Self::Hlt,
            13 => Self::Invd,
            14 => Self::Invlpg,
            15 => Self::Rdpmc,
            16 => Self::Rdtsc,
            17 => Self::Rsm,
            18 => Self::Vmcall,
            19 => Self::Vmclear,
            20 => Self::Vmlaunch,
            21 => Self::Vmptrld,
            22 => Self::Vmptrst,
            23 => Self::Vmread,
            24 => Self::Vmresume,
            25 => Self::Vmwrite,
            26 => Self::Vmxoff,
            27 => Self::Vmxon,
            28 => Self::ControlRegisterAccess,
            29 => Self::MovDr,
            30 => Self::IoInstruction,
            31 => Self::Rdmsr,
            32 => Self::Wrmsr,
            33 => Self::InvalidGuestState,
            34 => Self::MsrLoading,
            36 => Self::Mwait,
            37 => Self::MonitorTrapFlag,
            39 => Self::Monitor,
            40 => Self::Pause,
            41 => Self::MachineCheckDuringEntry,
            43 => Self::TprBelowThreshold,
            44 => Self::ApicAccess,
            45 => Self::VirtualizedEoi,
            46 => Self::GdtrIdtrAccess,
            47 => Self::LdtrTrAccess,
            48 => Self::EptViolation,
            49 => Self::EptMisconfiguration,
            50 => Self::Invept,
            51 => Self::Rdtscp,
            52 => Self::PreemptionTimer,
            53 => Self::Invvpid,
            54 => Self::Wbinvd,
            55 => Self::Xsetbv,
            56 => Self::ApicWrite,
            57 => Self::Rdrand,
            58 => Self::Invpcid,
            59 => Self::Vmfunc,
            60 => Self::Encls,
            61 => Self::Rdseed,
            62 => Self::PmlFull,
            63 => Self::Xsaves,
            64 => Self::Xrstors,
            65 => Self::Pconfig,
            66 => Self::SppEvent,
            67 => Self::Umwait,
            68 => Self::Tpause,
            69 => Self::Loadiwkey,
            70 => Self::Enclv,
            72 => Self::EnqcmdPasidFailure,
            73 => Self::EnqcmdsPasidFailure,
            74 => Self::BusLock,
            75 => Self::InstructionTimeout,
            76 => Self::Seamcall,
            77 => Self::Tdcall,
            78 => Self::Rdmsrlist,
            79 => Self::Wrmsrlist,
            other => Self::Unknown(other),
        }
    }

    /// The basic exit-reason number.
    pub const fn basic(self) -> u16 {
        match self {
            Self::ExceptionOrNmi => 0,
            Self::ExternalInterrupt => 1,
            Self::TripleFault => 2,
            Self::InitSignal => 3,
            Self::StartupIpi => 4,
            Self::IoSmi => 5,
            Self::OtherSmi => 6,
            Self::InterruptWindow => 7,
            Self::NmiWindow => 8,
            Self::TaskSwitch => 9,
            Self::Cpuid => 10,
            Self::Getsec => 11,
            Self::Hlt => 12,
            Self::Invd => 13,
            Self::Invlpg => 14,
            Self::Rdpmc => 15,
            Self::Rdtsc => 16,
            Self::Rsm => 17,
            Self::Vmcall => 18,
            Self::Vmclear => 19,
            Self::Vmlaunch => 20,
            Self::Vmptrld => 21,
            Self::Vmptrst => 22,
            Self::Vmread => 23,
            Self::Vmresume => 24,
            Self::Vmwrite => 25,
            Self::Vmxoff => 26,
            Self::Vmxon => 27,
            Self::ControlRegisterAccess => 28,
            Self::MovDr => 29,
            Self::IoInstruction => 30,
            Self::Rdmsr => 31,
            Self::Wrmsr => 32,
            Self::InvalidGuestState => 33,
            Self::MsrLoading => 34,
            Self::Mwait => 36,
            Self::MonitorTrapFlag => 37,
            Self::Monitor => 39,
            Self::Pause => 40,
            Self::MachineCheckDuringEntry => 41,
            Self::TprBelowThreshold => 43,
            Self::ApicAccess => 44,
            Self::VirtualizedEoi => 45,
            Self::GdtrIdtrAccess => 46,
            Self::LdtrTrAccess => 47,
            Self::EptViolation => 48,
            Self::EptMisconfiguration => 49,
            Self::Invept => 50,
            Self::Rdtscp => 51,
            Self::PreemptionTimer => 52,
            Self::Invvpid => 53,
            Self::Wbinvd => 54,
            Self::Xsetbv => 55,
            Self::ApicWrite => 56,
            Self::Rdrand => 57,
            Self::Invpcid => 58,
            Self::Vmfunc => 59,
            Self::Encls => 60,
            Self::Rdseed => 61,
            Self::PmlFull => 62,
            Self::Xsaves => 63,
            Self::Xrstors => 64,
            Self::Pconfig => 65,
            Self::SppEvent => 66,
            Self::Umwait => 67,
            Self::Tpause => 68,
            Self::Loadiwkey => 69,
            Self::Enclv => 70,
            Self::EnqcmdPasidFailure => 72,
            Self::EnqcmdsPasidFailure => 73,
            Self::BusLock => 74,
            Self::InstructionTimeout => 75,
            Self::Seamcall => 76,
            Self::Tdcall => 77,
            Self::Rdmsrlist => 78,
            Self::Wrmsrlist => 79,
            Self::Unknown(basic) => basic,
        }
    }

    /// Whether this is one of the VMX instructions (19–27, INVEPT, INVVPID, VMFUNC).
    pub const fn is_vmx_instruction(self) -> bool {
        matches!(
            self,
            Self::Vmclear
                | Self::Vmlaunch
                | Self::Vmptrld
                | Self::Vmptrst
                | Self::Vmread
                | Self::Vmresume
                | Self::Vmwrite
                | Self::Vmxoff
                | Self::Vmxon
                | Self::Invept
                | Self::Invvpid
                | Self::Vmfunc
        )
    }
}

/// The 32-bit exit-reason field (SDM §25.9.1): the basic reason and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitReason {
    /// Bits 0–15.
    pub reason: VmxExitReason,
    /// Bit 27: the exit happened in enclave mode.
    pub enclave_mode: bool,
    /// Bit 28: a monitor-trap-flag exit is pending.
    pub pending_mtf: bool,
    /// Bit 29: the exit was from VMX root operation (SMM dual monitor).
    pub from_vmx_root: bool,
    /// Bit 31: VM entry failed (reasons 33, 34, 41).
    pub entry_failure: bool,
}

impl ExitReason {
    /// Decodes the field (every value decodes).
    pub const fn decode(raw: u32) -> Self {
        Self {
            reason: VmxExitReason::from_basic(raw as u16),
            enclave_mode: raw & (1 << 27) != 0,
            pending_mtf: raw & (1 << 28) != 0,
            from_vmx_root: raw & (1 << 29) != 0,
            entry_failure: raw & (1 << 31) != 0,
        }
    }

    /// Encodes the field.
    pub const fn encode(self) -> u32 {
        self.reason.basic() as u32
            | (self.enclave_mode as u32) << 27
            | (self.pending_mtf as u32) << 28
            | (self.from_vmx_root as u32) << 29
            | (self.entry_failure as u32) << 31
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} (VMX exit reason {})",
            self.reason,
            self.reason.basic()
        )?;
        if self.entry_failure {
            f.write_str(", VM entry failed")?;
        }
        Ok(())
    }
}

/// The exit qualification of an I/O instruction exit (SDM table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoQualification {
    /// Bits 16–31.
    pub port: u16,
    /// Bits 0–2 plus one: 1, 2 or 4 bytes.
    pub size: u8,
    /// Bit 3: IN (rather than OUT).
    pub input: bool,
    /// Bit 4: INS/OUTS.
    pub string: bool,
    /// Bit 5: REP prefix.
    pub rep: bool,
    /// Bit 6: the port was an immediate operand (rather than DX).
    pub immediate: bool,
}

impl IoQualification {
    /// Decodes the qualification, `None` for the reserved size encoding (bits 0–2 = 2 or
    /// more than 3).
    pub const fn decode(qualification: u64) -> Option<Self> {
        let size = match qualification & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        Some(Self {
            port: (qualification >> 16) as u16,
            size,
            input: qualification & (1 << 3) != 0,
            string: qualification & (1 << 4) != 0,
            rep: qualification & (1 << 5) != 0,
            immediate: qualification & (1 << 6) != 0,
        })
    }

    /// Encodes as the CPU would (sizes other than 1, 2 encode as 4).
    pub const fn encode(self) -> u64 {
        let size = match self.size {
            1 => 0,
            2 => 1,
            _ => 3,
        };
        size | (self.input as u64) << 3
            | (self.string as u64) << 4
            | (self.rep as u64) << 5
            | (self.immediate as u64) << 6
            | (self.port as u64) << 16
    }
}

/// The exit qualification of an EPT violation (SDM table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptViolation {
    /// Bit 0: a data read.
    pub read: bool,
    /// Bit 1: a data write.
    pub write: bool,
    /// Bit 2: an instruction fetch.
    pub fetch: bool,
    /// Bit 3: the translation allowed reads.
    pub readable: bool,
    /// Bit 4: the translation allowed writes.
    pub writable: bool,
    /// Bit 5: the translation allowed execution.
    pub executable: bool,
    /// Bit 7: the guest-linear-address field is valid.
    pub linear_address_valid: bool,
    /// Bit 8 (valid with bit 7): the access was to the final address, not to a guest
    /// paging structure.
    pub final_translation: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Decodes the qualification (every value decodes).
    pub const fn decode(qualification: u64) -> Self {
        const fn bit(value: u64, n: u32) -> bool {
            value & (1 << n) != 0
        }
        Self {
            read: bit(qualification, 0),
            write: bit(qualification, 1),
            fetch: bit(qualification, 2),
            readable: bit(qualification, 3),
            writable: bit(qualification, 4),
            executable: bit(qualification, 5),
            linear_address_valid: bit(qualification, 7),
            final_translation: bit(qualification, 8),
            nmi_unblocking: bit(qualification, 12),
        }
    }

    /// Whether some EPT entry mapped the address (any of bits 3–5).
    pub const fn present(self) -> bool {
        self.readable || self.writable || self.executable
    }

    /// Whether the access was the guest's own page-table walk.
    pub const fn during_page_walk(self) -> bool {
        self.linear_address_valid && !self.final_translation
    }
}

/// The exit qualification of a control-register access (SDM table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrAccess {
    /// Bits 0–3: the control register.
    pub cr: u8,
    /// Bits 4–5: 0 MOV to CR, 1 MOV from CR, 2 CLTS, 3 LMSW.
    pub access_type: u8,
    /// Bit 6: LMSW with a memory operand.
    pub lmsw_memory: bool,
    /// Bits 8–11: the general register (MOV CR).
    pub register: u8,
    /// Bits 16–31: the LMSW source data.
    pub lmsw_source: u16,
}

impl CrAccess {
    /// Decodes the qualification (every value decodes).
    pub const fn decode(qualification: u64) -> Self {
        Self {
            cr: (qualification & 0xf) as u8,
            access_type: ((qualification >> 4) & 3) as u8,
            lmsw_memory: qualification & (1 << 6) != 0,
            register: ((qualification >> 8) & 0xf) as u8,
            lmsw_source: (qualification >> 16) as u16,
        }
    }
}

/// The interruption type of [`InterruptionInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptionType {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 1: reserved.
    Reserved,
    /// 2: NMI.
    Nmi,
    /// 3: hardware exception.
    HardwareException,
    /// 4: software interrupt (INTn).
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1/ICEBP).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3, INTO).
    SoftwareException,
    /// 7: other event (MTF on injection).
    Other,
}

impl InterruptionType {
    /// The three-bit encoding.
    pub const fn bits(self) -> u32 {
        match self {
            Self::ExternalInterrupt => 0,
            Self::Reserved => 1,
            Self::Nmi => 2,
            Self::HardwareException => 3,
            Self::SoftwareInterrupt => 4,
            Self::PrivilegedSoftwareException => 5,
            Self::SoftwareException => 6,
            Self::Other => 7,
        }
    }

    /// The type for a three-bit encoding.
    pub const fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => Self::ExternalInterrupt,
            1 => Self::Reserved,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::Other,
        }
    }

    /// Whether injecting it needs the VM-entry instruction length.
    pub const fn needs_instruction_length(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// Interruption information: bits 0–7 vector, 8–10 type, 11 error code valid (delivered),
/// 12 NMI unblocking due to IRET (exit information only), 31 valid. The error code lives
/// in its own field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterruptionInfo {
    /// Vector.
    pub vector: u8,
    /// Type.
    pub kind: InterruptionType,
    /// An error code is (to be) delivered.
    pub error_code_valid: bool,
    /// NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl InterruptionInfo {
    /// Bit 11.
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    /// Bit 12.
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    /// Bit 31.
    pub const VALID: u32 = 1 << 31;

    /// The field's value, valid bit set.
    pub const fn encode(self) -> u32 {
        Self::VALID
            | self.vector as u32
            | self.kind.bits() << 8
            | if self.error_code_valid {
                Self::ERROR_CODE_VALID
            } else {
                0
            }
            | if self.nmi_unblocking {
                Self::NMI_UNBLOCKING
            } else {
                0
            }
    }

    /// The information in a field, `None` if its valid bit is clear.
    pub const fn decode(raw: u32) -> Option<Self> {
        if raw & Self::VALID == 0 {
            return None;
        }
        Some(Self {
            vector: raw as u8,
            kind: InterruptionType::from_bits(raw >> 8),
            error_code_valid: raw & Self::ERROR_CODE_VALID != 0,
            nmi_unblocking: raw & Self::NMI_UNBLOCKING != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic_reasons_have_the_appendix_c_numbers() {
        let cases = [
            (VmxExitReason::ExceptionOrNmi, 0),
            (VmxExitReason::ExternalInterrupt, 1),
            (VmxExitReason::TripleFault, 2),
            (VmxExitReason::InterruptWindow, 7),
            (VmxExitReason::Cpuid, 10),
            (VmxExitReason::Hlt, 12),
            (VmxExitReason::Vmcall, 18),
            (VmxExitReason::ControlRegisterAccess, 28),
            (VmxExitReason::IoInstruction, 30),
            (VmxExitReason::Rdmsr, 31),
            (VmxExitReason::Wrmsr, 32),
            (VmxExitReason::InvalidGuestState, 33),
            (VmxExitReason::EptViolation, 48),
            (VmxExitReason::EptMisconfiguration, 49),
            (VmxExitReason::PreemptionTimer, 52),
            (VmxExitReason::Xsetbv, 55),
            (VmxExitReason::BusLock, 74),
            (VmxExitReason::InstructionTimeout, 75),
        ];
        for (reason, basic) in cases {
            assert_eq!(reason.basic(), basic);
            assert_eq!(VmxExitReason::from_basic(basic), reason);
        }
        for unused in [35, 38, 42, 71, 80, 0xffff] {
            assert_eq!(
                VmxExitReason::from_basic(unused),
                VmxExitReason::Unknown(unused)
            );
        }
    }

    #[test]
    fn exit_reason_flags() {
        let failed = ExitReason::decode(0x8000_0021);
        assert_eq!(failed.reason, VmxExitReason::InvalidGuestState);
        assert!(failed.entry_failure);
        assert!(!failed.pending_mtf);
        assert_eq!(failed.encode(), 0x8000_0021);
        assert!(failed.to_string().contains("VM entry failed"));
    }

    #[test]
    fn io_qualification_decodes_sizes_and_flags() {
        // OUT DX, AL to 0x3f8.
        let out = IoQualification::decode(0x03f8_0000).unwrap();
        assert_eq!((out.port, out.size, out.input), (0x3f8, 1, false));
        // REP INSD from DX = 0x1f0.
        let ins =
            IoQualification::decode(0x01f0_0000 | 3 | (1 << 3) | (1 << 4) | (1 << 5)).unwrap();
        assert_eq!(
            (ins.size, ins.input, ins.string, ins.rep),
            (4, true, true, true)
        );
        // IN AX, 0x60 (immediate).
        let imm = IoQualification::decode(0x0060_0000 | 1 | (1 << 3) | (1 << 6)).unwrap();
        assert_eq!((imm.size, imm.immediate), (2, true));
        assert_eq!(IoQualification::decode(2), None);
        assert_eq!(IoQualification::decode(7), None);
    }

    #[test]
    fn ept_violation_bits() {
        let walk = EptViolation::decode((1 << 1) | (1 << 3) | (1 << 7));
        assert!(walk.write && walk.present() && walk.during_page_walk());
        let final_fetch = EptViolation::decode((1 << 2) | (1 << 7) | (1 << 8));
        assert!(final_fetch.fetch && !final_fetch.present() && !final_fetch.during_page_walk());
    }

    #[test]
    fn cr_access_fields() {
        // MOV CR3, RBX.
        let mov = CrAccess::decode(3 | (3 << 8));
        assert_eq!((mov.cr, mov.access_type, mov.register), (3, 0, 3));
        // LMSW with source 0x0011.
        let lmsw = CrAccess::decode((3 << 4) | (0x11 << 16));
        assert_eq!((lmsw.access_type, lmsw.lmsw_source), (3, 0x11));
    }

    #[test]
    fn interruption_info_encodings() {
        let pf = InterruptionInfo {
            vector: 14,
            kind: InterruptionType::HardwareException,
            error_code_valid: true,
            nmi_unblocking: false,
        };
        assert_eq!(pf.encode(), 0x8000_0b0e);
        assert_eq!(InterruptionInfo::decode(0x8000_0b0e), Some(pf));
        assert_eq!(InterruptionInfo::decode(0x0000_0b0e), None);
        assert!(InterruptionType::SoftwareInterrupt.needs_instruction_length());
        assert!(!InterruptionType::Nmi.needs_instruction_length());
    }

    proptest! {
        #[test]
        fn any_exit_reason_and_qualification_decodes(raw: u32, qualification: u64) {
            let reason = ExitReason::decode(raw);
            prop_assert_eq!(reason.reason.basic(), raw as u16);
            let _ = reason.to_string();
            if let Some(io) = IoQualification::decode(qualification) {
                prop_assert_eq!(IoQualification::decode(io.encode()), Some(io));
            }
            let _ = EptViolation::decode(qualification);
            let _ = CrAccess::decode(qualification);
            if let Some(info) = InterruptionInfo::decode(raw) {
                prop_assert_eq!(info.encode(), raw & 0x8000_1fff);
            }
        }
    }
}
