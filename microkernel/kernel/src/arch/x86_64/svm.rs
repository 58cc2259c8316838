//! AMD SVM: turning it on, and the one path into a guest and back (`VMRUN`).
//!
//! [`run`] enters the guest whose VMCB and register page the system allocated and returns
//! after the `#VMEXIT`. Around `VMRUN` it:
//!
//! - clears GIF and sets IF, so a host interrupt that arrives while the guest runs makes
//!   it exit (the INTR intercept) but none is taken on the host before `VMRUN` or after
//!   the exit until the host state is whole again; `cli; stgi` after the exit leaves the
//!   interrupt pending for the caller to let in;
//! - swaps the state `VMRUN` does not (FS, GS, TR, LDTR, KernelGSbase, STAR, LSTAR, CSTAR,
//!   SFMASK, SYSENTER) with `VMSAVE`/`VMLOAD` through a per-CPU host save area — the
//!   kernel's GS base is its per-CPU block and TR its TSS;
//! - loads and saves the guest's general registers (RAX and RSP live in the VMCB) and its
//!   x87/SSE state (`FXRSTOR`/`FXSAVE`: no host code uses those registers, but two
//!   guests do).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use esker_kernel_core::addr::PhysFrame;
use esker_kernel_core::system::VCPU_FXSAVE_OFFSET;
use esker_kernel_core::virt::svm::HostLimits;
use esker_kernel_core::virt::vcpu::GeneralRegisters;

use super::cpu::{self, Features};
use crate::memory::{self, DIRECT_MAP_BASE};

const MSR_EFER: u32 = 0xc000_0080;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const EFER_SVME: u64 = 1 << 12;

/// The x87/SSE state loaded after every guest run (reset values: FCW 0x37f, MXCSR
/// 0x1f80, every register zero), so that no world — SSE works in user mode once
/// CR4.OSFXSR is set — can read what a guest left in the registers.
#[repr(C, align(16))]
struct FxImage([u8; 512]);

static CLEAN_FX: FxImage = {
    let mut image = [0u8; 512];
    image[0] = 0x7f;
    image[1] = 0x03;
    image[24] = 0x80;
    image[25] = 0x1f;
    FxImage(image)
};

/// Per CPU: physical address of the host save area VMSAVE/VMLOAD use (0: SVM is off).
static HOST_SAVE_PA: [AtomicU64; super::MAX_CPUS] = [const { AtomicU64::new(0) }; super::MAX_CPUS];
/// What the guests may be given, packed (see [`limits`]); 0: SVM is off.
static PHYSICAL_BITS: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.svm, "ax"
    .code64
    /* esker_vmrun(vmcb_pa: rdi, gprs: rsi, host_save_pa: rdx)
       GIF is clear on entry and on return. */
    .global esker_vmrun
esker_vmrun:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushq %rdx
    pushq %rsi
    movq %rdx, %rax
    vmsave %rax
    movq %rdi, %rax
    vmload %rax
    movq 8(%rsi), %rcx
    movq 16(%rsi), %rdx
    movq 24(%rsi), %rbx
    movq 40(%rsi), %rbp
    movq 56(%rsi), %rdi
    movq 64(%rsi), %r8
    movq 72(%rsi), %r9
    movq 80(%rsi), %r10
    movq 88(%rsi), %r11
    movq 96(%rsi), %r12
    movq 104(%rsi), %r13
    movq 112(%rsi), %r14
    movq 120(%rsi), %r15
    movq 48(%rsi), %rsi
    vmrun %rax
    /* #VMEXIT: RAX (the VMCB address), RSP and the control registers are the host's
       again; every other general register still holds the guest's value. */
    vmsave %rax
    pushq %rsi
    movq 8(%rsp), %rsi
    movq %rcx, 8(%rsi)
    movq %rdx, 16(%rsi)
    movq %rbx, 24(%rsi)
    movq %rbp, 40(%rsi)
    movq %rdi, 56(%rsi)
    movq %r8, 64(%rsi)
    movq %r9, 72(%rsi)
    movq %r10, 80(%rsi)
    movq %r11, 88(%rsi)
    movq %r12, 96(%rsi)
    movq %r13, 104(%rsi)
    movq %r14, 112(%rsi)
    movq %r15, 120(%rsi)
    popq %rcx
    movq %rcx, 48(%rsi)
    movq 8(%rsp), %rax
    vmload %rax
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn esker_vmrun(vmcb_pa: u64, gprs: *mut GeneralRegisters, host_save_pa: u64);
}

/// Turns SVM on for the CPU running this (each CPU calls it once) if it has SVM with nested paging: sets EFER.SVME, gives the
/// CPU its host-state save area (VM_HSAVE_PA) and allocates the area VMSAVE/VMLOAD keep
/// the host's extra state in; enables FXSAVE/FXRSTOR of SSE state (CR4.OSFXSR). Returns
/// whether guests can run.
pub fn enable(features: &Features) -> bool {
    let Some(svm) = features.svm else {
        return false;
    };
    if svm.disabled_by_firmware || !svm.nested_paging {
        return false;
    }
    let (Some(hsave), Some(host_save)) = (memory::allocate_zeroed(1), memory::allocate_zeroed(1))
    else {
        return false;
    };
    // SAFETY: the CPU reports SVM and firmware has not locked it off, so EFER.SVME may be
    // set; VM_HSAVE_PA gets a page-aligned frame the kernel owns for good. CR4.OSFXSR and
    // OSXMMEXCPT only change what FXSAVE/FXRSTOR cover and how SSE faults are reported;
    // CR0.EM cleared and MP set make x87/SSE instructions usable in the kernel (only the
    // FXSAVE/FXRSTOR here use them).
    unsafe {
        cpu::write_msr(MSR_EFER, cpu::read_msr(MSR_EFER) | EFER_SVME);
        cpu::write_msr(MSR_VM_HSAVE_PA, hsave.start().as_u64());
        x86_64::registers::control::Cr4::update(|flags| {
            *flags |= x86_64::registers::control::Cr4Flags::OSFXSR
                | x86_64::registers::control::Cr4Flags::OSXMMEXCPT_ENABLE;
        });
        x86_64::registers::control::Cr0::update(|flags| {
            flags.remove(x86_64::registers::control::Cr0Flags::EMULATE_COPROCESSOR);
            flags.remove(x86_64::registers::control::Cr0Flags::TASK_SWITCHED);
            flags.insert(x86_64::registers::control::Cr0Flags::MONITOR_COPROCESSOR);
        });
    }
    let bits = cpu::cpuid(0x8000_0008, 0).eax & 0xff;
    PHYSICAL_BITS.store(u64::from(bits.max(36)), Ordering::Relaxed);
    HOST_SAVE_PA[super::syscall::this_cpu()].store(host_save.start().as_u64(), Ordering::Release);
    true
}

/// What VMRUN accepts on this CPU, `None` if SVM is off.
pub fn limits() -> Option<HostLimits> {
    if HOST_SAVE_PA[super::syscall::this_cpu()].load(Ordering::Acquire) == 0 {
        return None;
    }
    Some(HostLimits {
        physical_address_bits: PHYSICAL_BITS.load(Ordering::Relaxed) as u8,
        flush_by_asid: false,
        ..HostLimits::ARCHITECTURAL
    })
}

/// A kernel pointer to `offset` bytes into `frame`, through the direct map.
fn direct<T>(frame: PhysFrame, offset: u64) -> *mut T {
    (DIRECT_MAP_BASE + frame.start().as_u64() + offset) as *mut T
}

/// Runs the guest of the VMCB in `vmcb` with the registers and FXSAVE image in `state`
/// until the next `#VMEXIT`. Interrupts are off on entry and on return; a host interrupt
/// that made the guest exit is still pending.
pub fn run(vmcb: PhysFrame, state: PhysFrame) {
    let host_save = HOST_SAVE_PA[super::syscall::this_cpu()].load(Ordering::Acquire);
    let gprs = direct::<GeneralRegisters>(state, 0);
    let fxsave = direct::<u8>(state, VCPU_FXSAVE_OFFSET);
    // SAFETY: SVM is enabled (the system creates vCPUs only when `limits` is Some, so
    // `host_save` is the area `enable` allocated); `vmcb` and `state` are frames the
    // system allocated for this vCPU and passes only while it exists, reached through the
    // direct map (RW); the FXSAVE area is 16-byte aligned (offset 512 in a page) and
    // holds a valid image (initialised at creation, then written by FXSAVE), and so does
    // CLEAN_FX (16-byte aligned, reset values), loaded after the guest's state is saved so
    // none of it stays in the registers. With GIF
    // clear no interrupt or NMI is taken between STI and VMRUN or between #VMEXIT and
    // STGI, so nothing runs on the host while FS/GS/TR hold guest values; `esker_vmrun`
    // saves and restores every callee-saved register and the host's VMSAVE state.
    unsafe {
        core::arch::asm!("fxrstor64 [{}]", in(reg) fxsave, options(nostack, readonly));
        core::arch::asm!("clgi", "sti", options(nomem, nostack));
        esker_vmrun(vmcb.start().as_u64(), gprs, host_save);
        core::arch::asm!("cli", "stgi", options(nomem, nostack));
        core::arch::asm!("fxsave64 [{}]", in(reg) fxsave, options(nostack));
        core::arch::asm!(
            "fxrstor64 [{}]",
            in(reg) &raw const CLEAN_FX,
            options(nostack, readonly)
        );
    }
}
