//! Properties: arbitrary exit codes and qualifications never panic, registers round-trip
//! through both backends, messages round-trip through postcard.

use super::super::vmx::{GuestContext, VmcsAccess};
use super::super::*;
use super::encoding::every_exit;
use super::vmx::{FakeVmcs, vmx_exit};
use crate::virt::svm::{HostLimits, Vmcb};
use crate::virt::vmx::VmcsField;
use crate::virt::x86::efer;
use esker_abi::MAX_MESSAGE_BYTES;
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = Segment> {
    (any::<u16>(), 0u16..0x1000, any::<u32>(), any::<u64>()).prop_map(
        |(selector, attributes, limit, base)| Segment {
            selector,
            attributes: SegmentAttributes(attributes),
            limit,
            base,
        },
    )
}

fn guest_registers() -> impl Strategy<Value = GuestRegisters> {
    (
        any::<[u64; 16]>(),
        any::<[u64; 7]>(),
        prop::array::uniform8(segment()),
        any::<[(u64, u16); 2]>(),
    )
        .prop_map(|(gprs, other, segments, tables)| {
            let mut gpr = GeneralRegisters::default();
            for (n, value) in gprs.into_iter().enumerate() {
                gpr.set(n as u8, value);
            }
            let [cs, ds, es, fs, gs, ss, tr, ldtr] = segments;
            let table = |(base, limit)| DescriptorTable { base, limit };
            GuestRegisters {
                gpr,
                rip: other[0],
                rflags: other[1],
                cr0: other[2],
                cr2: other[3],
                cr3: other[4],
                cr4: other[5],
                efer: other[6] & !efer::SVME,
                cs,
                ds,
                es,
                fs,
                gs,
                ss,
                tr,
                ldtr,
                gdtr: table(tables[0]),
                idtr: table(tables[1]),
            }
        })
}

proptest! {
    #[test]
    fn svm_decoding_arbitrary_exits_never_panics(
        code in prop_oneof![any::<u64>(), 0u64..0x500, (0u64..0x500).prop_map(|c| c | 0x400)],
        info1: u64, info2: u64, exit_int_info: u64, next_rip: u64, rax: u64,
        gprs in any::<[u64; 16]>(),
        registers in guest_registers(),
    ) {
        let mut vmcb = Vmcb::ZERO;
        let mut gpr = GeneralRegisters::default();
        svm::write_registers(&mut vmcb, &mut gpr, &registers);
        for (n, value) in gprs.into_iter().enumerate() {
            gpr.set(n as u8, value);
        }
        vmcb.save.rax = rax;
        vmcb.control.exit_code = code;
        vmcb.control.exit_info1 = info1;
        vmcb.control.exit_info2 = info2;
        vmcb.control.exit_int_info = exit_int_info;
        vmcb.control.next_rip = next_rip;
        let message = svm::exit_message(&vmcb, &gpr);
        if let Some(length) = message.instruction_length {
            prop_assert!((1..=15).contains(&length));
        }
        let mut buffer = [0u8; MAX_MESSAGE_BYTES];
        prop_assert!(postcard::to_slice(&message, &mut buffer).is_ok());
        // Resuming without the monitor, or replying "resume", never panics either.
        let mut unchanged = vmcb.clone();
        svm::resume_unchanged(&mut unchanged);
        let _ = svm::apply_reply(&mut vmcb, &mut gpr, &ExitReply::resume(&message), &HostLimits::ARCHITECTURAL);
    }

    #[test]
    fn vmx_decoding_arbitrary_exits_never_panics(
        reason in prop_oneof![any::<u32>(), 0u32..90],
        qualification: u64, interruption: u32, vectoring: u32, length: u32, gpa: u64,
    ) {
        let (mut vmcs, mut context) = vmx_exit(reason, qualification);
        vmcs.write(VmcsField::ExitInterruptionInfo, u64::from(interruption));
        vmcs.write(VmcsField::IdtVectoringInfo, u64::from(vectoring));
        vmcs.write(VmcsField::ExitInstructionLength, u64::from(length));
        vmcs.write(VmcsField::GuestPhysicalAddress, gpa);
        let message = vmx::exit_message(&vmcs, &context);
        vmx::resume_unchanged(&mut vmcs);
        let _ = vmx::apply_reply(&mut vmcs, &mut context, &ExitReply::resume(&message));
    }

    #[test]
    fn svm_registers_round_trip(registers in guest_registers()) {
        let mut vmcb = Vmcb::ZERO;
        let mut gpr = GeneralRegisters::default();
        svm::write_registers(&mut vmcb, &mut gpr, &registers);
        prop_assert_eq!(vmcb.save.efer & efer::SVME, efer::SVME);
        prop_assert_eq!(svm::read_registers(&vmcb, &gpr), registers);
    }

    #[test]
    fn vmx_registers_round_trip(registers in guest_registers(), cr0_mask: u64, cr4_mask: u64) {
        let mut vmcs = FakeVmcs::default();
        vmcs.write(VmcsField::Cr0GuestHostMask, cr0_mask);
        vmcs.write(VmcsField::Cr4GuestHostMask, cr4_mask);
        let mut context = GuestContext::default();
        vmx::write_registers(&mut vmcs, &mut context, &registers);
        prop_assert_eq!(vmx::read_registers(&vmcs, &context), registers);
    }

    #[test]
    fn messages_round_trip_through_postcard(registers in guest_registers(), which in 0usize..15) {
        let message = ExitMessage {
            exit: every_exit()[which],
            registers,
            instruction_length: None,
            pending_event: Some(Event::Nmi),
            interrupt_shadow: false,
        };
        let mut buffer = [0u8; MAX_MESSAGE_BYTES];
        let bytes = postcard::to_slice(&message, &mut buffer).unwrap();
        prop_assert_eq!(postcard::from_bytes::<ExitMessage>(bytes).unwrap(), message);
    }
}
