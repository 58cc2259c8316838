//! AMD SVM: the VMCB, its intercepts, exit codes and permission maps, the VMRUN
//! consistency rules, and the initial VMCB for the two guest entry states Esker boots.
//!
//! Sources: AMD64 Architecture Programmer's Manual vol. 2, chapter 15 ("Secure Virtual
//! Machine") and appendices B (VMCB layout) and C (exit codes); behaviour of QEMU's TCG
//! (`target/i386/tcg/sysemu/svm_helper.c`), the implementation every Esker test runs on.
//! This module only describes and checks; the kernel's hardware layer runs VMRUN.

mod bitmaps;
mod consistency;
mod controls;
mod event;
mod exit;
pub mod setup;
mod vmcb;

#[cfg(test)]
mod tests;

pub use bitmaps::{IoPermissionMap, MsrOutOfRange, MsrPermissionMap, PortRangeOutOfBounds};
pub use consistency::{
    ConsistencyError, HostLimits, check_vmrun_consistency, check_vmrun_consistency_on,
};
pub use controls::{
    Intercept, TlbControl, clean, interrupt_state, nested_control, vintr, virtualization_extensions,
};
pub use event::{EventInjection, EventInjectionError, EventType, is_exception_vector};
pub use exit::{AddressSize, IoDirection, IoioInfo, MsrAccess, NpfInfo, SvmExitCode};
pub use vmcb::{ControlArea, StateSaveArea, Vmcb};
