//! Entering and leaving user worlds: SYSCALL entry, the one resume path, and the idle
//! context.
//!
//! A world's registers live in its own register area inside the system (as in seL4's
//! TCB). While a world runs, the per-CPU block and TSS.RSP0 point at the top of that
//! area, so both `syscall_entry` and an interrupt from user mode save the registers
//! *in place* — no copying — and then move to the kernel stack to run Rust. The handler
//! returns the address of the frame to resume (the same world, another world's area, or
//! the idle context) and `resume_from_rax` restores it: with `sysretq` for a world that
//! entered by `syscall`, with `iretq` for anything else.
//!
//! GS: in kernel mode the GS base is the per-CPU block, in user mode the world's (0).
//! Entry from user mode and a resume into user mode each `swapgs`; kernel-mode
//! interrupts (the idle loop) do not.
//!
//! The kernel runs with interrupts off; only user mode and the idle loop take interrupts.

use core::arch::global_asm;

use esker_kernel_core::system::{
    Registers, SYSCALL_VECTOR, USER_CODE_SELECTOR, USER_DATA_SELECTOR,
};
use spin::Once;

use super::{cpu, gdt};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_FMASK: u32 = 0xc000_0084;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const EFER_SCE: u64 = 1 << 0;
/// RFLAGS bits cleared on entry: TF, IF, DF, NT, AC.
const FMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 18);

/// Offset in [`PerCpu`] of the running world's register-area top.
pub const PER_CPU_SAVE_AREA_TOP: usize = 0;
/// Offset in [`PerCpu`] of the scratch slot for the user stack pointer.
pub const PER_CPU_USER_RSP: usize = 8;
/// Offset in [`PerCpu`] of the kernel stack top.
pub const PER_CPU_KERNEL_STACK: usize = 16;
/// Offset in [`PerCpu`] of the CPU's index.
pub const PER_CPU_INDEX: usize = 24;

/// Per-CPU block reached through GS by the entry stubs (and by [`this_cpu`]).
#[repr(C)]
pub struct PerCpu {
    /// Top of the running world's register area.
    save_area_top: u64,
    /// Scratch for the user stack pointer during `syscall_entry`.
    user_rsp: u64,
    /// Top of this CPU's kernel stack.
    kernel_stack: u64,
    /// This CPU's index (0 = the boot CPU).
    index: u64,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, save_area_top) == PER_CPU_SAVE_AREA_TOP);
const _: () = assert!(core::mem::offset_of!(PerCpu, user_rsp) == PER_CPU_USER_RSP);
const _: () = assert!(core::mem::offset_of!(PerCpu, kernel_stack) == PER_CPU_KERNEL_STACK);
const _: () = assert!(core::mem::offset_of!(PerCpu, index) == PER_CPU_INDEX);

static mut PER_CPU: [PerCpu; super::MAX_CPUS] = [const {
    PerCpu {
        save_area_top: 0,
        user_rsp: 0,
        kernel_stack: 0,
        index: 0,
    }
}; super::MAX_CPUS];

/// Bytes of an idle stack (the boot CPU's is static; the others are allocated).
pub const IDLE_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IdleStack([u8; IDLE_STACK_SIZE]);

static mut IDLE_STACK: IdleStack = IdleStack([0; IDLE_STACK_SIZE]);
static IDLE_FRAMES: [Once<Registers>; super::MAX_CPUS] = [const { Once::new() }; super::MAX_CPUS];

global_asm!(
    r#"
    .section .text.syscall, "ax"
    .code64
    .global syscall_entry
syscall_entry:
    swapgs
    movq %rsp, %gs:{user_rsp}
    movq %gs:{save_top}, %rsp
    pushq ${user_ss}
    pushq %gs:{user_rsp}
    pushq %r11
    pushq ${user_cs}
    pushq %rcx
    pushq $0
    pushq ${vector}
"#,
    push_general_registers!(),
    r#"    movq %rsp, %rdi
    movq %gs:{kernel_stack}, %rsp
    call {dispatch}

    /* Resumes the Registers frame at %rax (a world's area, or the idle context).
       A world that entered by `syscall` leaves by `sysretq` (rcx and r11 are clobbered by
       the system-call ABI anyway); everything else - a preempted or faulted world, the
       idle context - is restored in full by `iretq`. */
    .global resume_from_rax
resume_from_rax:
    movq %rax, %rsp
    testb $3, {cs_offset}(%rsp)
    jz 2f
    swapgs
    cmpq ${vector}, {vector_offset}(%rsp)
    jne 2f
    movabsq ${user_end}, %rax
    cmpq %rax, {rip_offset}(%rsp)
    jae 2f
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    addq $8, %rsp
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    addq $8, %rsp
    popq %rbx
    popq %rax
    movq 16(%rsp), %rcx
    movq 32(%rsp), %r11
    movq 40(%rsp), %rsp
    sysretq
2:
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
    user_rsp = const PER_CPU_USER_RSP,
    save_top = const PER_CPU_SAVE_AREA_TOP,
    kernel_stack = const PER_CPU_KERNEL_STACK,
    cs_offset = const core::mem::offset_of!(Registers, cs),
    vector_offset = const core::mem::offset_of!(Registers, vector),
    rip_offset = const core::mem::offset_of!(Registers, rip),
    user_end = const esker_abi::layout::USER_END,
    dispatch = sym crate::world::on_syscall,
    options(att_syntax)
);

unsafe extern "C" {
    fn syscall_entry();
    fn idle_loop();
}

/// Enables SYSCALL on CPU `cpu` (the one running this) and makes its per-CPU block the
/// kernel's GS; the kernel's handlers run on `kernel_stack_top`; the idle context runs on
/// `idle_stack_top` (`None`: the boot CPU's static idle stack).
pub fn init(
    selectors: gdt::Selectors,
    cpu: usize,
    kernel_stack_top: u64,
    idle_stack_top: Option<u64>,
) {
    // SAFETY: only a raw pointer to this CPU's own block is formed.
    let block = unsafe { &raw mut PER_CPU[cpu] };
    // SAFETY: this CPU's own block, initialised once by this CPU before SYSCALL is enabled
    // and before any world runs on it; no other CPU reads another's block.
    unsafe {
        (&raw mut (*block).kernel_stack).write(kernel_stack_top);
        (&raw mut (*block).index).write(cpu as u64);
    }
    let idle_top = idle_stack_top.unwrap_or(&raw const IDLE_STACK as u64 + IDLE_STACK_SIZE as u64);
    IDLE_FRAMES[cpu].call_once(|| Registers {
        rip: idle_loop as *const () as u64,
        cs: 0x08,
        ss: 0x10,
        rsp: idle_top,
        rflags: 0x202,
        ..Registers::default()
    });
    let star =
        (u64::from(selectors.kernel_data.0) << 48) | (u64::from(selectors.kernel_code.0) << 32);
    // SAFETY: these MSRs exist on every x86-64 CPU; STAR matches the fixed GDT layout
    // (asserted in gdt::init), LSTAR points at the entry stub, FMASK clears IF so the
    // kernel runs with interrupts off; in kernel mode GS is the per-CPU block and the
    // user's GS base (KERNEL_GS_BASE until the first swapgs) starts at 0.
    unsafe {
        cpu::write_msr(MSR_STAR, star);
        cpu::write_msr(MSR_LSTAR, syscall_entry as *const () as u64);
        cpu::write_msr(MSR_FMASK, FMASK);
        cpu::write_msr(MSR_GS_BASE, block as u64);
        cpu::write_msr(MSR_KERNEL_GS_BASE, 0);
        cpu::write_msr(MSR_EFER, cpu::read_msr(MSR_EFER) | EFER_SCE);
    }
}

/// Makes `area` the running world's register area: the next system call or interrupt
/// from user mode saves the world's registers there.
pub fn set_save_area(area: *const Registers) {
    let top = area as u64 + core::mem::size_of::<Registers>() as u64;
    // SAFETY: in kernel mode GS is this CPU's block (only this CPU writes it); the kernel
    // runs with interrupts off, so the entry stubs (its only other users) cannot run while
    // it is written; the store is to its `save_area_top` field.
    unsafe {
        core::arch::asm!(
            "mov gs:[{offset}], {top}",
            top = in(reg) top,
            offset = const PER_CPU_SAVE_AREA_TOP,
            options(nostack, preserves_flags)
        )
    };
    gdt::set_user_entry_stack(top);
}

/// The index of the CPU running this (0 = the boot CPU); valid once [`init`] ran on it.
pub fn this_cpu() -> usize {
    let index: u64;
    // SAFETY: in kernel mode GS is this CPU's per-CPU block (set by `init`, swapped on
    // every entry from user mode); the load reads its `index` field.
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[{}]",
            out(reg) index,
            const PER_CPU_INDEX,
            options(nostack, readonly, preserves_flags)
        )
    };
    index as usize
}

/// This CPU's context that halts until the next interrupt, on its idle stack.
pub fn idle_frame() -> *const Registers {
    IDLE_FRAMES[this_cpu()]
        .get()
        .expect("syscall::init ran on this CPU")
}

/// Leaves the boot path for good: resumes `frame` (a world's area, or the idle context).
pub fn enter(frame: *const Registers) -> ! {
    // SAFETY: `frame` is a complete, sanitised context (a world's register area set up by
    // the system, with set_save_area done, or the idle context); `resume_from_rax`
    // restores it and `iretq`s into it. The boot stack below us is abandoned, which is
    // fine: nothing on it is used again.
    unsafe { core::arch::asm!("jmp resume_from_rax", in("rax") frame, options(noreturn)) }
}
