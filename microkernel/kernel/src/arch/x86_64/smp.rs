//! Starting the application processors (APs): every enabled CPU the MADT lists, up to
//! [`MAX_CPUS`](super::MAX_CPUS).
//!
//! The boot CPU copies a small trampoline to physical [`TRAMPOLINE`] (the low 1 MiB is
//! kept out of the frame allocator for this), with page tables of its own at
//! [`TRAMPOLINE`] + 4 KiB: the first 2 MiB identity-mapped (so the trampoline survives
//! turning paging on) and the kernel's upper half copied from the kernel's table. For each
//! AP it writes the AP's stack, index and the 64-bit entry point into the trampoline's
//! parameter block, then sends INIT, a start-up IPI and, if the AP has not answered, a
//! second one (Intel SDM vol. 3 §9.4.4, "MP initialization example"). The AP goes from
//! real mode through protected mode to long mode, jumps to [`ap_entry`] on its own stack,
//! loads the kernel's tables and the control-register values of the boot CPU, and sets up
//! its own GDT/TSS, per-CPU block, local APIC and SVM. APs are started one at a time; the
//! boot CPU waits for each to report before the next (the parameter block is shared).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use esker_kernel_core::addr::PhysAddr;
use x86_64::registers::control::{Cr0, Cr4};

use super::{MAX_CPUS, cpu, gdt, lapic, svm, syscall, time, trap};
use crate::memory;

/// Physical address the trampoline is copied to (start-up IPI vector 0x08).
const TRAMPOLINE: u64 = 0x8000;
/// Its page tables: PML4, PDPT and PD, one page each, right after it.
const TRAMPOLINE_PML4: u64 = TRAMPOLINE + 0x1000;
/// Bytes of low memory the trampoline and its tables use.
const TRAMPOLINE_SPAN: u64 = 0x4000;

/// The physical range the start-up code needs to be RAM.
pub const TRAMPOLINE_RANGE: (u64, u64) = (TRAMPOLINE, TRAMPOLINE + TRAMPOLINE_SPAN);

/// Bytes of an AP's kernel stack.
const AP_KERNEL_STACK: u64 = 64 * 1024;
/// Frames an AP gets: kernel stack, IST stacks, idle stack.
const AP_FRAMES: u64 =
    (AP_KERNEL_STACK + gdt::AP_IST_BYTES + syscall::IDLE_STACK_SIZE as u64) / 4096;

const MSR_EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;

/// CPUs up (the boot CPU counts as one once [`start_application_processors`] ran).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// APIC id of each CPU by index (`u32::MAX`: none).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// The boot CPU's CR0, CR4 and EFER, which every AP copies.
static CR0: AtomicU64 = AtomicU64::new(0);
static CR4: AtomicU64 = AtomicU64::new(0);
static EFER: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global esker_ap_trampoline
    .global esker_ap_trampoline_end
    .global esker_ap_params
    .set TB, {base}
    .code16
esker_ap_trampoline:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    lgdtl TB + (ap_gdtr - esker_ap_trampoline)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(TB + (ap_protected - esker_ap_trampoline))
    .code32
ap_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $({pml4}), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(TB + (ap_long - esker_ap_trampoline))
    .code64
ap_long:
    movq (TB + (esker_ap_params - esker_ap_trampoline)), %rsp
    movq (TB + (esker_ap_params - esker_ap_trampoline) + 8), %rdi
    movq (TB + (esker_ap_params - esker_ap_trampoline) + 16), %rax
    callq *%rax
    ud2
    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_gdtr:
    .word 31
    .long TB + (ap_gdt - esker_ap_trampoline)
    .balign 8
esker_ap_params:
    .quad 0, 0, 0
esker_ap_trampoline_end:
    .text
    "#,
    base = const TRAMPOLINE,
    pml4 = const TRAMPOLINE_PML4,
    options(att_syntax)
);

unsafe extern "C" {
    static esker_ap_trampoline: u8;
    static esker_ap_trampoline_end: u8;
    static esker_ap_params: u8;
}

/// CPUs running (1 until the APs are started).
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// The APIC id of CPU `index`, if it is up.
pub fn apic_id(index: usize) -> Option<u32> {
    let id = APIC_IDS.get(index)?.load(Ordering::Acquire);
    (id != u32::MAX).then_some(id)
}

/// What starting the APs found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// CPUs up, the boot CPU included.
    pub online: usize,
    /// Enabled CPUs the MADT listed that did not answer.
    pub failed: usize,
    /// Enabled CPUs beyond [`MAX_CPUS`], left halted.
    pub left_out: usize,
}

/// Starts every enabled AP in `apic_ids` (the MADT's enabled CPUs; the boot CPU's own id
/// is skipped). `low_memory_usable` says whether the memory map has RAM where the
/// trampoline goes. Logs each CPU as it comes up.
pub fn start_application_processors(apic_ids: &[u32], low_memory_usable: bool) -> Report {
    let boot_apic = lapic::apic_id();
    APIC_IDS[0].store(boot_apic, Ordering::Release);
    let others = apic_ids.iter().filter(|&&id| id != boot_apic).count();
    let mut report = Report {
        online: 1,
        ..Report::default()
    };
    if others == 0 {
        return report;
    }
    if !low_memory_usable {
        defmt::warn!(
            "smp: no usable RAM at {=u64:#x} for the start-up code; running on the boot CPU only",
            TRAMPOLINE
        );
        report.failed = others;
        return report;
    }
    // SAFETY: reading the control registers and EFER has no side effects.
    unsafe {
        CR0.store(Cr0::read_raw(), Ordering::Relaxed);
        CR4.store(Cr4::read_raw(), Ordering::Relaxed);
        // Without SVME: each AP turns SVM on itself (`svm::enable`), if it can.
        EFER.store(cpu::read_msr(MSR_EFER) & !EFER_SVME, Ordering::Relaxed);
    }
    BOOT_CPU_SVM.store(svm::limits().is_some(), Ordering::Release);
    install_trampoline();
    let khz = time::tsc_khz().max(1);
    let mut next_index = 1;
    for &apic in apic_ids.iter().filter(|&&id| id != boot_apic) {
        if next_index >= MAX_CPUS {
            report.left_out += 1;
            continue;
        }
        let Some(frames) = memory::allocate_zeroed(AP_FRAMES) else {
            defmt::error!(
                "smp: no memory for the stacks of the CPU with APIC id {=u32}",
                apic
            );
            report.failed += 1;
            continue;
        };
        let base = memory::DIRECT_MAP_BASE + frames.start().as_u64();
        let kernel_stack_top = base + AP_KERNEL_STACK;
        let before = ONLINE.load(Ordering::Acquire);
        let refused_before = REFUSED.load(Ordering::Acquire);
        STARTING.store(base, Ordering::Release);
        write_params(kernel_stack_top, next_index as u64);
        lapic::send_init(apic);
        delay_us(10_000, khz);
        lapic::send_startup(apic, (TRAMPOLINE >> 12) as u8);
        let answered = wait_online(before, 1_000, khz)
            || (REFUSED.load(Ordering::Acquire) == refused_before && {
                lapic::send_startup(apic, (TRAMPOLINE >> 12) as u8);
                wait_online(before, 1_000_000, khz)
            });
        if answered {
            // The AP wrote its TSC just before reporting: the difference from ours is how
            // far its TSC lags (a little for the time it took us to notice).
            let lag = cpu::rdtsc() as i64 - AP_TSC.load(Ordering::Acquire) as i64;
            defmt::info!(
                "smp: cpu {=usize} (APIC id {=u32}) online, TSC {=i64} cycles behind the boot CPU's",
                next_index,
                apic,
                lag
            );
            next_index += 1;
            report.online += 1;
        } else if REFUSED.load(Ordering::Acquire) > refused_before {
            defmt::error!(
                "smp: the CPU with APIC id {=u32} cannot turn SVM on (the boot CPU did); left out",
                apic
            );
            report.failed += 1;
        } else {
            // Its stacks stay allocated: a late AP may still run on them.
            defmt::error!(
                "smp: the CPU with APIC id {=u32} did not start within 1 s; left out",
                apic
            );
            report.failed += 1;
        }
    }
    report
}

/// APs that came up but could not turn SVM on while the boot CPU did (left halted).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// The boot CPU runs guests.
static BOOT_CPU_SVM: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The TSC of the AP that has just come up, read as it reports.
static AP_TSC: AtomicU64 = AtomicU64::new(0);

/// Where the AP being started finds its IST and idle stacks (after its kernel stack).
static STARTING: AtomicU64 = AtomicU64::new(0);

/// Copies the trampoline to low memory and builds its page tables.
fn install_trampoline() {
    let start = &raw const esker_ap_trampoline as usize;
    let end = &raw const esker_ap_trampoline_end as usize;
    // SAFETY: both symbols delimit the trampoline's bytes in .rodata (global_asm above).
    let code = unsafe { core::slice::from_raw_parts(start as *const u8, end - start) };
    assert!(
        (code.len() as u64) < TRAMPOLINE_PML4 - TRAMPOLINE,
        "AP trampoline larger than its page"
    );
    memory::write_phys(PhysAddr::new(TRAMPOLINE), code);
    // PML4: entry 0 -> PDPT -> PD -> one 2 MiB identity page; the upper half as the
    // kernel's own table has it (kernel image and direct map).
    let pdpt = TRAMPOLINE_PML4 + 0x1000;
    let pd = TRAMPOLINE_PML4 + 0x2000;
    let mut upper = [0u8; 2048];
    memory::read_phys(
        PhysAddr::new(memory::kernel_root().start().as_u64() + 2048),
        &mut upper,
    );
    let mut pml4 = [0u8; 4096];
    pml4[..8].copy_from_slice(&(pdpt | 0b11).to_le_bytes());
    pml4[2048..].copy_from_slice(&upper);
    memory::write_phys(PhysAddr::new(TRAMPOLINE_PML4), &pml4);
    let mut table = [0u8; 4096];
    table[..8].copy_from_slice(&(pd | 0b11).to_le_bytes());
    memory::write_phys(PhysAddr::new(pdpt), &table);
    // Present, writable, 2 MiB page at physical 0.
    table[..8].copy_from_slice(&(0x83u64).to_le_bytes());
    memory::write_phys(PhysAddr::new(pd), &table);
}

/// Writes the parameter block the trampoline reads: stack, CPU index, entry point.
fn write_params(stack_top: u64, index: u64) {
    let offset = &raw const esker_ap_params as u64 - &raw const esker_ap_trampoline as u64;
    let mut params = [0u8; 24];
    params[..8].copy_from_slice(&stack_top.to_le_bytes());
    params[8..16].copy_from_slice(&index.to_le_bytes());
    params[16..].copy_from_slice(&(ap_entry as *const () as u64).to_le_bytes());
    memory::write_phys(PhysAddr::new(TRAMPOLINE + offset), &params);
    core::sync::atomic::fence(Ordering::SeqCst);
}

fn delay_us(micros: u64, khz: u64) {
    let end = time::cycles_since_entry() + micros * khz / 1000;
    while time::cycles_since_entry() < end {
        core::hint::spin_loop();
    }
}

/// Waits up to `micros` for the count of CPUs online to pass `before`.
fn wait_online(before: usize, micros: u64, khz: u64) -> bool {
    let end = time::cycles_since_entry() + micros * khz / 1000;
    let refused = REFUSED.load(Ordering::Acquire);
    while time::cycles_since_entry() < end {
        if ONLINE.load(Ordering::Acquire) > before {
            return true;
        }
        if REFUSED.load(Ordering::Acquire) > refused {
            return false;
        }
        core::hint::spin_loop();
    }
    ONLINE.load(Ordering::Acquire) > before
}

/// Where an AP arrives from the trampoline, in long mode on its kernel stack, with the
/// trampoline's page tables and interrupts off.
extern "C" fn ap_entry(index: u64) -> ! {
    let index = index as usize;
    let base = STARTING.load(Ordering::Acquire);
    let kernel_stack_top = base + AP_KERNEL_STACK;
    let ist_base = kernel_stack_top;
    let idle_top = ist_base + gdt::AP_IST_BYTES + syscall::IDLE_STACK_SIZE as u64;
    let root = memory::kernel_root().start().as_u64();
    // SAFETY: the kernel's table maps the kernel image (where this code runs) and the
    // direct map (where this stack is) at the same addresses as the trampoline's table;
    // the control values are the boot CPU's, which run this same kernel; the TLB is
    // flushed by the CR3 load.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags));
        cpu::write_msr(MSR_EFER, EFER.load(Ordering::Relaxed));
        core::arch::asm!("mov cr4, {}", in(reg) CR4.load(Ordering::Relaxed), options(nostack, preserves_flags));
        core::arch::asm!("mov cr0, {}", in(reg) CR0.load(Ordering::Relaxed), options(nostack, preserves_flags));
    }
    let selectors = gdt::init(index, kernel_stack_top, Some(ist_base));
    trap::init(selectors);
    syscall::init(selectors, index, kernel_stack_top, Some(idle_top));
    let apic = lapic::init_application_processor();
    if !svm::enable(&cpu::Features::detect()) && BOOT_CPU_SVM.load(Ordering::Acquire) {
        // Guests may run on any CPU the scheduler uses: one without SVM stays out.
        REFUSED.fetch_add(1, Ordering::AcqRel);
        cpu::halt_forever();
    }
    APIC_IDS[index].store(apic, Ordering::Release);
    AP_TSC.store(cpu::rdtsc(), Ordering::Release);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::world::run_application_processor()
}

/// CPUs taking part in scheduling (bit per CPU index); shootdowns go only to these.
static SCHEDULING: AtomicU64 = AtomicU64::new(0);
/// Per CPU: the page-table root it has loaded (physical address).
static LOADED_ROOT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU: it is running (or about to run) a guest.
static IN_GUEST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU: a flush it has been asked for and not yet done.
static FLUSH_PENDING: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// This CPU takes part in scheduling from now on.
pub fn join_scheduling() {
    SCHEDULING.fetch_or(1 << syscall::this_cpu(), Ordering::AcqRel);
}

/// Records the root this CPU has just loaded.
pub fn note_root(root: u64) {
    LOADED_ROOT[syscall::this_cpu()].store(root, Ordering::Release);
}

/// Records whether this CPU is entering (`true`) or has left a guest.
pub fn note_guest(running: bool) {
    IN_GUEST[syscall::this_cpu()].store(u64::from(running), Ordering::Release);
}

/// Does a flush this CPU was asked for, if any (the shootdown interrupt's handler, and
/// any CPU waiting for the system lock, call it).
pub fn service_flush() {
    let cpu = syscall::this_cpu();
    if FLUSH_PENDING[cpu].load(Ordering::Acquire) != 0 {
        x86_64::instructions::tlb::flush_all();
        FLUSH_PENDING[cpu].store(0, Ordering::Release);
    }
}

/// Makes every other scheduling CPU with `root` loaded (`None`: every one running a
/// guest) flush its TLB, and waits until each has. A CPU in a guest leaves it to take
/// the interrupt. The caller holds the system lock: CPUs waiting for it do their flush
/// while they wait, so this cannot deadlock.
pub fn shootdown(root: Option<u64>) {
    let me = syscall::this_cpu();
    let mut targets = 0u64;
    let scheduling = SCHEDULING.load(Ordering::Acquire);
    for cpu in 0..MAX_CPUS {
        if cpu == me || scheduling & (1 << cpu) == 0 {
            continue;
        }
        let wanted = match root {
            Some(root) => LOADED_ROOT[cpu].load(Ordering::Acquire) == root,
            None => IN_GUEST[cpu].load(Ordering::Acquire) != 0,
        };
        if wanted {
            FLUSH_PENDING[cpu].store(1, Ordering::Release);
            targets |= 1 << cpu;
        }
    }
    if targets == 0 {
        return;
    }
    send_to(targets, trap::VECTOR_SHOOTDOWN);
    for (cpu, pending) in FLUSH_PENDING.iter().enumerate() {
        if targets & (1 << cpu) != 0 {
            while pending.load(Ordering::Acquire) != 0 {
                core::hint::spin_loop();
            }
        }
    }
}

/// Interrupts each CPU in `mask` (bit per CPU index) so that it re-decides.
pub fn kick(mask: u64) {
    send_to(mask, trap::VECTOR_KICK);
}

/// Sends `vector` to each CPU in `mask` (bit per CPU index) that is up.
fn send_to(mask: u64, vector: u8) {
    for cpu in 0..MAX_CPUS {
        if mask & (1 << cpu) != 0
            && let Some(apic) = apic_id(cpu)
        {
            lapic::send_ipi(apic, vector);
        }
    }
}
