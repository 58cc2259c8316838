//! The bits of the VMCB control area: the miscellaneous intercepts of words 3–5, the
//! TLB_CONTROL encodings, and the bit fields of the virtual-interrupt, interrupt-state,
//! nested-control, virtualisation-extension and clean-bits words (APM vol. 2, table B-1,
//! and §15.15.3 for the clean bits).

/// The miscellaneous intercepts of control-area words 3, 4 and 5 (offsets 0x00c, 0x010,
/// 0x014). The discriminant is `(word - 3) * 32 + bit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Intercept {
    /// Physical INTR (host interrupts; needed for preemption).
    Intr = 0,
    /// Physical NMI.
    Nmi = 1,
    /// Physical SMI.
    Smi = 2,
    /// Physical INIT.
    Init = 3,
    /// Virtual interrupt window (V_IRQ deliverable).
    Vintr = 4,
    /// CR0 writes that change bits other than TS or MP.
    Cr0SelectiveWrite = 5,
    /// SIDT.
    IdtrRead = 6,
    /// SGDT.
    GdtrRead = 7,
    /// SLDT.
    LdtrRead = 8,
    /// STR.
    TrRead = 9,
    /// LIDT.
    IdtrWrite = 10,
    /// LGDT.
    GdtrWrite = 11,
    /// LLDT.
    LdtrWrite = 12,
    /// LTR.
    TrWrite = 13,
    /// RDTSC.
    Rdtsc = 14,
    /// RDPMC.
    Rdpmc = 15,
    /// PUSHF.
    Pushf = 16,
    /// POPF.
    Popf = 17,
    /// CPUID.
    Cpuid = 18,
    /// RSM.
    Rsm = 19,
    /// IRET.
    Iret = 20,
    /// INTn.
    Intn = 21,
    /// INVD.
    Invd = 22,
    /// PAUSE.
    Pause = 23,
    /// HLT.
    Hlt = 24,
    /// INVLPG.
    Invlpg = 25,
    /// INVLPGA.
    Invlpga = 26,
    /// IN/OUT/INS/OUTS, filtered by the I/O permission map.
    IoioProt = 27,
    /// RDMSR/WRMSR, filtered by the MSR permission map.
    MsrProt = 28,
    /// Task switches.
    TaskSwitch = 29,
    /// FERR_FREEZE (legacy x87 error handling).
    FerrFreeze = 30,
    /// Shutdown (triple fault). Without it a guest's triple fault resets the machine.
    Shutdown = 31,
    /// VMRUN. Must be set, or VMRUN fails with VMEXIT_INVALID.
    Vmrun = 32,
    /// VMMCALL.
    Vmmcall = 33,
    /// VMLOAD.
    Vmload = 34,
    /// VMSAVE.
    Vmsave = 35,
    /// STGI.
    Stgi = 36,
    /// CLGI.
    Clgi = 37,
    /// SKINIT.
    Skinit = 38,
    /// RDTSCP.
    Rdtscp = 39,
    /// ICEBP (INT1).
    Icebp = 40,
    /// WBINVD/WBNOINVD.
    Wbinvd = 41,
    /// MONITOR/MONITORX.
    Monitor = 42,
    /// MWAIT/MWAITX, unconditionally.
    Mwait = 43,
    /// MWAIT/MWAITX, if the monitor hardware is armed.
    MwaitConditional = 44,
    /// XSETBV.
    Xsetbv = 45,
    /// RDPRU.
    Rdpru = 46,
    /// EFER writes, after they complete (trap).
    EferWriteTrap = 47,
    /// INVLPGB (all forms).
    Invlpgb = 64,
    /// Illegally specified INVLPGB.
    InvlpgbIllegal = 65,
    /// INVPCID.
    Invpcid = 66,
    /// MCOMMIT.
    Mcommit = 67,
    /// TLBSYNC.
    Tlbsync = 68,
    /// Bus locks.
    BusLock = 69,
    /// HLT when no virtual interrupt is pending.
    IdleHlt = 70,
}

impl Intercept {
    /// The control-area word (3, 4 or 5) holding this intercept.
    pub const fn word(self) -> usize {
        3 + (self as usize) / 32
    }

    /// The bit within [`Self::word`].
    pub const fn bit(self) -> u32 {
        (self as u32) % 32
    }
}

/// TLB_CONTROL values (offset 0x05c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TlbControl {
    /// Do nothing.
    DoNothing = 0,
    /// Flush the entire TLB, every ASID (the only flush QEMU's TCG implements).
    FlushAll = 1,
    /// Flush this guest's ASID (needs the FlushByAsid feature).
    FlushGuest = 3,
    /// Flush this guest's non-global entries (needs the FlushByAsid feature).
    FlushGuestNonGlobal = 7,
}

impl TlbControl {
    /// The value for a raw byte, `None` for a reserved encoding.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::DoNothing),
            1 => Some(Self::FlushAll),
            3 => Some(Self::FlushGuest),
            7 => Some(Self::FlushGuestNonGlobal),
            _ => None,
        }
    }
}

/// Bits of [`super::ControlArea::vintr`] (offset 0x060).
pub mod vintr {
    /// Bits 0–7: the guest's virtual TPR (bits 0–3 used).
    pub const V_TPR_MASK: u64 = 0xff;
    /// Bit 8: a virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// Bit 9: virtual GIF.
    pub const V_GIF: u64 = 1 << 9;
    /// Bit 11: a virtual NMI is pending.
    pub const V_NMI: u64 = 1 << 11;
    /// Bit 12: virtual NMIs are masked.
    pub const V_NMI_MASK: u64 = 1 << 12;
    /// Bits 16–19: the pending virtual interrupt's priority.
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    /// Mask of the priority field.
    pub const V_INTR_PRIO_MASK: u64 = 0xf << V_INTR_PRIO_SHIFT;
    /// Bit 20: the pending virtual interrupt ignores V_TPR.
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// Bit 24: virtualise interrupt masking — the guest's RFLAGS.IF masks only virtual
    /// interrupts, and physical ones are masked by the host's IF. Needed for the host to
    /// take interrupts (and preempt the guest) whatever the guest does with IF.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    /// Bit 25: virtual GIF enabled.
    pub const V_GIF_ENABLE: u64 = 1 << 25;
    /// Bit 26: virtual NMI enabled.
    pub const V_NMI_ENABLE: u64 = 1 << 26;
    /// Bit 30: x2AVIC enabled.
    pub const X2AVIC_ENABLE: u64 = 1 << 30;
    /// Bit 31: AVIC enabled.
    pub const AVIC_ENABLE: u64 = 1 << 31;
    /// Bits 32–39: the pending virtual interrupt's vector.
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
    /// Mask of the vector field.
    pub const V_INTR_VECTOR_MASK: u64 = 0xff << V_INTR_VECTOR_SHIFT;
}

/// Bits of [`super::ControlArea::interrupt_state`] (offset 0x068).
pub mod interrupt_state {
    /// Bit 0: the guest is in an interrupt shadow (after STI or MOV SS).
    pub const INTERRUPT_SHADOW: u64 = 1 << 0;
    /// Bit 1: the guest's RFLAGS.IF at the exit (with V_INTR_MASKING).
    pub const GUEST_INTERRUPT_MASK: u64 = 1 << 1;
}

/// Bits of [`super::ControlArea::nested_control`] (offset 0x090).
pub mod nested_control {
    /// Bit 0: nested paging.
    pub const NP_ENABLE: u64 = 1 << 0;
    /// Bit 1: SEV.
    pub const SEV_ENABLE: u64 = 1 << 1;
    /// Bit 2: SEV-ES.
    pub const SEV_ES_ENABLE: u64 = 1 << 2;
    /// Bit 3: guest-mode execute trap.
    pub const GMET_ENABLE: u64 = 1 << 3;
    /// Bit 5: virtual transparent encryption.
    pub const VTE_ENABLE: u64 = 1 << 5;
}

/// Bits of [`super::ControlArea::virtualization_extensions`] (offset 0x0b8).
pub mod virtualization_extensions {
    /// Bit 0: LBR virtualisation.
    pub const LBR_VIRTUALIZATION: u64 = 1 << 0;
    /// Bit 1: virtualised VMSAVE/VMLOAD.
    pub const VIRTUAL_VMSAVE_VMLOAD: u64 = 1 << 1;
}

/// VMCB clean bits (offset 0x0c0, APM vol. 2 §15.15.3): a set bit tells the CPU the
/// group is unchanged since the last VMRUN of this VMCB on this CPU. Esker writes 0
/// (reload everything); QEMU's TCG ignores them.
pub mod clean {
    /// Intercept vectors, TSC offset, PAUSE filter.
    pub const INTERCEPTS: u32 = 1 << 0;
    /// IOPM_BASE and MSRPM_BASE.
    pub const IOPM: u32 = 1 << 1;
    /// ASID.
    pub const ASID: u32 = 1 << 2;
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR.
    pub const TPR: u32 = 1 << 3;
    /// NP_ENABLE, N_CR3, G_PAT.
    pub const NP: u32 = 1 << 4;
    /// CR0, CR3, CR4, EFER.
    pub const CRX: u32 = 1 << 5;
    /// DR6, DR7.
    pub const DRX: u32 = 1 << 6;
    /// GDTR, IDTR.
    pub const DT: u32 = 1 << 7;
    /// CS, DS, SS, ES, CPL.
    pub const SEG: u32 = 1 << 8;
    /// CR2.
    pub const CR2: u32 = 1 << 9;
    /// DbgCtl, BR_FROM, BR_TO, LASTEXCP_FROM, LASTEXCP_TO.
    pub const LBR: u32 = 1 << 10;
    /// AVIC fields.
    pub const AVIC: u32 = 1 << 11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlb_control_reserved_encodings_are_refused() {
        let valid: Vec<u8> = (0..=255)
            .filter(|&raw| TlbControl::from_raw(raw).is_some())
            .collect();
        assert_eq!(valid, [0, 1, 3, 7]);
    }
}
