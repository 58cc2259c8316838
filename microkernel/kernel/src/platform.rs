//! The machine as the system sees it: the kernel's implementation of
//! `esker_kernel_core::system::Platform`.

use esker_kernel_core::addr::{PhysAddr, PhysFrame};
use esker_kernel_core::logframe::{Kind, SourceId};
use esker_kernel_core::paging::PageTable;
use esker_kernel_core::sched::Topology;
use esker_kernel_core::system::Platform;
use x86_64::instructions::port::Port;
use x86_64::registers::control::Cr3;

use esker_kernel_core::virt::svm::{HostLimits, Vmcb};
use esker_kernel_core::virt::vcpu::GeneralRegisters;

use crate::arch::x86_64::{pic, smp, svm, time};
use crate::memory::{self, OffsetPhysMemory};

/// The one platform: memory through the direct map, ports, the PIC, COM1.
pub struct KernelPlatform {
    memory: OffsetPhysMemory,
}

impl KernelPlatform {
    /// The platform (stateless apart from its memory view).
    pub const fn new() -> Self {
        Self {
            memory: OffsetPhysMemory::DIRECT,
        }
    }
}

fn current_root() -> u64 {
    Cr3::read_raw().0.start_address().as_u64()
}

impl Platform for KernelPlatform {
    type Memory = OffsetPhysMemory;

    fn memory(&mut self) -> &mut OffsetPhysMemory {
        &mut self.memory
    }

    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        memory::allocate_zeroed(1)
    }

    fn allocate_contiguous(&mut self, count: u64) -> Option<PhysFrame> {
        memory::allocate_zeroed(count)
    }

    fn free_frame(&mut self, frame: PhysFrame) {
        if current_root() == frame.start().as_u64() {
            // Never free the tables we are running on: move to the kernel's first.
            switch_to(memory::kernel_root());
        }
        memory::free(frame);
    }

    fn read_phys(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        memory::read_phys(addr, buf);
    }

    fn write_phys(&mut self, addr: PhysAddr, data: &[u8]) {
        memory::write_phys(addr, data);
    }

    fn kernel_table(&self) -> PageTable {
        PageTable::from_root(memory::kernel_root())
    }

    fn invalidate_page(&mut self, root: PhysFrame, virt: u64) {
        if current_root() == root.start().as_u64() {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(virt));
        }
    }

    fn flush_other_cpus(&mut self, root: Option<PhysFrame>) {
        smp::shootdown(root.map(|root| root.start().as_u64()));
    }

    fn port_in(&mut self, port: u16, width: u8) -> u32 {
        // SAFETY: the system only gets here for ports inside an I/O-port capability the
        // calling world holds; the manifest grants no port the kernel itself uses.
        unsafe {
            match width {
                1 => u32::from(Port::<u8>::new(port).read()),
                2 => u32::from(Port::<u16>::new(port).read()),
                _ => Port::<u32>::new(port).read(),
            }
        }
    }

    fn port_out(&mut self, port: u16, width: u8, value: u32) {
        // SAFETY: as in `port_in`.
        unsafe {
            match width {
                1 => Port::<u8>::new(port).write(value as u8),
                2 => Port::<u16>::new(port).write(value as u16),
                _ => Port::<u32>::new(port).write(value),
            }
        }
    }

    fn set_irq_enabled(&mut self, line: u8, enabled: bool) {
        pic::set_enabled(line, enabled);
    }

    fn log_packet(&mut self, kind: Kind, source: SourceId, payload: &[u8]) {
        crate::log::emit_packet(kind, source, payload);
    }

    fn tsc_khz(&self) -> u64 {
        time::tsc_khz()
    }

    fn now_ns(&self) -> u64 {
        time::nanos_since_boot()
    }

    fn with_vcpu<R>(
        &mut self,
        vmcb: PhysFrame,
        state: PhysFrame,
        f: impl FnOnce(&mut Vmcb, &mut GeneralRegisters) -> R,
    ) -> R {
        let vmcb_pointer = (memory::DIRECT_MAP_BASE + vmcb.start().as_u64()) as *mut Vmcb;
        let gprs_pointer =
            (memory::DIRECT_MAP_BASE + state.start().as_u64()) as *mut GeneralRegisters;
        // SAFETY: the system passes the two frames it allocated for one vCPU (a VMCB, 4 KiB
        // and page-aligned like `Vmcb`; a register page starting with the registers),
        // reached through the direct map; both are plain data valid for any bit pattern,
        // the kernel is not preemptible and the CPU writes them only inside `svm::run`, so
        // these are the only references while `f` runs.
        unsafe { f(&mut *vmcb_pointer, &mut *gprs_pointer) }
    }

    fn svm_limits(&self) -> Option<HostLimits> {
        svm::limits()
    }

    fn topology(&self) -> Topology {
        if SMT_PAIRS.load(core::sync::atomic::Ordering::Acquire) {
            Topology::SmtPairs
        } else {
            Topology::Flat
        }
    }
}

/// The CPUs are scheduled as hyper-threaded pairs (set once at boot, before the worlds are
/// created).
static SMT_PAIRS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Records how the CPUs share cores, for [`Platform::topology`].
pub fn set_topology(topology: Topology) {
    SMT_PAIRS.store(
        topology == Topology::SmtPairs,
        core::sync::atomic::Ordering::Release,
    );
}

/// Makes `root` the loaded address space (no CR3 write, so no TLB flush, if it already
/// is).
pub fn load_root(root: PhysFrame) {
    if current_root() != root.start().as_u64() {
        switch_to(root);
    }
}

/// Per CPU: the FS base it has loaded (`u64::MAX`: not known yet).
static LOADED_FS_BASE: [core::sync::atomic::AtomicU64; crate::arch::x86_64::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(u64::MAX) }; crate::arch::x86_64::MAX_CPUS];

/// Makes `base` this CPU's FS base (no MSR write if it already is): each thread of a world
/// runs with FS pointing at its own IPC buffer, where the runtime finds it.
pub fn load_fs_base(base: u64) {
    use core::sync::atomic::Ordering;
    const IA32_FS_BASE: u32 = 0xc000_0100;
    let cpu = crate::arch::x86_64::syscall::this_cpu();
    let Some(loaded) = LOADED_FS_BASE.get(cpu) else {
        return;
    };
    if loaded.load(Ordering::Relaxed) != base {
        // SAFETY: IA32_FS_BASE exists on every x86-64 CPU. The kernel never uses FS, so
        // no kernel invariant depends on it; the value is a user address the system chose
        // (canonical, below the user half's end). VMRUN's VMSAVE/VMLOAD of the host state
        // keep it across guest runs.
        unsafe { crate::arch::x86_64::cpu::write_msr(IA32_FS_BASE, base) };
        loaded.store(base, Ordering::Relaxed);
    }
}

/// Loads `root` into CR3.
fn switch_to(root: PhysFrame) {
    let frame = x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(
        root.start().as_u64(),
    ));
    // SAFETY: every root the system hands out (the kernel's, or a world's built with the
    // kernel half copied in) maps the kernel identically, so the running code, stack and
    // data stay mapped across the switch.
    unsafe { Cr3::write(frame, x86_64::registers::control::Cr3Flags::empty()) };
    smp::note_root(root.start().as_u64());
}
