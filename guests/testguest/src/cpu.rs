//! The instructions the guest uses, each behind one small function.

use core::arch::asm;

// Port I/O is safe to expose: the guest only talks to the emulated PC's devices (UART,
// PIC, PIT, CMOS, PCI configuration, the exit port), none of which can touch memory the
// guest's Rust code owns (nothing is set up for DMA).

/// `out` of a byte.
pub fn outb(port: u16, value: u8) {
    // SAFETY: see the note above: port I/O has no effect on the guest's memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// `in` of a byte.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// `out` of a 32-bit word.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// `in` of a 32-bit word.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as in `outb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter; the guest never sets CR4.TSD.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `sti; hlt; cli`: waits for the next interrupt with interrupts enabled only while
/// halted (the instruction after `sti` runs before any interrupt is taken).
pub fn wait_for_interrupt() {
    // SAFETY: the IDT installed at boot handles every vector the PIC can deliver; the
    // handlers preserve every register and memory they do not own.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Interrupts off and halted for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops the CPU; nothing is read or written.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Ends the VM through the debug-exit port with `code` (a 32-bit `out` to 0xf4); halts if
/// the port does nothing.
pub fn exit(code: u32) -> ! {
    outl(0xf4, code);
    halt_forever()
}

/// The IDT register image (`lidt` operand).
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the IDT register.
///
/// # Safety
///
/// `base..=base + limit` must hold valid 64-bit gates for every vector that can arrive
/// while it is loaded, and stay in place as long as it is. A `limit` of 0 (no usable
/// gate) is allowed: any exception then shuts the CPU down.
pub unsafe fn load_idt(base: u64, limit: u16) {
    let pointer = DescriptorPointer { limit, base };
    // SAFETY: `lidt` reads the 10-byte operand, which lives on the stack for the call;
    // the table itself is the caller's promise.
    unsafe {
        asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags))
    }
}

/// `int3` (a breakpoint exception).
///
/// # Safety
///
/// The loaded IDT decides what happens: with an empty one the CPU shuts down, which is
/// the point; with a real one the handler must be able to return or end the VM.
pub unsafe fn breakpoint() {
    // SAFETY: the caller vouches for the IDT (see above).
    unsafe { asm!("int3", options(nomem, nostack)) }
}

/// Jumps to `target` and never comes back.
///
/// # Safety
///
/// Whatever runs at `target` takes over the CPU: this is for deliberately crashing it.
pub unsafe fn jump_to(target: u64) -> ! {
    // SAFETY: the caller wants control handed to `target` for good.
    unsafe { asm!("jmp {}", in(reg) target, options(noreturn, nostack)) }
}

/// CR2: the address of the last page fault.
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) }
    value
}
