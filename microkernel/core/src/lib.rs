//! Kernel logic that is not hardware.
//!
//! Everything here is plain, safe Rust over small traits so that it builds for the
//! bare-metal target *and* runs in host unit tests: the physical frame allocator, the
//! page-table builder (used for the kernel's own tables now and nested page tables later),
//! the parsers of what firmware and boot loaders hand us (PVH start info, Multiboot2 tags,
//! memory maps), and the framing of the shared serial log line.
//!
//! This crate must never touch hardware: no `unsafe`, no asm, no MMIO. The kernel crate
//! (`esker-kernel`) supplies the hardware side through the traits defined here.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod addr;
pub mod boot;
pub mod cap;
pub mod contract;
pub mod elf;
pub mod frame_alloc;
pub mod logframe;
pub mod manifest;
pub mod paging;
pub mod sched;
pub mod system;
pub mod virt;
