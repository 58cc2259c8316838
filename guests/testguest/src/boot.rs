//! The way in: a Multiboot v1 header and the 32-bit stub that gets to 64-bit Rust.
//!
//! The loader enters `testguest_entry32` in 32-bit protected mode, paging off, with
//! `%eax` = 0x2BADB002 and `%ebx` = the physical address of the Multiboot information.
//! The stub keeps both, zeroes `.bss` (whatever the loader did), checks for long mode
//! (otherwise it prints a reason on COM1 and exits with code 2), identity-maps the low
//! 4 GiB with 2 MiB pages (RAM and the PCI ECAM window at 0xb000_0000), enables PAE, long
//! mode and paging, loads a 64-bit GDT and calls [`crate::guest_main`] on the guest's
//! stack. No NX, no SSE: the `x86_64-unknown-none` target uses neither.

use core::arch::global_asm;

use esker_testguest::exit;

/// Bytes of the guest's stack.
pub const STACK_SIZE: usize = 64 * 1024;

global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000002       /* bit 1: memory information wanted; ELF loading */

/* ---- Multiboot v1 header: magic, flags, checksum (sum of the three is 0). */
    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long 0x100000000 - (MB_MAGIC + MB_FLAGS)

/* ---- The 32-bit stub. */
    .section .boot.text, "ax"
    .code32
    .global testguest_entry32
testguest_entry32:
    cli
    cld
    movl %eax, boot_magic
    movl %ebx, boot_info
    movl $stack_top, %esp

    /* Zero .bss: page tables, stack, statics. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* Long mode, or a plain-text reason on COM1 and exit code {no_long_mode}. */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz no_long_mode

    /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt
    addl $4096, %eax
    movl %eax, boot_pdpt + 8
    addl $4096, %eax
    movl %eax, boot_pdpt + 16
    addl $4096, %eax
    movl %eax, boot_pdpt + 24

    /* 2048 x 2 MiB pages covering 0..4 GiB: present, writable, large. */
    xorl %ecx, %ecx
1:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(, %ecx, 8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $(1 << 5), %eax             /* PAE */
    movl %eax, %cr4
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $(1 << 8), %eax             /* LME */
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | 1), %eax      /* PG, PE */
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    pushl $0x08
    pushl $start64
    lret

no_long_mode:
    movl $msg_no_long_mode, %esi
    movw $0x3f8, %dx
2:
    lodsb
    testb %al, %al
    jz 3f
    outb %al, %dx
    jmp 2b
3:
    movl ${no_long_mode}, %eax
    movw $0xf4, %dx
    outl %eax, %dx
4:
    cli
    hlt
    jmp 4b

    .code64
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_magic(%rip), %edi
    movl boot_info(%rip), %esi
    call {entry}
5:
    cli
    hlt
    jmp 5b

    .section .rodata.boot, "a"
    .balign 16
    /* Also the application processors' (smp.rs): the 32-bit code segment is for their
       trampoline. Accessed bits preset, so no CPU writes the table. */
    .global boot_gdt
    .global boot_gdt_limit
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: data */
    .quad 0x00cf9b000000ffff        /* 0x18: 32-bit code */
boot_gdt_end:
    .set boot_gdt_limit, boot_gdt_end - boot_gdt - 1
boot_gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
msg_no_long_mode:
    .asciz "testguest: FAILED boot: this CPU cannot run 64-bit code (no long mode)\r\n"

    .section .data.boot, "aw"
    .balign 4
boot_magic:
    .long 0
boot_info:
    .long 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4               /* also the application processors' (smp.rs) */
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
stack_bottom:
    .skip {stack_size}
stack_top:
    "#,
    no_long_mode = const exit::NO_LONG_MODE,
    stack_size = const STACK_SIZE,
    entry = sym crate::guest_main,
    options(att_syntax)
);

unsafe extern "C" {
    /// First byte of the loaded image (linker script).
    static __image_start: u8;
    /// One past the image's last page, `.bss` (page tables, stack) included.
    static __image_end: u8;
}

/// The physical range the guest's image occupies, `.bss` included.
pub fn image_range() -> (u64, u64) {
    (
        (&raw const __image_start) as u64,
        (&raw const __image_end) as u64,
    )
}
