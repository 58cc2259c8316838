//! The world's defmt logger.
//!
//! defmt (raw encoding) hands the logger one frame in pieces between `acquire` and
//! `release`; the logger collects them in a [`FrameBuffer`] and sends the whole frame with
//! one `log` system call, through the `log` capability named in the start info. The kernel
//! wraps it in a packet tagged with this world's source id, and the host decodes it with
//! `worlds/<name>.elf`. A frame longer than a packet can carry is not cut (a cut frame
//! decodes to nonsense): a short text line saying so is sent instead.
//!
//! A world has one thread and no interrupts, so the logger is only re-entered by a panic
//! raised while a frame is being built (a `Format` impl that panics); the panic's own frame
//! then replaces the unfinished one. Before the start info is read, and in a world without
//! a `log` capability, frames are dropped.

use core::fmt::Write;

/// Largest frame one log packet carries (`esker_kernel_core::logframe::MAX_PAYLOAD`).
pub const MAX_FRAME: usize = 1020;

/// One frame being collected.
#[derive(Debug)]
pub struct FrameBuffer {
    bytes: [u8; MAX_FRAME],
    len: usize,
    /// Total length pushed, including what did not fit.
    total: usize,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_FRAME],
            len: 0,
            total: 0,
        }
    }

    /// Starts a new frame.
    pub fn clear(&mut self) {
        self.len = 0;
        self.total = 0;
    }

    /// Appends bytes (what does not fit is counted, not stored).
    pub fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len());
        if self.total <= MAX_FRAME {
            self.bytes[self.len..self.total].copy_from_slice(bytes);
            self.len = self.total;
        }
    }

    /// The complete frame, or `Err(total length)` if it did not fit.
    pub fn frame(&self) -> Result<&[u8], usize> {
        if self.total <= MAX_FRAME {
            Ok(&self.bytes[..self.len])
        } else {
            Err(self.total)
        }
    }
}

/// The text sent in place of a frame that was too long.
pub fn overflow_notice(total: usize, out: &mut heapless::String<80>) {
    out.clear();
    let _ = write!(
        out,
        "log frame of {total} bytes dropped (limit {MAX_FRAME})"
    );
}

#[cfg(target_os = "none")]
pub use target::{set_log_slot, write_text};

#[cfg(target_os = "none")]
mod target {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicU32, Ordering};

    use esker_abi::CapSlot;

    use super::{FrameBuffer, overflow_notice};
    use crate::sys;

    /// No log capability (yet).
    const NO_SLOT: u32 = u32::MAX;

    static LOG_SLOT: AtomicU32 = AtomicU32::new(NO_SLOT);

    struct State {
        frame: FrameBuffer,
        encoder: defmt::Encoder,
    }

    struct StateCell(UnsafeCell<State>);

    // SAFETY: the state is only touched by the logger methods below, by the thread that
    // holds `OWNER` (taken in `acquire`, given back in `release`), one at a time.
    unsafe impl Sync for StateCell {}

    /// The thread (index + 1) building a frame; 0: none.
    static OWNER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    /// Takes the logger for this thread, waiting (yielding) while another thread of the
    /// world builds a frame. A nested `acquire` by the owner (a panic inside a frame)
    /// simply keeps it.
    fn take_owner() {
        let me = crate::thread::index() + 1;
        loop {
            match OWNER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return,
                Err(owner) if owner == me => return,
                Err(_) => {
                    let _ = sys::yield_now();
                }
            }
        }
    }

    static STATE: StateCell = StateCell(UnsafeCell::new(State {
        frame: FrameBuffer::new(),
        encoder: defmt::Encoder::new(),
    }));

    fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
        // SAFETY: only called by the logger methods, by the thread holding `OWNER`, and
        // no method keeps the reference beyond this call, so it is the only one alive.
        f(unsafe { &mut *STATE.0.get() })
    }

    /// Sets the slot of the world's `log` capability (done once by the entry point).
    pub fn set_log_slot(slot: Option<CapSlot>) {
        LOG_SLOT.store(slot.unwrap_or(NO_SLOT), Ordering::Release);
    }

    fn log_slot() -> Option<CapSlot> {
        Some(LOG_SLOT.load(Ordering::Acquire)).filter(|s| *s != NO_SLOT)
    }

    /// Sends a line of plain text (for when defmt cannot be used).
    pub fn write_text(text: &str) {
        if let Some(slot) = log_slot() {
            let _ = sys::log_text(slot, text);
        }
    }

    #[defmt::global_logger]
    struct WorldLogger;

    // SAFETY: frames never interleave: `acquire` takes the logger for the calling thread
    // (other threads wait) and starts a fresh frame, `release` sends it and gives the
    // logger back; a nested `acquire` (only from a panic inside a frame) restarts the
    // frame, and the interrupted frame is never resumed.
    unsafe impl defmt::Logger for WorldLogger {
        fn acquire() {
            take_owner();
            with_state(|state| {
                state.frame.clear();
                let State { frame, encoder } = state;
                encoder.start_frame(|bytes| frame.push(bytes));
            });
        }

        unsafe fn flush() {}

        unsafe fn release() {
            with_state(|state| {
                let State { frame, encoder } = state;
                encoder.end_frame(|bytes| frame.push(bytes));
                let Some(slot) = log_slot() else { return };
                match frame.frame() {
                    Ok(bytes) => {
                        let _ = sys::log(slot, bytes);
                    }
                    Err(total) => {
                        let mut notice = heapless::String::new();
                        overflow_notice(total, &mut notice);
                        let _ = sys::log_text(slot, &notice);
                    }
                }
            });
            OWNER.store(0, Ordering::Release);
        }

        unsafe fn write(bytes: &[u8]) {
            with_state(|state| {
                let State { frame, encoder } = state;
                encoder.write(bytes, |out| frame.push(out));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_collected_whole_or_reported_as_too_long() {
        let mut frame = FrameBuffer::new();
        frame.push(&[1, 2]);
        frame.push(&[3]);
        assert_eq!(frame.frame(), Ok(&[1u8, 2, 3][..]));
        frame.push(&[0; MAX_FRAME - 3]);
        assert_eq!(frame.frame().map(<[u8]>::len), Ok(MAX_FRAME));
        frame.push(&[9]);
        assert_eq!(frame.frame(), Err(MAX_FRAME + 1));
        frame.push(&[9; 10]);
        assert_eq!(
            frame.frame(),
            Err(MAX_FRAME + 11),
            "later pieces are counted too"
        );
        frame.clear();
        assert_eq!(frame.frame(), Ok(&[][..]));
        let mut notice = heapless::String::new();
        overflow_notice(2048, &mut notice);
        assert_eq!(
            notice.as_str(),
            "log frame of 2048 bytes dropped (limit 1020)"
        );
    }
}
