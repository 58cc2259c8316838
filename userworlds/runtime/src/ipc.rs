//! Access to this world's IPC buffer, and the channel transport over the kernel.
//!
//! The kernel reads and writes the buffer (at `esker_abi::layout::IPC_BUFFER`) during IPC
//! system calls. Rust code may only touch its data inside [`with_data`], which lends out a
//! `&mut` for the duration of a closure and marks the buffer borrowed; an IPC system call
//! made while it is borrowed panics (see `sys`), so the kernel never writes behind a live
//! reference. Nothing here keeps a reference across a system call.

use esker_abi::Syscall;

/// Whether a reference into the IPC buffer is alive: one flag per thread of the world (each
/// has its own buffer); host unit tests run in parallel threads and get one flag each.
mod flag {
    #[cfg(not(test))]
    static BORROWED: [core::sync::atomic::AtomicBool; esker_abi::layout::MAX_THREADS] =
        [const { core::sync::atomic::AtomicBool::new(false) }; esker_abi::layout::MAX_THREADS];

    #[cfg(not(test))]
    pub fn swap(value: bool) -> bool {
        let index = crate::thread::index() % esker_abi::layout::MAX_THREADS;
        BORROWED[index].swap(value, core::sync::atomic::Ordering::AcqRel)
    }

    #[cfg(test)]
    std::thread_local! {
        static BORROWED: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    #[cfg(test)]
    pub fn swap(value: bool) -> bool {
        BORROWED.with(|b| b.replace(value))
    }

    pub fn get() -> bool {
        let value = swap(true);
        swap(value);
        value
    }
}

/// Panics if the IPC buffer is lent out: `call` is about to let the kernel use it.
pub(crate) fn assert_not_borrowed(call: Syscall) {
    if flag::get() {
        panic!(
            "system call {:?} made while the IPC buffer is borrowed",
            call
        );
    }
}

/// Marks the buffer borrowed for its lifetime (only the target has a buffer to lend).
#[cfg_attr(not(any(target_os = "none", test)), allow(dead_code))]
struct Borrow;

#[cfg_attr(not(any(target_os = "none", test)), allow(dead_code))]
impl Borrow {
    fn take() -> Self {
        if flag::swap(true) {
            panic!("the IPC buffer is already borrowed");
        }
        Borrow
    }
}

impl Drop for Borrow {
    fn drop(&mut self) {
        flag::swap(false);
    }
}

#[cfg(target_os = "none")]
pub use target::*;

#[cfg(target_os = "none")]
mod target {
    use esker_abi::{
        CapSlot, Error, IPC_DATA_OFFSET, IpcBuffer, MAX_MESSAGE_BYTES, MAX_MESSAGE_CAPS,
        MessageInfo,
    };

    use super::Borrow;
    use crate::channel::{Incoming, Transport};
    use crate::sys::{self, Message, Received};

    /// This thread's IPC buffer (the first thread's is at `layout::IPC_BUFFER`).
    fn buffer() -> *mut IpcBuffer {
        crate::thread::ipc_buffer() as *mut IpcBuffer
    }

    /// Runs `f` on the IPC buffer's data.
    pub fn with_data<R>(f: impl FnOnce(&mut [u8; MAX_MESSAGE_BYTES]) -> R) -> R {
        let _borrow = Borrow::take();
        // SAFETY: the kernel maps each thread's IPC buffer read-write before the thread
        // starts, at the address its header records (esker_abi::layout); `data` lies inside it
        // (IPC_DATA_OFFSET + MAX_MESSAGE_BYTES <= IPC_BUFFER_SIZE, asserted in esker-abi).
        // `Borrow` guarantees this is the only reference, and no system call runs while it
        // lives (sys checks), so nothing else reads or writes the bytes meanwhile.
        let data = unsafe {
            &mut *(buffer()
                .cast::<u8>()
                .add(IPC_DATA_OFFSET)
                .cast::<[u8; MAX_MESSAGE_BYTES]>())
        };
        f(data)
    }

    /// The slots of the capabilities the last received message carried.
    fn received_caps() -> heapless::Vec<CapSlot, MAX_MESSAGE_CAPS> {
        let _borrow = Borrow::take();
        // SAFETY: as in `with_data`: the buffer is mapped, nothing else references it,
        // and the reads are plain `u32` loads of fields inside it.
        let (count, slots) = unsafe {
            let buffer = buffer();
            ((*buffer).received_count, (*buffer).received_caps)
        };
        slots.iter().copied().take(count as usize).collect()
    }

    /// The channel transport over the kernel's IPC system calls.
    ///
    /// Typed channels carry no capabilities: any capability that arrives with a message is
    /// deleted at once, so a hostile peer cannot fill this world's capability table.
    #[derive(Debug, Default)]
    pub struct KernelTransport {
        _private: (),
    }

    impl KernelTransport {
        /// A transport over this world's IPC buffer.
        pub const fn new() -> Self {
            Self { _private: () }
        }

        fn incoming(received: Received) -> Incoming {
            if received.info.caps() > 0 {
                for slot in received_caps() {
                    let _ = sys::cap_delete(slot);
                }
            }
            Incoming {
                info: received.info,
                badge: received.badge,
            }
        }
    }

    impl Transport for KernelTransport {
        fn with_data<R>(&mut self, f: impl FnOnce(&mut [u8; MAX_MESSAGE_BYTES]) -> R) -> R {
            with_data(f)
        }

        fn call(&mut self, endpoint: CapSlot, info: MessageInfo) -> Result<Incoming, Error> {
            sys::call(endpoint, Message::new(info)).map(Self::incoming)
        }

        fn recv(&mut self, endpoint: CapSlot) -> Result<Incoming, Error> {
            sys::recv(endpoint).map(Self::incoming)
        }

        fn reply_recv(&mut self, endpoint: CapSlot, reply: MessageInfo) -> Result<Incoming, Error> {
            sys::reply_recv(endpoint, Message::new(reply)).map(Self::incoming)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrow_marks_and_releases_the_buffer() {
        {
            let _borrow = Borrow::take();
            assert!(flag::get());
            let nested = std::panic::catch_unwind(Borrow::take);
            assert!(nested.is_err(), "a second borrow must panic");
            let syscall = std::panic::catch_unwind(|| assert_not_borrowed(Syscall::Call));
            assert!(
                syscall.is_err(),
                "an IPC system call during a borrow must panic"
            );
        }
        assert!(!flag::get());
        assert_not_borrowed(Syscall::Recv);
    }
}
