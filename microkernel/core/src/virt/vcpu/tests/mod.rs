//! Host tests of the vCPU interface: SVM and VMX exits into messages, replies back into
//! the VMCB/VMCS, the message encoding, and properties over arbitrary exits.

mod encoding;
mod properties;
mod svm;
mod vmx;

use crate::virt::svm::setup;

const SETUP: setup::ControlSetup = setup::ControlSetup {
    asid: 7,
    nested_cr3: 0x20_0000,
    iopm_base_pa: 0x30_0000,
    msrpm_base_pa: 0x34_0000,
    tsc_offset: 0,
};

/// Where the test guests stopped.
const RIP: u64 = 0xffff_ffff_8100_0000;
/// The test guests' RAX.
const RAX: u64 = 0x1122_3344_5566_7788;
