//! Host tests of the initial VMCBs and of every VMRUN consistency rule.

use super::setup::{self, ControlSetup};
use super::*;
use crate::virt::vcpu::{DescriptorTable, GeneralRegisters, GuestRegisters, SegmentAttributes};
use crate::virt::x86::{cr0, cr4, efer, rflags};

const SETUP: ControlSetup = ControlSetup {
    asid: 1,
    nested_cr3: 0x20_0000,
    iopm_base_pa: 0x30_0000,
    msrpm_base_pa: 0x34_0000,
    tsc_offset: 0,
};

const GDT: DescriptorTable = DescriptorTable {
    base: 0x1000,
    limit: 0x1f,
};

/// What QEMU's TCG offers with `-cpu qemu64,+svm,+npt`: 40 physical-address bits, no
/// flush-by-ASID, no SMEP/SMAP/PKE/CET/LA57/UMIP, no MCOMMIT/INTWB/UAIE/AIBRSE.
const QEMU64: HostLimits = HostLimits {
    physical_address_bits: 40,
    long_mode: true,
    nested_paging: true,
    flush_by_asid: false,
    cr4_supported: HostLimits::CR4_DEFINED
        & !(cr4::SMEP | cr4::SMAP | cr4::PKE | cr4::CET | cr4::LA57 | cr4::UMIP),
    efer_supported: efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME | efer::FFXSR,
};

fn long_mode() -> Vmcb {
    let mut vmcb = Vmcb::ZERO;
    setup::init_long_mode(&mut vmcb, &SETUP, 0x100_0000, 0x9000, GDT);
    vmcb
}

fn protected_mode() -> Vmcb {
    let mut vmcb = Vmcb::ZERO;
    setup::init_protected_mode_flat(&mut vmcb, &SETUP, 0x10_000c);
    vmcb
}

#[test]
fn protected_mode_flat_vmcb_holds_the_multiboot_state() {
    let vmcb = protected_mode();
    let save = &vmcb.save;
    assert_eq!(save.rip, 0x10_000c);
    assert_eq!(save.cr0 & (cr0::PE | cr0::PG), cr0::PE);
    assert_eq!(save.efer, efer::SVME);
    assert_eq!(save.rflags, rflags::FIXED, "interrupts off");
    assert_eq!(save.cs.attributes, SegmentAttributes::CODE32);
    assert_eq!((save.cs.base, save.cs.limit), (0, 0xffff_ffff));
    for data in [save.ds, save.es, save.fs, save.gs, save.ss] {
        assert_eq!(data.attributes, SegmentAttributes::DATA);
        assert_eq!((data.base, data.limit), (0, 0xffff_ffff));
    }
    assert_eq!(save.cpl, 0);
    assert_eq!(save.g_pat, setup::POWER_ON_PAT);
    assert_eq!((save.dr6, save.dr7), (0xffff_0ff0, 0x400));
    assert_eq!(check_vmrun_consistency(&vmcb), Ok(()));
    assert_eq!(check_vmrun_consistency_on(&vmcb, &QEMU64), Ok(()));
}

#[test]
fn long_mode_vmcb_holds_the_linux_64_bit_state() {
    let vmcb = long_mode();
    let save = &vmcb.save;
    assert_eq!(save.rip, 0x100_0000);
    assert_eq!(save.cr0 & (cr0::PE | cr0::PG), cr0::PE | cr0::PG);
    assert_eq!(save.cr4, cr4::PAE);
    assert_eq!(save.cr3, 0x9000);
    assert_eq!(save.efer, efer::LME | efer::LMA | efer::SVME);
    assert_eq!(save.cs.attributes, SegmentAttributes::CODE64);
    assert!(save.cs.attributes.long() && !save.cs.attributes.default_big());
    assert_eq!(save.cs.selector, 0x10);
    assert_eq!((save.ds.selector, save.ss.selector), (0x18, 0x18));
    assert_eq!((save.gdtr.base, save.gdtr.limit), (0x1000, 0x1f));
    assert_eq!(check_vmrun_consistency(&vmcb), Ok(()));
    assert_eq!(check_vmrun_consistency_on(&vmcb, &QEMU64), Ok(()));
}

#[test]
fn baseline_controls_are_set() {
    let vmcb = long_mode();
    let control = &vmcb.control;
    for intercept in setup::BASELINE_INTERCEPTS {
        assert!(control.intercepts(intercept), "{intercept:?}");
    }
    assert!(!control.intercepts(Intercept::Vintr));
    assert!(!control.intercepts(Intercept::Rdtsc));
    assert_eq!(
        control.intercept_exceptions,
        (1 << 1) | (1 << 17) | (1 << 18)
    );
    assert!(control.v_intr_masking());
    assert!(control.nested_paging());
    assert_eq!(control.nested_cr3, 0x20_0000);
    assert_eq!(control.guest_asid, 1);
    assert_eq!(control.iopm_base_pa, 0x30_0000);
    assert_eq!(control.msrpm_base_pa, 0x34_0000);
    assert_eq!(control.tlb(), Some(TlbControl::FlushAll));
    assert_eq!(control.clean_bits, 0);
    assert_eq!(control.event_injection, 0);
}

#[test]
fn init_puts_the_general_registers_where_they_belong() {
    let mut state = GuestRegisters::protected_mode_flat(0x10_0000);
    state.gpr.rax = 0x2bad_b002;
    state.gpr.rbx = 0x9500;
    state.gpr.rsp = 0x7000;
    let mut vmcb = Vmcb::ZERO;
    let mut gpr = GeneralRegisters::default();
    setup::init(&mut vmcb, &mut gpr, &SETUP, &state);
    assert_eq!(vmcb.save.rax, 0x2bad_b002);
    assert_eq!(vmcb.save.rsp, 0x7000);
    assert_eq!(gpr.rbx, 0x9500);
}

#[test]
fn init_clears_whatever_the_vmcb_held() {
    let mut vmcb = long_mode();
    vmcb.control.exit_code = 0x7b;
    vmcb.control.event_injection = EventInjection::nmi().encode();
    vmcb.save.kernel_gs_base = 0xdead;
    setup::init_long_mode(&mut vmcb, &SETUP, 0x100_0000, 0x9000, GDT);
    assert_eq!(vmcb, long_mode());
}

/// Applies `change` to a valid long-mode VMCB and checks against `host`.
fn check_after(host: &HostLimits, change: impl FnOnce(&mut Vmcb)) -> Result<(), ConsistencyError> {
    let mut vmcb = long_mode();
    change(&mut vmcb);
    check_vmrun_consistency_on(&vmcb, host)
}

fn refused(change: impl FnOnce(&mut Vmcb)) -> ConsistencyError {
    check_after(&HostLimits::ARCHITECTURAL, change).unwrap_err()
}

const ARCH: HostLimits = HostLimits::ARCHITECTURAL;

#[test]
fn efer_svme_must_be_set() {
    let error = refused(|v| v.save.efer &= !efer::SVME);
    assert_eq!(
        error,
        ConsistencyError::SvmeClear {
            efer: efer::LME | efer::LMA
        }
    );
}

#[test]
fn cr0_nw_without_cd_is_refused_but_both_are_fine() {
    assert!(matches!(
        refused(|v| v.save.cr0 |= cr0::NW),
        ConsistencyError::NotWriteThroughWithoutCacheDisable { .. }
    ));
    assert_eq!(
        check_after(&ARCH, |v| v.save.cr0 |= cr0::NW | cr0::CD),
        Ok(())
    );
    assert_eq!(check_after(&ARCH, |v| v.save.cr0 |= cr0::CD), Ok(()));
}

#[test]
fn cr0_upper_half_must_be_zero() {
    assert!(matches!(
        refused(|v| v.save.cr0 |= 1 << 32),
        ConsistencyError::Cr0UpperBits { .. }
    ));
}

#[test]
fn cr3_bits_beyond_the_physical_address_width_are_refused() {
    assert_eq!(
        refused(|v| v.save.cr3 |= 1 << 52),
        ConsistencyError::Cr3ReservedBits {
            cr3: 0x9000 | (1 << 52),
            bits: 1 << 52
        }
    );
    assert_eq!(check_after(&ARCH, |v| v.save.cr3 |= 1 << 45), Ok(()));
    assert_eq!(
        check_after(&QEMU64, |v| v.save.cr3 |= 1 << 45),
        Err(ConsistencyError::Cr3ReservedBits {
            cr3: 0x9000 | (1 << 45),
            bits: 1 << 45
        })
    );
    // Outside long mode CR3 is a 32-bit register.
    let mut legacy = protected_mode();
    legacy.save.cr3 = 1 << 32;
    assert!(matches!(
        check_vmrun_consistency(&legacy),
        Err(ConsistencyError::Cr3ReservedBits {
            bits: 0x1_0000_0000,
            ..
        })
    ));
}

#[test]
fn cr4_must_be_zero_bits_are_refused() {
    assert_eq!(
        refused(|v| v.save.cr4 |= cr4::VMXE),
        ConsistencyError::Cr4ReservedBits {
            cr4: cr4::PAE | cr4::VMXE,
            bits: cr4::VMXE
        }
    );
    assert!(matches!(
        refused(|v| v.save.cr4 |= 1 << 40),
        ConsistencyError::Cr4ReservedBits { .. }
    ));
    // A bit the architecture defines but this CPU lacks.
    assert_eq!(check_after(&ARCH, |v| v.save.cr4 |= cr4::SMEP), Ok(()));
    assert!(matches!(
        check_after(&QEMU64, |v| v.save.cr4 |= cr4::SMEP),
        Err(ConsistencyError::Cr4ReservedBits { bits, .. }) if bits == cr4::SMEP
    ));
}

#[test]
fn dr6_and_dr7_upper_halves_must_be_zero() {
    assert!(matches!(
        refused(|v| v.save.dr6 |= 1 << 32),
        ConsistencyError::Dr6UpperBits { .. }
    ));
    assert!(matches!(
        refused(|v| v.save.dr7 |= 1 << 63),
        ConsistencyError::Dr7UpperBits { .. }
    ));
}

#[test]
fn efer_must_be_zero_bits_are_refused() {
    for bit in [1u64 << 1, 1 << 9, 1 << 16, 1 << 22, 1 << 63] {
        assert_eq!(
            refused(|v| v.save.efer |= bit),
            ConsistencyError::EferReservedBits {
                efer: efer::LME | efer::LMA | efer::SVME | bit,
                bits: bit
            }
        );
    }
    assert!(matches!(
        check_after(&QEMU64, |v| v.save.efer |= efer::TCE),
        Err(ConsistencyError::EferReservedBits { .. })
    ));
}

#[test]
fn long_mode_on_a_cpu_without_it_is_refused() {
    let no_long_mode = HostLimits {
        long_mode: false,
        ..ARCH
    };
    assert!(matches!(
        check_after(&no_long_mode, |_| {}),
        Err(ConsistencyError::LongModeUnsupported { .. })
    ));
    assert_eq!(
        check_vmrun_consistency_on(&protected_mode(), &no_long_mode),
        Ok(())
    );
}

#[test]
fn long_mode_paging_needs_pae() {
    assert_eq!(
        refused(|v| v.save.cr4 &= !cr4::PAE),
        ConsistencyError::LongModeWithoutPae { cr4: 0 }
    );
}

#[test]
fn long_mode_paging_needs_protected_mode() {
    assert!(matches!(
        refused(|v| v.save.cr0 &= !cr0::PE),
        ConsistencyError::LongModeWithoutProtectedMode { .. }
    ));
}

#[test]
fn long_mode_code_segment_cannot_be_both_long_and_32_bit() {
    assert_eq!(
        refused(|v| v.save.cs.attributes.0 |= SegmentAttributes::DB),
        ConsistencyError::LongModeCodeSegmentLongAndDefault {
            cs_attributes: 0xe9b
        }
    );
    // Compatibility mode (L clear, D set) is fine, and so is L|D outside long mode.
    assert_eq!(
        check_after(&ARCH, |v| v.save.cs.attributes = SegmentAttributes::CODE32),
        Ok(())
    );
    let mut legacy = protected_mode();
    legacy.save.cs.attributes.0 |= SegmentAttributes::L;
    assert_eq!(check_vmrun_consistency(&legacy), Ok(()));
}

#[test]
fn long_mode_enabled_but_not_active_is_fine() {
    // EFER.LME with paging off: the state just before a kernel turns paging on.
    let mut vmcb = protected_mode();
    vmcb.save.efer |= efer::LME;
    assert_eq!(check_vmrun_consistency(&vmcb), Ok(()));
}

#[test]
fn the_vmrun_intercept_is_required() {
    assert_eq!(
        refused(|v| v.control.set_intercept(Intercept::Vmrun, false)),
        ConsistencyError::VmrunNotIntercepted
    );
}

#[test]
fn permission_maps_must_end_below_the_physical_address_limit() {
    let limit: u64 = 1 << 52;
    assert_eq!(
        refused(|v| v.control.msrpm_base_pa = limit - 0x2000),
        ConsistencyError::MsrPermissionMapTooHigh {
            base: limit - 0x2000
        }
    );
    assert_eq!(
        check_after(&ARCH, |v| v.control.msrpm_base_pa = limit - 0x3000),
        Ok(())
    );
    assert_eq!(
        refused(|v| v.control.iopm_base_pa = limit - 0x3000),
        ConsistencyError::IoPermissionMapTooHigh {
            base: limit - 0x3000
        }
    );
    assert_eq!(
        check_after(&ARCH, |v| v.control.iopm_base_pa = limit - 0x4000),
        Ok(())
    );
    // The low 12 bits are ignored, not added.
    assert_eq!(
        check_after(&ARCH, |v| v.control.iopm_base_pa = limit - 0x4000 + 0xfff),
        Ok(())
    );
    assert!(matches!(
        check_after(&QEMU64, |v| v.control.msrpm_base_pa = 1 << 40),
        Err(ConsistencyError::MsrPermissionMapTooHigh { .. })
    ));
}

#[test]
fn illegal_event_injection_is_refused() {
    let reserved = EventInjection::VALID | (5 << 8) | 0x20;
    assert_eq!(
        refused(|v| v.control.event_injection = reserved),
        ConsistencyError::IllegalEventInjection {
            event_injection: reserved,
            error: EventInjectionError::ReservedType { kind: 5 }
        }
    );
    let nmi_as_exception = EventInjection::exception(2, None).encode();
    assert!(matches!(
        refused(|v| v.control.event_injection = nmi_as_exception),
        ConsistencyError::IllegalEventInjection {
            error: EventInjectionError::NotAnException { vector: 2 },
            ..
        }
    ));
    // A reserved type with the valid bit clear is not an event at all.
    assert_eq!(
        check_after(&ARCH, |v| v.control.event_injection = 5 << 8),
        Ok(())
    );
    assert_eq!(
        check_after(&ARCH, |v| v.control.event_injection =
            EventInjection::exception(14, Some(2)).encode()),
        Ok(())
    );
}

#[test]
fn asid_zero_is_refused() {
    assert_eq!(
        refused(|v| v.control.guest_asid = 0),
        ConsistencyError::AsidZero
    );
}

#[test]
fn nested_paging_needs_the_feature() {
    let no_npt = HostLimits {
        nested_paging: false,
        ..ARCH
    };
    assert_eq!(
        check_after(&no_npt, |_| {}),
        Err(ConsistencyError::NestedPagingUnsupported)
    );
    assert_eq!(
        check_after(&no_npt, |v| v.control.nested_control = 0),
        Ok(())
    );
}

#[test]
fn tlb_control_must_be_a_defined_encoding_the_cpu_supports() {
    for value in [2u8, 4, 5, 6, 8, 0xff] {
        assert_eq!(
            refused(|v| v.control.tlb_control = value),
            ConsistencyError::TlbControlReserved { value }
        );
    }
    for value in [3u8, 7] {
        assert_eq!(
            check_after(&ARCH, |v| v.control.tlb_control = value),
            Ok(())
        );
        assert_eq!(
            check_after(&QEMU64, |v| v.control.tlb_control = value),
            Err(ConsistencyError::TlbControlNeedsFlushByAsid { value })
        );
    }
    assert_eq!(check_after(&QEMU64, |v| v.control.tlb_control = 0), Ok(()));
}

#[test]
fn the_first_broken_rule_in_apm_order_is_reported() {
    let error = refused(|v| {
        v.control.guest_asid = 0;
        v.save.dr7 |= 1 << 40;
        v.save.efer &= !efer::SVME;
    });
    assert!(matches!(error, ConsistencyError::SvmeClear { .. }));
}

#[test]
fn every_error_explains_itself() {
    let errors = [
        refused(|v| v.save.efer &= !efer::SVME),
        refused(|v| v.save.cr0 |= cr0::NW),
        refused(|v| v.save.cr0 |= 1 << 32),
        refused(|v| v.save.cr3 |= 1 << 60),
        refused(|v| v.save.cr4 |= cr4::VMXE),
        refused(|v| v.save.dr6 |= 1 << 32),
        refused(|v| v.save.dr7 |= 1 << 32),
        refused(|v| v.save.efer |= 1 << 2),
        refused(|v| v.save.cr4 = 0),
        refused(|v| v.save.cr0 &= !cr0::PE),
        refused(|v| v.save.cs.attributes.0 |= SegmentAttributes::DB),
        refused(|v| v.control.set_intercept(Intercept::Vmrun, false)),
        refused(|v| v.control.msrpm_base_pa = u64::MAX),
        refused(|v| v.control.iopm_base_pa = u64::MAX),
        refused(|v| v.control.event_injection = EventInjection::exception(32, None).encode()),
        refused(|v| v.control.guest_asid = 0),
        refused(|v| v.control.tlb_control = 2),
    ];
    let mut seen = std::collections::HashSet::new();
    for error in errors {
        let text = error.to_string();
        assert!(text.starts_with("VMRUN would refuse this vCPU: "), "{text}");
        assert!(
            seen.insert(core::mem::discriminant(&error)),
            "{error:?} twice"
        );
    }
}
