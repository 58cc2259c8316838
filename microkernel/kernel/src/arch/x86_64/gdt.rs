//! Segmentation: the GDT and TSS of the boot CPU.
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

/// The TSS. Written at init and, for RSP0, whenever a world is resumed (the CPU reads
/// it on every interrupt from user mode).
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static GDT: Once<(GlobalDescriptorTable<8>, Selectors)> = Once::new();

/// Builds and loads the GDT and TSS, and reloads every segment register. Until a world
/// runs, TSS.RSP0 is `kernel_stack_top`; [`set_user_entry_stack`] moves it.
pub fn init(kernel_stack_top: u64) -> Selectors {
    let tss = {
        // Single-threaded initialisation, before the TSS is loaded: no other reference to
        // it exists.
        let pointer = &raw mut TSS;
        // SAFETY: as above.
        let tss = unsafe { &mut *pointer };
        tss.privilege_stack_table[0] = VirtAddr::new(kernel_stack_top);
        for (slot, index) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
            .into_iter()
            .enumerate()
        {
            // SAFETY: only the address of the static is taken (no reference), once,
            // during single-threaded initialisation; the stacks are used by the CPU only.
            let base = unsafe { core::ptr::addr_of!(IST_STACKS[slot]) } as u64;
            tss.interrupt_stack_table[usize::from(index)] =
                VirtAddr::new(base + IST_STACK_SIZE as u64);
        }
        &*tss
    };
    let (gdt, selectors) = GDT.call_once(|| {
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
    // SAFETY: the TSS is a static the CPU reads only on privilege changes; this CPU runs
    // with interrupts off in the kernel, so no interrupt reads RSP0 while it is written;
    // only a raw pointer to the field is formed (no reference), and the write is a single
    // aligned 64-bit store.
    unsafe { (&raw mut TSS.privilege_stack_table[0]).write_volatile(VirtAddr::new(top)) };
}
