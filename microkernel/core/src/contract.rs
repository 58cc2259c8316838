//! What the kernel promises the outside world: exit codes, the boot-log lines that tools
//! and tests wait for, and the self-test switches of test builds.
//!
//! The kernel, `cargo xtask` and `qemu-tests` all use these constants, so a message
//! cannot drift on one side only.

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Codes the kernel writes to [`DEBUG_EXIT_PORT`] when it powers QEMU off.
///
/// QEMU exits with status `(code << 1) | 1`; see [`qemu_exit_status`].
pub mod exit_code {
    /// Orderly power-off (a test build that finished, or a requested shutdown).
    pub const SUCCESS: u32 = 0x10;
    /// A CPU exception in the kernel.
    pub const EXCEPTION: u32 = 0x11;
    /// A kernel panic.
    pub const PANIC: u32 = 0x12;
    /// The boot information was unusable (no memory map, bad magic).
    pub const BAD_BOOT: u32 = 0x13;
}

/// The exit status QEMU reports when the kernel writes `code` to the debug-exit port.
pub const fn qemu_exit_status(code: u32) -> i32 {
    ((code << 1) | 1) as i32
}

/// Logged once initialisation is complete.
pub const READY: &str = "kernel ready";

/// Kernel command-line key that selects a self-test in test builds
/// (`esker.selftest=<name>`); ignored, with a warning, by production builds.
pub const SELFTEST_KEY: &str = "esker.selftest";

/// The self-tests a test build understands.
pub mod selftest {
    /// Executes `ud2`: an invalid-opcode exception (#UD, vector 6).
    pub const INVALID_OPCODE: &str = "invalid-opcode";
    /// Reads an unmapped address (`SELFTEST_UNMAPPED_ADDRESS`): a page fault (#PF, 14).
    pub const UNMAPPED_READ: &str = "unmapped-read";
    /// Writes into the kernel's own code: must fault if W^X is in force.
    pub const WRITE_TEXT: &str = "write-text";
    /// Jumps into the kernel's writable data: must fault if NX is in force.
    pub const EXECUTE_DATA: &str = "execute-data";
    /// Powers off with [`super::exit_code::SUCCESS`] right after `kernel ready`.
    pub const POWER_OFF: &str = "power-off";
    /// Every name above.
    pub const ALL: [&str; 5] = [
        INVALID_OPCODE,
        UNMAPPED_READ,
        WRITE_TEXT,
        EXECUTE_DATA,
        POWER_OFF,
    ];
}

/// The address the `unmapped-read` self-test reads (canonical, never mapped).
pub const SELFTEST_UNMAPPED_ADDRESS: u64 = 0x0000_7fff_dead_b000;
