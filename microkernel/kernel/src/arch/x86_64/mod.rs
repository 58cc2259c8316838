//! The x86-64 hardware layer: everything that needs asm, MSRs, port I/O or MMIO.
//!
//! Each module owns one piece of hardware and keeps its `unsafe` blocks small, each with
//! the invariant it relies on. Logic that can be written without hardware lives in
//! `esker-kernel-core` instead.

pub mod boot;
pub mod cpu;
pub mod gdt;
pub mod lapic;
pub mod pic;
pub mod power;
pub mod serial;
pub mod syscall;
pub mod time;
pub mod trap;
