//! The faulter test world: it logs `faulter: about to fault`, then writes to
//! [`FAULT_ADDRESS`], which no world ever has mapped. The kernel must report the page fault
//! (with this address as CR2), stop this world, and keep every other world running.
#![no_std]
#![forbid(unsafe_code)]

/// The address the faulter writes to: canonical, in user space, below the program base
/// and above nothing the kernel maps (worlds are linked at `PROGRAM_BASE` = 0x400000).
pub const FAULT_ADDRESS: u64 = 0x0000_0000_0000_1000;

/// The value it tries to write (recognisable in a register dump).
pub const FAULT_VALUE: u64 = 0xfa17_fa17_fa17_fa17;

const _: () = assert!(FAULT_ADDRESS < esker_rt::abi::layout::PROGRAM_BASE);
