//! Powering off: the only way the kernel ends.
//!
//! Under QEMU the `isa-debug-exit` device at port 0xf4 turns a written code into QEMU's
//! exit status, which is how `cargo xtask` and the boot tests learn the outcome. The port
//! is only written when CPUID says a hypervisor is present; on bare metal the CPU halts.

use esker_kernel_core::contract::DEBUG_EXIT_PORT;
use x86_64::instructions::port::Port;

use super::cpu;

/// Ends the system with `code` (see `esker_kernel_core::contract::exit_code`).
pub fn power_off(code: u32) -> ! {
    if cpu::Features::detect().hypervisor {
        // SAFETY: port 0xf4 is QEMU's isa-debug-exit under a hypervisor; a write makes
        // QEMU exit. If no such device exists the write is ignored.
        unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code) };
    }
    cpu::halt_forever()
}
