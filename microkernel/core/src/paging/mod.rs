//! The x86-64 4-level page-table builder.
//!
//! [`PageTable`] maps, translates and unmaps pages of 4 KiB, 2 MiB and 1 GiB in a table
//! tree it reaches only through [`PhysMemory`] and grows with frames from a
//! [`FrameSource`], so the same code builds the kernel's own tables on the machine and
//! runs against an emulated memory in host tests. It is generic over the entry encoding
//! ([`EntryFormat`]): [`X86`] for ordinary tables, [`Npt`] for AMD nested page tables.
//!
//! It enforces what a mapping may be: canonical virtual addresses, page-size alignment,
//! physical addresses below 2^52, W^X (for formats that ask for it), and no silent
//! replacement of an existing mapping. It never flushes TLBs, never loads CR3 and never
//! frees table frames: emptied tables stay in place for later mappings, and flushing
//! after [`PageTable::unmap`] is the caller's job.

mod format;

pub use format::{EntryFormat, Npt, X86};

use crate::addr::{PhysAddr, PhysFrame, VirtAddr};
use core::fmt;
use core::marker::PhantomData;

/// Entries per table at every level.
pub const ENTRIES_PER_TABLE: usize = 512;

/// The first level-4 index of the kernel (upper) half.
pub const UPPER_HALF_FIRST_INDEX: usize = 256;

/// Physical memory as the page-table builder sees it: tables of 512 `u64` entries.
pub trait PhysMemory {
    /// Reads entry `index` (below 512) of the table in `table`.
    fn read_entry(&self, table: PhysFrame, index: usize) -> u64;
    /// Writes entry `index` (below 512) of the table in `table`.
    fn write_entry(&mut self, table: PhysFrame, index: usize, value: u64);
    /// Fills `frame` with zeros.
    fn zero_frame(&mut self, frame: PhysFrame);
}

/// Where new table frames come from. They need not be zeroed; the builder zeroes them.
pub trait FrameSource {
    /// One frame for a new table, `None` when memory is exhausted.
    fn allocate_table_frame(&mut self) -> Option<PhysFrame>;
}

/// The sizes of page x86-64 can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB, a level-1 leaf.
    Size4K,
    /// 2 MiB, a level-2 leaf.
    Size2M,
    /// 1 GiB, a level-3 leaf.
    Size1G,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The table level that holds leaves of this size (1, 2 or 3).
    const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    /// Largest first.
    const DESCENDING: [Self; 3] = [Self::Size1G, Self::Size2M, Self::Size4K];
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size4K => "4 KiB",
            Self::Size2M => "2 MiB",
            Self::Size1G => "1 GiB",
        })
    }
}

/// How the CPU may cache a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachePolicy {
    /// Normal RAM.
    WriteBack,
    /// Device memory (PCD and PWT set).
    Uncached,
}

/// What a mapping allows. Reading is always allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
    /// User-mode (CPL 3) access allowed.
    pub user: bool,
    /// Kept in the TLB across address-space switches.
    pub global: bool,
    /// How the CPU may cache it.
    pub cache: CachePolicy,
}

impl Access {
    /// Kernel text: read and execute.
    pub const KERNEL_CODE: Self = Self {
        write: false,
        execute: true,
        user: false,
        global: true,
        cache: CachePolicy::WriteBack,
    };
    /// Kernel constants: read only.
    pub const KERNEL_RODATA: Self = Self {
        write: false,
        execute: false,
        user: false,
        global: true,
        cache: CachePolicy::WriteBack,
    };
    /// Kernel data, stacks, heap: read and write.
    pub const KERNEL_DATA: Self = Self {
        write: true,
        execute: false,
        user: false,
        global: true,
        cache: CachePolicy::WriteBack,
    };
    /// Device registers: read and write, uncached.
    pub const KERNEL_MMIO: Self = Self {
        write: true,
        execute: false,
        user: false,
        global: true,
        cache: CachePolicy::Uncached,
    };
}

/// Why a mapping was refused. Addresses are the ones the caller passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// `virt` or `phys` is not aligned to `size`.
    Misaligned {
        /// Requested virtual address.
        virt: u64,
        /// Requested physical address.
        phys: u64,
        /// Requested page size.
        size: PageSize,
    },
    /// The mapping would be both writable and executable (W^X).
    WriteAndExecute {
        /// Requested virtual address.
        virt: u64,
    },
    /// A page of the same size is already mapped there.
    AlreadyMapped {
        /// Requested virtual address.
        virt: u64,
    },
    /// A larger page already covers the address.
    HugePageInTheWay {
        /// Requested virtual address.
        virt: u64,
    },
    /// A huge page was asked for where a table of smaller pages exists (even an emptied
    /// one: table frames are never freed).
    TableInTheWay {
        /// Requested virtual address.
        virt: u64,
    },
    /// The frame source ran dry while building intermediate tables.
    OutOfFrames,
    /// The virtual address is not canonical (bits 63..47 differ).
    NonCanonical {
        /// The offending virtual address.
        virt: u64,
    },
    /// The physical address does not fit in a page-table entry (2^52 and up).
    PhysTooHigh {
        /// The offending physical address.
        phys: u64,
    },
    /// `virt + len` or `phys + len` overflows.
    RangeWraps {
        /// Requested virtual start.
        virt: u64,
        /// Requested physical start.
        phys: u64,
        /// Requested length.
        len: u64,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Misaligned { virt, phys, size } => write!(
                f,
                "cannot map {virt:#x} -> {phys:#x} as a {size} page: not aligned to {size}"
            ),
            Self::WriteAndExecute { virt } => {
                write!(
                    f,
                    "refusing to map {virt:#x} both writable and executable (W^X)"
                )
            }
            Self::AlreadyMapped { virt } => write!(f, "{virt:#x} is already mapped"),
            Self::HugePageInTheWay { virt } => {
                write!(f, "{virt:#x} lies inside an existing larger page")
            }
            Self::TableInTheWay { virt } => write!(
                f,
                "cannot map a huge page at {virt:#x}: a table of smaller pages is there"
            ),
            Self::OutOfFrames => f.write_str("out of frames for page tables"),
            Self::NonCanonical { virt } => write!(f, "{virt:#x} is not a canonical address"),
            Self::PhysTooHigh { phys } => {
                write!(
                    f,
                    "physical address {phys:#x} is beyond 2^52, the paging limit"
                )
            }
            Self::RangeWraps { virt, phys, len } => write!(
                f,
                "range of {len:#x} bytes at {virt:#x} -> {phys:#x} wraps around the address space"
            ),
        }
    }
}

/// Why an unmapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// Nothing is mapped at `virt` (or it is not canonical).
    NotMapped {
        /// The requested virtual address.
        virt: u64,
    },
    /// `virt` is inside a page of `size` but not at its start; the page was left alone.
    NotPageStart {
        /// The requested virtual address.
        virt: u64,
        /// The size of the page that covers it.
        size: PageSize,
    },
}

impl fmt::Display for UnmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotMapped { virt } => write!(f, "nothing is mapped at {virt:#x}"),
            Self::NotPageStart { virt, size } => write!(
                f,
                "{virt:#x} is inside a {size} page, not at its start; nothing was unmapped"
            ),
        }
    }
}

/// Where a virtual address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The translated address (page base plus the offset of the virtual address).
    pub phys: PhysAddr,
    /// The size of the page that maps it.
    pub size: PageSize,
    /// What the walk allows: write, execute and user only if every level allows them;
    /// global and cache as the leaf says.
    pub access: Access,
}

/// How many pages of each size [`PageTable::map_range`] used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// 4 KiB pages.
    pub pages_4k: u64,
    /// 2 MiB pages.
    pub pages_2m: u64,
    /// 1 GiB pages.
    pub pages_1g: u64,
}

impl MapStats {
    fn count(&mut self, size: PageSize) {
        match size {
            PageSize::Size4K => self.pages_4k += 1,
            PageSize::Size2M => self.pages_2m += 1,
            PageSize::Size1G => self.pages_1g += 1,
        }
    }
}

/// A 4-level page-table tree identified by its root (level-4) table.
///
/// The value is just the root's address; the tables live in physical memory, so every
/// operation takes the [`PhysMemory`] they are in.
pub struct PageTable<F: EntryFormat = X86> {
    root: PhysFrame,
    format: PhantomData<fn() -> F>,
}

impl<F: EntryFormat> fmt::Debug for PageTable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("root", &self.root)
            .finish()
    }
}

/// The table index of `virt` at `level` (1..=4).
fn index_at(virt: VirtAddr, level: u8) -> usize {
    match level {
        4 => virt.p4_index(),
        3 => virt.p3_index(),
        2 => virt.p2_index(),
        _ => virt.p1_index(),
    }
}

/// The page size of a leaf at `level`.
fn size_at(level: u8) -> PageSize {
    match level {
        3 => PageSize::Size1G,
        2 => PageSize::Size2M,
        _ => PageSize::Size4K,
    }
}

/// A leaf found by a walk.
struct Leaf {
    table: PhysFrame,
    index: usize,
    entry: u64,
    size: PageSize,
    /// Write, execute and user as allowed by the table entries above the leaf.
    allowed_above: Access,
}

impl<F: EntryFormat> PageTable<F> {
    /// A new, empty tree: one zeroed root table.
    pub fn new(mem: &mut impl PhysMemory, frames: &mut impl FrameSource) -> Result<Self, MapError> {
        let root = frames.allocate_table_frame().ok_or(MapError::OutOfFrames)?;
        mem.zero_frame(root);
        Ok(Self::from_root(root))
    }

    /// The tree whose root table is `root` (for example the one CR3 points at).
    pub fn from_root(root: PhysFrame) -> Self {
        Self {
            root,
            format: PhantomData,
        }
    }

    /// The root (level-4) table, the value for CR3 or the nested CR3.
    pub fn root(&self) -> PhysFrame {
        self.root
    }

    /// Maps the page of `size` at `virt` to `phys`.
    ///
    /// Refuses non-canonical or misaligned addresses, physical addresses beyond 2^52,
    /// W^X violations (for formats that refuse them), and anything already mapped in the
    /// way. Only [`MapError::OutOfFrames`] can leave something behind: new, empty
    /// intermediate tables, which later mappings reuse.
    pub fn map(
        &mut self,
        mem: &mut impl PhysMemory,
        frames: &mut impl FrameSource,
        virt: VirtAddr,
        phys: PhysAddr,
        size: PageSize,
        access: Access,
    ) -> Result<(), MapError> {
        Self::check_mapping(virt, phys, size, access)?;
        let leaf_level = size.level();
        let mut path = [(self.root, 0usize); 3];
        let mut depth = 0;
        let mut table = self.root;
        for level in (leaf_level + 1..=4).rev() {
            let index = index_at(virt, level);
            let entry = mem.read_entry(table, index);
            let next = if !F::is_present(entry) {
                let frame = frames.allocate_table_frame().ok_or(MapError::OutOfFrames)?;
                mem.zero_frame(frame);
                mem.write_entry(table, index, F::table(frame, false));
                frame
            } else if level < 4 && F::is_huge(entry) {
                return Err(MapError::HugePageInTheWay {
                    virt: virt.as_u64(),
                });
            } else {
                PhysFrame::containing(PhysAddr::new(F::address(entry)))
            };
            path[depth] = (table, index);
            depth += 1;
            table = next;
        }
        let index = index_at(virt, leaf_level);
        let entry = mem.read_entry(table, index);
        if F::is_present(entry) {
            return Err(if leaf_level == 1 || F::is_huge(entry) {
                MapError::AlreadyMapped {
                    virt: virt.as_u64(),
                }
            } else {
                MapError::TableInTheWay {
                    virt: virt.as_u64(),
                }
            });
        }
        mem.write_entry(table, index, F::leaf(phys, size, access));
        if access.user {
            for &(table, index) in &path[..depth] {
                let entry = mem.read_entry(table, index);
                if !F::access(entry).user {
                    mem.write_entry(table, index, F::table_with_user(entry));
                }
            }
        }
        Ok(())
    }

    /// Maps `len` bytes (rounded up to 4 KiB) at `virt` to `phys`, using at each step the
    /// largest page size up to `largest` that both addresses are aligned to and that the
    /// remaining length fills.
    ///
    /// All or nothing: if any page cannot be mapped, the pages this call already mapped
    /// are unmapped again before the error is returned.
    #[allow(clippy::too_many_arguments)] // memory, frames, and the six facts of a range
    pub fn map_range(
        &mut self,
        mem: &mut impl PhysMemory,
        frames: &mut impl FrameSource,
        virt: VirtAddr,
        phys: PhysAddr,
        len: u64,
        access: Access,
        largest: PageSize,
    ) -> Result<MapStats, MapError> {
        let steps = RangeSteps::new(virt, phys, len, largest)?;
        Self::check_mapping(virt, phys, PageSize::Size4K, access)?;
        let mut stats = MapStats::default();
        for (done, (page_virt, page_phys, size)) in steps.clone().enumerate() {
            if let Err(error) = self.map(mem, frames, page_virt, page_phys, size, access) {
                for (mapped_virt, _, _) in steps.take(done) {
                    // Cannot fail: this call mapped exactly this page.
                    let _ = self.unmap(mem, mapped_virt);
                }
                return Err(error);
            }
            stats.count(size);
        }
        Ok(stats)
    }

    /// Where `virt` leads, or `None` if it is not mapped (or not canonical).
    pub fn translate(&self, mem: &impl PhysMemory, virt: VirtAddr) -> Option<Translation> {
        let leaf = self.find_leaf(mem, virt)?;
        let bytes = leaf.size.bytes();
        let base = F::address(leaf.entry) & !(bytes - 1);
        let own = F::access(leaf.entry);
        Some(Translation {
            phys: PhysAddr::new(base | (virt.as_u64() & (bytes - 1))),
            size: leaf.size,
            access: Access {
                write: own.write && leaf.allowed_above.write,
                execute: own.execute && leaf.allowed_above.execute,
                user: own.user && leaf.allowed_above.user,
                global: own.global,
                cache: own.cache,
            },
        })
    }

    /// Removes the page that starts at `virt`, returning its physical base and size.
    ///
    /// `virt` must be the first address of the page; an address inside a larger page is
    /// refused rather than unmapping more than asked. The caller must flush the TLB.
    pub fn unmap(
        &mut self,
        mem: &mut impl PhysMemory,
        virt: VirtAddr,
    ) -> Result<(PhysAddr, PageSize), UnmapError> {
        let leaf = self.find_leaf(mem, virt).ok_or(UnmapError::NotMapped {
            virt: virt.as_u64(),
        })?;
        if !virt.is_aligned(leaf.size.bytes()) {
            return Err(UnmapError::NotPageStart {
                virt: virt.as_u64(),
                size: leaf.size,
            });
        }
        mem.write_entry(leaf.table, leaf.index, 0);
        let base = F::address(leaf.entry) & !(leaf.size.bytes() - 1);
        Ok((PhysAddr::new(base), leaf.size))
    }

    /// Makes this tree share `other`'s upper half: copies its level-4 entries 256..512.
    /// The lower half is left as it is.
    pub fn copy_upper_half_from(&mut self, mem: &mut impl PhysMemory, other: &PageTable<F>) {
        for index in UPPER_HALF_FIRST_INDEX..ENTRIES_PER_TABLE {
            let entry = mem.read_entry(other.root, index);
            mem.write_entry(self.root, index, entry);
        }
    }

    fn check_mapping(
        virt: VirtAddr,
        phys: PhysAddr,
        size: PageSize,
        access: Access,
    ) -> Result<(), MapError> {
        if !virt.is_canonical() {
            return Err(MapError::NonCanonical {
                virt: virt.as_u64(),
            });
        }
        if !virt.is_aligned(size.bytes()) || !phys.is_aligned(size.bytes()) {
            return Err(MapError::Misaligned {
                virt: virt.as_u64(),
                phys: phys.as_u64(),
                size,
            });
        }
        if phys.as_u64() >= PhysAddr::MAX_ADDRESSABLE {
            return Err(MapError::PhysTooHigh {
                phys: phys.as_u64(),
            });
        }
        if F::REFUSES_WRITE_AND_EXECUTE && access.write && access.execute {
            return Err(MapError::WriteAndExecute {
                virt: virt.as_u64(),
            });
        }
        Ok(())
    }

    fn find_leaf(&self, mem: &impl PhysMemory, virt: VirtAddr) -> Option<Leaf> {
        if !virt.is_canonical() {
            return None;
        }
        let mut allowed_above = Access {
            write: true,
            execute: true,
            user: true,
            ..Access::KERNEL_DATA
        };
        let mut table = self.root;
        for level in (1..=4u8).rev() {
            let index = index_at(virt, level);
            let entry = mem.read_entry(table, index);
            if !F::is_present(entry) {
                return None;
            }
            let huge = F::is_huge(entry);
            if level == 1 || (level < 4 && huge) {
                return Some(Leaf {
                    table,
                    index,
                    entry,
                    size: size_at(level),
                    allowed_above,
                });
            }
            if huge {
                // PS is reserved at level 4: the CPU faults, so nothing is mapped.
                return None;
            }
            let here = F::access(entry);
            allowed_above.write &= here.write;
            allowed_above.execute &= here.execute;
            allowed_above.user &= here.user;
            table = PhysFrame::containing(PhysAddr::new(F::address(entry)));
        }
        None
    }
}

/// The pages [`PageTable::map_range`] maps, in order: `(virt, phys, size)`.
#[derive(Clone)]
struct RangeSteps {
    virt: u64,
    phys: u64,
    remaining: u64,
    largest: PageSize,
}

impl RangeSteps {
    fn new(virt: VirtAddr, phys: PhysAddr, len: u64, largest: PageSize) -> Result<Self, MapError> {
        let wraps = MapError::RangeWraps {
            virt: virt.as_u64(),
            phys: phys.as_u64(),
            len,
        };
        let len = len
            .checked_next_multiple_of(PageSize::Size4K.bytes())
            .ok_or(wraps)?;
        if len == 0 {
            return Ok(Self {
                virt: virt.as_u64(),
                phys: phys.as_u64(),
                remaining: 0,
                largest,
            });
        }
        let last_page = virt.as_u64().checked_add(len - 1).ok_or(wraps)? & !0xfff;
        phys.as_u64().checked_add(len - 1).ok_or(wraps)?;
        if !virt.is_canonical() {
            return Err(MapError::NonCanonical {
                virt: virt.as_u64(),
            });
        }
        if !VirtAddr::new(last_page).is_canonical() {
            return Err(MapError::NonCanonical { virt: last_page });
        }
        if (virt.as_u64() ^ last_page) >> 63 != 0 {
            // Canonical at both ends but in different halves: the hole lies between.
            return Err(MapError::NonCanonical {
                virt: 0x0000_8000_0000_0000,
            });
        }
        Ok(Self {
            virt: virt.as_u64(),
            phys: phys.as_u64(),
            remaining: len,
            largest,
        })
    }
}

impl Iterator for RangeSteps {
    type Item = (VirtAddr, PhysAddr, PageSize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let size = PageSize::DESCENDING
            .into_iter()
            .filter(|size| size.bytes() <= self.largest.bytes())
            .find(|size| {
                let bytes = size.bytes();
                self.virt.is_multiple_of(bytes)
                    && self.phys.is_multiple_of(bytes)
                    && self.remaining >= bytes
            })
            .unwrap_or(PageSize::Size4K);
        let step = (VirtAddr::new(self.virt), PhysAddr::new(self.phys), size);
        let bytes = size.bytes();
        self.remaining -= bytes;
        // Cannot overflow past the last page: checked in `RangeSteps::new`.
        self.virt = self.virt.wrapping_add(bytes);
        self.phys = self.phys.wrapping_add(bytes);
        Some(step)
    }
}

#[cfg(test)]
mod emulate;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
