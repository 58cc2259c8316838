//! Intel VMX: VMCS field encodings and control bits, exit reasons and qualifications, and
//! the EPT entry format and pointer, for the second backend behind [`super::vcpu`].
//!
//! Sources: Intel 64 and IA-32 Architectures Software Developer's Manual vol. 3C, chapters
//! 25 (VMCS), 28 (VM exits), 29 (EPT) and appendices B (field encodings) and C (exit
//! reasons). QEMU's TCG does not emulate VMX, so this backend is host-tested only: the
//! kernel's VMREAD/VMWRITE layer plugs in through [`super::vcpu::vmx::VmcsAccess`].

mod ept;
mod exit;
mod fields;

pub use ept::{Ept, EptMemoryType, EptPointer};
pub use exit::{
    CrAccess, EptViolation, ExitReason, InterruptionInfo, InterruptionType, IoQualification,
    VmxExitReason,
};
pub use fields::{
    FieldKind, FieldWidth, VmcsField, activity_state, entry_controls, exit_controls,
    interruptibility, pin_based, primary, secondary,
};
