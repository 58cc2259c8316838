//! Exit messages and replies as postcard IPC messages.

use super::super::*;
use crate::virt::svm::EventInjection;
use crate::virt::vmx::{InterruptionInfo, InterruptionType};
use crate::virt::x86::vector;
use esker_abi::MAX_MESSAGE_BYTES;

pub(super) fn worst_case_registers() -> GuestRegisters {
    let segment = Segment {
        selector: u16::MAX,
        attributes: SegmentAttributes(u16::MAX),
        limit: u32::MAX,
        base: u64::MAX,
    };
    let table = DescriptorTable {
        base: u64::MAX,
        limit: u16::MAX,
    };
    let mut gpr = GeneralRegisters::default();
    for n in 0..16 {
        gpr.set(n, u64::MAX);
    }
    GuestRegisters {
        gpr,
        rip: u64::MAX,
        rflags: u64::MAX,
        cr0: u64::MAX,
        cr2: u64::MAX,
        cr3: u64::MAX,
        cr4: u64::MAX,
        efer: u64::MAX,
        cs: segment,
        ds: segment,
        es: segment,
        fs: segment,
        gs: segment,
        ss: segment,
        tr: segment,
        ldtr: segment,
        gdtr: table,
        idtr: table,
    }
}

pub(super) fn every_exit() -> Vec<Exit> {
    vec![
        Exit::Io {
            port: u16::MAX,
            size: 4,
            write: true,
            value: u32::MAX,
            string: true,
            rep: true,
        },
        Exit::Cpuid {
            leaf: u32::MAX,
            subleaf: u32::MAX,
        },
        Exit::Msr {
            write: true,
            index: u32::MAX,
            value: u64::MAX,
        },
        Exit::NestedPageFault {
            gpa: u64::MAX,
            write: true,
            fetch: true,
            present: true,
            page_walk: true,
            misconfigured: true,
        },
        Exit::Hlt,
        Exit::Shutdown,
        Exit::Exception {
            vector: u8::MAX,
            error_code: Some(u32::MAX),
            fault_address: Some(u64::MAX),
        },
        Exit::Interrupt,
        Exit::Nmi,
        Exit::InterruptWindow,
        Exit::Vmcall,
        Exit::Xsetbv {
            index: u32::MAX,
            value: u64::MAX,
        },
        Exit::Instruction(Instruction::Virtualization),
        Exit::Invalid { reason: u64::MAX },
        Exit::Other {
            backend: Backend::Vmx,
            code: u64::MAX,
            info1: u64::MAX,
            info2: u64::MAX,
        },
    ]
}

#[test]
fn messages_and_replies_fit_an_ipc_message_and_round_trip() {
    let mut buffer = [0u8; MAX_MESSAGE_BYTES];
    let mut largest = 0;
    for exit in every_exit() {
        let message = ExitMessage {
            exit,
            registers: worst_case_registers(),
            instruction_length: Some(15),
            pending_event: Some(Event::Exception {
                vector: u8::MAX,
                error_code: Some(u32::MAX),
            }),
            interrupt_shadow: true,
        };
        let bytes = postcard::to_slice(&message, &mut buffer).expect("fits in 4 KiB");
        largest = largest.max(bytes.len());
        let back: ExitMessage = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, message);
    }
    // Worst case today is about 460 bytes; a quarter of the buffer leaves room to grow.
    assert!(
        largest <= MAX_MESSAGE_BYTES / 4,
        "largest exit message is {largest} bytes"
    );
    let reply = ExitReply {
        registers: Some(worst_case_registers()),
        gprs: None,
        advance_rip: 15,
        inject: Some(Event::SoftwareInterrupt {
            vector: u8::MAX,
            instruction_length: 15,
        }),
        interrupt_window: true,
    };
    let bytes = postcard::to_slice(&reply, &mut buffer).expect("fits in 4 KiB");
    assert!(
        bytes.len() <= MAX_MESSAGE_BYTES / 4,
        "reply is {} bytes",
        bytes.len()
    );
    assert_eq!(postcard::from_bytes::<ExitReply>(bytes).unwrap(), reply);
}

#[test]
fn garbage_does_not_decode_into_a_reply_by_accident() {
    assert!(postcard::from_bytes::<ExitReply>(&[0xff; 8]).is_err());
    assert!(postcard::from_bytes::<ExitMessage>(&[]).is_err());
}

#[test]
fn the_real_vcpu_event_matches_the_svm_constant_for_nmi() {
    // Event::Nmi injects vector 2 with type NMI on both backends.
    assert_eq!(EventInjection::nmi().encode(), 0x8000_0202);
    assert_eq!(
        InterruptionInfo {
            vector: vector::NMI,
            kind: InterruptionType::Nmi,
            error_code_valid: false,
            nmi_unblocking: false
        }
        .encode(),
        0x8000_0202
    );
}

mod wire {
    use super::super::super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = Segment> {
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u64>()).prop_map(
            |(selector, attributes, limit, base)| Segment {
                selector,
                attributes: SegmentAttributes(attributes),
                limit,
                base,
            },
        )
    }

    fn registers() -> impl Strategy<Value = GuestRegisters> {
        (
            proptest::array::uniform16(any::<u64>()),
            proptest::array::uniform7(any::<u64>()),
            proptest::array::uniform8(segment()),
            (any::<u64>(), any::<u16>(), any::<u64>(), any::<u16>()),
        )
            .prop_map(|(gprs, control, segments, (gb, gl, ib, il))| {
                let mut r = GuestRegisters::default();
                for (n, value) in gprs.into_iter().enumerate() {
                    r.gpr.set(n as u8, value);
                }
                [r.rip, r.rflags, r.cr0, r.cr2, r.cr3, r.cr4, r.efer] = control;
                [r.cs, r.ds, r.es, r.fs, r.gs, r.ss, r.tr, r.ldtr] = segments;
                r.gdtr = DescriptorTable {
                    base: gb,
                    limit: gl,
                };
                r.idtr = DescriptorTable {
                    base: ib,
                    limit: il,
                };
                r
            })
    }

    proptest! {
        #[test]
        fn registers_round_trip_through_the_wire_form(r in registers()) {
            prop_assert_eq!(GuestRegisters::from_wire(&r.to_wire()), Some(r));
            let mut buffer = [0u8; 1024];
            let bytes = postcard::to_slice(&r, &mut buffer).unwrap();
            prop_assert_eq!(postcard::from_bytes::<GuestRegisters>(bytes).unwrap(), r);
        }

        #[test]
        fn a_wrong_length_or_an_oversized_limit_is_refused(cut in 0usize..GuestRegisters::WIRE_BYTES) {
            let wire = GuestRegisters::default().to_wire();
            prop_assert_eq!(GuestRegisters::from_wire(&wire[..cut]), None);
            let mut bad = wire;
            bad[40 * 8 + 2] = 1; // GDTR limit 0x10000
            prop_assert_eq!(GuestRegisters::from_wire(&bad), None);
        }
    }
}
