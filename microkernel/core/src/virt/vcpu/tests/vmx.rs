//! VMX exits into messages and replies into the VMCS, against a map-backed VMCS.

use super::super::vmx::{GuestContext, VmcsAccess};
use super::super::*;
use super::{RAX, RIP};
use crate::virt::vmx::{InterruptionInfo, InterruptionType, VmcsField, entry_controls, primary};
use crate::virt::x86::cr0;
use std::collections::HashMap;

/// A VMCS as a map; unwritten fields read as 0, writes are truncated to the field width.
#[derive(Default)]
pub(super) struct FakeVmcs(HashMap<VmcsField, u64>);

impl VmcsAccess for FakeVmcs {
    fn read(&self, field: VmcsField) -> u64 {
        self.0.get(&field).copied().unwrap_or(0)
    }

    fn write(&mut self, field: VmcsField, value: u64) {
        self.0.insert(field, value & field.value_mask());
    }
}

pub(super) fn vmx_exit(reason: u32, qualification: u64) -> (FakeVmcs, GuestContext) {
    let mut vmcs = FakeVmcs::default();
    let mut context = GuestContext::default();
    let state = GuestRegisters::long_mode(
        RIP,
        0x9000,
        DescriptorTable {
            base: 0x1000,
            limit: 0x1f,
        },
    );
    vmx::write_registers(&mut vmcs, &mut context, &state);
    context.gpr.rax = RAX;
    context.gpr.rcx = 0xdead_0000_c000_0080;
    context.gpr.rdx = 0xbeef_0000_0000_0001;
    vmcs.write(VmcsField::ExitReason, u64::from(reason));
    vmcs.write(VmcsField::ExitQualification, qualification);
    (vmcs, context)
}

fn vmx_message(reason: u32, qualification: u64) -> ExitMessage {
    let (vmcs, context) = vmx_exit(reason, qualification);
    vmx::exit_message(&vmcs, &context)
}

#[test]
fn vmx_io_exits() {
    for (bits, size, value) in [(0u64, 1u8, 0x88u32), (1, 2, 0x7788), (3, 4, 0x5566_7788)] {
        let (mut vmcs, context) = vmx_exit(30, (0x3f8 << 16) | bits);
        vmcs.write(VmcsField::ExitInstructionLength, 1);
        let message = vmx::exit_message(&vmcs, &context);
        assert_eq!(
            message.exit,
            Exit::Io {
                port: 0x3f8,
                size,
                write: true,
                value,
                string: false,
                rep: false
            }
        );
        assert_eq!(message.instruction_length, Some(1));
    }
    assert!(matches!(
        vmx_message(30, (0x1f0 << 16) | 1 | (1 << 3) | (1 << 4) | (1 << 5)).exit,
        Exit::Io {
            port: 0x1f0,
            size: 2,
            write: false,
            value: 0,
            string: true,
            rep: true
        }
    ));
    assert!(matches!(
        vmx_message(30, 2).exit,
        Exit::Other {
            backend: Backend::Vmx,
            ..
        }
    ));
}

#[test]
fn vmx_cpuid_msr_and_simple_exits() {
    assert_eq!(
        vmx_message(10, 0).exit,
        Exit::Cpuid {
            leaf: 0x5566_7788,
            subleaf: 0xc000_0080
        }
    );
    assert_eq!(
        vmx_message(31, 0).exit,
        Exit::Msr {
            write: false,
            index: 0xc000_0080,
            value: 0
        }
    );
    assert_eq!(
        vmx_message(32, 0).exit,
        Exit::Msr {
            write: true,
            index: 0xc000_0080,
            value: 0x1_5566_7788
        }
    );
    let cases = [
        (12, Exit::Hlt),
        (2, Exit::Shutdown),
        (1, Exit::Interrupt),
        (52, Exit::Interrupt),
        (7, Exit::InterruptWindow),
        (18, Exit::Vmcall),
        (13, Exit::Instruction(Instruction::Invd)),
        (24, Exit::Instruction(Instruction::Virtualization)),
        (
            0x8000_0021,
            Exit::Invalid {
                reason: 0x8000_0021,
            },
        ),
    ];
    for (reason, exit) in cases {
        assert_eq!(vmx_message(reason, 0).exit, exit, "{reason:#x}");
    }
}

#[test]
fn vmx_ept_violations_and_misconfigurations() {
    let (mut vmcs, context) = vmx_exit(48, (1 << 1) | (1 << 3) | (1 << 7) | (1 << 8));
    vmcs.write(VmcsField::GuestPhysicalAddress, 0xfee0_0030);
    assert_eq!(
        vmx::exit_message(&vmcs, &context).exit,
        Exit::NestedPageFault {
            gpa: 0xfee0_0030,
            write: true,
            fetch: false,
            present: true,
            page_walk: false,
            misconfigured: false
        }
    );
    vmcs.write(VmcsField::ExitReason, 49);
    assert!(matches!(
        vmx::exit_message(&vmcs, &context).exit,
        Exit::NestedPageFault {
            misconfigured: true,
            gpa: 0xfee0_0030,
            ..
        }
    ));
}

#[test]
fn vmx_exceptions_and_nmis() {
    let (mut vmcs, context) = vmx_exit(0, 0xdead_b000);
    let pf = InterruptionInfo {
        vector: 14,
        kind: InterruptionType::HardwareException,
        error_code_valid: true,
        nmi_unblocking: false,
    };
    vmcs.write(VmcsField::ExitInterruptionInfo, u64::from(pf.encode()));
    vmcs.write(VmcsField::ExitInterruptionErrorCode, 4);
    assert_eq!(
        vmx::exit_message(&vmcs, &context).exit,
        Exit::Exception {
            vector: 14,
            error_code: Some(4),
            fault_address: Some(0xdead_b000)
        }
    );
    let nmi = InterruptionInfo {
        vector: 2,
        kind: InterruptionType::Nmi,
        error_code_valid: false,
        nmi_unblocking: false,
    };
    vmcs.write(VmcsField::ExitInterruptionInfo, u64::from(nmi.encode()));
    assert_eq!(vmx::exit_message(&vmcs, &context).exit, Exit::Nmi);
}

#[test]
fn vmx_pending_event_and_interrupt_shadow() {
    let (mut vmcs, context) = vmx_exit(48, 0);
    let interrupt = InterruptionInfo {
        vector: 0x30,
        kind: InterruptionType::ExternalInterrupt,
        error_code_valid: false,
        nmi_unblocking: false,
    };
    vmcs.write(VmcsField::IdtVectoringInfo, u64::from(interrupt.encode()));
    vmcs.write(VmcsField::GuestInterruptibility, 1);
    let message = vmx::exit_message(&vmcs, &context);
    assert_eq!(
        message.pending_event,
        Some(Event::ExternalInterrupt { vector: 0x30 })
    );
    assert!(message.interrupt_shadow);
    assert_eq!(message.instruction_length, None);
}

#[test]
fn vmx_reply_advances_injects_and_opens_the_interrupt_window() {
    let (mut vmcs, mut context) = vmx_exit(10, 0);
    vmcs.write(VmcsField::GuestInterruptibility, 3);
    let message = vmx::exit_message(&vmcs, &context);
    let reply = ExitReply {
        inject: Some(Event::Exception {
            vector: 13,
            error_code: Some(0),
        }),
        interrupt_window: true,
        ..ExitReply::skip_instruction(&message, 2)
    };
    vmx::apply_reply(&mut vmcs, &mut context, &reply).unwrap();
    assert_eq!(vmcs.read(VmcsField::GuestRip), RIP + 2);
    assert_eq!(vmcs.read(VmcsField::GuestInterruptibility), 0);
    assert_eq!(vmcs.read(VmcsField::EntryInterruptionInfo), 0x8000_0b0d);
    assert_eq!(vmcs.read(VmcsField::EntryExceptionErrorCode), 0);
    assert_ne!(
        vmcs.read(VmcsField::PrimaryProcBasedControls)
            & u64::from(primary::INTERRUPT_WINDOW_EXITING),
        0
    );
    let soft = ExitReply {
        inject: Some(Event::SoftwareInterrupt {
            vector: 0x80,
            instruction_length: 2,
        }),
        ..ExitReply::resume(&message)
    };
    vmx::apply_reply(&mut vmcs, &mut context, &soft).unwrap();
    assert_eq!(vmcs.read(VmcsField::EntryInterruptionInfo), 0x8000_0480);
    assert_eq!(vmcs.read(VmcsField::EntryInstructionLength), 2);
    assert_eq!(
        vmcs.read(VmcsField::PrimaryProcBasedControls)
            & u64::from(primary::INTERRUPT_WINDOW_EXITING),
        0
    );
    vmx::apply_reply(&mut vmcs, &mut context, &ExitReply::resume(&message)).unwrap();
    assert_eq!(vmcs.read(VmcsField::EntryInterruptionInfo), 0);
    let interrupt = ExitReply {
        inject: Some(Event::ExternalInterrupt { vector: 0x30 }),
        ..ExitReply::resume(&message)
    };
    assert!(matches!(
        vmx::apply_reply(&mut vmcs, &mut context, &interrupt),
        Err(ReplyError::BadEvent {
            error: EventError::InterruptsMasked,
            ..
        })
    ));
    vmcs.write(VmcsField::GuestRflags, 0x202);
    vmx::apply_reply(&mut vmcs, &mut context, &interrupt).unwrap();
    assert_eq!(vmcs.read(VmcsField::EntryInterruptionInfo), 0x8000_0030);
    let bad = ExitReply {
        inject: Some(Event::Exception {
            vector: 28,
            error_code: None,
        }),
        ..ExitReply::resume(&message)
    };
    assert!(matches!(
        vmx::apply_reply(&mut vmcs, &mut context, &bad),
        Err(ReplyError::BadEvent {
            error: EventError::NotAnException { vector: 28 },
            ..
        })
    ));
}

#[test]
fn vmx_registers_follow_read_shadows_and_the_ia32e_control() {
    let (mut vmcs, mut context) = vmx_exit(10, 0);
    // The host owns CR0.NE and CR4.VMXE: the guest reads its own values from the shadows.
    vmcs.write(VmcsField::Cr0GuestHostMask, cr0::NE);
    vmcs.write(VmcsField::Cr4GuestHostMask, 1 << 13);
    vmcs.write(VmcsField::GuestCr4, (1 << 13) | 0x20);
    let mut registers = vmx::read_registers(&vmcs, &context);
    registers.cr0 &= !cr0::NE;
    registers.cr4 = 0x20;
    vmx::write_registers(&mut vmcs, &mut context, &registers);
    assert_ne!(
        vmcs.read(VmcsField::GuestCr0) & cr0::NE,
        0,
        "host-owned bit kept"
    );
    assert_eq!(vmcs.read(VmcsField::GuestCr4), (1 << 13) | 0x20);
    assert_eq!(vmx::read_registers(&vmcs, &context), registers);
    assert_ne!(
        vmcs.read(VmcsField::EntryControls) & u64::from(entry_controls::IA32E_MODE_GUEST),
        0
    );
    registers.efer = 0;
    vmx::write_registers(&mut vmcs, &mut context, &registers);
    assert_eq!(
        vmcs.read(VmcsField::EntryControls) & u64::from(entry_controls::IA32E_MODE_GUEST),
        0
    );
}

#[test]
fn vmx_resuming_after_a_host_interrupt_keeps_the_interrupted_event() {
    let (mut vmcs, _) = vmx_exit(1, 0);
    let pf = InterruptionInfo {
        vector: 14,
        kind: InterruptionType::HardwareException,
        error_code_valid: true,
        nmi_unblocking: false,
    };
    vmcs.write(
        VmcsField::IdtVectoringInfo,
        u64::from(pf.encode()) | (1 << 12),
    );
    vmcs.write(VmcsField::IdtVectoringErrorCode, 2);
    vmx::resume_unchanged(&mut vmcs);
    assert_eq!(vmcs.read(VmcsField::EntryInterruptionInfo), 0x8000_0b0e);
    assert_eq!(vmcs.read(VmcsField::EntryExceptionErrorCode), 2);
    vmcs.write(VmcsField::IdtVectoringInfo, 0);
    vmx::resume_unchanged(&mut vmcs);
    assert_eq!(vmcs.read(VmcsField::EntryInterruptionInfo), 0);
}
