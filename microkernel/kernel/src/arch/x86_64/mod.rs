//! The x86-64 hardware layer: everything that needs asm, MSRs, port I/O or MMIO.
//!
//! Each module owns one piece of hardware and keeps its `unsafe` blocks small, each with
//! the invariant it relies on. Logic that can be written without hardware lives in
//! `esker-kernel-core` instead.

/// The instructions (AT&T syntax) that push the general registers in the order
/// `Registers` lays them out (its lowest field, `r15`, pushed last). Both entry stubs —
/// `syscall_entry` and `trap_common` — splice in this one copy, and `resume_from_rax` pops
/// in the reverse order.
macro_rules! push_general_registers {
    () => {
        "pushq %rax\n pushq %rbx\n pushq %rcx\n pushq %rdx\n pushq %rsi\n pushq %rdi\n \
         pushq %rbp\n pushq %r8\n pushq %r9\n pushq %r10\n pushq %r11\n pushq %r12\n \
         pushq %r13\n pushq %r14\n pushq %r15\n"
    };
}

/// CPUs the kernel brings up (more are left halted, with a warning).
pub const MAX_CPUS: usize = 16;

pub mod boot;
pub mod cpu;
pub mod gdt;
pub mod lapic;
pub mod pic;
pub mod power;
pub mod serial;
pub mod smp;
pub mod svm;
pub mod syscall;
pub mod time;
pub mod trap;
