//! The vCPU interface over AMD SVM: VMCB + the general registers the kernel's VMRUN stub
//! saved → [`ExitMessage`]; [`ExitReply`] → VMCB + general registers, checked against the
//! VMRUN consistency rules.

use super::{
    Backend, DescriptorTable, Event, EventError, Exit, ExitMessage, ExitReply, GeneralRegisters,
    GuestRegisters, Instruction, MAX_INSTRUCTION_LENGTH, ReplyError, Segment, next_rip,
};
use crate::virt::svm::{
    EventInjection, EventInjectionError, EventType, HostLimits, Intercept, IoDirection, IoioInfo,
    MsrAccess, NpfInfo, SvmExitCode, Vmcb, check_vmrun_consistency_on, interrupt_state,
};
use crate::virt::x86::{efer, exception_has_error_code, vector};

/// The guest's registers: RAX, RSP and everything but the other GPRs from the VMCB, the
/// other GPRs from `gpr`. EFER is shown without SVME.
pub fn read_registers(vmcb: &Vmcb, gpr: &GeneralRegisters) -> GuestRegisters {
    let save = &vmcb.save;
    GuestRegisters {
        gpr: GeneralRegisters {
            rax: save.rax,
            rsp: save.rsp,
            ..*gpr
        },
        rip: save.rip,
        rflags: save.rflags,
        cr0: save.cr0,
        cr2: save.cr2,
        cr3: save.cr3,
        cr4: save.cr4,
        efer: save.efer & !efer::SVME,
        cs: save.cs,
        ds: save.ds,
        es: save.es,
        fs: save.fs,
        gs: save.gs,
        ss: save.ss,
        tr: save.tr,
        ldtr: save.ldtr,
        gdtr: descriptor_table(save.gdtr),
        idtr: descriptor_table(save.idtr),
    }
}

fn descriptor_table(segment: Segment) -> DescriptorTable {
    DescriptorTable {
        base: segment.base,
        limit: segment.limit as u16,
    }
}

fn table_segment(table: DescriptorTable) -> Segment {
    Segment {
        selector: 0,
        attributes: super::SegmentAttributes(0),
        limit: u32::from(table.limit),
        base: table.base,
    }
}

/// Writes `registers` into the VMCB (RAX, RSP and the rest of the state) and `gpr` (the
/// other general registers). EFER.SVME is always set; CPL is SS.DPL, as on a real
/// segment load.
pub fn write_registers(vmcb: &mut Vmcb, gpr: &mut GeneralRegisters, registers: &GuestRegisters) {
    *gpr = registers.gpr;
    let save = &mut vmcb.save;
    save.rax = registers.gpr.rax;
    save.rsp = registers.gpr.rsp;
    save.rip = registers.rip;
    save.rflags = registers.rflags;
    save.cr0 = registers.cr0;
    save.cr2 = registers.cr2;
    save.cr3 = registers.cr3;
    save.cr4 = registers.cr4;
    save.efer = registers.efer | efer::SVME;
    save.cs = registers.cs;
    save.ds = registers.ds;
    save.es = registers.es;
    save.fs = registers.fs;
    save.gs = registers.gs;
    save.ss = registers.ss;
    save.tr = registers.tr;
    save.ldtr = registers.ldtr;
    save.gdtr = table_segment(registers.gdtr);
    save.idtr = table_segment(registers.idtr);
    save.cpl = registers.ss.attributes.dpl();
}

/// EDX:EAX.
fn edx_eax(rdx: u64, rax: u64) -> u64 {
    (rdx << 32) | (rax & 0xffff_ffff)
}

/// The exit the VMCB describes. `gpr` supplies RCX and RDX (CPUID subleaf, MSR index and
/// value, XSETBV); RAX comes from the VMCB.
pub fn exit(vmcb: &Vmcb, gpr: &GeneralRegisters) -> Exit {
    let control = &vmcb.control;
    let (code, info1, info2) = (control.exit_code, control.exit_info1, control.exit_info2);
    let rax = vmcb.save.rax;
    let other = Exit::Other {
        backend: Backend::Svm,
        code,
        info1,
        info2,
    };
    match SvmExitCode::from_raw(code) {
        SvmExitCode::Ioio => match IoioInfo::decode(info1) {
            Some(io) => {
                let write = io.direction == IoDirection::Out;
                let mask = u64::MAX >> (64 - 8 * u32::from(io.size));
                Exit::Io {
                    port: io.port,
                    size: io.size,
                    write,
                    value: if write && !io.string {
                        (rax & mask) as u32
                    } else {
                        0
                    },
                    string: io.string,
                    rep: io.rep,
                }
            }
            None => other,
        },
        SvmExitCode::Cpuid => Exit::Cpuid {
            leaf: rax as u32,
            subleaf: gpr.rcx as u32,
        },
        SvmExitCode::Msr => match MsrAccess::from_exit_info1(info1) {
            Some(access) => Exit::Msr {
                write: access == MsrAccess::Write,
                index: gpr.rcx as u32,
                value: if access == MsrAccess::Write {
                    edx_eax(gpr.rdx, rax)
                } else {
                    0
                },
            },
            None => other,
        },
        SvmExitCode::Npf => {
            let fault = NpfInfo::decode(info1);
            Exit::NestedPageFault {
                gpa: info2,
                write: fault.write,
                fetch: fault.fetch,
                present: fault.present,
                page_walk: fault.page_table_walk,
                misconfigured: fault.reserved_bit,
            }
        }
        SvmExitCode::Hlt | SvmExitCode::IdleHlt => Exit::Hlt,
        SvmExitCode::Shutdown => Exit::Shutdown,
        SvmExitCode::Exception(vector) => Exit::Exception {
            vector,
            error_code: if exception_has_error_code(vector) {
                Some(info1 as u32)
            } else {
                None
            },
            fault_address: if vector == vector::PF {
                Some(info2)
            } else {
                None
            },
        },
        SvmExitCode::Intr => Exit::Interrupt,
        SvmExitCode::Nmi => Exit::Nmi,
        SvmExitCode::Vintr => Exit::InterruptWindow,
        SvmExitCode::Vmmcall => Exit::Vmcall,
        SvmExitCode::Xsetbv => Exit::Xsetbv {
            index: gpr.rcx as u32,
            value: edx_eax(gpr.rdx, rax),
        },
        SvmExitCode::Invd => Exit::Instruction(Instruction::Invd),
        SvmExitCode::Wbinvd => Exit::Instruction(Instruction::Wbinvd),
        SvmExitCode::Monitor => Exit::Instruction(Instruction::Monitor),
        SvmExitCode::Mwait | SvmExitCode::MwaitConditional => Exit::Instruction(Instruction::Mwait),
        SvmExitCode::Rdtsc => Exit::Instruction(Instruction::Rdtsc),
        SvmExitCode::Rdtscp => Exit::Instruction(Instruction::Rdtscp),
        SvmExitCode::Rdpmc => Exit::Instruction(Instruction::Rdpmc),
        SvmExitCode::Rdpru => Exit::Instruction(Instruction::Rdpru),
        SvmExitCode::Rsm => Exit::Instruction(Instruction::Rsm),
        SvmExitCode::Pause => Exit::Instruction(Instruction::Pause),
        SvmExitCode::Invlpg => Exit::Instruction(Instruction::Invlpg),
        SvmExitCode::Invpcid => Exit::Instruction(Instruction::Invpcid),
        SvmExitCode::Icebp => Exit::Instruction(Instruction::Icebp),
        SvmExitCode::Vmrun
        | SvmExitCode::Vmload
        | SvmExitCode::Vmsave
        | SvmExitCode::Stgi
        | SvmExitCode::Clgi
        | SvmExitCode::Skinit
        | SvmExitCode::Invlpga => Exit::Instruction(Instruction::Virtualization),
        SvmExitCode::Invalid
        | SvmExitCode::Busy
        | SvmExitCode::IdleRequired
        | SvmExitCode::InvalidPmc => Exit::Invalid { reason: code },
        _ => other,
    }
}

/// Whether the exit is an instruction intercept, after which nRIP (or IOIO's EXITINFO2)
/// holds the next instruction's address.
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

/// Converts an event SVM was delivering (EXITINTINFO) to one to re-inject.
///
/// Events an instruction raised (INTn, INT3's #BP, INTO's #OF) are not re-injected: RIP
/// still points at the instruction, whose length SVM does not report, and running it
/// again raises them again (KVM does the same). Reserved types are dropped.
fn event_from_svm(event: EventInjection) -> Option<Event> {
    match event.kind {
        EventType::ExternalInterrupt => Some(Event::ExternalInterrupt {
            vector: event.vector,
        }),
        EventType::Nmi => Some(Event::Nmi),
        EventType::Exception if event.vector == vector::BP || event.vector == vector::OF => None,
        EventType::Exception => Some(Event::Exception {
            vector: event.vector,
            error_code: event.error_code,
        }),
        EventType::SoftwareInterrupt | EventType::Reserved(_) => None,
    }
}

/// Resumes after an exit the kernel handled itself (a host interrupt or NMI, a nested
/// page fault the monitor pre-authorised): nothing changes except that the event the
/// exit interrupted, if any, is delivered again, and nRIP is cleared. Without this an
/// interrupt that arrives while the CPU delivers an injected event would lose that event.
pub fn resume_unchanged(vmcb: &mut Vmcb) {
    vmcb.control.event_injection = EventInjection::decode(vmcb.control.exit_int_info)
        .and_then(event_from_svm)
        .map_or(0, |event| {
            match event {
                Event::ExternalInterrupt { vector } => EventInjection::external_interrupt(vector),
                Event::Nmi => EventInjection::nmi(),
                Event::Exception { vector, error_code } => {
                    EventInjection::exception(vector, error_code)
                }
                Event::SoftwareInterrupt { vector, .. } => {
                    EventInjection::software_interrupt(vector)
                }
            }
            .encode()
        });
    vmcb.control.next_rip = 0;
}

/// The whole message for the exit the VMCB describes.
///
/// The instruction length is taken from IOIO's EXITINFO2 (always written, even by QEMU's
/// TCG) or from nRIP, which [`apply_reply`] clears before every run so that a non-zero
/// value is fresh; lengths outside 1–15 are dropped.
pub fn exit_message(vmcb: &Vmcb, gpr: &GeneralRegisters) -> ExitMessage {
    let exit = exit(vmcb, gpr);
    let rip = vmcb.save.rip;
    let next = match exit {
        Exit::Io { .. } => vmcb.control.exit_info2,
        _ if is_instruction_exit(&exit) => vmcb.control.next_rip,
        _ => 0,
    };
    let length = next.wrapping_sub(rip);
    let instruction_length =
        if next != 0 && (1..=u64::from(MAX_INSTRUCTION_LENGTH)).contains(&length) {
            Some(length as u8)
        } else {
            None
        };
    ExitMessage {
        exit,
        registers: read_registers(vmcb, gpr),
        instruction_length,
        pending_event: EventInjection::decode(vmcb.control.exit_int_info).and_then(event_from_svm),
        interrupt_shadow: vmcb.control.interrupt_shadow(),
    }
}

/// The SVM form of a neutral event, after the shared rules and VMRUN's own.
fn event_to_svm(event: Event, vmcb: &Vmcb) -> Result<EventInjection, ReplyError> {
    event
        .check(
            vmcb.save.cr0,
            vmcb.save.rflags,
            vmcb.control.interrupt_shadow(),
        )
        .map_err(|error| ReplyError::BadEvent { event, error })?;
    let svm = match event {
        Event::ExternalInterrupt { vector } => EventInjection::external_interrupt(vector),
        Event::Nmi => EventInjection::nmi(),
        Event::Exception { vector, error_code } => EventInjection::exception(vector, error_code),
        Event::SoftwareInterrupt { vector, .. } => EventInjection::software_interrupt(vector),
    };
    svm.check().map_err(|error| ReplyError::BadEvent {
        event,
        error: match error {
            EventInjectionError::NotAnException { vector } => EventError::NotAnException { vector },
            // Neutral events never encode a reserved type.
            EventInjectionError::ReservedType { .. } => {
                EventError::NotAnException { vector: svm.vector }
            }
        },
    })?;
    Ok(svm)
}

/// Applies the monitor's reply: registers, RIP advance (which ends an interrupt shadow),
/// event injection and the interrupt-window request; clears nRIP; then checks the result
/// against VMRUN's rules for `host`.
///
/// A software interrupt is delivered as INTn would be: RIP first moves past the
/// instruction, so the pushed return address follows it.
///
/// On error the VMCB may have been partly updated and must not be run.
pub fn apply_reply(
    vmcb: &mut Vmcb,
    gpr: &mut GeneralRegisters,
    reply: &ExitReply,
    host: &HostLimits,
) -> Result<(), ReplyError> {
    if reply.advance_rip > MAX_INSTRUCTION_LENGTH {
        return Err(ReplyError::InstructionTooLong {
            length: reply.advance_rip,
        });
    }
    if let Some(registers) = &reply.registers {
        write_registers(vmcb, gpr, registers);
    }
    if let Some(general) = &reply.gprs {
        *gpr = *general;
        vmcb.save.rax = general.rax;
        vmcb.save.rsp = general.rsp;
    }
    let long = vmcb.save.efer & efer::LMA != 0 && vmcb.save.cs.attributes.long();
    if reply.advance_rip != 0 {
        vmcb.save.rip = next_rip(vmcb.save.rip, u64::from(reply.advance_rip), long);
        vmcb.control.interrupt_state &= !interrupt_state::INTERRUPT_SHADOW;
    }
    vmcb.control.event_injection = match reply.inject {
        Some(event) => {
            let svm = event_to_svm(event, vmcb)?;
            if let Event::SoftwareInterrupt {
                instruction_length, ..
            } = event
            {
                vmcb.save.rip = next_rip(vmcb.save.rip, u64::from(instruction_length), long);
            }
            svm.encode()
        }
        None => 0,
    };
    // A virtual interrupt with IGN_TPR makes the CPU exit with VINTR as soon as the guest
    // can take one; the monitor then injects the real event.
    vmcb.control
        .set_virtual_interrupt(reply.interrupt_window, 0, 0xf, reply.interrupt_window);
    vmcb.control
        .set_intercept(Intercept::Vintr, reply.interrupt_window);
    vmcb.control.next_rip = 0;
    vmcb.control.clean_bits = 0;
    // Only new control registers, segments or EFER can break VMRUN's rules; the general
    // registers, RIP and the event (checked above) cannot.
    if reply.registers.is_some() {
        check_vmrun_consistency_on(vmcb, host).map_err(ReplyError::Inconsistent)?;
    }
    Ok(())
}
