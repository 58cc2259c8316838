//! Interrupt and exception entry: the IDT, 256 entry stubs, and the dispatcher.
//!
//! Every vector has a 16-byte stub that pushes a dummy error code where the CPU pushes
//! none, then the vector number, saves all general registers into a [`TrapFrame`] and
//! calls [`trap_dispatch`]. Exceptions (vectors 0–31) in the kernel are fatal: they log a
//! report (vector, error code, RIP, CR2, CR3, registers, a frame-pointer backtrace) and
//! power off with `exit_code::EXCEPTION`; in a world they stop that world only. The LAPIC
//! timer drives scheduling, PIC lines become notifications, spurious vectors are ignored,
//! and any other vector is logged and acknowledged.

use core::arch::global_asm;

use esker_kernel_core::contract::exit_code;
use x86_64::registers::control::{Cr2, Cr3};

use super::{gdt, lapic, pic, power};

/// Vector of the LAPIC timer interrupt.
pub const VECTOR_TIMER: u8 = 0xf0;
/// Vector of the inter-processor interrupt that makes a CPU re-decide.
pub const VECTOR_KICK: u8 = 0xf1;
/// Vector of the inter-processor interrupt that makes a CPU flush its TLB.
pub const VECTOR_SHOOTDOWN: u8 = 0xf2;
/// Vector the LAPIC uses for spurious interrupts.
pub const VECTOR_SPURIOUS: u8 = 0xff;
/// First vector the remapped (and masked) legacy PIC could still deliver.
pub const VECTOR_PIC_BASE: u8 = 0x20;

/// The registers saved on entry, in stack order (lowest address first). The same layout
/// as a world's saved context, so a trap frame can be handed to the system as is.
pub use esker_kernel_core::system::Registers as TrapFrame;

/// Size of each entry stub; the stub for vector `v` is at `trap_stubs + v * STUB_SIZE`.
const STUB_SIZE: u64 = 16;

global_asm!(
    r#"
    .section .text.trap, "ax"
    .code64
    .balign 16
    .global trap_stubs
trap_stubs:
    .set vector, 0
    .rept 256
    .balign 16
    .if (vector == 8) || (vector == 10) || (vector == 11) || (vector == 12) || (vector == 13) || (vector == 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp trap_common
    .set vector, vector + 1
    .endr

trap_common:
    cld
"#,
    push_general_registers!(),
    r#"    movq %rsp, %rdi
    /* From user mode the frame was pushed into the world's own register area (TSS.RSP0):
       take the kernel's GS and move to the kernel stack. From kernel mode (the idle loop,
       or a fault in the kernel) stay where we are. */
    testb $3, {cs_offset}(%rsp)
    jz 1f
    swapgs
    movq %gs:{kernel_stack}, %rsp
1:
    call {dispatch}
    jmp resume_from_rax
    "#,
    dispatch = sym trap_dispatch,
    cs_offset = const core::mem::offset_of!(TrapFrame, cs),
    kernel_stack = const super::syscall::PER_CPU_KERNEL_STACK,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: u8;
}

/// One IDT gate descriptor (64-bit interrupt gate).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present, DPL-0 interrupt gate (interrupts stay off in the handler).
    fn interrupt(handler: u64, selector: u16, ist: Option<u16>) -> Self {
        Self {
            offset_low: handler as u16,
            selector,
            ist: ist.map_or(0, |slot| (slot + 1) as u8),
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

/// Builds and loads the IDT.
pub fn init(selectors: gdt::Selectors) {
    let idt = IDT.call_once(|| {
        let base = &raw const trap_stubs as u64;
        let mut idt = Idt([Gate::MISSING; 256]);
        for (vector, gate) in idt.0.iter_mut().enumerate() {
            let ist = match vector {
                2 => Some(gdt::IST_NMI),
                8 => Some(gdt::IST_DOUBLE_FAULT),
                18 => Some(gdt::IST_MACHINE_CHECK),
                _ => None,
            };
            *gate = Gate::interrupt(
                base + vector as u64 * STUB_SIZE,
                selectors.kernel_code.0,
                ist,
            );
        }
        idt
    });
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: `idt` is a 'static table of valid gates whose handlers are the stubs above,
    // which preserve all registers and return with iretq.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// Called by `trap_common` with the saved registers; returns the frame to resume (the
/// same one, another world's register area, or the idle context).
extern "C" fn trap_dispatch(frame: &mut TrapFrame) -> *const TrapFrame {
    let vector = frame.vector as u8;
    match vector {
        // NMI, double fault and machine check arrive on their own stacks (IST), not in the
        // world's register area: whatever mode they interrupt, they are fatal.
        2 | 8 | 18 => fatal_exception(frame),
        0..=31 if frame.from_user() => {
            let fault_address = if vector == 14 { Cr2::read_raw() } else { 0 };
            crate::world::on_user_exception(frame, fault_address, mnemonic(frame.vector))
        }
        0..=31 => fatal_exception(frame),
        VECTOR_TIMER => {
            lapic::on_timer_interrupt();
            crate::world::on_timer(frame)
        }
        VECTOR_KICK => {
            lapic::end_of_interrupt();
            crate::world::on_timer(frame)
        }
        VECTOR_SHOOTDOWN => {
            super::smp::service_flush();
            lapic::end_of_interrupt();
            if frame.from_user() {
                // A world goes on where it was.
                frame
            } else {
                // The idle context: the shootdown may have made a guest exit (its world
                // is still this CPU's to run), so decide again rather than halt.
                crate::world::on_timer(frame)
            }
        }
        VECTOR_PIC_BASE..=0x2f => {
            let line = vector - VECTOR_PIC_BASE;
            pic::end_of_interrupt(line);
            crate::world::on_irq(line, frame)
        }
        VECTOR_SPURIOUS => frame,
        vector => {
            defmt::warn!("interrupt: unexpected vector {=u8} (acknowledged)", vector);
            lapic::end_of_interrupt();
            frame
        }
    }
}

/// Mnemonic of an exception vector.
fn mnemonic(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        29 => "#VC",
        30 => "#SX",
        _ => "#??",
    }
}

fn fatal_exception(frame: &TrapFrame) -> ! {
    crate::log::break_lock_for_fatal_report();
    let cr2 = Cr2::read_raw();
    let (cr3_frame, _) = Cr3::read_raw();
    let cr3 = cr3_frame.start_address().as_u64();
    defmt::error!(
        "EXCEPTION {=str} (vector {=u64}) error code {=u64:#x} rip {=u64:#x} cr2 {=u64:#x} cr3 {=u64:#x} rsp {=u64:#x}",
        mnemonic(frame.vector),
        frame.vector,
        frame.error_code,
        frame.rip,
        cr2,
        cr3,
        frame.rsp
    );
    if frame.vector == 14 {
        let e = frame.error_code;
        defmt::error!(
            "  page fault: {=str} {=str} in {=str} mode{=str}",
            if e & 0x10 != 0 {
                "instruction fetch from"
            } else if e & 0x2 != 0 {
                "write to"
            } else {
                "read from"
            },
            if e & 0x1 != 0 {
                "a page whose protection forbids it"
            } else {
                "an unmapped page"
            },
            if e & 0x4 != 0 { "user" } else { "supervisor" },
            if e & 0x8 != 0 {
                " (reserved bit set in a page-table entry)"
            } else {
                ""
            }
        );
    }
    defmt::error!(
        "  rax {=u64:#018x} rbx {=u64:#018x} rcx {=u64:#018x} rdx {=u64:#018x}",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx
    );
    defmt::error!(
        "  rsi {=u64:#018x} rdi {=u64:#018x} rbp {=u64:#018x} r8  {=u64:#018x}",
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8
    );
    defmt::error!(
        "  r9  {=u64:#018x} r10 {=u64:#018x} r11 {=u64:#018x} r12 {=u64:#018x}",
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12
    );
    defmt::error!(
        "  r13 {=u64:#018x} r14 {=u64:#018x} r15 {=u64:#018x} rflags {=u64:#x} cs {=u64:#x} ss {=u64:#x}",
        frame.r13,
        frame.r14,
        frame.r15,
        frame.rflags,
        frame.cs,
        frame.ss
    );
    crate::backtrace::log_from(frame.rbp);
    defmt::error!("system halted: kernel exception");
    power::power_off(exit_code::EXCEPTION)
}
