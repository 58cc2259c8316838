//! Memory: the kernel takes over all RAM and its own address space.
//!
//! At entry the boot stub's tables identity-map the low 4 GiB. [`init`] then
//!
//! 1. picks a window of usable RAM below 4 GiB for the frame bitmap and the new page
//!    tables (bump-allocated, reached through the identity map);
//! 2. builds the kernel's tables with the core page-table builder: text RX, rodata R+NX,
//!    data/bss RW+NX (the stack's guard page left out), and a direct map of all RAM at
//!    [`DIRECT_MAP_BASE`] — RW+NX, except the kernel image's own frames, which are mapped
//!    read-only there so no writable alias of kernel code exists (W^X);
//! 3. switches CR3, turns on global pages, SMEP and SMAP where the CPU has them;
//! 4. hands every usable frame to the frame allocator, minus the low 1 MiB, the kernel
//!    image, the bitmap and the tables just built.
//!
//! MMIO is mapped uncached on demand in a window of its own ([`map_mmio`]).

use core::sync::atomic::{AtomicU64, Ordering};

use esker_kernel_core::addr::{PAGE_SIZE, PhysAddr, PhysFrame, VirtAddr};
use esker_kernel_core::boot::BootInfo;
use esker_kernel_core::boot::memmap::RegionKind;
use esker_kernel_core::frame_alloc::{self, FrameAllocator};
use esker_kernel_core::paging::{Access, FrameSource, MapStats, PageSize, PageTable, PhysMemory};
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags, Cr4, Cr4Flags};

use crate::arch::x86_64::cpu::Features;

/// Where all physical memory is mapped (PML4 slot 256).
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Where MMIO regions are mapped (PML4 slot 510).
pub const MMIO_WINDOW_BASE: u64 = 0xffff_ff00_0000_0000;
/// Size of the MMIO window.
const MMIO_WINDOW_SIZE: u64 = 1 << 39;
/// The kernel image's virtual offset (must match linker.ld).
pub const KERNEL_VIRT_OFFSET: u64 = 0xffff_ffff_8000_0000;
/// Frames below this stay out of the allocator (BIOS data, future AP start-up code).
const LOW_MEMORY_END: u64 = 0x10_0000;
/// The boot stub identity-maps this much.
const IDENTITY_MAPPED_END: u64 = 1 << 32;

unsafe extern "C" {
    static __kernel_phys_start: u8;
    static __kernel_phys_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __stack_guard_start: u8;
    static __stack_guard_end: u8;
    static __data_end: u8;
}

/// Address of a linker-script symbol.
macro_rules! symbol_address {
    ($symbol:ident) => {
        &raw const $symbol as u64
    };
}

/// Reaches physical memory at a fixed virtual offset: 0 through the boot stub's identity
/// map, [`DIRECT_MAP_BASE`] once the kernel's tables are live.
pub struct OffsetPhysMemory {
    offset: u64,
}

impl OffsetPhysMemory {
    /// Physical memory through the direct map (valid once `init` has run).
    pub const DIRECT: Self = Self {
        offset: DIRECT_MAP_BASE,
    };

    fn entry_pointer(&self, table: PhysFrame, index: usize) -> *mut u64 {
        assert!(index < 512, "page-table index {index} out of range");
        (self.offset + table.start().as_u64() + index as u64 * 8) as *mut u64
    }
}

impl PhysMemory for OffsetPhysMemory {
    fn read_entry(&self, table: PhysFrame, index: usize) -> u64 {
        // SAFETY: table frames come from the frame allocator or the early window, are
        // RAM mapped at `offset` (identity below 4 GiB, or the direct map), and are
        // 8-aligned; index < 512 keeps the access inside the frame.
        unsafe { self.entry_pointer(table, index).read_volatile() }
    }

    fn write_entry(&mut self, table: PhysFrame, index: usize, value: u64) {
        // SAFETY: as in `read_entry`; the frame is a page table owned by the caller.
        unsafe { self.entry_pointer(table, index).write_volatile(value) }
    }

    fn zero_frame(&mut self, frame: PhysFrame) {
        let pointer = (self.offset + frame.start().as_u64()) as *mut u8;
        // SAFETY: the frame is RAM just handed out for a page table, mapped at `offset`,
        // and nothing else refers to it yet.
        unsafe { pointer.write_bytes(0, PAGE_SIZE as usize) }
    }
}

/// Bump allocation of page-table frames from the early window.
struct EarlyFrames {
    next: u64,
    end: u64,
}

impl FrameSource for EarlyFrames {
    fn allocate_table_frame(&mut self) -> Option<PhysFrame> {
        if self.next + PAGE_SIZE > self.end {
            return None;
        }
        let frame = PhysFrame::from_start(PhysAddr::new(self.next));
        self.next += PAGE_SIZE;
        frame
    }
}

/// Frames for page tables from the frame allocator, once it exists.
struct AllocatorFrames<'a, 'b>(&'a mut FrameAllocator<'b>);

impl FrameSource for AllocatorFrames<'_, '_> {
    fn allocate_table_frame(&mut self) -> Option<PhysFrame> {
        self.0.allocate()
    }
}

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);
static KERNEL_TABLE: Mutex<Option<PageTable>> = Mutex::new(None);
static MMIO_NEXT: AtomicU64 = AtomicU64::new(MMIO_WINDOW_BASE);

/// What [`init`] found and did.
#[derive(Clone, Copy, Debug)]
pub struct MemoryReport {
    /// Usable RAM in the firmware map.
    pub usable_bytes: u64,
    /// Number of usable regions.
    pub usable_regions: usize,
    /// End of the highest usable region.
    pub highest_usable_end: u64,
    /// Frames the allocator manages.
    pub usable_frames: u64,
    /// Of those, free after boot.
    pub free_frames: u64,
    /// Physical extent of the kernel image.
    pub kernel_image: (u64, u64),
    /// Page-table frames used by the kernel's tables.
    pub table_frames: u64,
    /// Frames holding the allocator's bitmap.
    pub bitmap_frames: u64,
    /// Pages used by the direct map.
    pub direct_map: MapStats,
}

/// Why memory could not be set up.
#[derive(Debug)]
pub enum MemoryError {
    /// No usable RAM below 4 GiB can hold the bitmap and tables.
    NoRoomForWindow { needed_bytes: u64 },
    /// Building the tables failed.
    Map(esker_kernel_core::paging::MapError),
}

impl core::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRoomForWindow { needed_bytes } => write!(
                f,
                "no usable RAM region below 4 GiB has {needed_bytes} contiguous free bytes for the frame bitmap and page tables"
            ),
            Self::Map(error) => write!(f, "building the kernel page tables failed: {error}"),
        }
    }
}

impl From<esker_kernel_core::paging::MapError> for MemoryError {
    fn from(error: esker_kernel_core::paging::MapError) -> Self {
        Self::Map(error)
    }
}

/// Finds `bytes` of usable RAM in [1 MiB, 4 GiB) outside the kernel image.
fn find_early_window(boot: &BootInfo, kernel: (u64, u64), bytes: u64) -> Option<u64> {
    boot.memory_map.usable().find_map(|region| {
        let start = region.start.max(LOW_MEMORY_END);
        let end = region.end.min(IDENTITY_MAPPED_END);
        // The part below the kernel image, then the part above it.
        [(start, end.min(kernel.0)), (start.max(kernel.1), end)]
            .into_iter()
            .map(|(s, e)| (PhysAddr::new(s).align_up(PAGE_SIZE).as_u64(), e))
            .find(|&(s, e)| e > s && e - s >= bytes)
            .map(|(s, _)| s)
    })
}

/// Takes over physical memory and switches to the kernel's own page tables.
pub fn init(boot: &BootInfo, features: &Features) -> Result<MemoryReport, MemoryError> {
    let kernel = (
        symbol_address!(__kernel_phys_start),
        symbol_address!(__kernel_phys_end),
    );
    let highest = boot.memory_map.highest_usable_end();
    let bitmap_words = frame_alloc::storage_words(highest) as u64;
    let bitmap_bytes = (bitmap_words * 8).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    // Page tables: a few for the image, one PD per GiB of direct map, slack for edges.
    let table_budget = (64 + (highest >> 30) * 2) * PAGE_SIZE;
    let window = find_early_window(boot, kernel, bitmap_bytes + table_budget).ok_or(
        MemoryError::NoRoomForWindow {
            needed_bytes: bitmap_bytes + table_budget,
        },
    )?;
    let tables_start = window + bitmap_bytes;
    let mut early = EarlyFrames {
        next: tables_start,
        end: tables_start + table_budget,
    };
    let mut identity = OffsetPhysMemory { offset: 0 };

    let mut table = PageTable::new(&mut identity, &mut early)?;
    let image = |start: u64, end: u64| {
        (
            VirtAddr::new(start),
            PhysAddr::new(start - KERNEL_VIRT_OFFSET),
            end - start,
        )
    };
    let sections = [
        (
            image(symbol_address!(__text_start), symbol_address!(__text_end)),
            Access::KERNEL_CODE,
        ),
        (
            image(
                symbol_address!(__rodata_start),
                symbol_address!(__rodata_end),
            ),
            Access::KERNEL_RODATA,
        ),
        (
            image(
                symbol_address!(__data_start),
                symbol_address!(__stack_guard_start),
            ),
            Access::KERNEL_DATA,
        ),
        (
            image(
                symbol_address!(__stack_guard_end),
                symbol_address!(__data_end),
            ),
            Access::KERNEL_DATA,
        ),
    ];
    for ((virt, phys, len), access) in sections {
        if len > 0 {
            table.map_range(
                &mut identity,
                &mut early,
                virt,
                phys,
                len,
                access,
                PageSize::Size4K,
            )?;
        }
    }

    let largest = if features.huge_pages_1g {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    };
    let mut direct_map = MapStats::default();
    for (start, end) in direct_map_ranges(boot) {
        // The kernel image's frames are mapped read-only: no writable alias of its code.
        let pieces = [
            (start, end.min(kernel.0), Access::KERNEL_DATA),
            (
                start.max(kernel.0),
                end.min(kernel.1),
                Access::KERNEL_RODATA,
            ),
            (start.max(kernel.1), end, Access::KERNEL_DATA),
        ];
        for (s, e, access) in pieces {
            if e > s {
                let stats = table.map_range(
                    &mut identity,
                    &mut early,
                    VirtAddr::new(DIRECT_MAP_BASE + s),
                    PhysAddr::new(s),
                    e - s,
                    access,
                    largest,
                )?;
                direct_map.pages_4k += stats.pages_4k;
                direct_map.pages_2m += stats.pages_2m;
                direct_map.pages_1g += stats.pages_1g;
            }
        }
    }

    let root = x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(
        table.root().start().as_u64(),
    ));
    // SAFETY: the new tables map everything the kernel touches from here on — its code,
    // data, the running stack (in .bss) and all RAM through the direct map — with the
    // same virtual addresses as the boot tables for the image; the identity map is no
    // longer used after this point (boot information was copied into `boot`).
    unsafe { Cr3::write(root, Cr3Flags::empty()) };
    let mut cr4 = Cr4Flags::empty();
    if features.global_pages {
        cr4 |= Cr4Flags::PAGE_GLOBAL;
    }
    if features.smep {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
    }
    if features.smap {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION;
    }
    // SAFETY: no user pages exist yet, so SMEP/SMAP cannot trip the kernel; global pages
    // only change TLB retention of kernel mappings.
    unsafe { Cr4::update(|flags| *flags |= cr4) };

    let storage_pointer = (DIRECT_MAP_BASE + window) as *mut u64;
    // SAFETY: [window, window + bitmap_bytes) is usable RAM (found in the memory map,
    // outside the kernel image and the table frames), mapped RW in the direct map, and
    // reserved in the allocator below so nothing else will ever own it; the slice lives
    // as long as the kernel.
    let storage = unsafe {
        storage_pointer.write_bytes(0, bitmap_words as usize); // counts u64s, not bytes
        core::slice::from_raw_parts_mut(storage_pointer, bitmap_words as usize)
    };
    let mut frames = FrameAllocator::new(storage);
    for region in boot.memory_map.usable() {
        frames.add_usable(PhysAddr::new(region.start), PhysAddr::new(region.end));
    }
    frames.reserve(PhysAddr::new(0), PhysAddr::new(LOW_MEMORY_END));
    frames.reserve(PhysAddr::new(kernel.0), PhysAddr::new(kernel.1));
    frames.reserve(PhysAddr::new(window), PhysAddr::new(early.next));

    let report = MemoryReport {
        usable_bytes: boot.memory_map.usable_bytes(),
        usable_regions: boot.memory_map.usable().count(),
        highest_usable_end: highest,
        usable_frames: frames.usable_frames(),
        free_frames: frames.free_frames(),
        kernel_image: kernel,
        table_frames: (early.next - tables_start) / PAGE_SIZE,
        bitmap_frames: bitmap_bytes / PAGE_SIZE,
        direct_map,
    };
    *FRAMES.lock() = Some(frames);
    *KERNEL_TABLE.lock() = Some(table);
    Ok(report)
}

/// The physical ranges the direct map covers: RAM and ACPI tables, page-aligned outward
/// and merged.
fn direct_map_ranges(boot: &BootInfo) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut wanted = boot
        .memory_map
        .regions()
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
            )
        })
        .map(|r| {
            (
                r.start / PAGE_SIZE * PAGE_SIZE,
                r.end.div_ceil(PAGE_SIZE) * PAGE_SIZE,
            )
        })
        .peekable();
    core::iter::from_fn(move || {
        let (start, mut end) = wanted.next()?;
        while let Some(&(next_start, next_end)) = wanted.peek() {
            if next_start > end {
                break;
            }
            end = end.max(next_end);
            wanted.next();
        }
        Some((start, end))
    })
}

/// Maps `len` bytes of MMIO at physical `phys` uncached and returns the virtual address
/// of `phys`.
pub fn map_mmio(phys: u64, len: u64) -> u64 {
    let base = phys / PAGE_SIZE * PAGE_SIZE;
    let len = (phys + len).div_ceil(PAGE_SIZE) * PAGE_SIZE - base;
    let virt = MMIO_NEXT.fetch_add(len, Ordering::Relaxed);
    assert!(
        virt + len <= MMIO_WINDOW_BASE + MMIO_WINDOW_SIZE,
        "MMIO window exhausted"
    );
    let mut frames = FRAMES.lock();
    let frames = frames.as_mut().expect("map_mmio before memory::init");
    let mut table = KERNEL_TABLE.lock();
    let table = table.as_mut().expect("map_mmio before memory::init");
    let mut memory = OffsetPhysMemory {
        offset: DIRECT_MAP_BASE,
    };
    table
        .map_range(
            &mut memory,
            &mut AllocatorFrames(frames),
            VirtAddr::new(virt),
            PhysAddr::new(base),
            len,
            Access::KERNEL_MMIO,
            PageSize::Size4K,
        )
        .unwrap_or_else(|error| panic!("mapping MMIO at {phys:#x}: {error}"));
    virt + (phys - base)
}

/// The root of the kernel's own page table.
pub fn kernel_root() -> PhysFrame {
    KERNEL_TABLE
        .lock()
        .as_ref()
        .expect("memory::init has run")
        .root()
}

/// A frame from the allocator, zeroed.
pub fn allocate_zeroed(count: u64) -> Option<PhysFrame> {
    let frame = {
        let mut frames = FRAMES.lock();
        let frames = frames.as_mut()?;
        if count == 1 {
            frames.allocate()?
        } else {
            frames.allocate_contiguous(count as usize, 1)?
        }
    };
    let pointer = (DIRECT_MAP_BASE + frame.start().as_u64()) as *mut u8;
    // SAFETY: the frames were just taken from the allocator, so nothing else refers to
    // them, and all RAM is mapped writable in the direct map.
    unsafe { pointer.write_bytes(0, (count * PAGE_SIZE) as usize) };
    Some(frame)
}

/// Gives a frame back; a frame that is not the allocator's or already free is reported.
pub fn free(frame: PhysFrame) {
    let result = FRAMES.lock().as_mut().map(|frames| frames.free(frame));
    if let Some(Err(error)) = result {
        defmt::error!("memory: {}", defmt::Display2Format(&error));
    }
}

/// Free frames right now.
pub fn free_frames() -> u64 {
    FRAMES
        .lock()
        .as_ref()
        .map_or(0, FrameAllocator::free_frames)
}

/// Copies RAM at `phys` into `buf` through the direct map.
pub fn read_phys(phys: PhysAddr, buf: &mut [u8]) {
    let pointer = (DIRECT_MAP_BASE + phys.as_u64()) as *const u8;
    // SAFETY: callers (the system) only pass RAM they own — IPC buffers, world frames,
    // memory objects — which the direct map covers; `buf` is a distinct kernel buffer.
    unsafe { core::ptr::copy_nonoverlapping(pointer, buf.as_mut_ptr(), buf.len()) }
}

/// Copies `data` to RAM at `phys` through the direct map.
pub fn write_phys(phys: PhysAddr, data: &[u8]) {
    let pointer = (DIRECT_MAP_BASE + phys.as_u64()) as *mut u8;
    // SAFETY: as in `read_phys`; the destination is RAM owned by a world or kernel object,
    // never the kernel image (whose direct-map alias is read-only and would fault).
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pointer, data.len()) }
}
