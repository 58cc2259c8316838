//! The IDT (exceptions 0–31, PIC vectors 0x20–0x2f), the 8259 pair and PIT channel 0.
//!
//! Vector 0x20 (IRQ 0) counts a tick, acknowledges the PIC and returns. Every other
//! vector is unexpected: its handler prints the vector, error code and `%rip` and ends the
//! VM with exit code 3. Vectors above 0x2f are outside the IDT's limit, so they arrive as
//! a general-protection fault, which is reported the same way.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use esker_testguest::exit;

use crate::cpu::outb;
use crate::serial;

/// Vectors with a gate: the 32 exceptions and the 16 PIC inputs.
const VECTORS: usize = 48;
/// Where the master PIC's IRQ 0 lands (the slave's IRQ 8 lands at +8).
pub const PIC_BASE: u8 = 0x20;
/// Bytes per entry stub (see the assembly below).
const STUB_SIZE: u64 = 16;

const PIC_MASTER_COMMAND: u16 = 0x20;
const PIC_MASTER_DATA: u16 = 0x21;
const PIC_SLAVE_COMMAND: u16 = 0xa0;
const PIC_SLAVE_DATA: u16 = 0xa1;
const PIT_CHANNEL0: u16 = 0x40;
const PIT_COMMAND: u16 = 0x43;

/// Timer interrupts taken (IRQ 0).
pub static TICKS: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.interrupts, "ax"
    .code64

/* One stub per vector, {stub_size} bytes apart: push a zero error code where the CPU pushes
   none, push the vector, go to the common path. Vectors 8, 10-14, 17, 21, 29 and 30 have
   error codes. The `.org` after each stub pads it to its slot, and fails the build if a
   stub outgrew it. */
    .balign 16
    .global testguest_isr_stubs
testguest_isr_stubs:
    .set vector, 0
    .rept {vectors}
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp isr_unexpected
    .set vector, vector + 1
    .org testguest_isr_stubs + vector * {stub_size}, 0xcc
    .endr

isr_unexpected:
    movq (%rsp), %rdi               /* vector */
    movq 8(%rsp), %rsi              /* error code */
    movq 16(%rsp), %rdx             /* interrupted %rip */
    andq $-16, %rsp
    call {unexpected}
    ud2

/* IRQ 0: count, end of interrupt to the master PIC, return. */
    .balign 16
    .global testguest_timer_stub
testguest_timer_stub:
    pushq %rax
    lock incq {ticks}(%rip)
    movb $0x20, %al
    outb %al, $0x20
    popq %rax
    iretq
    "#,
    vectors = const VECTORS,
    stub_size = const STUB_SIZE,
    unexpected = sym unexpected,
    ticks = sym TICKS,
    options(att_syntax)
);

unsafe extern "C" {
    /// The first of the [`VECTORS`] entry stubs, [`STUB_SIZE`] bytes apart.
    static testguest_isr_stubs: u8;
    /// The IRQ 0 handler.
    static testguest_timer_stub: u8;
}

/// One 64-bit interrupt gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present ring-0 interrupt gate (interrupts stay off in the handler) to `handler`
    /// in the 64-bit code segment 0x08.
    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: 0x08,
            ist: 0,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; VECTORS]);

/// The IDT, written once by [`install`] with interrupts off.
static mut IDT: Idt = Idt([Gate::EMPTY; VECTORS]);

/// Fills the IDT and loads it.
pub fn install() {
    let stubs = (&raw const testguest_isr_stubs) as u64;
    let timer = (&raw const testguest_timer_stub) as u64;
    let mut table = Idt([Gate::EMPTY; VECTORS]);
    for (vector, gate) in table.0.iter_mut().enumerate() {
        *gate = Gate::interrupt(stubs + vector as u64 * STUB_SIZE);
    }
    table.0[usize::from(PIC_BASE)] = Gate::interrupt(timer);
    let idt = &raw mut IDT;
    // SAFETY: the guest runs on one CPU with interrupts off here (the application
    // processors of `spin=<ms>` start later) and nothing else refers to IDT (only the
    // CPU reads it, through IDTR, once loaded below).
    unsafe { idt.write(table) };
    load();
}

/// Loads the IDT [`install`] filled: the BSP's at boot, and each application processor's
/// as it starts (they share the table, which is never written again).
pub fn load() {
    // SAFETY: IDT is a static holding, once `install` has run (at boot, before any other
    // CPU starts), a present gate for each of its VECTORS entries, every one pointing at
    // a handler in the image; the limit covers exactly those.
    unsafe { crate::cpu::load_idt((&raw const IDT) as u64, (size_of::<Idt>() - 1) as u16) };
}

/// Remaps the PIC pair to vectors 0x20–0x2f with Linux's ICW sequence (edge triggered,
/// cascade on IRQ 2, 8086 mode) and leaves every input masked. Linux pauses between
/// writes with port 0x80; emulated PICs need no pause, so the guest does not.
pub fn remap_pic() {
    outb(PIC_MASTER_DATA, 0xff);
    outb(PIC_SLAVE_DATA, 0xff);
    outb(PIC_MASTER_COMMAND, 0x11); // ICW1: edge, cascade, ICW4 follows
    outb(PIC_MASTER_DATA, PIC_BASE); // ICW2: vector base
    outb(PIC_MASTER_DATA, 1 << 2); // ICW3: slave on IRQ 2
    outb(PIC_MASTER_DATA, 0x01); // ICW4: 8086 mode, normal EOI
    outb(PIC_SLAVE_COMMAND, 0x11);
    outb(PIC_SLAVE_DATA, PIC_BASE + 8);
    outb(PIC_SLAVE_DATA, 2); // ICW3: cascade identity
    outb(PIC_SLAVE_DATA, 0x01);
    set_pic_masks(0xff, 0xff);
}

/// Writes the interrupt masks (a set bit masks that IRQ).
pub fn set_pic_masks(master: u8, slave: u8) {
    outb(PIC_MASTER_DATA, master);
    outb(PIC_SLAVE_DATA, slave);
}

/// PIT channel 0, mode 2 (rate generator), binary, divisor `count`.
pub fn start_pit(count: u16) {
    let [low, high] = count.to_le_bytes();
    outb(PIT_COMMAND, 0x34); // channel 0, low then high byte, mode 2, binary
    outb(PIT_CHANNEL0, low);
    outb(PIT_CHANNEL0, high);
}

/// Timer interrupts so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::SeqCst)
}

/// The name of an exception vector.
fn vector_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization",
        "#CP control protection",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security",
        "reserved",
    ];
    match vector {
        0..32 => NAMES[vector as usize],
        32..48 => "unexpected PIC interrupt",
        _ => "?",
    }
}

/// Called by the entry stubs for every vector but the timer's: reports and exits.
extern "C" fn unexpected(vector: u64, error: u64, rip: u64) -> ! {
    let fault_address = if vector == 14 { crate::cpu::cr2() } else { 0 };
    crate::fail!(
        serial::stage(),
        exit::EXCEPTION,
        "vector {vector:#x} ({}), error code {error:#x}, rip {rip:#x}, cr2 {fault_address:#x}",
        vector_name(vector)
    )
}
