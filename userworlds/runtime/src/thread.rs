//! Threads of a world. A world may have several threads of control sharing its address
//! space and capabilities (a VM's monitor runs one per vCPU); the kernel starts every
//! thread at the program's entry, and every thread runs the world's main function after
//! the first has set the runtime up. Each thread has its own stack and IPC buffer
//! (`esker_abi::layout::thread_ipc_buffer`), and runs with FS pointing at its buffer,
//! whose header records the thread's index and the buffer's address.

/// This thread's index in its world (0: the first, which sets the runtime up).
#[cfg(target_os = "none")]
pub fn index() -> usize {
    let index: u32;
    // SAFETY: the kernel points FS at this thread's IPC buffer before it first runs and
    // keeps it there; the buffer's header holds the index at IPC_THREAD_OFFSET (a plain
    // 32-bit load from mapped memory, no side effects).
    unsafe {
        core::arch::asm!(
            "mov {index:e}, dword ptr fs:[{offset}]",
            index = out(reg) index,
            offset = const esker_abi::IPC_THREAD_OFFSET,
            options(nostack, readonly, preserves_flags),
        );
    }
    index as usize
}

/// This thread's index (host builds have one thread: 0).
#[cfg(not(target_os = "none"))]
pub fn index() -> usize {
    0
}

/// The address of this thread's IPC buffer.
#[cfg(target_os = "none")]
pub fn ipc_buffer() -> usize {
    let address: u64;
    // SAFETY: as in `index`: FS is this thread's IPC buffer, whose header holds its own
    // address at IPC_ADDRESS_OFFSET.
    unsafe {
        core::arch::asm!(
            "mov {address}, qword ptr fs:[{offset}]",
            address = out(reg) address,
            offset = const esker_abi::IPC_ADDRESS_OFFSET,
            options(nostack, readonly, preserves_flags),
        );
    }
    address as usize
}
