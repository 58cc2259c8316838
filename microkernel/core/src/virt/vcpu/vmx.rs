//! The vCPU interface over Intel VMX, as far as it goes without the hardware: the kernel
//! reaches the VMCS through [`VmcsAccess`] (VMREAD/VMWRITE on the machine, a map in
//! tests), and these functions turn exits into [`ExitMessage`]s and apply
//! [`ExitReply`]s. VM-entry's own checks are the hardware's: a refused entry comes back
//! as [`Exit::Invalid`].

use super::{
    Backend, DescriptorTable, Event, EventError, Exit, ExitMessage, ExitReply, GeneralRegisters,
    GuestRegisters, Instruction, MAX_INSTRUCTION_LENGTH, ReplyError, Segment, SegmentAttributes,
    next_rip,
};
use crate::virt::vmx::{
    EptViolation, ExitReason, InterruptionInfo, InterruptionType, IoQualification, VmcsField,
    VmxExitReason, entry_controls, interruptibility, primary,
};
use crate::virt::x86::{efer, vector};

/// VMREAD and VMWRITE.
pub trait VmcsAccess {
    /// The value of `field` (zero-extended).
    fn read(&self, field: VmcsField) -> u64;
    /// Sets `field` (the value is truncated to the field's width by the hardware).
    fn write(&mut self, field: VmcsField, value: u64);
}

/// Guest state the VMCS does not hold, which the kernel saves and restores itself around
/// VMRESUME: the general registers other than RSP, and CR2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestContext {
    /// RAX … R15 (the RSP slot is unused: RSP is in the VMCS).
    pub gpr: GeneralRegisters,
    /// CR2.
    pub cr2: u64,
}

/// The fields of one segment register: selector, base, limit, access rights.
struct SegmentFields {
    selector: VmcsField,
    base: VmcsField,
    limit: VmcsField,
    access_rights: VmcsField,
}

const fn segment_fields(
    selector: VmcsField,
    base: VmcsField,
    limit: VmcsField,
    access_rights: VmcsField,
) -> SegmentFields {
    SegmentFields {
        selector,
        base,
        limit,
        access_rights,
    }
}

const ES: SegmentFields = segment_fields(
    VmcsField::GuestEsSelector,
    VmcsField::GuestEsBase,
    VmcsField::GuestEsLimit,
    VmcsField::GuestEsAccessRights,
);
const CS: SegmentFields = segment_fields(
    VmcsField::GuestCsSelector,
    VmcsField::GuestCsBase,
    VmcsField::GuestCsLimit,
    VmcsField::GuestCsAccessRights,
);
const SS: SegmentFields = segment_fields(
    VmcsField::GuestSsSelector,
    VmcsField::GuestSsBase,
    VmcsField::GuestSsLimit,
    VmcsField::GuestSsAccessRights,
);
const DS: SegmentFields = segment_fields(
    VmcsField::GuestDsSelector,
    VmcsField::GuestDsBase,
    VmcsField::GuestDsLimit,
    VmcsField::GuestDsAccessRights,
);
const FS: SegmentFields = segment_fields(
    VmcsField::GuestFsSelector,
    VmcsField::GuestFsBase,
    VmcsField::GuestFsLimit,
    VmcsField::GuestFsAccessRights,
);
const GS: SegmentFields = segment_fields(
    VmcsField::GuestGsSelector,
    VmcsField::GuestGsBase,
    VmcsField::GuestGsLimit,
    VmcsField::GuestGsAccessRights,
);
const LDTR: SegmentFields = segment_fields(
    VmcsField::GuestLdtrSelector,
    VmcsField::GuestLdtrBase,
    VmcsField::GuestLdtrLimit,
    VmcsField::GuestLdtrAccessRights,
);
const TR: SegmentFields = segment_fields(
    VmcsField::GuestTrSelector,
    VmcsField::GuestTrBase,
    VmcsField::GuestTrLimit,
    VmcsField::GuestTrAccessRights,
);

fn read_segment(vmcs: &impl VmcsAccess, fields: &SegmentFields) -> Segment {
    Segment {
        selector: vmcs.read(fields.selector) as u16,
        attributes: SegmentAttributes::from_vmx_access_rights(
            vmcs.read(fields.access_rights) as u32
        ),
        limit: vmcs.read(fields.limit) as u32,
        base: vmcs.read(fields.base),
    }
}

fn write_segment(vmcs: &mut impl VmcsAccess, fields: &SegmentFields, segment: &Segment) {
    vmcs.write(fields.selector, u64::from(segment.selector));
    vmcs.write(
        fields.access_rights,
        u64::from(segment.attributes.to_vmx_access_rights()),
    );
    vmcs.write(fields.limit, u64::from(segment.limit));
    vmcs.write(fields.base, segment.base);
}

/// A control register as the guest reads it: bits the host owns (set in `mask`) come
/// from the read shadow.
fn guest_visible(
    vmcs: &impl VmcsAccess,
    real: VmcsField,
    mask: VmcsField,
    shadow: VmcsField,
) -> u64 {
    let mask = vmcs.read(mask);
    (vmcs.read(real) & !mask) | (vmcs.read(shadow) & mask)
}

/// Sets a control register as the guest should read it: host-owned bits go to the read
/// shadow and keep their real value, the others go to the real register.
fn set_guest_visible(
    vmcs: &mut impl VmcsAccess,
    real: VmcsField,
    mask: VmcsField,
    shadow: VmcsField,
    value: u64,
) {
    let mask = vmcs.read(mask);
    let kept = vmcs.read(real) & mask;
    vmcs.write(real, (value & !mask) | kept);
    vmcs.write(shadow, value);
}

/// The guest's registers.
pub fn read_registers(vmcs: &impl VmcsAccess, context: &GuestContext) -> GuestRegisters {
    GuestRegisters {
        gpr: GeneralRegisters {
            rsp: vmcs.read(VmcsField::GuestRsp),
            ..context.gpr
        },
        rip: vmcs.read(VmcsField::GuestRip),
        rflags: vmcs.read(VmcsField::GuestRflags),
        cr0: guest_visible(
            vmcs,
            VmcsField::GuestCr0,
            VmcsField::Cr0GuestHostMask,
            VmcsField::Cr0ReadShadow,
        ),
        cr2: context.cr2,
        cr3: vmcs.read(VmcsField::GuestCr3),
        cr4: guest_visible(
            vmcs,
            VmcsField::GuestCr4,
            VmcsField::Cr4GuestHostMask,
            VmcsField::Cr4ReadShadow,
        ),
        efer: vmcs.read(VmcsField::GuestIa32Efer),
        cs: read_segment(vmcs, &CS),
        ds: read_segment(vmcs, &DS),
        es: read_segment(vmcs, &ES),
        fs: read_segment(vmcs, &FS),
        gs: read_segment(vmcs, &GS),
        ss: read_segment(vmcs, &SS),
        tr: read_segment(vmcs, &TR),
        ldtr: read_segment(vmcs, &LDTR),
        gdtr: DescriptorTable {
            base: vmcs.read(VmcsField::GuestGdtrBase),
            limit: vmcs.read(VmcsField::GuestGdtrLimit) as u16,
        },
        idtr: DescriptorTable {
            base: vmcs.read(VmcsField::GuestIdtrBase),
            limit: vmcs.read(VmcsField::GuestIdtrLimit) as u16,
        },
    }
}

/// Writes `registers` into the VMCS and `context`. The "IA-32e mode guest" entry control
/// follows EFER.LMA, as VM entry requires.
pub fn write_registers(
    vmcs: &mut impl VmcsAccess,
    context: &mut GuestContext,
    registers: &GuestRegisters,
) {
    context.gpr = registers.gpr;
    context.cr2 = registers.cr2;
    vmcs.write(VmcsField::GuestRsp, registers.gpr.rsp);
    vmcs.write(VmcsField::GuestRip, registers.rip);
    vmcs.write(VmcsField::GuestRflags, registers.rflags);
    set_guest_visible(
        vmcs,
        VmcsField::GuestCr0,
        VmcsField::Cr0GuestHostMask,
        VmcsField::Cr0ReadShadow,
        registers.cr0,
    );
    vmcs.write(VmcsField::GuestCr3, registers.cr3);
    set_guest_visible(
        vmcs,
        VmcsField::GuestCr4,
        VmcsField::Cr4GuestHostMask,
        VmcsField::Cr4ReadShadow,
        registers.cr4,
    );
    vmcs.write(VmcsField::GuestIa32Efer, registers.efer);
    let entry = vmcs.read(VmcsField::EntryControls);
    let ia32e = u64::from(entry_controls::IA32E_MODE_GUEST);
    let entry = if registers.efer & efer::LMA != 0 {
        entry | ia32e
    } else {
        entry & !ia32e
    };
    vmcs.write(VmcsField::EntryControls, entry);
    write_segment(vmcs, &CS, &registers.cs);
    write_segment(vmcs, &DS, &registers.ds);
    write_segment(vmcs, &ES, &registers.es);
    write_segment(vmcs, &FS, &registers.fs);
    write_segment(vmcs, &GS, &registers.gs);
    write_segment(vmcs, &SS, &registers.ss);
    write_segment(vmcs, &TR, &registers.tr);
    write_segment(vmcs, &LDTR, &registers.ldtr);
    vmcs.write(VmcsField::GuestGdtrBase, registers.gdtr.base);
    vmcs.write(VmcsField::GuestGdtrLimit, u64::from(registers.gdtr.limit));
    vmcs.write(VmcsField::GuestIdtrBase, registers.idtr.base);
    vmcs.write(VmcsField::GuestIdtrLimit, u64::from(registers.idtr.limit));
}

fn edx_eax(rdx: u64, rax: u64) -> u64 {
    (rdx << 32) | (rax & 0xffff_ffff)
}

/// The exit the VMCS describes.
pub fn exit(vmcs: &impl VmcsAccess, context: &GuestContext) -> Exit {
    let raw = vmcs.read(VmcsField::ExitReason) as u32;
    let reason = ExitReason::decode(raw);
    let qualification = vmcs.read(VmcsField::ExitQualification);
    let gpa = vmcs.read(VmcsField::GuestPhysicalAddress);
    let gpr = &context.gpr;
    let other = Exit::Other {
        backend: Backend::Vmx,
        code: u64::from(raw),
        info1: qualification,
        info2: gpa,
    };
    if reason.entry_failure {
        return Exit::Invalid {
            reason: u64::from(raw),
        };
    }
    match reason.reason {
        VmxExitReason::IoInstruction => match IoQualification::decode(qualification) {
            Some(io) => {
                let write = !io.input;
                let mask = u64::MAX >> (64 - 8 * u32::from(io.size));
                Exit::Io {
                    port: io.port,
                    size: io.size,
                    write,
                    value: if write && !io.string {
                        (gpr.rax & mask) as u32
                    } else {
                        0
                    },
                    string: io.string,
                    rep: io.rep,
                }
            }
            None => other,
        },
        VmxExitReason::Cpuid => Exit::Cpuid {
            leaf: gpr.rax as u32,
            subleaf: gpr.rcx as u32,
        },
        VmxExitReason::Rdmsr => Exit::Msr {
            write: false,
            index: gpr.rcx as u32,
            value: 0,
        },
        VmxExitReason::Wrmsr => Exit::Msr {
            write: true,
            index: gpr.rcx as u32,
            value: edx_eax(gpr.rdx, gpr.rax),
        },
        VmxExitReason::EptViolation => {
            let violation = EptViolation::decode(qualification);
            Exit::NestedPageFault {
                gpa,
                write: violation.write,
                fetch: violation.fetch,
                present: violation.present(),
                page_walk: violation.during_page_walk(),
                misconfigured: false,
            }
        }
        VmxExitReason::EptMisconfiguration => Exit::NestedPageFault {
            gpa,
            write: false,
            fetch: false,
            present: true,
            page_walk: false,
            misconfigured: true,
        },
        VmxExitReason::Hlt => Exit::Hlt,
        VmxExitReason::TripleFault => Exit::Shutdown,
        VmxExitReason::ExceptionOrNmi => {
            let info = vmcs.read(VmcsField::ExitInterruptionInfo) as u32;
            match InterruptionInfo::decode(info) {
                Some(InterruptionInfo {
                    kind: InterruptionType::Nmi,
                    ..
                }) => Exit::Nmi,
                Some(info) => Exit::Exception {
                    vector: info.vector,
                    error_code: if info.error_code_valid {
                        Some(vmcs.read(VmcsField::ExitInterruptionErrorCode) as u32)
                    } else {
                        None
                    },
                    fault_address: if info.vector == vector::PF {
                        Some(qualification)
                    } else {
                        None
                    },
                },
                None => other,
            }
        }
        VmxExitReason::ExternalInterrupt | VmxExitReason::PreemptionTimer => Exit::Interrupt,
        VmxExitReason::InterruptWindow => Exit::InterruptWindow,
        VmxExitReason::Vmcall => Exit::Vmcall,
        VmxExitReason::Xsetbv => Exit::Xsetbv {
            index: gpr.rcx as u32,
            value: edx_eax(gpr.rdx, gpr.rax),
        },
        VmxExitReason::Invd => Exit::Instruction(Instruction::Invd),
        VmxExitReason::Wbinvd => Exit::Instruction(Instruction::Wbinvd),
        VmxExitReason::Monitor => Exit::Instruction(Instruction::Monitor),
        VmxExitReason::Mwait => Exit::Instruction(Instruction::Mwait),
        VmxExitReason::Rdtsc => Exit::Instruction(Instruction::Rdtsc),
        VmxExitReason::Rdtscp => Exit::Instruction(Instruction::Rdtscp),
        VmxExitReason::Rdpmc => Exit::Instruction(Instruction::Rdpmc),
        VmxExitReason::Rsm => Exit::Instruction(Instruction::Rsm),
        VmxExitReason::Pause => Exit::Instruction(Instruction::Pause),
        VmxExitReason::Invlpg => Exit::Instruction(Instruction::Invlpg),
        VmxExitReason::Invpcid => Exit::Instruction(Instruction::Invpcid),
        vmx if vmx.is_vmx_instruction() => Exit::Instruction(Instruction::Virtualization),
        _ => other,
    }
}

/// Whether the exit is one an instruction caused, with a valid exit instruction length.
const fn is_instruction_exit(exit: &Exit) -> bool {
    matches!(
        exit,
        Exit::Io { .. }
            | Exit::Cpuid { .. }
            | Exit::Msr { .. }
            | Exit::Hlt
            | Exit::Vmcall
            | Exit::Xsetbv { .. }
            | Exit::Instruction(_)
    )
}

/// The event VMX was delivering (IDT-vectoring information), to re-inject. As with SVM,
/// events an instruction raised (software interrupts and exceptions) are left to the
/// instruction, which runs again.
fn pending_event(vmcs: &impl VmcsAccess) -> Option<Event> {
    let info = InterruptionInfo::decode(vmcs.read(VmcsField::IdtVectoringInfo) as u32)?;
    match info.kind {
        InterruptionType::ExternalInterrupt => Some(Event::ExternalInterrupt {
            vector: info.vector,
        }),
        InterruptionType::Nmi => Some(Event::Nmi),
        InterruptionType::HardwareException => Some(Event::Exception {
            vector: info.vector,
            error_code: if info.error_code_valid {
                Some(vmcs.read(VmcsField::IdtVectoringErrorCode) as u32)
            } else {
                None
            },
        }),
        _ => None,
    }
}

/// Resumes after an exit the kernel handled itself: the event the exit interrupted (from
/// the IDT-vectoring information), if any, is delivered again; nothing else changes.
pub fn resume_unchanged(vmcs: &mut impl VmcsAccess) {
    let info = match pending_event(vmcs) {
        Some(event) => {
            let (vector, kind, error_code) = match event {
                Event::ExternalInterrupt { vector } => {
                    (vector, InterruptionType::ExternalInterrupt, None)
                }
                Event::Nmi => (vector::NMI, InterruptionType::Nmi, None),
                Event::Exception { vector, error_code } => {
                    (vector, InterruptionType::HardwareException, error_code)
                }
                // pending_event never yields one.
                Event::SoftwareInterrupt { vector, .. } => {
                    (vector, InterruptionType::SoftwareInterrupt, None)
                }
            };
            if let Some(code) = error_code {
                vmcs.write(VmcsField::EntryExceptionErrorCode, u64::from(code));
            }
            InterruptionInfo {
                vector,
                kind,
                error_code_valid: error_code.is_some(),
                nmi_unblocking: false,
            }
            .encode()
        }
        None => 0,
    };
    vmcs.write(VmcsField::EntryInterruptionInfo, u64::from(info));
}

/// The whole message for the exit the VMCS describes.
pub fn exit_message(vmcs: &impl VmcsAccess, context: &GuestContext) -> ExitMessage {
    let exit = exit(vmcs, context);
    let length = vmcs.read(VmcsField::ExitInstructionLength);
    let instruction_length = if is_instruction_exit(&exit)
        && (1..=u64::from(MAX_INSTRUCTION_LENGTH)).contains(&length)
    {
        Some(length as u8)
    } else {
        None
    };
    let blocking =
        u64::from(interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS);
    ExitMessage {
        exit,
        registers: read_registers(vmcs, context),
        instruction_length,
        pending_event: pending_event(vmcs),
        interrupt_shadow: vmcs.read(VmcsField::GuestInterruptibility) & blocking != 0,
    }
}

/// Whether `vector` is an exception Intel defines (0, 1, 3–8, 10–14, 16–21).
pub const fn is_exception_vector(vector: u8) -> bool {
    matches!(vector, 0 | 1 | 3..=8 | 10..=14 | 16..=21)
}

/// Applies the monitor's reply: registers, RIP advance (ending STI/MOV SS blocking),
/// event injection through the VM-entry interruption-information field, and interrupt-
/// window exiting. On error the VMCS may have been partly updated and must not be entered.
pub fn apply_reply(
    vmcs: &mut impl VmcsAccess,
    context: &mut GuestContext,
    reply: &ExitReply,
) -> Result<(), ReplyError> {
    if reply.advance_rip > MAX_INSTRUCTION_LENGTH {
        return Err(ReplyError::InstructionTooLong {
            length: reply.advance_rip,
        });
    }
    if let Some(registers) = &reply.registers {
        write_registers(vmcs, context, registers);
    }
    if reply.advance_rip != 0 {
        let long = vmcs.read(VmcsField::GuestIa32Efer) & efer::LMA != 0
            && read_segment(vmcs, &CS).attributes.long();
        let rip = next_rip(
            vmcs.read(VmcsField::GuestRip),
            u64::from(reply.advance_rip),
            long,
        );
        vmcs.write(VmcsField::GuestRip, rip);
        let blocking =
            u64::from(interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS);
        let state = vmcs.read(VmcsField::GuestInterruptibility);
        vmcs.write(VmcsField::GuestInterruptibility, state & !blocking);
    }
    let info = match reply.inject {
        Some(event) => {
            let cr0 = guest_visible(
                vmcs,
                VmcsField::GuestCr0,
                VmcsField::Cr0GuestHostMask,
                VmcsField::Cr0ReadShadow,
            );
            let blocking =
                u64::from(interruptibility::BLOCKING_BY_STI | interruptibility::BLOCKING_BY_MOV_SS);
            let shadow = vmcs.read(VmcsField::GuestInterruptibility) & blocking != 0;
            event
                .check(cr0, vmcs.read(VmcsField::GuestRflags), shadow)
                .map_err(|error| ReplyError::BadEvent { event, error })?;
            let (vector, kind, error_code) = match event {
                Event::ExternalInterrupt { vector } => {
                    (vector, InterruptionType::ExternalInterrupt, None)
                }
                Event::Nmi => (vector::NMI, InterruptionType::Nmi, None),
                Event::Exception { vector, error_code } => {
                    if !is_exception_vector(vector) {
                        return Err(ReplyError::BadEvent {
                            event,
                            error: EventError::NotAnException { vector },
                        });
                    }
                    (vector, InterruptionType::HardwareException, error_code)
                }
                Event::SoftwareInterrupt {
                    vector,
                    instruction_length,
                } => {
                    vmcs.write(
                        VmcsField::EntryInstructionLength,
                        u64::from(instruction_length),
                    );
                    (vector, InterruptionType::SoftwareInterrupt, None)
                }
            };
            if let Some(code) = error_code {
                vmcs.write(VmcsField::EntryExceptionErrorCode, u64::from(code));
            }
            InterruptionInfo {
                vector,
                kind,
                error_code_valid: error_code.is_some(),
                nmi_unblocking: false,
            }
            .encode()
        }
        None => 0,
    };
    vmcs.write(VmcsField::EntryInterruptionInfo, u64::from(info));
    let controls = vmcs.read(VmcsField::PrimaryProcBasedControls);
    let window = u64::from(primary::INTERRUPT_WINDOW_EXITING);
    vmcs.write(
        VmcsField::PrimaryProcBasedControls,
        if reply.interrupt_window {
            controls | window
        } else {
            controls & !window
        },
    );
    Ok(())
}
