//! A single-producer single-consumer ring of byte records over shared memory.
//!
//! For bulk data between two worlds (disk blocks, network frames) that do not fit the
//! message path: both map one Memory region; one side only pushes, the other only pops,
//! and a notification says "there is work". The region is laid out as:
//!
//! ```text
//! offset   0  head: u32   producer's position (written only by the producer)
//! offset  64  tail: u32   consumer's position (written only by the consumer)
//! offset 128  data: capacity bytes, records = len:u32le bytes, wrapping at the end
//! ```
//!
//! Positions run over `[0, 2 × capacity)`, so a full ring and an empty one differ
//! (`head == tail` is empty). Each side keeps its own position locally and only *reads* the
//! other's; every value read from the shared header is checked (in range, used bytes not
//! above capacity, record length within the used bytes), so a hostile or broken peer can
//! make the ring report [`RingError::Corrupt`] but never make this side read or write
//! outside the region. Record contents can still change under a reader's feet: they are
//! data, copied once, and must be validated by whoever parses them.
//!
//! Memory access goes through [`RingMemory`]: [`SharedRegion`] over a mapped region in a
//! world, [`CellMemory`] over a plain byte slice in tests.

use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

/// Offset of the producer's position.
pub const HEAD_OFFSET: usize = 0;
/// Offset of the consumer's position (own cache line).
pub const TAIL_OFFSET: usize = 64;
/// Offset of the record data.
pub const DATA_OFFSET: usize = 128;
/// Bytes of the length prefix of each record.
pub const LENGTH_PREFIX: usize = 4;
/// Largest data capacity (positions must fit a `u32` twice over).
pub const MAX_CAPACITY: usize = 1 << 30;
/// Smallest data capacity.
pub const MIN_CAPACITY: usize = 8;

/// What went wrong with a ring operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The region is smaller than the header plus [`MIN_CAPACITY`].
    RegionTooSmall,
    /// The record can never fit (longer than capacity minus the length prefix).
    TooLarge,
    /// Not enough free space now; try again after the consumer pops.
    Full,
    /// The next record is longer than the caller's buffer (it stays in the ring).
    BufferTooSmall {
        /// Its length.
        needed: usize,
    },
    /// The shared header or a length prefix holds impossible values: the peer is broken
    /// or hostile.
    Corrupt,
}

/// Byte-addressed access to the ring's region. Offsets are always in bounds when called
/// by the ring; implementations still check and panic rather than go out of bounds.
pub trait RingMemory {
    /// Size of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads a header word (acquire: the data it covers is visible after it).
    fn load_u32(&self, offset: usize) -> u32;
    /// Writes a header word (release: the data written before it is visible first).
    fn store_u32(&self, offset: usize, value: u32);
    /// Copies `out.len()` bytes from `offset`.
    fn read(&self, offset: usize, out: &mut [u8]);
    /// Copies `bytes` to `offset`.
    fn write(&self, offset: usize, bytes: &[u8]);
}

impl<M: RingMemory + ?Sized> RingMemory for &M {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        (**self).load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        (**self).store_u32(offset, value)
    }
    fn read(&self, offset: usize, out: &mut [u8]) {
        (**self).read(offset, out)
    }
    fn write(&self, offset: usize, bytes: &[u8]) {
        (**self).write(offset, bytes)
    }
}

/// No region at all: the memory type of a server that has no ring (every attach fails with
/// [`RingError::RegionTooSmall`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMemory;

impl RingMemory for NoMemory {
    fn len(&self) -> usize {
        0
    }
    fn load_u32(&self, _offset: usize) -> u32 {
        0
    }
    fn store_u32(&self, _offset: usize, _value: u32) {}
    fn read(&self, _offset: usize, out: &mut [u8]) {
        out.fill(0);
    }
    fn write(&self, _offset: usize, _bytes: &[u8]) {}
}

/// A ring region in ordinary memory shared within one program (tests, or two tasks of
/// one world): `CellMemory::new(Cell::from_mut(&mut bytes[..]).as_slice_of_cells())`.
#[derive(Clone, Copy, Debug)]
pub struct CellMemory<'a> {
    bytes: &'a [Cell<u8>],
}

impl<'a> CellMemory<'a> {
    /// Wraps a byte slice.
    pub fn new(bytes: &'a [Cell<u8>]) -> Self {
        Self { bytes }
    }
}

impl RingMemory for CellMemory<'_> {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        let mut word = [0u8; 4];
        self.read(offset, &mut word);
        u32::from_le_bytes(word)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }
    fn read(&self, offset: usize, out: &mut [u8]) {
        for (cell, byte) in self.bytes[offset..offset + out.len()].iter().zip(out) {
            *byte = cell.get();
        }
    }
    fn write(&self, offset: usize, bytes: &[u8]) {
        for (cell, byte) in self.bytes[offset..offset + bytes.len()].iter().zip(bytes) {
            cell.set(*byte);
        }
    }
}

/// A ring region mapped into this world (with `memory_map`) and shared with a peer world.
///
/// Header words are accessed atomically, data bytes with volatile accesses: the peer may
/// write the region at any time, so the compiler must neither cache nor invent accesses.
#[derive(Debug)]
pub struct SharedRegion {
    base: NonNull<u8>,
    len: usize,
}

impl SharedRegion {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be 4-byte aligned and `base..base + len` mapped readable and writable for
    /// as long as the value lives (do not `memory_unmap` it meanwhile), and no Rust
    /// reference may point into it.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        assert!(
            (base.as_ptr() as usize).is_multiple_of(4),
            "ring region must be 4-byte aligned"
        );
        Self { base, len }
    }

    fn at(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "ring access out of bounds"
        );
        // `offset + len <= self.len`, so the result stays inside the region.
        self.base.as_ptr().wrapping_add(offset)
    }
}

impl RingMemory for SharedRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn load_u32(&self, offset: usize) -> u32 {
        let ptr = self.at(offset, 4).cast::<u32>();
        assert!((ptr as usize).is_multiple_of(4), "unaligned header word");
        // SAFETY: in bounds (checked by `at`), aligned (checked above), mapped for the
        // region's lifetime (constructor contract); all accesses to header words, ours and
        // the peer's, are atomic.
        unsafe { AtomicU32::from_ptr(ptr) }.load(Ordering::Acquire)
    }

    fn store_u32(&self, offset: usize, value: u32) {
        let ptr = self.at(offset, 4).cast::<u32>();
        assert!((ptr as usize).is_multiple_of(4), "unaligned header word");
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(ptr) }.store(value, Ordering::Release);
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        let ptr = self.at(offset, out.len());
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: `ptr + i` is inside the region (`at` checked `offset + out.len()`),
            // which is mapped readable (constructor contract); volatile because the peer
            // may write it concurrently.
            *byte = unsafe { ptr.add(i).read_volatile() };
        }
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        let ptr = self.at(offset, bytes.len());
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: as in `read`, and the region is mapped writable.
            unsafe { ptr.add(i).write_volatile(*byte) };
        }
    }
}

/// Positions, capacity and the checks both ends share.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    capacity: u32,
}

impl Geometry {
    fn of(region_len: usize) -> Result<Self, RingError> {
        let capacity = region_len
            .checked_sub(DATA_OFFSET)
            .ok_or(RingError::RegionTooSmall)?
            .min(MAX_CAPACITY);
        if capacity < MIN_CAPACITY {
            return Err(RingError::RegionTooSmall);
        }
        Ok(Self {
            capacity: capacity as u32,
        })
    }

    /// A position read from the peer, checked.
    fn check(&self, position: u32) -> Result<u32, RingError> {
        if position < 2 * self.capacity {
            Ok(position)
        } else {
            Err(RingError::Corrupt)
        }
    }

    /// Bytes between `tail` and `head` (both checked positions); `Corrupt` if above capacity.
    fn used(&self, head: u32, tail: u32) -> Result<u32, RingError> {
        let used = if head >= tail {
            head - tail
        } else {
            head + 2 * self.capacity - tail
        };
        if used <= self.capacity {
            Ok(used)
        } else {
            Err(RingError::Corrupt)
        }
    }

    fn advance(&self, position: u32, by: u32) -> u32 {
        // position < 2c and by <= c, so the sum stays below 3c <= 3 << 30 < u32::MAX.
        let next = position + by;
        if next >= 2 * self.capacity {
            next - 2 * self.capacity
        } else {
            next
        }
    }

    fn index(&self, position: u32) -> usize {
        (if position >= self.capacity {
            position - self.capacity
        } else {
            position
        }) as usize
    }

    /// Copies `out.len()` (<= capacity) bytes starting at `position`, wrapping.
    fn read(&self, memory: &impl RingMemory, position: u32, out: &mut [u8]) {
        let start = self.index(position);
        let first = out.len().min(self.capacity as usize - start);
        let (a, b) = out.split_at_mut(first);
        memory.read(DATA_OFFSET + start, a);
        memory.read(DATA_OFFSET, b);
    }

    /// Copies `bytes` (<= capacity) to `position`, wrapping.
    fn write(&self, memory: &impl RingMemory, position: u32, bytes: &[u8]) {
        let start = self.index(position);
        let first = bytes.len().min(self.capacity as usize - start);
        let (a, b) = bytes.split_at(first);
        memory.write(DATA_OFFSET + start, a);
        memory.write(DATA_OFFSET, b);
    }
}

/// Sets both positions to zero: call once, before either side attaches (memory from the
/// kernel starts zeroed, so this is only needed to reuse a region).
pub fn reset(memory: &impl RingMemory) -> Result<(), RingError> {
    Geometry::of(memory.len())?;
    memory.store_u32(HEAD_OFFSET, 0);
    memory.store_u32(TAIL_OFFSET, 0);
    Ok(())
}

/// The pushing end.
#[derive(Debug)]
pub struct Producer<M: RingMemory> {
    memory: M,
    geometry: Geometry,
    head: u32,
}

impl<M: RingMemory> Producer<M> {
    /// Attaches to a ring region (reads the current head once, then keeps its own copy).
    pub fn attach(memory: M) -> Result<Self, RingError> {
        let geometry = Geometry::of(memory.len())?;
        let head = geometry.check(memory.load_u32(HEAD_OFFSET))?;
        Ok(Self {
            memory,
            geometry,
            head,
        })
    }

    /// Data capacity in bytes (each record takes 4 more than its length).
    pub fn capacity(&self) -> usize {
        self.geometry.capacity as usize
    }

    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) -> Result<(), RingError> {
        let g = self.geometry;
        let needed = record
            .len()
            .checked_add(LENGTH_PREFIX)
            .filter(|n| *n <= g.capacity as usize)
            .ok_or(RingError::TooLarge)?;
        let tail = g.check(self.memory.load_u32(TAIL_OFFSET))?;
        let used = g.used(self.head, tail)?;
        if needed > (g.capacity - used) as usize {
            return Err(RingError::Full);
        }
        // Both fit in u32: needed <= capacity <= MAX_CAPACITY.
        g.write(
            &self.memory,
            self.head,
            &(record.len() as u32).to_le_bytes(),
        );
        g.write(
            &self.memory,
            g.advance(self.head, LENGTH_PREFIX as u32),
            record,
        );
        self.head = g.advance(self.head, needed as u32);
        self.memory.store_u32(HEAD_OFFSET, self.head);
        Ok(())
    }

    /// Free bytes now (a record needs its length plus 4).
    pub fn free(&self) -> Result<usize, RingError> {
        let g = self.geometry;
        let tail = g.check(self.memory.load_u32(TAIL_OFFSET))?;
        Ok((g.capacity - g.used(self.head, tail)?) as usize)
    }
}

/// The popping end.
#[derive(Debug)]
pub struct Consumer<M: RingMemory> {
    memory: M,
    geometry: Geometry,
    tail: u32,
}

impl<M: RingMemory> Consumer<M> {
    /// Attaches to a ring region (reads the current tail once, then keeps its own copy).
    pub fn attach(memory: M) -> Result<Self, RingError> {
        let geometry = Geometry::of(memory.len())?;
        let tail = geometry.check(memory.load_u32(TAIL_OFFSET))?;
        Ok(Self {
            memory,
            geometry,
            tail,
        })
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.geometry.capacity as usize
    }

    /// The length of the next record, if there is one.
    pub fn peek_len(&self) -> Result<Option<usize>, RingError> {
        let g = self.geometry;
        let head = g.check(self.memory.load_u32(HEAD_OFFSET))?;
        let used = g.used(head, self.tail)?;
        if used == 0 {
            return Ok(None);
        }
        if (used as usize) < LENGTH_PREFIX {
            return Err(RingError::Corrupt);
        }
        let mut prefix = [0u8; LENGTH_PREFIX];
        g.read(&self.memory, self.tail, &mut prefix);
        let len = u32::from_le_bytes(prefix);
        if len > used - LENGTH_PREFIX as u32 {
            return Err(RingError::Corrupt);
        }
        Ok(Some(len as usize))
    }

    /// Drops the next record without reading it (e.g. one too long for any buffer);
    /// returns its length, or `None` if the ring is empty.
    pub fn discard(&mut self) -> Result<Option<usize>, RingError> {
        let Some(len) = self.peek_len()? else {
            return Ok(None);
        };
        let g = self.geometry;
        self.tail = g.advance(self.tail, (len + LENGTH_PREFIX) as u32);
        self.memory.store_u32(TAIL_OFFSET, self.tail);
        Ok(Some(len))
    }

    /// Takes the next record into `out`; returns its length, or `None` if the ring is empty.
    pub fn pop(&mut self, out: &mut [u8]) -> Result<Option<usize>, RingError> {
        let Some(len) = self.peek_len()? else {
            return Ok(None);
        };
        let dest = out
            .get_mut(..len)
            .ok_or(RingError::BufferTooSmall { needed: len })?;
        let g = self.geometry;
        g.read(
            &self.memory,
            g.advance(self.tail, LENGTH_PREFIX as u32),
            dest,
        );
        // len + 4 <= used <= capacity (checked by peek_len).
        self.tail = g.advance(self.tail, (len + LENGTH_PREFIX) as u32);
        self.memory.store_u32(TAIL_OFFSET, self.tail);
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests;
