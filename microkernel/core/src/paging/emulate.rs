//! An emulated physical memory and frame source for the page-table builder's host tests,
//! in the manner of Redox rmm's `emulate` backend. Test-only; never part of the kernel.

use super::*;
use std::collections::HashMap;

/// What uninitialised RAM reads as: present, writable, huge, with an address. A builder
/// that forgets to zero a table trips over it.
pub(super) const GARBAGE: u64 = 0xdead_beef_dead_beef;

/// Physical memory as a map of frame number to table, in the manner of rmm's emulator.
#[derive(Default)]
pub(super) struct EmulatedMemory {
    pub(super) frames: HashMap<u64, [u64; 512]>,
}

impl PhysMemory for EmulatedMemory {
    fn read_entry(&self, table: PhysFrame, index: usize) -> u64 {
        assert!(index < 512, "entry index {index} out of range");
        self.frames
            .get(&table.number())
            .map_or(GARBAGE, |frame| frame[index])
    }

    fn write_entry(&mut self, table: PhysFrame, index: usize, value: u64) {
        assert!(index < 512, "entry index {index} out of range");
        self.frames.entry(table.number()).or_insert([GARBAGE; 512])[index] = value;
    }

    fn zero_frame(&mut self, frame: PhysFrame) {
        self.frames.insert(frame.number(), [0; 512]);
    }
}

/// Hands out consecutive frames from 256 MiB up, `left` of them.
pub(super) struct CountingFrames {
    pub(super) next: u64,
    pub(super) left: u64,
}

impl CountingFrames {
    pub(super) fn new() -> Self {
        Self::with_limit(u64::MAX)
    }

    pub(super) fn with_limit(left: u64) -> Self {
        Self {
            next: 0x10000,
            left,
        }
    }
}

impl FrameSource for CountingFrames {
    fn allocate_table_frame(&mut self) -> Option<PhysFrame> {
        self.left = self.left.checked_sub(1)?;
        self.next += 1;
        Some(PhysFrame::from_number(self.next - 1))
    }
}

pub(super) fn setup<F: EntryFormat>() -> (EmulatedMemory, CountingFrames, PageTable<F>) {
    let mut mem = EmulatedMemory::default();
    let mut frames = CountingFrames::new();
    let table = PageTable::new(&mut mem, &mut frames).unwrap();
    (mem, frames, table)
}

pub(super) fn v(raw: u64) -> VirtAddr {
    VirtAddr::new(raw)
}

pub(super) fn p(raw: u64) -> PhysAddr {
    PhysAddr::new(raw)
}

pub(super) const USER_DATA: Access = Access {
    write: true,
    execute: false,
    user: true,
    global: false,
    cache: CachePolicy::WriteBack,
};

pub(super) const RWX: Access = Access {
    write: true,
    execute: true,
    user: false,
    global: false,
    cache: CachePolicy::WriteBack,
};

/// The entries of the walk to `virt`, level 4 first, ending at the leaf.
pub(super) fn walk_entries(mem: &EmulatedMemory, root: PhysFrame, virt: VirtAddr) -> Vec<u64> {
    let mut out = Vec::new();
    let mut table = root;
    for level in (1..=4u8).rev() {
        let entry = mem.read_entry(table, index_at(virt, level));
        out.push(entry);
        if entry & X86::PRESENT == 0 || level == 1 || (level < 4 && entry & X86::HUGE != 0) {
            break;
        }
        table = PhysFrame::containing(p(entry & X86::ADDRESS_MASK));
    }
    out
}
