//! Segmentation: one GDT and TSS per CPU.
//!
//! Layout (fixed, because SYSCALL/SYSRET derive selectors from it):
//! `0x08` kernel code, `0x10` kernel data, `0x18` user data, `0x20` user code,
//! `0x28` TSS. The TSS carries the interrupt stacks for faults that must not run on a
//! possibly broken stack: double fault, NMI and machine check.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// Interrupt-stack-table slot (1-based in hardware, 0-based here) for #DF.
pub const IST_DOUBLE_FAULT: u16 = 0;
/// IST slot for NMI.
pub const IST_NMI: u16 = 1;
/// IST slot for #MC.
pub const IST_MACHINE_CHECK: u16 = 2;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [IstStack; 3] = [const { IstStack([0; IST_STACK_SIZE]) }; 3];

/// The selectors of the fixed layout.
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    /// Kernel code (0x08).
    pub kernel_code: SegmentSelector,
    /// Kernel data (0x10).
    pub kernel_data: SegmentSelector,
    /// The TSS (0x28).
    pub tss: SegmentSelector,
}

/// Bytes of the three IST stacks an application processor gets (allocated at start-up;
/// the boot CPU's are static).
pub const AP_IST_BYTES: u64 = 3 * IST_STACK_SIZE as u64;

/// Each CPU's TSS. Written at that CPU's init and, for RSP0, whenever it resumes a world
/// (the CPU reads it on every interrupt from user mode); only its own CPU writes it.
static mut TSS: [TaskStateSegment; super::MAX_CPUS] =
    [const { TaskStateSegment::new() }; super::MAX_CPUS];
static GDT: [Once<(GlobalDescriptorTable<8>, Selectors)>; super::MAX_CPUS] =
    [const { Once::new() }; super::MAX_CPUS];

/// Builds and loads CPU `cpu`'s GDT and TSS, and reloads every segment register. Until a
/// world runs, TSS.RSP0 is `kernel_stack_top`; [`set_user_entry_stack`] moves it.
/// `ist_base` is where the CPU's three IST stacks lie ([`AP_IST_BYTES`] of kernel
/// memory), `None` for the boot CPU's static ones. Called once per CPU, on that CPU.
pub fn init(cpu: usize, kernel_stack_top: u64, ist_base: Option<u64>) -> Selectors {
    let tss = {
        // SAFETY: initialisation of this CPU's own TSS, before it is loaded: no other CPU
        // touches it and no reference to it exists; only a raw pointer is formed here.
        let pointer = unsafe { &raw mut TSS[cpu] };
        // SAFETY: as above.
        let tss = unsafe { &mut *pointer };
        tss.privilege_stack_table[0] = VirtAddr::new(kernel_stack_top);
        for (slot, index) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
            .into_iter()
            .enumerate()
        {
            let base = match ist_base {
                Some(base) => base + (slot * IST_STACK_SIZE) as u64,
                // SAFETY: only the address of the static is taken (no reference), once,
                // during the boot CPU's initialisation; the stacks are used by the CPU only.
                None => (unsafe { core::ptr::addr_of!(IST_STACKS[slot]) }) as u64,
            };
            tss.interrupt_stack_table[usize::from(index)] =
                VirtAddr::new(base + IST_STACK_SIZE as u64);
        }
        &*tss
    };
    let (gdt, selectors) = GDT[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        // SYSRET derives user selectors from the kernel's: the layout is not negotiable.
        assert_eq!(
            [
                kernel_code.0,
                kernel_data.0,
                user_data.0,
                user_code.0,
                tss.0
            ],
            [0x08, 0x10, 0x1b, 0x23, 0x28],
            "GDT layout differs from what SYSCALL/SYSRET need"
        );
        (
            gdt,
            Selectors {
                kernel_code,
                kernel_data,
                tss,
            },
        )
    });
    gdt.load();
    // SAFETY: the GDT just loaded contains these selectors with the right types; the
    // TSS descriptor is present and not busy (loaded once per boot).
    unsafe {
        CS::set_reg(selectors.kernel_code);
        SS::set_reg(selectors.kernel_data);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(selectors.tss);
    }
    *selectors
}

/// Points TSS.RSP0 at `top`: an interrupt from user mode pushes its frame below it (the
/// running world's register area).
pub fn set_user_entry_stack(top: u64) {
    let cpu = super::syscall::this_cpu();
    // SAFETY: this CPU's TSS, which only this CPU writes and which the CPU reads only on
    // privilege changes; it runs with interrupts off in the kernel, so no interrupt reads
    // RSP0 while it is written; only a raw pointer to the field is formed (no reference),
    // and the write is a single aligned 64-bit store.
    unsafe {
        (&raw mut TSS[cpu].privilege_stack_table[0]).write_volatile(VirtAddr::new(top));
    }
}
