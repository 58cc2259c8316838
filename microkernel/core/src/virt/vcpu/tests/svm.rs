//! SVM exits into messages and replies into the VMCB.

use super::super::*;
use super::{RAX, RIP, SETUP};
use crate::virt::svm::{
    EventInjection, HostLimits, Intercept, IoioInfo, NpfInfo, Vmcb, interrupt_state, setup,
};
use crate::virt::x86::{cr0, efer, rflags, vector};

pub(super) fn svm_exit(code: u64, info1: u64, info2: u64) -> (Vmcb, GeneralRegisters) {
    let mut vmcb = Vmcb::ZERO;
    setup::init_long_mode(
        &mut vmcb,
        &SETUP,
        RIP,
        0x9000,
        DescriptorTable {
            base: 0x1000,
            limit: 0x1f,
        },
    );
    vmcb.save.rax = RAX;
    vmcb.save.rsp = 0x8000;
    vmcb.control.exit_code = code;
    vmcb.control.exit_info1 = info1;
    vmcb.control.exit_info2 = info2;
    let gpr = GeneralRegisters {
        rcx: 0xdead_0000_c000_0080,
        rdx: 0xbeef_0000_0000_0001,
        rbx: 0x55,
        ..GeneralRegisters::default()
    };
    (vmcb, gpr)
}

fn svm_message(code: u64, info1: u64, info2: u64) -> ExitMessage {
    let (vmcb, gpr) = svm_exit(code, info1, info2);
    svm::exit_message(&vmcb, &gpr)
}

fn ioio(port: u16, size: u8, input: bool, string: bool, rep: bool) -> u64 {
    let mut raw = u64::from(port) << 16;
    raw |= match size {
        1 => IoioInfo::SIZE8,
        2 => IoioInfo::SIZE16,
        _ => IoioInfo::SIZE32,
    };
    if input {
        raw |= IoioInfo::TYPE_IN;
    }
    if string {
        raw |= IoioInfo::STRING;
    }
    if rep {
        raw |= IoioInfo::REP;
    }
    raw
}

#[test]
fn svm_out_of_each_size_carries_the_masked_value() {
    for (size, value) in [(1u8, 0x88u32), (2, 0x7788), (4, 0x5566_7788)] {
        let message = svm_message(0x7b, ioio(0x3f8, size, false, false, false), RIP + 1);
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
}

#[test]
fn svm_in_of_each_size_carries_no_value() {
    for size in [1u8, 2, 4] {
        let message = svm_message(0x7b, ioio(0xcfc, size, true, false, false), RIP + 2);
        assert_eq!(
            message.exit,
            Exit::Io {
                port: 0xcfc,
                size,
                write: false,
                value: 0,
                string: false,
                rep: false
            }
        );
        assert_eq!(message.instruction_length, Some(2));
    }
}

#[test]
fn svm_string_and_rep_port_accesses() {
    let outs = svm_message(0x7b, ioio(0x3f8, 1, false, true, true), RIP + 2);
    assert_eq!(
        outs.exit,
        Exit::Io {
            port: 0x3f8,
            size: 1,
            write: true,
            value: 0,
            string: true,
            rep: true
        }
    );
    let ins = svm_message(0x7b, ioio(0x1f0, 2, true, true, false), RIP + 2);
    assert!(matches!(
        ins.exit,
        Exit::Io {
            write: false,
            string: true,
            rep: false,
            size: 2,
            ..
        }
    ));
}

#[test]
fn svm_ioio_with_a_broken_size_is_passed_on_raw() {
    let message = svm_message(0x7b, 0x3f8 << 16, RIP + 1);
    assert_eq!(
        message.exit,
        Exit::Other {
            backend: Backend::Svm,
            code: 0x7b,
            info1: 0x3f8 << 16,
            info2: RIP + 1
        }
    );
}

#[test]
fn svm_cpuid_reads_eax_and_ecx() {
    let (mut vmcb, mut gpr) = svm_exit(0x72, 0, 0);
    vmcb.save.rax = 0xffff_ffff_8000_0001;
    gpr.rcx = 0x1_0000_0005;
    let message = svm::exit_message(&vmcb, &gpr);
    assert_eq!(
        message.exit,
        Exit::Cpuid {
            leaf: 0x8000_0001,
            subleaf: 5
        }
    );
    assert_eq!(message.instruction_length, None, "no nRIP under TCG");
    vmcb.control.next_rip = RIP + 2;
    assert_eq!(svm::exit_message(&vmcb, &gpr).instruction_length, Some(2));
}

#[test]
fn svm_msr_read_and_write() {
    assert_eq!(
        svm_message(0x7c, 0, 0).exit,
        Exit::Msr {
            write: false,
            index: 0xc000_0080,
            value: 0
        }
    );
    assert_eq!(
        svm_message(0x7c, 1, 0).exit,
        Exit::Msr {
            write: true,
            index: 0xc000_0080,
            value: 0x0000_0001_5566_7788
        }
    );
    assert!(matches!(svm_message(0x7c, 2, 0).exit, Exit::Other { .. }));
}

#[test]
fn svm_nested_page_faults() {
    let missing_write = svm_message(
        0x400,
        NpfInfo::WRITE | NpfInfo::USER | NpfInfo::FINAL_ADDRESS,
        0xfee0_0030,
    );
    assert_eq!(
        missing_write.exit,
        Exit::NestedPageFault {
            gpa: 0xfee0_0030,
            write: true,
            fetch: false,
            present: false,
            page_walk: false,
            misconfigured: false
        }
    );
    assert_eq!(missing_write.instruction_length, None);
    let walk_fetch = svm_message(
        0x400,
        NpfInfo::PRESENT | NpfInfo::FETCH | NpfInfo::PAGE_TABLE_WALK,
        0x5000,
    );
    assert!(matches!(
        walk_fetch.exit,
        Exit::NestedPageFault {
            fetch: true,
            present: true,
            page_walk: true,
            write: false,
            ..
        }
    ));
    let reserved = svm_message(0x400, NpfInfo::PRESENT | NpfInfo::RESERVED, 0x5000);
    assert!(matches!(
        reserved.exit,
        Exit::NestedPageFault {
            misconfigured: true,
            ..
        }
    ));
}

#[test]
fn svm_simple_exits() {
    let cases = [
        (0x78, Exit::Hlt),
        (0xa6, Exit::Hlt),
        (0x7f, Exit::Shutdown),
        (0x81, Exit::Vmcall),
        (0x60, Exit::Interrupt),
        (0x61, Exit::Nmi),
        (0x64, Exit::InterruptWindow),
        (0x76, Exit::Instruction(Instruction::Invd)),
        (0x89, Exit::Instruction(Instruction::Wbinvd)),
        (0x8b, Exit::Instruction(Instruction::Mwait)),
        (0x80, Exit::Instruction(Instruction::Virtualization)),
        (0x86, Exit::Instruction(Instruction::Virtualization)),
        (u64::MAX, Exit::Invalid { reason: u64::MAX }),
        (
            0xffff_ffff,
            Exit::Invalid {
                reason: 0xffff_ffff,
            },
        ),
    ];
    for (code, exit) in cases {
        assert_eq!(svm_message(code, 0, 0).exit, exit, "{code:#x}");
    }
    assert_eq!(
        svm_message(0x8d, 0, 0).exit,
        Exit::Xsetbv {
            index: 0xc000_0080,
            value: 0x0000_0001_5566_7788
        }
    );
    assert_eq!(
        svm_message(0x13, 0x8000_0000_0000_0003, 0).exit,
        Exit::Other {
            backend: Backend::Svm,
            code: 0x13,
            info1: 0x8000_0000_0000_0003,
            info2: 0
        }
    );
}

#[test]
fn svm_exceptions_carry_error_codes_and_fault_addresses_when_they_have_them() {
    assert_eq!(
        svm_message(0x40 + 14, 0x6, 0xdead_b000).exit,
        Exit::Exception {
            vector: 14,
            error_code: Some(6),
            fault_address: Some(0xdead_b000)
        }
    );
    assert_eq!(
        svm_message(0x40 + 13, 0x18, 0).exit,
        Exit::Exception {
            vector: 13,
            error_code: Some(0x18),
            fault_address: None
        }
    );
    assert_eq!(
        svm_message(0x40 + 1, 0, 0).exit,
        Exit::Exception {
            vector: 1,
            error_code: None,
            fault_address: None
        }
    );
}

#[test]
fn svm_message_carries_the_registers_and_pending_event() {
    let (mut vmcb, gpr) = svm_exit(0x400, 0, 0x1000);
    vmcb.control.exit_int_info = EventInjection::external_interrupt(0x30).encode();
    vmcb.control.interrupt_state = interrupt_state::INTERRUPT_SHADOW;
    let message = svm::exit_message(&vmcb, &gpr);
    assert_eq!(
        message.pending_event,
        Some(Event::ExternalInterrupt { vector: 0x30 })
    );
    assert!(message.interrupt_shadow);
    let registers = message.registers;
    assert_eq!(registers.gpr.rax, RAX);
    assert_eq!(registers.gpr.rsp, 0x8000);
    assert_eq!(registers.gpr.rbx, 0x55);
    assert_eq!(registers.rip, RIP);
    assert_eq!(registers.efer, efer::LME | efer::LMA, "SVME is the host's");
    assert_eq!(registers.gdtr.base, 0x1000);
    assert!(registers.in_64bit_mode());
    // Instruction-raised events are not re-injected.
    vmcb.control.exit_int_info = EventInjection::exception(vector::BP, None).encode();
    assert_eq!(svm::exit_message(&vmcb, &gpr).pending_event, None);
    vmcb.control.exit_int_info = EventInjection::software_interrupt(0x80).encode();
    assert_eq!(svm::exit_message(&vmcb, &gpr).pending_event, None);
    vmcb.control.exit_int_info = EventInjection::exception(14, Some(2)).encode();
    assert_eq!(
        svm::exit_message(&vmcb, &gpr).pending_event,
        Some(Event::Exception {
            vector: 14,
            error_code: Some(2)
        })
    );
}

fn apply(vmcb: &mut Vmcb, gpr: &mut GeneralRegisters, reply: ExitReply) -> Result<(), ReplyError> {
    svm::apply_reply(vmcb, gpr, &reply, &HostLimits::ARCHITECTURAL)
}

#[test]
fn svm_reply_advances_rip_and_ends_the_interrupt_shadow() {
    let (mut vmcb, mut gpr) = svm_exit(0x72, 0, 0);
    vmcb.control.interrupt_state = interrupt_state::INTERRUPT_SHADOW;
    vmcb.control.next_rip = RIP + 2;
    let message = svm::exit_message(&vmcb, &gpr);
    apply(
        &mut vmcb,
        &mut gpr,
        ExitReply::skip_instruction(&message, 2),
    )
    .unwrap();
    assert_eq!(vmcb.save.rip, RIP + 2);
    assert!(!vmcb.control.interrupt_shadow());
    assert_eq!(
        vmcb.control.next_rip, 0,
        "cleared so the next exit's nRIP is fresh"
    );
    assert_eq!(vmcb.control.event_injection, 0);
    assert_eq!(
        apply(
            &mut vmcb,
            &mut gpr,
            ExitReply {
                advance_rip: 16,
                ..ExitReply::resume(&message)
            }
        ),
        Err(ReplyError::InstructionTooLong { length: 16 })
    );
}

#[test]
fn svm_rip_wraps_at_4_gib_outside_64_bit_mode() {
    let mut vmcb = Vmcb::ZERO;
    setup::init_protected_mode_flat(&mut vmcb, &SETUP, 0xffff_ffff);
    let mut gpr = GeneralRegisters::default();
    let reply = ExitReply {
        registers: None,
        gprs: None,
        advance_rip: 2,
        inject: None,
        interrupt_window: false,
    };
    apply(&mut vmcb, &mut gpr, reply).unwrap();
    assert_eq!(vmcb.save.rip, 1);
}

#[test]
fn svm_reply_registers_land_in_vmcb_and_gprs() {
    let (mut vmcb, mut gpr) = svm_exit(0x72, 0, 0);
    let message = svm::exit_message(&vmcb, &gpr);
    let mut registers = message.registers;
    registers.gpr.rax = 0x0000_0000_0001_0fc1; // CPUID results
    registers.gpr.rbx = 0x0800;
    registers.gpr.rcx = 0x8000_0000;
    registers.gpr.rdx = 0x178b_fbff;
    registers.ss.attributes.0 |= 3 << SegmentAttributes::DPL_SHIFT;
    let reply = ExitReply {
        registers: Some(registers),
        gprs: None,
        ..ExitReply::skip_instruction(&message, 2)
    };
    apply(&mut vmcb, &mut gpr, reply).unwrap();
    assert_eq!(vmcb.save.rax, 0x1_0fc1);
    assert_eq!(
        (gpr.rbx, gpr.rcx, gpr.rdx),
        (0x0800, 0x8000_0000, 0x178b_fbff)
    );
    assert_eq!(vmcb.save.efer, efer::LME | efer::LMA | efer::SVME);
    assert_eq!(vmcb.save.cpl, 3, "CPL follows SS.DPL");
    assert_eq!(vmcb.save.rip, RIP + 2);
}

#[test]
fn svm_reply_that_breaks_vmrun_rules_is_refused() {
    let (mut vmcb, mut gpr) = svm_exit(0x72, 0, 0);
    let message = svm::exit_message(&vmcb, &gpr);
    let mut registers = message.registers;
    registers.cr0 |= cr0::NW;
    registers.cr0 &= !cr0::CD;
    let reply = ExitReply {
        registers: Some(registers),
        gprs: None,
        ..ExitReply::resume(&message)
    };
    assert!(matches!(
        apply(&mut vmcb, &mut gpr, reply),
        Err(ReplyError::Inconsistent(
            crate::virt::svm::ConsistencyError::NotWriteThroughWithoutCacheDisable { .. }
        ))
    ));
}

#[test]
fn svm_injection_encodes_eventinj() {
    let (mut vmcb, mut gpr) = svm_exit(0x40 + 13, 0x18, 0);
    vmcb.save.rflags |= rflags::IF;
    let message = svm::exit_message(&vmcb, &gpr);
    let gp = Event::Exception {
        vector: 13,
        error_code: Some(0x18),
    };
    apply(
        &mut vmcb,
        &mut gpr,
        ExitReply {
            inject: Some(gp),
            ..ExitReply::resume(&message)
        },
    )
    .unwrap();
    assert_eq!(vmcb.control.event_injection, 0x0000_0018_8000_0b0d);
    apply(
        &mut vmcb,
        &mut gpr,
        ExitReply {
            inject: Some(Event::ExternalInterrupt { vector: 0x20 }),
            ..ExitReply::resume(&message)
        },
    )
    .unwrap();
    assert_eq!(vmcb.control.event_injection, 0x8000_0020);
    apply(&mut vmcb, &mut gpr, ExitReply::resume(&message)).unwrap();
    assert_eq!(vmcb.control.event_injection, 0);
}

#[test]
fn svm_software_interrupt_returns_after_the_instruction() {
    let (mut vmcb, mut gpr) = svm_exit(0x75, 0, 0);
    let message = svm::exit_message(&vmcb, &gpr);
    apply(
        &mut vmcb,
        &mut gpr,
        ExitReply {
            inject: Some(Event::SoftwareInterrupt {
                vector: 0x80,
                instruction_length: 2,
            }),
            ..ExitReply::resume(&message)
        },
    )
    .unwrap();
    assert_eq!(vmcb.save.rip, RIP + 2);
    assert_eq!(vmcb.control.event_injection, 0x8000_0480);
}

#[test]
fn svm_bad_events_are_refused() {
    let (mut vmcb, mut gpr) = svm_exit(0x78, 0, 0);
    let message = svm::exit_message(&vmcb, &gpr);
    let cases = [
        (
            Event::Exception {
                vector: 13,
                error_code: None,
            },
            EventError::ErrorCodeMismatch {
                vector: 13,
                given: false,
            },
        ),
        (
            Event::Exception {
                vector: 6,
                error_code: Some(0),
            },
            EventError::ErrorCodeMismatch {
                vector: 6,
                given: true,
            },
        ),
        (
            Event::Exception {
                vector: 2,
                error_code: None,
            },
            EventError::NotAnException { vector: 2 },
        ),
        (
            Event::Exception {
                vector: 40,
                error_code: None,
            },
            EventError::NotAnException { vector: 40 },
        ),
        (
            Event::SoftwareInterrupt {
                vector: 0x80,
                instruction_length: 0,
            },
            EventError::BadInstructionLength { length: 0 },
        ),
    ];
    for (event, error) in cases {
        let reply = ExitReply {
            inject: Some(event),
            ..ExitReply::resume(&message)
        };
        assert_eq!(
            apply(&mut vmcb, &mut gpr, reply),
            Err(ReplyError::BadEvent { event, error })
        );
        assert!(!ReplyError::BadEvent { event, error }.to_string().is_empty());
    }
}

#[test]
fn real_mode_exceptions_push_no_error_code() {
    let real_mode_cr0 = cr0::ET;
    let gp = |error_code| Event::Exception {
        vector: 13,
        error_code,
    };
    assert_eq!(gp(None).check(real_mode_cr0, 0, false), Ok(()));
    assert!(gp(Some(0)).check(real_mode_cr0, 0, false).is_err());
}

#[test]
fn svm_interrupt_window_sets_and_clears_v_irq_and_the_vintr_intercept() {
    let (mut vmcb, mut gpr) = svm_exit(0x78, 0, 0);
    let message = svm::exit_message(&vmcb, &gpr);
    apply(
        &mut vmcb,
        &mut gpr,
        ExitReply {
            interrupt_window: true,
            ..ExitReply::resume(&message)
        },
    )
    .unwrap();
    assert!(vmcb.control.v_irq());
    assert!(vmcb.control.intercepts(Intercept::Vintr));
    assert!(vmcb.control.v_intr_masking(), "kept");
    apply(&mut vmcb, &mut gpr, ExitReply::resume(&message)).unwrap();
    assert!(!vmcb.control.v_irq());
    assert!(!vmcb.control.intercepts(Intercept::Vintr));
}

#[test]
fn svm_external_interrupts_wait_for_if_and_the_end_of_an_interrupt_shadow() {
    let (mut vmcb, mut gpr) = svm_exit(0x78, 0, 0);
    let message = svm::exit_message(&vmcb, &gpr);
    let interrupt = ExitReply {
        inject: Some(Event::ExternalInterrupt { vector: 0x30 }),
        ..ExitReply::resume(&message)
    };
    let masked = Err(ReplyError::BadEvent {
        event: Event::ExternalInterrupt { vector: 0x30 },
        error: EventError::InterruptsMasked,
    });
    assert_eq!(apply(&mut vmcb, &mut gpr, interrupt), masked, "IF clear");
    vmcb.save.rflags |= rflags::IF;
    vmcb.control.interrupt_state = interrupt_state::INTERRUPT_SHADOW;
    assert_eq!(apply(&mut vmcb, &mut gpr, interrupt), masked, "after STI");
    // Skipping the instruction after STI ends the shadow.
    let after = ExitReply {
        advance_rip: 1,
        ..interrupt
    };
    assert_eq!(apply(&mut vmcb, &mut gpr, after), Ok(()));
    assert_eq!(vmcb.control.event_injection, 0x8000_0030);
    // Exceptions and NMIs do not wait for IF.
    vmcb.save.rflags &= !rflags::IF;
    let nmi = ExitReply {
        inject: Some(Event::Nmi),
        ..ExitReply::resume(&message)
    };
    assert_eq!(apply(&mut vmcb, &mut gpr, nmi), Ok(()));
}

#[test]
fn resume_re_injects_the_interrupted_event() {
    let (mut vmcb, mut gpr) = svm_exit(0x400, NpfInfo::FINAL_ADDRESS, 0x7000);
    vmcb.save.rflags |= rflags::IF;
    vmcb.control.exit_int_info = EventInjection::external_interrupt(0x41).encode();
    let message = svm::exit_message(&vmcb, &gpr);
    apply(&mut vmcb, &mut gpr, ExitReply::resume(&message)).unwrap();
    assert_eq!(vmcb.control.event_injection, 0x8000_0041);
}

#[test]
fn resuming_after_a_host_interrupt_keeps_the_interrupted_event() {
    let (mut vmcb, _) = svm_exit(0x60, 0, 0);
    vmcb.control.exit_int_info = EventInjection::exception(14, Some(2)).encode() | (1 << 20);
    vmcb.control.next_rip = RIP + 3;
    svm::resume_unchanged(&mut vmcb);
    assert_eq!(
        vmcb.control.event_injection,
        EventInjection::exception(14, Some(2)).encode(),
        "reserved bits dropped"
    );
    assert_eq!(vmcb.control.next_rip, 0);
    vmcb.control.exit_int_info = EventInjection::software_interrupt(0x80).encode();
    svm::resume_unchanged(&mut vmcb);
    assert_eq!(vmcb.control.event_injection, 0, "INTn runs again instead");
    vmcb.control.exit_int_info = 0;
    svm::resume_unchanged(&mut vmcb);
    assert_eq!(vmcb.control.event_injection, 0);
}

#[test]
fn port_reads_complete_like_in() {
    let mut registers = GuestRegisters {
        gpr: GeneralRegisters {
            rax: RAX,
            ..GeneralRegisters::default()
        },
        ..GuestRegisters::default()
    };
    registers.complete_port_read(1, 0xffff_ffab);
    assert_eq!(registers.gpr.rax, 0x1122_3344_5566_77ab);
    registers.complete_port_read(2, 0xcdef);
    assert_eq!(registers.gpr.rax, 0x1122_3344_5566_cdef);
    registers.complete_port_read(4, 0x0102_0304);
    assert_eq!(registers.gpr.rax, 0x0102_0304, "32-bit results zero-extend");
}

#[test]
fn general_registers_index_in_encoding_order() {
    let mut gpr = GeneralRegisters::default();
    for n in 0..16u8 {
        gpr.set(n, u64::from(n) * 0x1111);
    }
    assert_eq!(gpr.rax, 0);
    assert_eq!(gpr.rcx, 0x1111);
    assert_eq!(gpr.rsp, 4 * 0x1111);
    assert_eq!(gpr.rdi, 7 * 0x1111);
    assert_eq!(gpr.r15, 15 * 0x1111);
    assert_eq!(gpr.get(0x13), gpr.rbx, "only the low four bits count");
}
