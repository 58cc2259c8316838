//! Reading and decoding the guest's own instructions.
//!
//! Under QEMU's emulated AMD SVM a VM exit carries neither the next RIP nor the
//! instruction bytes, so the monitor finds them itself:
//!
//! - [`walk`](mod@walk) translates guest linear addresses through the guest's page
//!   tables, in every paging mode but 5-level;
//! - [`fetch`](mod@fetch) reads up to 15 bytes at CS:RIP, page by page;
//! - [`mmio`] decodes an instruction that touched MMIO into an [`MmioAccess`] and gives
//!   the length of any instruction.
//!
//! [`decode_mmio`] and [`exit_instruction_length`] put these together for the exit
//! handlers. Guest memory and guest registers are hostile: every function here returns
//! an error rather than panicking, whatever they hold.

pub mod fetch;
pub mod mmio;
pub mod walk;

#[cfg(test)]
mod tests;

use crate::memory::GuestMemory;
use core::fmt;
use esker_kernel_core::virt::vcpu::GuestRegisters;

pub use fetch::{FetchError, Fetched, bitness, fetch};
pub use mmio::{
    DecodeError, Decoded, Destination, Extension, MmioAccess, MmioError, RegisterPart,
    complete_read, instruction_length,
};
pub use walk::{
    Access, AccessKind, PagingMode, Translation, WalkError, translate, translate_access,
};

/// Why the length of the instruction at RIP is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstructionError {
    /// Its bytes could not be read.
    Fetch(FetchError),
    /// They do not decode.
    Decode(DecodeError),
}

impl fmt::Display for InstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fetch(error) => write!(f, "{error}"),
            Self::Decode(error) => write!(f, "{error}"),
        }
    }
}

/// A decode error, or — when the decoder ran out of bytes because the fetch stopped
/// early — the reason the fetch stopped (an unmapped second page, say), which says more.
fn explain(error: DecodeError, fetched: &Fetched) -> Result<DecodeError, FetchError> {
    match (error, fetched.stopped) {
        (DecodeError::Truncated { .. }, Some(stop)) => Err(stop),
        _ => Ok(error),
    }
}

/// The length of the instruction at the guest's CS:RIP (for exits the hardware reports
/// without one: CPUID, RDMSR/WRMSR, HLT, VMMCALL …, which may carry prefixes).
pub fn exit_instruction_length<M: GuestMemory + ?Sized>(
    memory: &M,
    registers: &GuestRegisters,
) -> Result<u8, InstructionError> {
    let fetched = fetch(memory, registers).map_err(InstructionError::Fetch)?;
    if let Some(length) = unprefixed_exit_length(fetched.bytes()) {
        return Ok(length);
    }
    instruction_length(fetched.bytes(), fetched.bitness).map_err(|error| {
        match explain(error, &fetched) {
            Ok(error) => InstructionError::Decode(error),
            Err(stop) => InstructionError::Fetch(stop),
        }
    })
}

/// The length of the plain, unprefixed encodings of the instructions that exit most
/// (CPUID, RDMSR, WRMSR, HLT, VMMCALL, INVD, WBINVD), which need no decoder; `None` for
/// anything else (a prefix, another instruction), which the decoder measures.
fn unprefixed_exit_length(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [0xf4, ..] => Some(1),
        [0x0f, 0xa2 | 0x32 | 0x30 | 0x08 | 0x09, ..] => Some(2),
        [0x0f, 0x01, 0xd9, ..] => Some(3),
        _ => None,
    }
}

/// Fetches and decodes the instruction at the guest's CS:RIP, which made an access to
/// MMIO at `gpa` (a nested page fault), and returns the access and the instruction's
/// length.
///
/// The instruction's memory operand is translated through the guest's page tables and
/// must be exactly at `gpa`: if the bytes at RIP changed since the access (another vCPU
/// rewrote them or the mapping), the monitor refuses rather than emulate an access the
/// guest did not make. An access that crosses a page boundary is refused too. Whether the
/// fault was a read or a write is for the caller to compare with
/// [`MmioAccess::is_write`].
pub fn decode_mmio<M: GuestMemory + ?Sized>(
    memory: &M,
    registers: &GuestRegisters,
    gpa: u64,
) -> Result<(MmioAccess, u8), MmioError> {
    let fetched = fetch(memory, registers)?;
    let decoded =
        mmio::decode(fetched.bytes(), fetched.bitness, registers).map_err(|error| match error {
            MmioError::Decode(error) => match explain(error, &fetched) {
                Ok(error) => MmioError::Decode(error),
                Err(stop) => MmioError::Fetch(stop),
            },
            other => other,
        })?;
    let size = decoded.access.size();
    if (decoded.linear & 0xfff) + u64::from(size) > 0x1000 {
        return Err(MmioError::CrossesPage {
            linear: decoded.linear,
            size,
        });
    }
    let operand_gpa =
        translate(memory, registers, decoded.linear).map_err(MmioError::OperandWalk)?;
    if operand_gpa != gpa {
        return Err(MmioError::AddressMismatch {
            gpa,
            linear: decoded.linear,
            operand_gpa,
        });
    }
    Ok((decoded.access, decoded.length))
}
