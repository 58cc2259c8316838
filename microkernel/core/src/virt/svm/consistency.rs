//! The checks VMRUN makes before it enters a guest, so the kernel can refuse a bad vCPU
//! state by name instead of reading back VMEXIT_INVALID.
//!
//! The rules are APM vol. 2 §15.5.1 "Canonicalization and Consistency Checks" (and
//! §15.20 for event injection), in that order, plus the control checks QEMU's TCG and
//! KVM's nested SVM make (ASID 0, TLB_CONTROL encodings, nested paging without hardware
//! support). Where the APM's rule depends on the CPU (MBZ bits, the physical-address
//! width, long-mode support), [`HostLimits`] says what this CPU supports; the kernel
//! fills it from CPUID, and [`HostLimits::ARCHITECTURAL`] is the most the architecture
//! allows.

use super::controls::{Intercept, TlbControl};
use super::event::{EventInjection, EventInjectionError};
use super::vmcb::Vmcb;
use super::{IoPermissionMap, MsrPermissionMap};
use crate::virt::x86::{SegmentAttributes, cr0, cr4, efer};
use core::fmt;

/// What the CPU running the guest supports, for the checks that depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// MAXPHYADDR (CPUID 0x8000_0008 EAX bits 7:0), at most 52.
    pub physical_address_bits: u8,
    /// Long mode (CPUID 0x8000_0001 EDX bit 29).
    pub long_mode: bool,
    /// Nested paging (CPUID 0x8000_000a EDX bit 0).
    pub nested_paging: bool,
    /// Flush by ASID (CPUID 0x8000_000a EDX bit 6); QEMU's TCG lacks it.
    pub flush_by_asid: bool,
    /// The CR4 bits this CPU implements; every other bit is MBZ.
    pub cr4_supported: u64,
    /// The EFER bits this CPU implements; every other bit is MBZ.
    pub efer_supported: u64,
}

impl HostLimits {
    /// Every CR4 bit AMD defines.
    pub const CR4_DEFINED: u64 = cr4::VME
        | cr4::PVI
        | cr4::TSD
        | cr4::DE
        | cr4::PSE
        | cr4::PAE
        | cr4::MCE
        | cr4::PGE
        | cr4::PCE
        | cr4::OSFXSR
        | cr4::OSXMMEXCPT
        | cr4::UMIP
        | cr4::LA57
        | cr4::FSGSBASE
        | cr4::PCIDE
        | cr4::OSXSAVE
        | cr4::SMEP
        | cr4::SMAP
        | cr4::PKE
        | cr4::CET;

    /// Every EFER bit AMD defines.
    pub const EFER_DEFINED: u64 = efer::SCE
        | efer::LME
        | efer::LMA
        | efer::NXE
        | efer::SVME
        | efer::LMSLE
        | efer::FFXSR
        | efer::TCE
        | efer::MCOMMIT
        | efer::INTWB
        | efer::UAIE
        | efer::AIBRSE;

    /// The most the architecture allows: 52 physical-address bits, long mode, nested
    /// paging and flush-by-ASID, every defined CR4 and EFER bit. Checks against it only
    /// refuse what no AMD CPU accepts; the kernel should narrow it from CPUID.
    pub const ARCHITECTURAL: Self = Self {
        physical_address_bits: 52,
        long_mode: true,
        nested_paging: true,
        flush_by_asid: true,
        cr4_supported: Self::CR4_DEFINED,
        efer_supported: Self::EFER_DEFINED,
    };

    /// One past the highest physical address (2^MAXPHYADDR, MAXPHYADDR capped at 52).
    pub const fn physical_limit(&self) -> u64 {
        let bits = if self.physical_address_bits > 52 {
            52
        } else {
            self.physical_address_bits
        };
        1 << bits
    }
}

/// A VMCB that VMRUN would refuse, and why (the first rule broken, in APM order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyError {
    /// EFER.SVME is clear.
    SvmeClear {
        /// Guest EFER.
        efer: u64,
    },
    /// CR0.CD is clear and CR0.NW is set.
    NotWriteThroughWithoutCacheDisable {
        /// Guest CR0.
        cr0: u64,
    },
    /// CR0 bits 63:32 are not zero.
    Cr0UpperBits {
        /// Guest CR0.
        cr0: u64,
    },
    /// A must-be-zero bit of CR3 is set.
    Cr3ReservedBits {
        /// Guest CR3.
        cr3: u64,
        /// The offending bits.
        bits: u64,
    },
    /// A must-be-zero bit of CR4 is set.
    Cr4ReservedBits {
        /// Guest CR4.
        cr4: u64,
        /// The offending bits.
        bits: u64,
    },
    /// DR6 bits 63:32 are not zero.
    Dr6UpperBits {
        /// Guest DR6.
        dr6: u64,
    },
    /// DR7 bits 63:32 are not zero.
    Dr7UpperBits {
        /// Guest DR7.
        dr7: u64,
    },
    /// A must-be-zero bit of EFER is set.
    EferReservedBits {
        /// Guest EFER.
        efer: u64,
        /// The offending bits.
        bits: u64,
    },
    /// EFER.LME or EFER.LMA is set on a CPU without long mode.
    LongModeUnsupported {
        /// Guest EFER.
        efer: u64,
    },
    /// EFER.LME and CR0.PG are set but CR4.PAE is clear.
    LongModeWithoutPae {
        /// Guest CR4.
        cr4: u64,
    },
    /// EFER.LME and CR0.PG are set but CR0.PE is clear.
    LongModeWithoutProtectedMode {
        /// Guest CR0.
        cr0: u64,
    },
    /// EFER.LME, CR0.PG, CR4.PAE, CS.L and CS.D are all set.
    LongModeCodeSegmentLongAndDefault {
        /// Guest CS attributes.
        cs_attributes: u16,
    },
    /// The VMRUN intercept is clear.
    VmrunNotIntercepted,
    /// The MSR permission map reaches MAXPHYADDR.
    MsrPermissionMapTooHigh {
        /// MSRPM_BASE_PA.
        base: u64,
    },
    /// The I/O permission map reaches MAXPHYADDR.
    IoPermissionMapTooHigh {
        /// IOPM_BASE_PA.
        base: u64,
    },
    /// EVENTINJ holds an event VMRUN refuses.
    IllegalEventInjection {
        /// The EVENTINJ value.
        event_injection: u64,
        /// What is wrong with it.
        error: EventInjectionError,
    },
    /// The guest ASID is 0 (the host's).
    AsidZero,
    /// Nested paging is enabled on a CPU without it.
    NestedPagingUnsupported,
    /// TLB_CONTROL holds a reserved encoding.
    TlbControlReserved {
        /// The byte.
        value: u8,
    },
    /// TLB_CONTROL asks for a flush by ASID on a CPU without it.
    TlbControlNeedsFlushByAsid {
        /// The byte.
        value: u8,
    },
}

impl fmt::Display for ConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VMRUN would refuse this vCPU: ")?;
        match *self {
            Self::SvmeClear { efer } => write!(f, "EFER.SVME is clear (EFER {efer:#x})"),
            Self::NotWriteThroughWithoutCacheDisable { cr0 } => {
                write!(f, "CR0.NW is set without CR0.CD (CR0 {cr0:#x})")
            }
            Self::Cr0UpperBits { cr0 } => write!(f, "CR0 bits 63:32 are set (CR0 {cr0:#x})"),
            Self::Cr3ReservedBits { cr3, bits } => {
                write!(f, "CR3 {cr3:#x} sets must-be-zero bits {bits:#x}")
            }
            Self::Cr4ReservedBits { cr4, bits } => {
                write!(f, "CR4 {cr4:#x} sets must-be-zero bits {bits:#x}")
            }
            Self::Dr6UpperBits { dr6 } => write!(f, "DR6 bits 63:32 are set (DR6 {dr6:#x})"),
            Self::Dr7UpperBits { dr7 } => write!(f, "DR7 bits 63:32 are set (DR7 {dr7:#x})"),
            Self::EferReservedBits { efer, bits } => {
                write!(f, "EFER {efer:#x} sets must-be-zero bits {bits:#x}")
            }
            Self::LongModeUnsupported { efer } => write!(
                f,
                "EFER.LME/LMA are set but this CPU has no long mode (EFER {efer:#x})"
            ),
            Self::LongModeWithoutPae { cr4 } => {
                write!(
                    f,
                    "EFER.LME and CR0.PG are set but CR4.PAE is clear (CR4 {cr4:#x})"
                )
            }
            Self::LongModeWithoutProtectedMode { cr0 } => {
                write!(
                    f,
                    "EFER.LME and CR0.PG are set but CR0.PE is clear (CR0 {cr0:#x})"
                )
            }
            Self::LongModeCodeSegmentLongAndDefault { cs_attributes } => write!(
                f,
                "in long mode CS has both L and D set (CS attributes {cs_attributes:#x})"
            ),
            Self::VmrunNotIntercepted => f.write_str("the VMRUN intercept is clear"),
            Self::MsrPermissionMapTooHigh { base } => write!(
                f,
                "the MSR permission map at {base:#x} reaches the maximum physical address"
            ),
            Self::IoPermissionMapTooHigh { base } => write!(
                f,
                "the I/O permission map at {base:#x} reaches the maximum physical address"
            ),
            Self::IllegalEventInjection {
                event_injection,
                error,
            } => write!(f, "EVENTINJ {event_injection:#x}: {error}"),
            Self::AsidZero => f.write_str("the guest ASID is 0, the host's"),
            Self::NestedPagingUnsupported => {
                f.write_str("nested paging is enabled but this CPU has none")
            }
            Self::TlbControlReserved { value } => {
                write!(f, "TLB_CONTROL {value:#x} is a reserved encoding")
            }
            Self::TlbControlNeedsFlushByAsid { value } => write!(
                f,
                "TLB_CONTROL {value:#x} flushes by ASID, which this CPU cannot do"
            ),
        }
    }
}

/// [`check_vmrun_consistency_on`] against [`HostLimits::ARCHITECTURAL`]: refuses only
/// what VMRUN refuses on every AMD CPU.
pub fn check_vmrun_consistency(vmcb: &Vmcb) -> Result<(), ConsistencyError> {
    check_vmrun_consistency_on(vmcb, &HostLimits::ARCHITECTURAL)
}

/// Whether VMRUN on a CPU with `host`'s limits would accept `vmcb`; the first rule it
/// breaks otherwise.
pub fn check_vmrun_consistency_on(vmcb: &Vmcb, host: &HostLimits) -> Result<(), ConsistencyError> {
    let save = &vmcb.save;
    let control = &vmcb.control;
    let (guest_efer, guest_cr0, guest_cr4) = (save.efer, save.cr0, save.cr4);

    if guest_efer & efer::SVME == 0 {
        return Err(ConsistencyError::SvmeClear { efer: guest_efer });
    }
    if guest_cr0 & cr0::CD == 0 && guest_cr0 & cr0::NW != 0 {
        return Err(ConsistencyError::NotWriteThroughWithoutCacheDisable { cr0: guest_cr0 });
    }
    if guest_cr0 >> 32 != 0 {
        return Err(ConsistencyError::Cr0UpperBits { cr0: guest_cr0 });
    }
    let long_mode_paging = guest_efer & efer::LME != 0 && guest_cr0 & cr0::PG != 0;
    let cr3_reserved = if long_mode_paging {
        // Bits from MAXPHYADDR up (63:52 on every CPU).
        !(host.physical_limit() - 1)
    } else {
        // Legacy CR3 is a 32-bit register.
        0xffff_ffff_0000_0000
    };
    if save.cr3 & cr3_reserved != 0 {
        return Err(ConsistencyError::Cr3ReservedBits {
            cr3: save.cr3,
            bits: save.cr3 & cr3_reserved,
        });
    }
    let cr4_reserved = guest_cr4 & !host.cr4_supported;
    if cr4_reserved != 0 {
        return Err(ConsistencyError::Cr4ReservedBits {
            cr4: guest_cr4,
            bits: cr4_reserved,
        });
    }
    if save.dr6 >> 32 != 0 {
        return Err(ConsistencyError::Dr6UpperBits { dr6: save.dr6 });
    }
    if save.dr7 >> 32 != 0 {
        return Err(ConsistencyError::Dr7UpperBits { dr7: save.dr7 });
    }
    let efer_reserved = guest_efer & !host.efer_supported;
    if efer_reserved != 0 {
        return Err(ConsistencyError::EferReservedBits {
            efer: guest_efer,
            bits: efer_reserved,
        });
    }
    if guest_efer & (efer::LME | efer::LMA) != 0 && !host.long_mode {
        return Err(ConsistencyError::LongModeUnsupported { efer: guest_efer });
    }
    if long_mode_paging {
        if guest_cr4 & cr4::PAE == 0 {
            return Err(ConsistencyError::LongModeWithoutPae { cr4: guest_cr4 });
        }
        if guest_cr0 & cr0::PE == 0 {
            return Err(ConsistencyError::LongModeWithoutProtectedMode { cr0: guest_cr0 });
        }
        let cs = save.cs.attributes;
        if cs.0 & SegmentAttributes::L != 0 && cs.0 & SegmentAttributes::DB != 0 {
            return Err(ConsistencyError::LongModeCodeSegmentLongAndDefault {
                cs_attributes: cs.0,
            });
        }
    }
    if !control.intercepts(Intercept::Vmrun) {
        return Err(ConsistencyError::VmrunNotIntercepted);
    }
    // As QEMU checks it: the page-aligned base must lie below 2^MAXPHYADDR - size.
    let limit = host.physical_limit();
    let msrpm = control.msrpm_base_pa & !0xfff;
    if msrpm >= limit.saturating_sub(MsrPermissionMap::SIZE as u64) {
        return Err(ConsistencyError::MsrPermissionMapTooHigh {
            base: control.msrpm_base_pa,
        });
    }
    let iopm = control.iopm_base_pa & !0xfff;
    if iopm >= limit.saturating_sub(IoPermissionMap::SIZE as u64) {
        return Err(ConsistencyError::IoPermissionMapTooHigh {
            base: control.iopm_base_pa,
        });
    }
    if let Some(event) = EventInjection::decode(control.event_injection)
        && let Err(error) = event.check()
    {
        return Err(ConsistencyError::IllegalEventInjection {
            event_injection: control.event_injection,
            error,
        });
    }
    if control.guest_asid == 0 {
        return Err(ConsistencyError::AsidZero);
    }
    if control.nested_paging() && !host.nested_paging {
        return Err(ConsistencyError::NestedPagingUnsupported);
    }
    match control.tlb() {
        None => Err(ConsistencyError::TlbControlReserved {
            value: control.tlb_control,
        }),
        Some(TlbControl::FlushGuest | TlbControl::FlushGuestNonGlobal) if !host.flush_by_asid => {
            Err(ConsistencyError::TlbControlNeedsFlushByAsid {
                value: control.tlb_control,
            })
        }
        Some(_) => Ok(()),
    }
}
