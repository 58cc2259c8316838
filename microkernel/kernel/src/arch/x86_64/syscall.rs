//! Entering and leaving user worlds: SYSCALL entry, the return path, and the idle context.
//!
//! `syscall` lands in `syscall_entry`, which switches to the kernel stack through the
//! per-CPU block (reached with `swapgs`), builds the same [`Registers`] frame the interrupt
//! stubs build, and calls [`crate::world::on_syscall`]. Whatever frame that leaves behind —
//! the same world, another world, or the idle context — is restored with `iretq`, so one
//! path returns to anything. `swapgs` is balanced inside the stub: everywhere else the GS
//! base is the user's (0) and `KERNEL_GS_BASE` holds the per-CPU block.
//!
//! The kernel runs with interrupts off; only user mode and the idle loop take interrupts.

use core::arch::global_asm;

use esker_kernel_core::system::{
    Registers, SYSCALL_VECTOR, USER_CODE_SELECTOR, USER_DATA_SELECTOR,
};

use super::{cpu, gdt};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_FMASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const EFER_SCE: u64 = 1 << 0;
/// RFLAGS bits cleared on entry: TF, IF, DF, NT, AC.
const FMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 18);

/// Per-CPU block reached through GS in the syscall stub. Layout is fixed by the stub.
#[repr(C)]
pub struct PerCpu {
    /// Kernel stack top loaded on syscall entry (offset 0).
    kernel_rsp: u64,
    /// Scratch for the user stack pointer (offset 8).
    user_rsp: u64,
}

static mut PER_CPU: PerCpu = PerCpu {
    kernel_rsp: 0,
    user_rsp: 0,
};

const IDLE_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IdleStack([u8; IDLE_STACK_SIZE]);

static mut IDLE_STACK: IdleStack = IdleStack([0; IDLE_STACK_SIZE]);

global_asm!(
    r#"
    .section .text.syscall, "ax"
    .code64
    .global syscall_entry
syscall_entry:
    swapgs
    movq %rsp, %gs:8
    movq %gs:0, %rsp
    pushq ${user_ss}
    pushq %gs:8
    pushq %r11
    pushq ${user_cs}
    pushq %rcx
    pushq $0
    pushq ${vector}
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    call {dispatch}
    swapgs
    jmp resume_frame

    /* Restores a Registers frame at %rsp and returns into it. */
    .global resume_frame
resume_frame:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

    .global idle_loop
idle_loop:
    sti
    hlt
    jmp idle_loop
    "#,
    user_ss = const USER_DATA_SELECTOR,
    user_cs = const USER_CODE_SELECTOR,
    vector = const SYSCALL_VECTOR,
    dispatch = sym crate::world::on_syscall,
    options(att_syntax)
);

unsafe extern "C" {
    fn syscall_entry();
    fn idle_loop();
}

/// Enables SYSCALL with `kernel_stack_top` as the stack on entry (the same stack the
/// TSS gives interrupts from user mode).
pub fn init(selectors: gdt::Selectors, kernel_stack_top: u64) {
    // SAFETY: single-threaded initialisation; nothing reads PER_CPU before SYSCALL is
    // enabled below.
    unsafe { PER_CPU.kernel_rsp = kernel_stack_top };
    let star =
        (u64::from(selectors.kernel_data.0) << 48) | (u64::from(selectors.kernel_code.0) << 32);
    // SAFETY: these MSRs exist on every x86-64 CPU; STAR matches the fixed GDT layout
    // (asserted in gdt::init), LSTAR points at the entry stub, FMASK clears IF so the
    // kernel runs with interrupts off, KERNEL_GS_BASE points at the per-CPU block.
    unsafe {
        cpu::write_msr(MSR_STAR, star);
        cpu::write_msr(MSR_LSTAR, syscall_entry as *const () as u64);
        cpu::write_msr(MSR_FMASK, FMASK);
        cpu::write_msr(MSR_KERNEL_GS_BASE, &raw const PER_CPU as u64);
        cpu::write_msr(MSR_EFER, cpu::read_msr(MSR_EFER) | EFER_SCE);
    }
}

/// A frame that, when resumed, halts until the next interrupt.
pub fn idle_frame() -> Registers {
    let stack_top = &raw const IDLE_STACK as u64 + IDLE_STACK_SIZE as u64;
    Registers {
        rip: idle_loop as *const () as u64,
        cs: 0x08,
        ss: 0x10,
        rsp: stack_top,
        rflags: 0x202,
        ..Registers::default()
    }
}

/// Leaves the boot path for good: resumes `frame` (a world, or the idle context).
pub fn enter(frame: &Registers) -> ! {
    // SAFETY: `frame` holds a complete, sanitised context (built by the system or
    // `idle_frame`); `resume_frame` pops it and `iretq`s into it. The boot stack below us
    // is abandoned, which is fine: nothing on it is used again.
    unsafe {
        core::arch::asm!(
            "mov rsp, {frame}",
            "jmp resume_frame",
            frame = in(reg) frame as *const Registers,
            options(noreturn)
        )
    }
}
