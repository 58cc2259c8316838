//! The physical frame allocator: owns every 4 KiB frame of usable RAM.
//!
//! It keeps two bitmaps in storage the caller supplies (so it works before any heap
//! exists): *usable* (the frame is RAM this allocator manages) and *free* (the frame may be
//! handed out). A free frame is always usable. Keeping both lets [`FrameAllocator::free`]
//! refuse a frame that was never RAM or is already free instead of corrupting the pool.
//!
//! Start-up order: call [`FrameAllocator::add_usable`] for every usable region of the
//! memory map first, then [`FrameAllocator::reserve`] what is already in use (the kernel
//! image, boot modules, the storage itself). `reserve` only affects frames that are
//! already usable: a reservation made before its frames are added is forgotten.
//!
//! Single-frame allocation is next-fit with a word-at-a-time scan, so the common case
//! does not walk every frame. This module never touches the frames it manages (it does
//! not zero them) and never panics on any address.

use crate::addr::{PAGE_SIZE, PhysAddr, PhysFrame};
use core::fmt;

const BITS_PER_WORD: u64 = u64::BITS as u64;

/// How many `u64` words of storage [`FrameAllocator::new`] needs to cover every frame
/// below `max_phys_exclusive` (both bitmaps).
pub const fn storage_words(max_phys_exclusive: u64) -> usize {
    let frames = max_phys_exclusive.div_ceil(PAGE_SIZE);
    let words_per_bitmap = frames.div_ceil(BITS_PER_WORD);
    (words_per_bitmap * 2) as usize
}

/// Why a frame could not be given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frame is not usable RAM managed by this allocator (never added, or beyond
    /// the storage's reach).
    NotManaged(PhysFrame),
    /// The frame is already free: a double free.
    AlreadyFree(PhysFrame),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotManaged(frame) => write!(
                f,
                "cannot free the frame at {}: it is not usable RAM managed by the frame allocator",
                frame.start()
            ),
            Self::AlreadyFree(frame) => write!(
                f,
                "cannot free the frame at {}: it is already free (double free)",
                frame.start()
            ),
        }
    }
}

/// Bitmap allocator of 4 KiB physical frames over caller-supplied storage.
pub struct FrameAllocator<'a> {
    /// Bit set: the frame is usable RAM managed here.
    usable: &'a mut [u64],
    /// Bit set: the frame is free. Always a subset of `usable`.
    free: &'a mut [u64],
    free_count: u64,
    usable_count: u64,
    /// Word where the next single-frame search starts (next fit).
    next_word: usize,
}

impl fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("reach", &self.reach())
            .field("usable_frames", &self.usable_count)
            .field("free_frames", &self.free_count)
            .finish()
    }
}

/// The mask of bits `[from, to)` within one word (`from < to <= 64`).
fn bit_range(from: u64, to: u64) -> u64 {
    let high = if to >= BITS_PER_WORD {
        u64::MAX
    } else {
        (1u64 << to) - 1
    };
    high & !((1u64 << from) - 1)
}

/// Calls `visit(word, mask)` for each bitmap word overlapping frames `[first, end)`.
fn for_each_word(first: u64, end: u64, mut visit: impl FnMut(usize, u64)) {
    let mut frame = first;
    while frame < end {
        let word = frame / BITS_PER_WORD;
        let word_end = ((word + 1) * BITS_PER_WORD).min(end);
        let mask = bit_range(frame % BITS_PER_WORD, word_end - word * BITS_PER_WORD);
        visit(word as usize, mask);
        frame = word_end;
    }
}

impl<'a> FrameAllocator<'a> {
    /// An allocator over `storage` (see [`storage_words`]) in which every frame is
    /// unavailable. The storage is cleared; an odd last word is not used.
    pub fn new(storage: &'a mut [u64]) -> Self {
        let half = storage.len() / 2;
        let (usable, rest) = storage.split_at_mut(half);
        let free = &mut rest[..half];
        usable.fill(0);
        free.fill(0);
        Self {
            usable,
            free,
            free_count: 0,
            usable_count: 0,
            next_word: 0,
        }
    }

    /// How many frames the storage can describe (frame numbers below this).
    pub fn frame_limit(&self) -> u64 {
        self.usable.len() as u64 * BITS_PER_WORD
    }

    /// The first physical address beyond the storage's reach.
    pub fn reach(&self) -> PhysAddr {
        PhysAddr::new(self.frame_limit().saturating_mul(PAGE_SIZE))
    }

    /// Marks the whole frames inside `[start, end)` usable and free. Frames beyond the
    /// storage's reach are ignored, and so are frames already usable (free or not), so
    /// adding a region twice cannot free something in use. Returns how many frames
    /// became usable.
    pub fn add_usable(&mut self, start: PhysAddr, end: PhysAddr) -> usize {
        let Some(first) = start.checked_align_up(PAGE_SIZE) else {
            return 0;
        };
        let first = first.as_u64() / PAGE_SIZE;
        let end = (end.as_u64() / PAGE_SIZE).min(self.frame_limit());
        let mut added = 0u64;
        for_each_word(first, end, |word, mask| {
            let new = mask & !self.usable[word];
            self.usable[word] |= new;
            self.free[word] |= new;
            added += u64::from(new.count_ones());
        });
        self.usable_count += added;
        self.free_count += added;
        added as usize
    }

    /// Marks every usable frame that overlaps `[start, end)` as allocated. Returns how
    /// many free frames that took; frames already allocated or not usable are left as
    /// they are.
    pub fn reserve(&mut self, start: PhysAddr, end: PhysAddr) -> usize {
        let first = start.as_u64() / PAGE_SIZE;
        let end = end.as_u64().div_ceil(PAGE_SIZE).min(self.frame_limit());
        let mut taken = 0u64;
        for_each_word(first, end, |word, mask| {
            let hit = self.free[word] & mask;
            self.free[word] &= !hit;
            taken += u64::from(hit.count_ones());
        });
        self.free_count -= taken;
        taken as usize
    }

    /// Hands out one free frame, or `None` when none is left.
    pub fn allocate(&mut self) -> Option<PhysFrame> {
        let words = self.free.len();
        let start = if self.next_word < words {
            self.next_word
        } else {
            0
        };
        let word = (start..words)
            .chain(0..start)
            .find(|&word| self.free[word] != 0)?;
        self.next_word = word;
        Some(self.take_lowest(word, u64::MAX))
    }

    /// Hands out one free frame that lies wholly below `limit` (for DMA or trampolines
    /// that need low memory). Searches from the bottom and leaves the next-fit hint of
    /// [`FrameAllocator::allocate`] alone.
    pub fn allocate_below(&mut self, limit: PhysAddr) -> Option<PhysFrame> {
        let end = (limit.as_u64() / PAGE_SIZE).min(self.frame_limit());
        let mut found = None;
        for_each_word(0, end, |word, mask| {
            if found.is_none() && self.free[word] & mask != 0 {
                found = Some((word, mask));
            }
        });
        let (word, mask) = found?;
        Some(self.take_lowest(word, mask))
    }

    /// Hands out `count` consecutive free frames, the first at a frame number that is a
    /// multiple of `align_frames` (0 is taken as 1). First fit from the bottom. Returns
    /// the first frame, or `None` if `count` is 0 or no such run exists.
    pub fn allocate_contiguous(&mut self, count: usize, align_frames: usize) -> Option<PhysFrame> {
        let count = count as u64;
        let align = (align_frames as u64).max(1);
        let limit = self.frame_limit();
        if count == 0 {
            return None;
        }
        let mut candidate = 0u64;
        loop {
            candidate = candidate.div_ceil(align).checked_mul(align)?;
            let end = candidate.checked_add(count)?;
            if end > limit {
                return None;
            }
            match self.first_not_free(candidate, end) {
                None => break,
                Some(blocked) => candidate = self.first_free_from(blocked + 1)?,
            }
        }
        let end = candidate + count;
        for_each_word(candidate, end, |word, mask| self.free[word] &= !mask);
        self.free_count -= count;
        Some(PhysFrame::from_number(candidate))
    }

    /// Gives a frame back.
    pub fn free(&mut self, frame: PhysFrame) -> Result<(), FreeError> {
        let number = frame.number();
        if number >= self.frame_limit() {
            return Err(FreeError::NotManaged(frame));
        }
        let word = (number / BITS_PER_WORD) as usize;
        let bit = 1u64 << (number % BITS_PER_WORD);
        if self.usable[word] & bit == 0 {
            return Err(FreeError::NotManaged(frame));
        }
        if self.free[word] & bit != 0 {
            return Err(FreeError::AlreadyFree(frame));
        }
        self.free[word] |= bit;
        self.free_count += 1;
        Ok(())
    }

    /// How many frames are free.
    pub fn free_frames(&self) -> u64 {
        self.free_count
    }

    /// How many frames are usable RAM managed here (free or allocated).
    pub fn usable_frames(&self) -> u64 {
        self.usable_count
    }

    /// Whether `frame` is free.
    pub fn is_free(&self, frame: PhysFrame) -> bool {
        self.bit(self.free, frame)
    }

    /// Whether `frame` is usable RAM managed here (free or allocated).
    pub fn is_usable(&self, frame: PhysFrame) -> bool {
        self.bit(self.usable, frame)
    }

    fn bit(&self, bitmap: &[u64], frame: PhysFrame) -> bool {
        let number = frame.number();
        let word = number / BITS_PER_WORD;
        usize::try_from(word)
            .ok()
            .and_then(|word| bitmap.get(word))
            .is_some_and(|bits| bits & (1 << (number % BITS_PER_WORD)) != 0)
    }

    /// Takes the lowest free frame of `word` within `mask`; the caller has checked that
    /// there is one.
    fn take_lowest(&mut self, word: usize, mask: u64) -> PhysFrame {
        let bits = self.free[word] & mask;
        let bit = bits.trailing_zeros();
        self.free[word] &= !(1u64 << bit);
        self.free_count -= 1;
        PhysFrame::from_number(word as u64 * BITS_PER_WORD + u64::from(bit))
    }

    /// The first frame in `[first, end)` that is not free.
    fn first_not_free(&self, first: u64, end: u64) -> Option<u64> {
        let mut found = None;
        for_each_word(first, end, |word, mask| {
            let taken = !self.free[word] & mask;
            if found.is_none() && taken != 0 {
                found = Some(word as u64 * BITS_PER_WORD + u64::from(taken.trailing_zeros()));
            }
        });
        found
    }

    /// The first free frame at or after `first`.
    fn first_free_from(&self, first: u64) -> Option<u64> {
        let mut found = None;
        for_each_word(first, self.frame_limit(), |word, mask| {
            let free = self.free[word] & mask;
            if found.is_none() && free != 0 {
                found = Some(word as u64 * BITS_PER_WORD + u64::from(free.trailing_zeros()));
            }
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn frame(number: u64) -> PhysFrame {
        PhysFrame::from_number(number)
    }

    fn addr(raw: u64) -> PhysAddr {
        PhysAddr::new(raw)
    }

    #[test]
    fn storage_covers_both_bitmaps() {
        assert_eq!(storage_words(0), 0);
        assert_eq!(storage_words(1), 2);
        assert_eq!(storage_words(64 * 4096), 2);
        assert_eq!(storage_words(64 * 4096 + 1), 4);
        // 4 GiB = 1 Mi frames = 16 Ki words per bitmap.
        assert_eq!(storage_words(1 << 32), 2 * 16 * 1024);
        let mut storage = [u64::MAX; 4];
        let alloc = FrameAllocator::new(&mut storage);
        assert_eq!(alloc.frame_limit(), 128);
        assert_eq!(alloc.reach(), addr(128 * 4096));
    }

    #[test]
    fn a_new_allocator_has_nothing_to_give_even_over_dirty_storage() {
        let mut storage = [u64::MAX; 8];
        let mut alloc = FrameAllocator::new(&mut storage);
        assert_eq!(alloc.allocate(), None);
        assert_eq!(alloc.allocate_contiguous(1, 1), None);
        assert_eq!(alloc.free_frames(), 0);
        assert_eq!(alloc.free(frame(3)), Err(FreeError::NotManaged(frame(3))));
    }

    #[test]
    fn usable_regions_shrink_inward_and_reservations_grow_outward() {
        let mut storage = [0; 2];
        let mut alloc = FrameAllocator::new(&mut storage);
        // [0x1001, 0x4fff) holds only frames 2 and 3 wholly.
        assert_eq!(alloc.add_usable(addr(0x1001), addr(0x4fff)), 2);
        assert!(!alloc.is_usable(frame(1)) && !alloc.is_usable(frame(4)));
        assert!(alloc.is_free(frame(2)) && alloc.is_free(frame(3)));
        // One byte of frame 3 reserved takes the whole frame.
        assert_eq!(alloc.reserve(addr(0x3fff), addr(0x4000)), 1);
        assert_eq!(alloc.free_frames(), 1);
        assert_eq!(alloc.usable_frames(), 2);
        assert_eq!(alloc.allocate(), Some(frame(2)));
        assert_eq!(alloc.allocate(), None);
    }

    #[test]
    fn adding_a_region_again_does_not_free_what_is_in_use() {
        let mut storage = [0; 2];
        let mut alloc = FrameAllocator::new(&mut storage);
        assert_eq!(alloc.add_usable(addr(0), addr(0x4000)), 4);
        assert_eq!(alloc.reserve(addr(0), addr(0x2000)), 2);
        assert_eq!(alloc.add_usable(addr(0), addr(0x8000)), 4);
        assert!(!alloc.is_free(frame(0)) && !alloc.is_free(frame(1)));
        assert_eq!(alloc.free_frames(), 6);
        assert_eq!(alloc.usable_frames(), 8);
    }

    #[test]
    fn frames_beyond_the_storage_are_ignored() {
        let mut storage = [0; 2]; // 64 frames
        let mut alloc = FrameAllocator::new(&mut storage);
        assert_eq!(alloc.add_usable(addr(60 * 4096), addr(1 << 40)), 4);
        assert_eq!(alloc.add_usable(addr(u64::MAX - 10), addr(u64::MAX)), 0);
        assert_eq!(alloc.reserve(addr(63 * 4096), addr(u64::MAX)), 1);
        assert_eq!(alloc.free(frame(64)), Err(FreeError::NotManaged(frame(64))));
        assert_eq!(
            alloc.free(frame(1 << 50)),
            Err(FreeError::NotManaged(frame(1 << 50)))
        );
        assert!(!alloc.is_free(frame(1 << 50)));
    }

    #[test]
    fn double_free_and_foreign_frames_are_refused_by_name() {
        let mut storage = [0; 2];
        let mut alloc = FrameAllocator::new(&mut storage);
        alloc.add_usable(addr(0x10_000), addr(0x20_000));
        let taken = alloc.allocate().unwrap();
        assert_eq!(alloc.free(taken), Ok(()));
        let err = alloc.free(taken).unwrap_err();
        assert_eq!(err, FreeError::AlreadyFree(taken));
        assert_eq!(
            err.to_string(),
            "cannot free the frame at 0x10000: it is already free (double free)"
        );
        let err = alloc.free(frame(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot free the frame at 0x1000: it is not usable RAM managed by the frame allocator"
        );
        assert_eq!(alloc.free_frames(), 16);
    }

    #[test]
    fn freeing_a_reservation_returns_it_to_the_pool() {
        let mut storage = [0; 2];
        let mut alloc = FrameAllocator::new(&mut storage);
        alloc.add_usable(addr(0), addr(0x2000));
        alloc.reserve(addr(0), addr(0x2000));
        assert_eq!(alloc.allocate(), None);
        assert_eq!(alloc.free(frame(1)), Ok(()));
        assert_eq!(alloc.allocate(), Some(frame(1)));
    }

    #[test]
    fn allocate_below_respects_the_limit_exactly() {
        let mut storage = [0; 4];
        let mut alloc = FrameAllocator::new(&mut storage);
        alloc.add_usable(addr(0x5000), addr(0x7000)); // frames 5, 6
        assert_eq!(alloc.allocate_below(addr(0x5fff)), None); // frame 5 ends at 0x6000
        assert_eq!(alloc.allocate_below(addr(0x6000)), Some(frame(5)));
        assert_eq!(alloc.allocate_below(addr(0x6000)), None);
        assert_eq!(alloc.allocate_below(addr(u64::MAX)), Some(frame(6)));
    }

    #[test]
    fn contiguous_runs_skip_holes_and_honour_alignment() {
        let mut storage = [0; 8]; // 256 frames
        let mut alloc = FrameAllocator::new(&mut storage);
        alloc.add_usable(addr(0), addr(256 * 4096));
        alloc.reserve(addr(3 * 4096), addr(4 * 4096)); // hole at frame 3
        alloc.reserve(addr(70 * 4096), addr(71 * 4096)); // hole at frame 70
        // 4 frames: 0..3 is broken by frame 3, so 4..8.
        assert_eq!(alloc.allocate_contiguous(4, 1), Some(frame(4)));
        // 64 frames aligned to 64: 64..128 holds frame 70, so 128..192.
        assert_eq!(alloc.allocate_contiguous(64, 64), Some(frame(128)));
        // 3 frames aligned to 3 (not a power of two): 0..3 is free.
        assert_eq!(alloc.allocate_contiguous(3, 3), Some(frame(0)));
        assert_eq!(alloc.allocate_contiguous(0, 1), None);
        assert_eq!(alloc.allocate_contiguous(257, 1), None);
        assert_eq!(alloc.allocate_contiguous(usize::MAX, usize::MAX), None);
        assert_eq!(alloc.free_frames(), 256 - 2 - 4 - 64 - 3);
    }

    #[test]
    fn allocation_is_next_fit_so_freed_frames_wait_for_the_wrap_around() {
        let mut storage = [0; 8]; // 256 frames
        let mut alloc = FrameAllocator::new(&mut storage);
        alloc.add_usable(addr(0), addr(256 * 4096));
        for expected in 0..200 {
            assert_eq!(alloc.allocate(), Some(frame(expected)));
        }
        alloc.free(frame(3)).unwrap();
        // The search goes on from where it stopped instead of rescanning from frame 0.
        assert_eq!(alloc.allocate(), Some(frame(200)));
        for expected in 201..256 {
            assert_eq!(alloc.allocate(), Some(frame(expected)));
        }
        assert_eq!(alloc.allocate(), Some(frame(3)));
    }

    #[test]
    fn allocating_all_of_four_gibibytes_is_linear() {
        // Would take minutes if every allocation rescanned from the first word.
        let mut storage = vec![0u64; storage_words(1 << 32)];
        let mut alloc = FrameAllocator::new(&mut storage);
        let total = alloc.add_usable(addr(0), addr(1 << 32)) as u64;
        assert_eq!(total, 1 << 20);
        let mut last = None;
        for expected in 0..total {
            let got = alloc.allocate().unwrap();
            assert_eq!(got.number(), expected);
            last = Some(got);
        }
        assert_eq!(alloc.allocate(), None);
        // A freed frame behind the hint is found again by wrapping around.
        alloc.free(frame(17)).unwrap();
        assert_eq!(alloc.allocate(), Some(frame(17)));
        assert_eq!(last, Some(frame(total - 1)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        AddUsable(u64, u64),
        Reserve(u64, u64),
        Allocate,
        AllocateBelow(u64),
        AllocateContiguous(usize, usize),
        FreeHandedOut(usize),
        FreeAny(u64),
    }

    /// Frames a test allocator covers; addresses go a little beyond.
    const MODEL_FRAMES: u64 = 192;
    const MODEL_SPAN: u64 = (MODEL_FRAMES + 40) * 4096;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0..MODEL_SPAN, 0..MODEL_SPAN).prop_map(|(a, b)| Op::AddUsable(a, b)),
            1 => (0..MODEL_SPAN, 0..MODEL_SPAN / 8).prop_map(|(a, len)| Op::Reserve(a, a + len)),
            4 => Just(Op::Allocate),
            1 => (0..MODEL_SPAN).prop_map(Op::AllocateBelow),
            2 => (0usize..24, prop::sample::select(vec![0usize, 1, 2, 3, 4, 8, 16, 64]))
                .prop_map(|(count, align)| Op::AllocateContiguous(count, align)),
            3 => any::<usize>().prop_map(Op::FreeHandedOut),
            1 => (0..MODEL_FRAMES + 40).prop_map(Op::FreeAny),
        ]
    }

    #[derive(Default)]
    struct Model {
        usable: HashSet<u64>,
        free: HashSet<u64>,
        handed_out: Vec<u64>,
    }

    impl Model {
        fn run_exists(&self, count: u64, align: u64) -> bool {
            count > 0
                && (0..MODEL_FRAMES).step_by(align as usize).any(|s| {
                    s + count <= MODEL_FRAMES && (s..s + count).all(|f| self.free.contains(&f))
                })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn allocator_matches_a_set_model(ops in proptest::collection::vec(op(), 1..120)) {
            let mut storage = vec![0u64; storage_words(MODEL_FRAMES * 4096)];
            let mut alloc = FrameAllocator::new(&mut storage);
            prop_assert_eq!(alloc.frame_limit(), MODEL_FRAMES);
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::AddUsable(start, end) => {
                        let first = start.div_ceil(4096);
                        let last = (end / 4096).min(MODEL_FRAMES);
                        let mut added = 0;
                        for f in first..last.max(first) {
                            if model.usable.insert(f) {
                                model.free.insert(f);
                                added += 1;
                            }
                        }
                        prop_assert_eq!(alloc.add_usable(addr(start), addr(end)), added);
                    }
                    Op::Reserve(start, end) => {
                        let first = start / 4096;
                        let last = end.div_ceil(4096).min(MODEL_FRAMES);
                        let taken = (first..last.max(first)).filter(|f| model.free.remove(f)).count();
                        prop_assert_eq!(alloc.reserve(addr(start), addr(end)), taken);
                    }
                    Op::Allocate => match alloc.allocate() {
                        Some(got) => {
                            prop_assert!(model.free.remove(&got.number()), "handed out {:?}, not free", got);
                            model.handed_out.push(got.number());
                        }
                        None => prop_assert!(model.free.is_empty()),
                    },
                    Op::AllocateBelow(limit) => {
                        let below = limit / 4096;
                        match alloc.allocate_below(addr(limit)) {
                            Some(got) => {
                                prop_assert!(got.number() < below);
                                prop_assert!(model.free.remove(&got.number()));
                                model.handed_out.push(got.number());
                            }
                            None => prop_assert!(model.free.iter().all(|&f| f >= below)),
                        }
                    }
                    Op::AllocateContiguous(count, align) => {
                        let align = align.max(1) as u64;
                        let exists = model.run_exists(count as u64, align);
                        match alloc.allocate_contiguous(count, align as usize) {
                            Some(first) => {
                                let first = first.number();
                                prop_assert_eq!(first % align, 0);
                                prop_assert!(first + count as u64 <= MODEL_FRAMES);
                                for f in first..first + count as u64 {
                                    prop_assert!(model.free.remove(&f), "frame {} of the run was not free", f);
                                    model.handed_out.push(f);
                                }
                            }
                            None => prop_assert!(!exists, "a run of {} aligned to {} existed", count, align),
                        }
                    }
                    Op::FreeHandedOut(pick) => {
                        if !model.handed_out.is_empty() {
                            let f = model.handed_out.swap_remove(pick % model.handed_out.len());
                            prop_assert_eq!(alloc.free(frame(f)), Ok(()));
                            model.free.insert(f);
                        }
                    }
                    Op::FreeAny(f) => {
                        let expected = if !model.usable.contains(&f) {
                            Err(FreeError::NotManaged(frame(f)))
                        } else if model.free.contains(&f) {
                            Err(FreeError::AlreadyFree(frame(f)))
                        } else {
                            Ok(())
                        };
                        prop_assert_eq!(alloc.free(frame(f)), expected);
                        if expected.is_ok() {
                            model.free.insert(f);
                            model.handed_out.retain(|&h| h != f);
                        }
                    }
                }
                prop_assert_eq!(alloc.free_frames(), model.free.len() as u64);
                prop_assert_eq!(alloc.usable_frames(), model.usable.len() as u64);
                for f in 0..MODEL_FRAMES + 8 {
                    prop_assert_eq!(alloc.is_free(frame(f)), model.free.contains(&f), "frame {}", f);
                    prop_assert_eq!(alloc.is_usable(frame(f)), model.usable.contains(&f), "frame {}", f);
                }
            }
        }
    }
}
