//! Fetching the guest instruction at CS:RIP out of guest RAM.
//!
//! QEMU's emulated SVM gives the monitor neither the next RIP nor the instruction bytes
//! (no decode assists), so the monitor reads them itself: it forms the linear address
//! (RIP in 64-bit mode; CS.base + EIP, wrapped at 4 GiB, otherwise), translates it through
//! the guest's page tables as an instruction fetch at the guest's CPL, and reads up to 15
//! bytes, translating each 4 KiB page on its own. When a later page cannot be read the
//! fetch is short and says why ([`Fetched::stopped`]); the decoder then decides whether it
//! had enough. Outside 64-bit mode the fetch also stops at the CS limit.

use super::walk::{Access, AccessKind, WalkError, translate_access};
use crate::memory::GuestMemory;
use core::fmt;
use esker_kernel_core::virt::vcpu::{GuestRegisters, MAX_INSTRUCTION_LENGTH};

/// The longest instruction, as a length.
const MAX_LENGTH: usize = MAX_INSTRUCTION_LENGTH as usize;

/// Why instruction bytes could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The address does not translate, or the page tables forbid the fetch.
    Walk(WalkError),
    /// The address translates to guest-physical memory that is not RAM.
    OutsideRam {
        /// The linear address.
        linear: u64,
        /// What it translated to.
        gpa: u64,
    },
    /// The instruction pointer is past the CS limit (outside 64-bit mode).
    SegmentLimit {
        /// EIP.
        eip: u32,
        /// CS's limit in bytes.
        limit: u32,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Walk(error) => write!(f, "cannot fetch the guest instruction: {error}"),
            Self::OutsideRam { linear, gpa } => write!(
                f,
                "guest instruction bytes at {linear:#x} (gpa {gpa:#x}) are outside guest RAM"
            ),
            Self::SegmentLimit { eip, limit } => write!(
                f,
                "guest instruction bytes at EIP {eip:#x} are beyond the CS limit {limit:#x}"
            ),
        }
    }
}

/// The bytes at the guest's instruction pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetched {
    bytes: [u8; MAX_LENGTH],
    len: u8,
    /// The linear address of the first byte.
    pub linear: u64,
    /// The code's bitness: 16, 32 or 64 ([`bitness`]).
    pub bitness: u32,
    /// Why fewer than 15 bytes were read, if they were.
    pub stopped: Option<FetchError>,
}

impl Fetched {
    /// The bytes read (1 to 15).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The bitness of the guest's code: 64 in 64-bit mode, else 32 if CS.D is set, else 16.
pub const fn bitness(registers: &GuestRegisters) -> u32 {
    if registers.in_64bit_mode() {
        64
    } else if registers.cs.attributes.default_big() {
        32
    } else {
        16
    }
}

/// Reads the instruction at CS:RIP: at least one byte, up to 15.
///
/// Fails only when not even the first byte can be read; a fetch cut short by an unmapped
/// page, the end of RAM or the CS limit returns the bytes before it and the reason in
/// [`Fetched::stopped`].
pub fn fetch<M: GuestMemory + ?Sized>(
    memory: &M,
    registers: &GuestRegisters,
) -> Result<Fetched, FetchError> {
    let long = registers.in_64bit_mode();
    let (linear, wanted, limit_stop) = if long {
        (registers.rip, MAX_LENGTH, None)
    } else {
        let eip = registers.rip as u32;
        let limit = registers.cs.limit;
        if eip > limit {
            return Err(FetchError::SegmentLimit { eip, limit });
        }
        // Bytes EIP..=limit are inside the segment (the sum cannot overflow a u64).
        let room = u64::from(limit - eip) + 1;
        let (wanted, stop) = if room < MAX_LENGTH as u64 {
            (room as usize, Some(FetchError::SegmentLimit { eip, limit }))
        } else {
            (MAX_LENGTH, None)
        };
        let linear = registers.cs.base.wrapping_add(u64::from(eip)) & 0xffff_ffff;
        (linear, wanted, stop)
    };

    let access = Access::at_cpl(AccessKind::Execute, registers);
    let mut fetched = Fetched {
        bytes: [0; MAX_LENGTH],
        len: 0,
        linear,
        bitness: bitness(registers),
        stopped: None,
    };
    let mut done = 0;
    while done < wanted {
        let address = linear.wrapping_add(done as u64);
        let address = if long { address } else { address & 0xffff_ffff };
        let page_left = 0x1000 - (address & 0xfff) as usize;
        let chunk = page_left.min(wanted - done);
        let stop = match translate_access(memory, registers, address, access) {
            Ok(gpa) => {
                // Read what RAM holds of the chunk; stop at its end.
                let in_ram = memory.size().saturating_sub(gpa).min(chunk as u64) as usize;
                let read = in_ram > 0
                    && memory
                        .read(gpa, &mut fetched.bytes[done..done + in_ram])
                        .is_ok();
                let got = if read { in_ram } else { 0 };
                done += got;
                (got < chunk).then(|| FetchError::OutsideRam {
                    linear: address.wrapping_add(got as u64),
                    gpa: gpa.wrapping_add(got as u64),
                })
            }
            Err(error) => Some(FetchError::Walk(error)),
        };
        if let Some(stop) = stop {
            if done == 0 {
                return Err(stop);
            }
            fetched.stopped = Some(stop);
            break;
        }
    }
    fetched.len = done as u8;
    if fetched.stopped.is_none() {
        fetched.stopped = limit_stop;
    }
    Ok(fetched)
}
