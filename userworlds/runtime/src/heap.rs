//! The world's heap: talc over an arena the world sizes with `entry!(…, heap = N)`.
//!
//! The arena is a zeroed static (in `.bss`, so it costs pages of the world's memory budget,
//! not file size). The entry point claims it before `main` runs; an allocation that does not
//! fit fails (`alloc` returns null and Rust's allocation-error path panics, which logs).

use core::cell::UnsafeCell;

use talc::source::Manual;

#[global_allocator]
static ALLOCATOR: talc::TalcLock<spin::Mutex<()>, Manual> = talc::TalcLock::new(Manual);

/// Memory for the heap, `N` bytes.
#[repr(C, align(4096))]
pub struct Arena<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
}

// SAFETY: the bytes are never accessed through the arena itself; `region` only hands out a
// raw pointer, once, to the allocator, which serialises every access with its lock.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// A zeroed arena.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            bytes: UnsafeCell::new([0; N]),
        }
    }

    /// Its address and size.
    pub fn region(&self) -> (*mut u8, usize) {
        (self.bytes.get().cast(), N)
    }
}

/// Gives the allocator its arena. Called once by the entry point.
///
/// # Safety
///
/// `base..base + size` must be writable memory used by nothing else for the rest of the
/// program, and this must be called at most once.
pub(crate) unsafe fn init(base: *mut u8, size: usize) {
    // SAFETY: the caller hands over exclusive, writable memory (see `# Safety`), and the
    // `Manual` source lets us claim it.
    let claimed = unsafe { ALLOCATOR.lock().claim(base, size) };
    if claimed.is_none() {
        defmt::warn!(
            "runtime: heap arena of {=usize} bytes is too small; no heap",
            size
        );
    }
}
