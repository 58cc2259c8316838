//! VMCS field encodings (Intel SDM vol. 3C appendix B) and the VM-execution, VM-exit and
//! VM-entry control bits (SDM vol. 3C §25.6–25.8) a minimal VMX backend needs.
//!
//! An encoding is not an offset: the VMCS layout is implementation-specific and only
//! reachable through VMREAD/VMWRITE with these 32-bit encodings. Each encoding carries its
//! own width and kind (bits 13–14 and 10–11), which [`VmcsField::width`] and
//! [`VmcsField::kind`] read back and the tests check against the appendix's grouping.

/// The width a field encoding declares (bits 13–14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldWidth {
    /// 0: 16 bits.
    Bits16,
    /// 1: 64 bits (the "high" half has its own encoding, full + 1).
    Bits64,
    /// 2: 32 bits.
    Bits32,
    /// 3: natural width (64 bits on a 64-bit host).
    Natural,
}

/// The kind of field an encoding declares (bits 10–11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// 0: control.
    Control,
    /// 1: VM-exit information (read-only).
    ReadOnly,
    /// 2: guest state.
    Guest,
    /// 3: host state.
    Host,
}

macro_rules! vmcs_fields {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $width:ident, $kind:ident; )*) => {
        /// A VMCS field, by its VMREAD/VMWRITE encoding.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum VmcsField {
            $( $(#[$doc])* $name = $value, )*
        }

        impl VmcsField {
            /// Every field defined here, in appendix B order.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The width and kind appendix B lists the field under.
            #[cfg(test)]
            pub(super) const fn listed_as(self) -> (FieldWidth, FieldKind) {
                match self {
                    $(Self::$name => (FieldWidth::$width, FieldKind::$kind),)*
                }
            }
        }
    };
}

vmcs_fields! {
    // B.1.1 16-bit control fields.
    /// Virtual-processor identifier.
    VirtualProcessorId = 0x0000, Bits16, Control;
    /// Posted-interrupt notification vector.
    PostedInterruptNotificationVector = 0x0002, Bits16, Control;
    /// EPTP index.
    EptpIndex = 0x0004, Bits16, Control;
    // B.1.2 16-bit guest-state fields.
    /// Guest ES selector.
    GuestEsSelector = 0x0800, Bits16, Guest;
    /// Guest CS selector.
    GuestCsSelector = 0x0802, Bits16, Guest;
    /// Guest SS selector.
    GuestSsSelector = 0x0804, Bits16, Guest;
    /// Guest DS selector.
    GuestDsSelector = 0x0806, Bits16, Guest;
    /// Guest FS selector.
    GuestFsSelector = 0x0808, Bits16, Guest;
    /// Guest GS selector.
    GuestGsSelector = 0x080a, Bits16, Guest;
    /// Guest LDTR selector.
    GuestLdtrSelector = 0x080c, Bits16, Guest;
    /// Guest TR selector.
    GuestTrSelector = 0x080e, Bits16, Guest;
    /// Guest interrupt status.
    GuestInterruptStatus = 0x0810, Bits16, Guest;
    /// PML index.
    PmlIndex = 0x0812, Bits16, Guest;
    // B.1.3 16-bit host-state fields.
    /// Host ES selector.
    HostEsSelector = 0x0c00, Bits16, Host;
    /// Host CS selector.
    HostCsSelector = 0x0c02, Bits16, Host;
    /// Host SS selector.
    HostSsSelector = 0x0c04, Bits16, Host;
    /// Host DS selector.
    HostDsSelector = 0x0c06, Bits16, Host;
    /// Host FS selector.
    HostFsSelector = 0x0c08, Bits16, Host;
    /// Host GS selector.
    HostGsSelector = 0x0c0a, Bits16, Host;
    /// Host TR selector.
    HostTrSelector = 0x0c0c, Bits16, Host;
    // B.2.1 64-bit control fields.
    /// Address of I/O bitmap A (ports 0x0000–0x7fff).
    IoBitmapA = 0x2000, Bits64, Control;
    /// Address of I/O bitmap B (ports 0x8000–0xffff).
    IoBitmapB = 0x2002, Bits64, Control;
    /// Address of the MSR bitmaps.
    MsrBitmap = 0x2004, Bits64, Control;
    /// VM-exit MSR-store address.
    ExitMsrStoreAddress = 0x2006, Bits64, Control;
    /// VM-exit MSR-load address.
    ExitMsrLoadAddress = 0x2008, Bits64, Control;
    /// VM-entry MSR-load address.
    EntryMsrLoadAddress = 0x200a, Bits64, Control;
    /// Executive-VMCS pointer.
    ExecutiveVmcsPointer = 0x200c, Bits64, Control;
    /// PML address.
    PmlAddress = 0x200e, Bits64, Control;
    /// TSC offset.
    TscOffset = 0x2010, Bits64, Control;
    /// Virtual-APIC address.
    VirtualApicAddress = 0x2012, Bits64, Control;
    /// APIC-access address.
    ApicAccessAddress = 0x2014, Bits64, Control;
    /// Posted-interrupt descriptor address.
    PostedInterruptDescriptorAddress = 0x2016, Bits64, Control;
    /// VM-function controls.
    VmFunctionControls = 0x2018, Bits64, Control;
    /// EPT pointer.
    EptPointer = 0x201a, Bits64, Control;
    /// EOI-exit bitmap 0.
    EoiExitBitmap0 = 0x201c, Bits64, Control;
    /// EPTP-list address.
    EptpListAddress = 0x2024, Bits64, Control;
    /// XSS-exiting bitmap.
    XssExitingBitmap = 0x202c, Bits64, Control;
    /// TSC multiplier.
    TscMultiplier = 0x2032, Bits64, Control;
    /// Tertiary processor-based VM-execution controls.
    TertiaryProcBasedControls = 0x2034, Bits64, Control;
    // B.2.2 64-bit read-only data fields.
    /// Guest-physical address (EPT violations and misconfigurations).
    GuestPhysicalAddress = 0x2400, Bits64, ReadOnly;
    // B.2.3 64-bit guest-state fields.
    /// VMCS link pointer (all ones when unused).
    VmcsLinkPointer = 0x2800, Bits64, Guest;
    /// Guest IA32_DEBUGCTL.
    GuestIa32Debugctl = 0x2802, Bits64, Guest;
    /// Guest IA32_PAT.
    GuestIa32Pat = 0x2804, Bits64, Guest;
    /// Guest IA32_EFER.
    GuestIa32Efer = 0x2806, Bits64, Guest;
    /// Guest IA32_PERF_GLOBAL_CTRL.
    GuestIa32PerfGlobalCtrl = 0x2808, Bits64, Guest;
    /// Guest PDPTE0 (PAE paging).
    GuestPdpte0 = 0x280a, Bits64, Guest;
    /// Guest PDPTE1.
    GuestPdpte1 = 0x280c, Bits64, Guest;
    /// Guest PDPTE2.
    GuestPdpte2 = 0x280e, Bits64, Guest;
    /// Guest PDPTE3.
    GuestPdpte3 = 0x2810, Bits64, Guest;
    // B.2.4 64-bit host-state fields.
    /// Host IA32_PAT.
    HostIa32Pat = 0x2c00, Bits64, Host;
    /// Host IA32_EFER.
    HostIa32Efer = 0x2c02, Bits64, Host;
    /// Host IA32_PERF_GLOBAL_CTRL.
    HostIa32PerfGlobalCtrl = 0x2c04, Bits64, Host;
    // B.3.1 32-bit control fields.
    /// Pin-based VM-execution controls ([`pin_based`]).
    PinBasedControls = 0x4000, Bits32, Control;
    /// Primary processor-based VM-execution controls ([`primary`]).
    PrimaryProcBasedControls = 0x4002, Bits32, Control;
    /// Exception bitmap.
    ExceptionBitmap = 0x4004, Bits32, Control;
    /// Page-fault error-code mask.
    PageFaultErrorCodeMask = 0x4006, Bits32, Control;
    /// Page-fault error-code match.
    PageFaultErrorCodeMatch = 0x4008, Bits32, Control;
    /// CR3-target count.
    Cr3TargetCount = 0x400a, Bits32, Control;
    /// VM-exit controls ([`exit_controls`]).
    ExitControls = 0x400c, Bits32, Control;
    /// VM-exit MSR-store count.
    ExitMsrStoreCount = 0x400e, Bits32, Control;
    /// VM-exit MSR-load count.
    ExitMsrLoadCount = 0x4010, Bits32, Control;
    /// VM-entry controls ([`entry_controls`]).
    EntryControls = 0x4012, Bits32, Control;
    /// VM-entry MSR-load count.
    EntryMsrLoadCount = 0x4014, Bits32, Control;
    /// VM-entry interruption-information field ([`super::InterruptionInfo`]).
    EntryInterruptionInfo = 0x4016, Bits32, Control;
    /// VM-entry exception error code.
    EntryExceptionErrorCode = 0x4018, Bits32, Control;
    /// VM-entry instruction length.
    EntryInstructionLength = 0x401a, Bits32, Control;
    /// TPR threshold.
    TprThreshold = 0x401c, Bits32, Control;
    /// Secondary processor-based VM-execution controls ([`secondary`]).
    SecondaryProcBasedControls = 0x401e, Bits32, Control;
    /// PLE gap.
    PleGap = 0x4020, Bits32, Control;
    /// PLE window.
    PleWindow = 0x4022, Bits32, Control;
    // B.3.2 32-bit read-only data fields.
    /// VM-instruction error.
    VmInstructionError = 0x4400, Bits32, ReadOnly;
    /// Exit reason ([`super::ExitReason`]).
    ExitReason = 0x4402, Bits32, ReadOnly;
    /// VM-exit interruption information.
    ExitInterruptionInfo = 0x4404, Bits32, ReadOnly;
    /// VM-exit interruption error code.
    ExitInterruptionErrorCode = 0x4406, Bits32, ReadOnly;
    /// IDT-vectoring information.
    IdtVectoringInfo = 0x4408, Bits32, ReadOnly;
    /// IDT-vectoring error code.
    IdtVectoringErrorCode = 0x440a, Bits32, ReadOnly;
    /// VM-exit instruction length.
    ExitInstructionLength = 0x440c, Bits32, ReadOnly;
    /// VM-exit instruction information.
    ExitInstructionInfo = 0x440e, Bits32, ReadOnly;
    // B.3.3 32-bit guest-state fields.
    /// Guest ES limit.
    GuestEsLimit = 0x4800, Bits32, Guest;
    /// Guest CS limit.
    GuestCsLimit = 0x4802, Bits32, Guest;
    /// Guest SS limit.
    GuestSsLimit = 0x4804, Bits32, Guest;
    /// Guest DS limit.
    GuestDsLimit = 0x4806, Bits32, Guest;
    /// Guest FS limit.
    GuestFsLimit = 0x4808, Bits32, Guest;
    /// Guest GS limit.
    GuestGsLimit = 0x480a, Bits32, Guest;
    /// Guest LDTR limit.
    GuestLdtrLimit = 0x480c, Bits32, Guest;
    /// Guest TR limit.
    GuestTrLimit = 0x480e, Bits32, Guest;
    /// Guest GDTR limit.
    GuestGdtrLimit = 0x4810, Bits32, Guest;
    /// Guest IDTR limit.
    GuestIdtrLimit = 0x4812, Bits32, Guest;
    /// Guest ES access rights.
    GuestEsAccessRights = 0x4814, Bits32, Guest;
    /// Guest CS access rights.
    GuestCsAccessRights = 0x4816, Bits32, Guest;
    /// Guest SS access rights.
    GuestSsAccessRights = 0x4818, Bits32, Guest;
    /// Guest DS access rights.
    GuestDsAccessRights = 0x481a, Bits32, Guest;
    /// Guest FS access rights.
    GuestFsAccessRights = 0x481c, Bits32, Guest;
    /// Guest GS access rights.
    GuestGsAccessRights = 0x481e, Bits32, Guest;
    /// Guest LDTR access rights.
    GuestLdtrAccessRights = 0x4820, Bits32, Guest;
    /// Guest TR access rights.
    GuestTrAccessRights = 0x4822, Bits32, Guest;
    /// Guest interruptibility state ([`interruptibility`]).
    GuestInterruptibility = 0x4824, Bits32, Guest;
    /// Guest activity state.
    GuestActivityState = 0x4826, Bits32, Guest;
    /// Guest SMBASE.
    GuestSmbase = 0x4828, Bits32, Guest;
    /// Guest IA32_SYSENTER_CS.
    GuestIa32SysenterCs = 0x482a, Bits32, Guest;
    /// VMX-preemption timer value.
    PreemptionTimerValue = 0x482e, Bits32, Guest;
    // B.3.4 32-bit host-state field.
    /// Host IA32_SYSENTER_CS.
    HostIa32SysenterCs = 0x4c00, Bits32, Host;
    // B.4.1 natural-width control fields.
    /// CR0 guest/host mask.
    Cr0GuestHostMask = 0x6000, Natural, Control;
    /// CR4 guest/host mask.
    Cr4GuestHostMask = 0x6002, Natural, Control;
    /// CR0 read shadow.
    Cr0ReadShadow = 0x6004, Natural, Control;
    /// CR4 read shadow.
    Cr4ReadShadow = 0x6006, Natural, Control;
    /// CR3-target value 0.
    Cr3TargetValue0 = 0x6008, Natural, Control;
    /// CR3-target value 1.
    Cr3TargetValue1 = 0x600a, Natural, Control;
    /// CR3-target value 2.
    Cr3TargetValue2 = 0x600c, Natural, Control;
    /// CR3-target value 3.
    Cr3TargetValue3 = 0x600e, Natural, Control;
    // B.4.2 natural-width read-only data fields.
    /// Exit qualification.
    ExitQualification = 0x6400, Natural, ReadOnly;
    /// I/O RCX.
    IoRcx = 0x6402, Natural, ReadOnly;
    /// I/O RSI.
    IoRsi = 0x6404, Natural, ReadOnly;
    /// I/O RDI.
    IoRdi = 0x6406, Natural, ReadOnly;
    /// I/O RIP.
    IoRip = 0x6408, Natural, ReadOnly;
    /// Guest-linear address.
    GuestLinearAddress = 0x640a, Natural, ReadOnly;
    // B.4.3 natural-width guest-state fields.
    /// Guest CR0.
    GuestCr0 = 0x6800, Natural, Guest;
    /// Guest CR3.
    GuestCr3 = 0x6802, Natural, Guest;
    /// Guest CR4.
    GuestCr4 = 0x6804, Natural, Guest;
    /// Guest ES base.
    GuestEsBase = 0x6806, Natural, Guest;
    /// Guest CS base.
    GuestCsBase = 0x6808, Natural, Guest;
    /// Guest SS base.
    GuestSsBase = 0x680a, Natural, Guest;
    /// Guest DS base.
    GuestDsBase = 0x680c, Natural, Guest;
    /// Guest FS base.
    GuestFsBase = 0x680e, Natural, Guest;
    /// Guest GS base.
    GuestGsBase = 0x6810, Natural, Guest;
    /// Guest LDTR base.
    GuestLdtrBase = 0x6812, Natural, Guest;
    /// Guest TR base.
    GuestTrBase = 0x6814, Natural, Guest;
    /// Guest GDTR base.
    GuestGdtrBase = 0x6816, Natural, Guest;
    /// Guest IDTR base.
    GuestIdtrBase = 0x6818, Natural, Guest;
    /// Guest DR7.
    GuestDr7 = 0x681a, Natural, Guest;
    /// Guest RSP.
    GuestRsp = 0x681c, Natural, Guest;
    /// Guest RIP.
    GuestRip = 0x681e, Natural, Guest;
    /// Guest RFLAGS.
    GuestRflags = 0x6820, Natural, Guest;
    /// Guest pending debug exceptions.
    GuestPendingDebugExceptions = 0x6822, Natural, Guest;
    /// Guest IA32_SYSENTER_ESP.
    GuestIa32SysenterEsp = 0x6824, Natural, Guest;
    /// Guest IA32_SYSENTER_EIP.
    GuestIa32SysenterEip = 0x6826, Natural, Guest;
    // B.4.4 natural-width host-state fields.
    /// Host CR0.
    HostCr0 = 0x6c00, Natural, Host;
    /// Host CR3.
    HostCr3 = 0x6c02, Natural, Host;
    /// Host CR4.
    HostCr4 = 0x6c04, Natural, Host;
    /// Host FS base.
    HostFsBase = 0x6c06, Natural, Host;
    /// Host GS base.
    HostGsBase = 0x6c08, Natural, Host;
    /// Host TR base.
    HostTrBase = 0x6c0a, Natural, Host;
    /// Host GDTR base.
    HostGdtrBase = 0x6c0c, Natural, Host;
    /// Host IDTR base.
    HostIdtrBase = 0x6c0e, Natural, Host;
    /// Host IA32_SYSENTER_ESP.
    HostIa32SysenterEsp = 0x6c10, Natural, Host;
    /// Host IA32_SYSENTER_EIP.
    HostIa32SysenterEip = 0x6c12, Natural, Host;
    /// Host RSP.
    HostRsp = 0x6c14, Natural, Host;
    /// Host RIP.
    HostRip = 0x6c16, Natural, Host;
}

impl VmcsField {
    /// The VMREAD/VMWRITE encoding.
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// The width the encoding declares.
    pub const fn width(self) -> FieldWidth {
        match (self.encoding() >> 13) & 3 {
            0 => FieldWidth::Bits16,
            1 => FieldWidth::Bits64,
            2 => FieldWidth::Bits32,
            _ => FieldWidth::Natural,
        }
    }

    /// The kind the encoding declares.
    pub const fn kind(self) -> FieldKind {
        match (self.encoding() >> 10) & 3 {
            0 => FieldKind::Control,
            1 => FieldKind::ReadOnly,
            2 => FieldKind::Guest,
            _ => FieldKind::Host,
        }
    }

    /// The index (bits 1–9).
    pub const fn index(self) -> u32 {
        (self.encoding() >> 1) & 0x1ff
    }

    /// For a 64-bit field, the encoding of its high 32 bits (for 32-bit VMREAD/VMWRITE);
    /// `None` for other widths.
    pub const fn high_encoding(self) -> Option<u32> {
        match self.width() {
            FieldWidth::Bits64 => Some(self.encoding() | 1),
            _ => None,
        }
    }

    /// The bits a value of this field can hold (a VMWRITE of more is truncated or fails).
    pub const fn value_mask(self) -> u64 {
        match self.width() {
            FieldWidth::Bits16 => 0xffff,
            FieldWidth::Bits32 => 0xffff_ffff,
            FieldWidth::Bits64 | FieldWidth::Natural => u64::MAX,
        }
    }
}

/// Pin-based VM-execution controls (SDM §25.6.1).
pub mod pin_based {
    /// Bit 0: external interrupts exit.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// Bit 3: NMIs exit.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Bit 5: virtual NMIs.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// Bit 6: the VMX-preemption timer runs.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    /// Bit 7: posted interrupts.
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls (SDM §25.6.2).
pub mod primary {
    /// Bit 2: exit when the guest can take an interrupt.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// Bit 3: TSC offsetting.
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// Bit 7: HLT exits.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// Bit 9: INVLPG exits.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// Bit 10: MWAIT exits.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// Bit 11: RDPMC exits.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// Bit 12: RDTSC exits.
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// Bit 15: MOV to CR3 exits.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// Bit 16: MOV from CR3 exits.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Bit 19: MOV to CR8 exits.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// Bit 20: MOV from CR8 exits.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Bit 21: TPR shadow.
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    /// Bit 22: exit when the guest can take an NMI.
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// Bit 23: MOV DR exits.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Bit 24: every port access exits.
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// Bit 25: port accesses exit per the I/O bitmaps.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Bit 27: monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// Bit 28: MSR accesses exit per the MSR bitmaps.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// Bit 29: MONITOR exits.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// Bit 30: PAUSE exits.
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// Bit 31: use the secondary controls.
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM §25.6.2).
pub mod secondary {
    /// Bit 0: virtualise APIC accesses.
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    /// Bit 1: EPT.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Bit 2: descriptor-table instructions exit.
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    /// Bit 3: RDTSCP allowed (else #UD).
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Bit 4: virtualise x2APIC mode.
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    /// Bit 5: VPID.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// Bit 6: WBINVD exits.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Bit 7: unrestricted guest (real mode and unpaged protected mode under EPT).
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// Bit 12: INVPCID allowed (else #UD).
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    /// Bit 20: XSAVES/XRSTORS allowed.
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

/// VM-exit controls (SDM §25.7.1).
pub mod exit_controls {
    /// Bit 2: save DR7 and IA32_DEBUGCTL.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Bit 9: the host runs in 64-bit mode.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    /// Bit 12: load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    /// Bit 15: acknowledge the interrupt on exit.
    pub const ACKNOWLEDGE_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    /// Bit 18: save the guest's IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Bit 19: load the host's IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Bit 20: save the guest's IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Bit 21: load the host's IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
    /// Bit 22: save the VMX-preemption timer value.
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls (SDM §25.8.1).
pub mod entry_controls {
    /// Bit 2: load DR7 and IA32_DEBUGCTL.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Bit 9: the guest runs in IA-32e mode (must match EFER.LMA).
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Bit 10: entry to SMM.
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    /// Bit 13: load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    /// Bit 14: load the guest's IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Bit 15: load the guest's IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Guest interruptibility-state bits (SDM §25.4.2, table 25-3).
pub mod interruptibility {
    /// Bit 0: blocking by STI.
    pub const BLOCKING_BY_STI: u32 = 1 << 0;
    /// Bit 1: blocking by MOV SS.
    pub const BLOCKING_BY_MOV_SS: u32 = 1 << 1;
    /// Bit 2: blocking by SMI.
    pub const BLOCKING_BY_SMI: u32 = 1 << 2;
    /// Bit 3: blocking by NMI.
    pub const BLOCKING_BY_NMI: u32 = 1 << 3;
}

/// Guest activity states (SDM §25.4.2).
pub mod activity_state {
    /// Active.
    pub const ACTIVE: u32 = 0;
    /// HLT.
    pub const HLT: u32 = 1;
    /// Shutdown.
    pub const SHUTDOWN: u32 = 2;
    /// Wait for SIPI.
    pub const WAIT_FOR_SIPI: u32 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_encoding_declares_the_width_and_kind_appendix_b_lists_it_under() {
        for &field in VmcsField::ALL {
            assert_eq!(
                (field.width(), field.kind()),
                field.listed_as(),
                "{field:?} = {:#06x}",
                field.encoding()
            );
            // Full access (bit 0 clear), bit 12 and bits 15-31 reserved.
            assert_eq!(field.encoding() & 1, 0, "{field:?}");
            assert_eq!(field.encoding() & !0x6ffe, 0, "{field:?}");
        }
    }

    #[test]
    fn encodings_are_distinct_and_high_halves_only_for_64_bit_fields() {
        let unique: HashSet<u32> = VmcsField::ALL.iter().map(|f| f.encoding()).collect();
        assert_eq!(unique.len(), VmcsField::ALL.len());
        assert_eq!(VmcsField::EptPointer.high_encoding(), Some(0x201b));
        assert_eq!(VmcsField::GuestIa32Efer.high_encoding(), Some(0x2807));
        assert_eq!(VmcsField::GuestRip.high_encoding(), None);
        assert_eq!(VmcsField::ExitReason.value_mask(), 0xffff_ffff);
        assert_eq!(VmcsField::GuestCsSelector.value_mask(), 0xffff);
    }

    #[test]
    fn well_known_encodings() {
        assert_eq!(VmcsField::GuestRip.encoding(), 0x681e);
        assert_eq!(VmcsField::GuestRsp.encoding(), 0x681c);
        assert_eq!(VmcsField::ExitReason.encoding(), 0x4402);
        assert_eq!(VmcsField::ExitQualification.encoding(), 0x6400);
        assert_eq!(VmcsField::GuestPhysicalAddress.encoding(), 0x2400);
        assert_eq!(VmcsField::EptPointer.encoding(), 0x201a);
        assert_eq!(VmcsField::HostRip.encoding(), 0x6c16);
        assert_eq!(VmcsField::GuestCsAccessRights.index(), 0x0b);
    }
}
