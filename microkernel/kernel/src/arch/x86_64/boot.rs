//! The two ways in, and the one way to 64-bit Rust.
//!
//! * **PVH** (QEMU `-kernel`, Firecracker-style loaders): an ELF note of type
//!   `XEN_ELFNOTE_PHYS32_ENTRY` names `pvh_entry32`; the loader enters it in 32-bit
//!   protected mode, paging off, with `%ebx` = physical address of `hvm_start_info`.
//! * **Multiboot2** (GRUB, hence the ISO): the header's entry-address tag names
//!   `multiboot2_entry32`; entered the same way with `%eax` = 0x36d76289 and `%ebx` = the
//!   boot information.
//!
//! Both record which protocol they came by and jump to one stub that checks the CPU can do
//! long mode with NX (otherwise it prints a plain-text reason on COM1 and halts), builds
//! boot page tables (identity map of the low 4 GiB and the kernel's top-2-GiB window onto
//! the low 1 GiB, 2 MiB pages), enables PAE, long mode, NX and write protection, and
//! calls [`crate::kernel_entry`] on the boot CPU's stack. Nothing here outlives the switch
//! to the kernel's own page tables, which do not map this code.

use core::arch::global_asm;

/// How the kernel was entered, as recorded by the boot stub.
pub const PROTOCOL_PVH: u32 = 1;
/// See [`PROTOCOL_PVH`].
pub const PROTOCOL_MULTIBOOT2: u32 = 2;

/// The value Multiboot2 loaders leave in `%eax`.
pub const MULTIBOOT2_LOADER_MAGIC: u32 = 0x36d7_6289;

/// Size of the boot CPU's kernel stack.
pub const BOOT_STACK_SIZE: usize = 128 * 1024;

global_asm!(
    r#"
    .set MB2_MAGIC, 0xe85250d6
    .set MB2_ARCH_I386, 0
    .set PROTOCOL_PVH, {protocol_pvh}
    .set PROTOCOL_MB2, {protocol_mb2}
    .set KERNEL_VIRT_OFFSET, 0xffffffff80000000

/* ---- Multiboot2 header: magic, arch, length, checksum, entry-address tag, end tag. */
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))
    .balign 8
    .short 3, 0             /* entry address tag */
    .long 12
    .long multiboot2_entry32
    .balign 8
    .short 0, 0             /* end tag */
    .long 8
mb2_header_end:

/* ---- PVH: XEN_ELFNOTE_PHYS32_ENTRY (18) names the 32-bit entry point. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_entry32
    .balign 4

/* ---- The 32-bit stub. */
    .section .boot.text, "ax"
    .code32
    .global pvh_entry32
pvh_entry32:
    cli
    cld
    movl $PROTOCOL_PVH, boot_protocol
    movl %ebx, boot_info_paddr
    movl $0, boot_loader_magic
    jmp start32

    .global multiboot2_entry32
multiboot2_entry32:
    cli
    cld
    movl $PROTOCOL_MB2, boot_protocol
    movl %ebx, boot_info_paddr
    movl %eax, boot_loader_magic
    jmp start32

start32:
    movl $boot_stack32_top, %esp

    /* Long mode and NX, or a plain-text reason on COM1. */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz no_long_mode
    testl $(1 << 20), %edx
    jz no_nx

    /* Zero the boot page tables (seven pages). */
    movl $boot_pml4, %edi
    movl $(7 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl

    /* PML4[0] -> low PDPT, PML4[511] -> high PDPT. */
    movl $boot_pdpt_low, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pdpt_high, %eax
    orl $3, %eax
    movl %eax, boot_pml4 + 511 * 8

    /* Low PDPT[0..4] -> the four page directories; high PDPT[510] -> the first one. */
    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt_low
    movl %eax, boot_pdpt_high + 510 * 8
    addl $4096, %eax
    movl %eax, boot_pdpt_low + 8
    addl $4096, %eax
    movl %eax, boot_pdpt_low + 16
    addl $4096, %eax
    movl %eax, boot_pdpt_low + 24

    /* 2048 x 2 MiB pages: present, writable, large. */
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
    orl $((1 << 8) | (1 << 11)), %eax   /* LME, NXE */
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax  /* PG, WP, PE */
    movl %eax, %cr0

    lgdt boot_gdt_pointer
    pushl $0x08
    pushl $start64
    lret

no_long_mode:
    movl $msg_no_long_mode, %esi
    jmp fail32
no_nx:
    movl $msg_no_nx, %esi
fail32:
    /* Write the NUL-terminated message to COM1 (no framing: the host shows it raw). */
    movw $0x3f8, %dx
2:
    lodsb
    testb %al, %al
    jz 3f
    outb %al, %dx
    jmp 2b
3:
    cli
    hlt
    jmp 3b

    .code64
start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_protocol(%rip), %edi
    movl boot_info_paddr(%rip), %esi
    movl boot_loader_magic(%rip), %edx
    movabsq ${entry}, %rax
    call *%rax
4:
    cli
    hlt
    jmp 4b

    .section .boot.rodata, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
boot_gdt_end:
boot_gdt_pointer:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
msg_no_long_mode:
    .asciz "\r\nesker: this CPU cannot run 64-bit code (no long mode); halted.\r\n"
msg_no_nx:
    .asciz "\r\nesker: this CPU has no NX (execute-disable) bit, which Esker requires; halted.\r\n"

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_high:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .balign 16
    .skip 4096
boot_stack32_top:
boot_protocol:
    .long 0
boot_info_paddr:
    .long 0
boot_loader_magic:
    .long 0

/* ---- The boot CPU's kernel stack (the guard page below it is left unmapped). */
    .section .kernel_stack, "aw", @nobits
    .balign 4096
    .global boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    "#,
    protocol_pvh = const PROTOCOL_PVH,
    protocol_mb2 = const PROTOCOL_MULTIBOOT2,
    stack_size = const BOOT_STACK_SIZE,
    entry = sym crate::kernel_entry,
    options(att_syntax)
);

unsafe extern "C" {
    /// Lowest address of the boot CPU's kernel stack (linker-provided).
    pub static boot_stack_bottom: u8;
    /// One past the highest address of the boot CPU's kernel stack.
    pub static boot_stack_top: u8;
}
