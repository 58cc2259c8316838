//! A frame-pointer backtrace for fatal reports.
//!
//! The kernel is built with frame pointers, so each frame starts with the caller's `rbp`
//! and the return address. The walk only follows pointers that stay inside the boot
//! CPU's kernel stack, so a corrupted chain ends the backtrace instead of faulting again.

use crate::arch::x86_64::boot::{boot_stack_bottom, boot_stack_top};

const MAX_FRAMES: usize = 16;

/// Logs the return addresses found by following `rbp`.
pub fn log_from(mut rbp: u64) {
    let bottom = &raw const boot_stack_bottom as u64;
    let top = &raw const boot_stack_top as u64;
    defmt::error!("  backtrace (most recent call first):");
    for _ in 0..MAX_FRAMES {
        if !rbp.is_multiple_of(8) || rbp < bottom || rbp.saturating_add(16) > top {
            break;
        }
        let frame = rbp as *const u64;
        // SAFETY: `rbp` is 8-aligned and [rbp, rbp+16) lies inside the boot stack, which
        // is mapped readable for the kernel's whole life.
        let (next, return_address) = unsafe { (frame.read(), frame.add(1).read()) };
        if return_address == 0 {
            break;
        }
        defmt::error!("    {=u64:#x}", return_address);
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}
