//! Decoding the instruction behind an MMIO exit, and the lengths of fixed-form exits.
//!
//! A nested page fault on an MMIO page tells the monitor where the guest accessed, not
//! what it did. [`decode`] decodes the instruction (with `iced-x86`) and describes the
//! access as an [`MmioAccess`]: a read into a register, or a write of a value. The forms
//! compilers and Linux's `readl`/`writel` emit are supported:
//!
//! | Opcode | Form |
//! |--------|------|
//! | 88, 89 | `mov r/m8/16/32/64, reg` (66h, REX.W, AH–BH without REX) |
//! | 8A, 8B | `mov reg, r/m8/16/32/64` |
//! | C6, C7 | `mov r/m, imm` (imm32 sign-extended for a 64-bit store) |
//! | 0F B6/B7 | `movzx reg, r/m8/16` |
//! | 0F BE/BF | `movsx reg, r/m8/16` |
//! | REX.W 63 | `movsxd r64, r/m32` |
//! | A0–A3 | `mov al/ax/eax/rax, moffs` and back |
//!
//! Everything else — read-modify-write instructions (LOCK-prefixed or not), string
//! instructions, SSE/AVX moves, a form whose operand is a register — is refused with the
//! instruction's mnemonic ([`MmioError::Unsupported`], [`MmioError::NoMemoryOperand`]).
//! [`complete_read`] then writes a read's value into its destination with x86 semantics.
//!
//! [`instruction_length`] decodes just the length, for exits whose instruction is known
//! (CPUID, RDMSR, HLT, VMMCALL …) but may carry prefixes.

use super::fetch::FetchError;
use super::walk::WalkError;
use core::fmt;
use esker_kernel_core::virt::vcpu::{GuestRegisters, Segment};
use iced_x86::{
    Code, Decoder, DecoderError, DecoderOptions, Instruction, Mnemonic, OpKind, Register,
};

/// Why bytes do not decode to an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bitness is not 16, 32 or 64.
    BadBitness {
        /// The bitness given.
        bitness: u32,
    },
    /// The bytes end before the instruction does.
    Truncated {
        /// How many bytes there were.
        available: u8,
    },
    /// Not a valid instruction (an undefined opcode, a bad prefix such as LOCK on a MOV,
    /// or longer than 15 bytes).
    Invalid,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadBitness { bitness } => write!(f, "cannot decode {bitness}-bit code"),
            Self::Truncated { available } => write!(
                f,
                "the guest instruction continues past the {available} bytes that could be read"
            ),
            Self::Invalid => f.write_str("the guest instruction bytes do not decode"),
        }
    }
}

/// Which part of a general-purpose register an instruction writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterPart {
    /// Bits 0–7 (AL … R15L); the rest is kept.
    Low8,
    /// Bits 8–15 (AH, CH, DH, BH: legacy encodings without REX); the rest is kept.
    High8,
    /// Bits 0–15; the rest is kept.
    Low16,
    /// Bits 0–31; bits 32–63 are zeroed.
    Low32,
    /// All 64 bits.
    Full,
}

impl RegisterPart {
    /// `full` as this part reads it.
    pub const fn read(self, full: u64) -> u64 {
        match self {
            Self::Low8 => full & 0xff,
            Self::High8 => (full >> 8) & 0xff,
            Self::Low16 => full & 0xffff,
            Self::Low32 => full & 0xffff_ffff,
            Self::Full => full,
        }
    }

    /// `full` after writing `value` to this part.
    pub const fn write(self, full: u64, value: u64) -> u64 {
        match self {
            Self::Low8 => (full & !0xff) | (value & 0xff),
            Self::High8 => (full & !0xff00) | ((value & 0xff) << 8),
            Self::Low16 => (full & !0xffff) | (value & 0xffff),
            Self::Low32 => value & 0xffff_ffff,
            Self::Full => value,
        }
    }
}

/// How a value read from memory widens to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// With zeros (MOV, MOVZX).
    Zero,
    /// With copies of its top bit (MOVSX, MOVSXD).
    Sign,
}

/// Where a read's value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The register number (0 = RAX … 15 = R15).
    pub register: u8,
    /// Which part of it.
    pub part: RegisterPart,
    /// How the value read widens.
    pub extension: Extension,
}

/// What an MMIO instruction does with the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioAccess {
    /// Reads `size` bytes into a register.
    Read {
        /// 1, 2, 4 or 8.
        size: u8,
        /// Where the value goes ([`complete_read`]).
        destination: Destination,
    },
    /// Writes `size` bytes.
    Write {
        /// 1, 2, 4 or 8.
        size: u8,
        /// The value, in the low `size` bytes.
        value: u64,
    },
}

impl MmioAccess {
    /// Bytes accessed.
    pub const fn size(&self) -> u8 {
        match *self {
            Self::Read { size, .. } | Self::Write { size, .. } => size,
        }
    }

    /// Whether it writes to the device.
    pub const fn is_write(&self) -> bool {
        matches!(self, Self::Write { .. })
    }
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What it does.
    pub access: MmioAccess,
    /// Its length in bytes (1–15).
    pub length: u8,
    /// The linear address of its memory operand, computed from the guest's registers.
    pub linear: u64,
}

/// Why an MMIO access cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The instruction bytes could not be read.
    Fetch(FetchError),
    /// They do not decode.
    Decode(DecodeError),
    /// An instruction the monitor does not emulate.
    Unsupported {
        /// Its mnemonic.
        mnemonic: Mnemonic,
    },
    /// A supported instruction whose operand is a register, not memory: it cannot have
    /// caused the exit (the bytes changed under the monitor).
    NoMemoryOperand {
        /// Its mnemonic.
        mnemonic: Mnemonic,
    },
    /// The memory operand's linear address does not translate.
    OperandWalk(WalkError),
    /// The memory operand is not at the faulting guest-physical address.
    AddressMismatch {
        /// The faulting address.
        gpa: u64,
        /// The operand's linear address.
        linear: u64,
        /// What that translates to.
        operand_gpa: u64,
    },
    /// The access crosses a page boundary (part of it may be RAM).
    CrossesPage {
        /// The operand's linear address.
        linear: u64,
        /// Bytes accessed.
        size: u8,
    },
}

impl From<FetchError> for MmioError {
    fn from(error: FetchError) -> Self {
        Self::Fetch(error)
    }
}

impl From<DecodeError> for MmioError {
    fn from(error: DecodeError) -> Self {
        Self::Decode(error)
    }
}

/// Writes a mnemonic's Debug name ("Movsb") in lower case ("movsb").
struct Lowercase(Mnemonic);

impl fmt::Display for Lowercase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Lower<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Lower<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                s.chars()
                    .try_for_each(|c| fmt::Write::write_char(self.0, c.to_ascii_lowercase()))
            }
        }
        fmt::Write::write_fmt(&mut Lower(f), format_args!("{:?}", self.0))
    }
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fetch(error) => write!(f, "{error}"),
            Self::Decode(error) => write!(f, "{error}"),
            Self::Unsupported { mnemonic } => write!(
                f,
                "the guest accessed MMIO with `{}`, which is not emulated",
                Lowercase(mnemonic)
            ),
            Self::NoMemoryOperand { mnemonic } => write!(
                f,
                "the guest instruction `{}` at RIP has no memory operand: it cannot have made \
                 the MMIO access",
                Lowercase(mnemonic)
            ),
            Self::OperandWalk(error) => write!(f, "the MMIO operand's address: {error}"),
            Self::AddressMismatch {
                gpa,
                linear,
                operand_gpa,
            } => write!(
                f,
                "the guest instruction's operand at {linear:#x} is at gpa {operand_gpa:#x}, \
                 not at the faulting gpa {gpa:#x}"
            ),
            Self::CrossesPage { linear, size } => write!(
                f,
                "the guest's {size}-byte MMIO access at {linear:#x} crosses a page boundary"
            ),
        }
    }
}

/// Decodes one instruction of `bitness` (16, 32 or 64) at the start of `bytes`, as if at
/// `ip` (which RIP-relative operands are relative to).
fn decode_one(bytes: &[u8], bitness: u32, ip: u64) -> Result<Instruction, DecodeError> {
    if !matches!(bitness, 16 | 32 | 64) {
        return Err(DecodeError::BadBitness { bitness });
    }
    let mut decoder = Decoder::try_with_ip(bitness, bytes, ip, DecoderOptions::NONE)
        .map_err(|_| DecodeError::BadBitness { bitness })?;
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return Err(match decoder.last_error() {
            DecoderError::NoMoreBytes => DecodeError::Truncated {
                available: bytes.len().min(u8::MAX.into()) as u8,
            },
            _ => DecodeError::Invalid,
        });
    }
    Ok(instruction)
}

/// The length of the instruction at the start of `bytes` in `bitness`-bit code, with its
/// prefixes (`66 0f a2` is a 3-byte CPUID).
pub fn instruction_length(bytes: &[u8], bitness: u32) -> Result<u8, DecodeError> {
    decode_one(bytes, bitness, 0).map(|instruction| instruction.len() as u8)
}

/// A general-purpose register operand: its number and the part the operand names.
fn gpr(register: Register) -> Option<(u8, RegisterPart)> {
    let value = register as u32;
    let offset = |first: Register, count: u32| {
        value
            .checked_sub(first as u32)
            .filter(|&offset| offset < count)
    };
    if let Some(n) = offset(Register::RAX, 16) {
        return Some((n as u8, RegisterPart::Full));
    }
    if let Some(n) = offset(Register::EAX, 16) {
        return Some((n as u8, RegisterPart::Low32));
    }
    if let Some(n) = offset(Register::AX, 16) {
        return Some((n as u8, RegisterPart::Low16));
    }
    // AL CL DL BL, AH CH DH BH, SPL BPL SIL DIL, R8L … R15L.
    match offset(Register::AL, 20)? {
        n @ 0..=3 => Some((n as u8, RegisterPart::Low8)),
        n @ 4..=7 => Some((n as u8 - 4, RegisterPart::High8)),
        n => Some((n as u8 - 4, RegisterPart::Low8)),
    }
}

/// The value of a general-purpose register operand.
fn read_gpr(registers: &GuestRegisters, register: Register) -> Option<u64> {
    let (number, part) = gpr(register)?;
    Some(part.read(registers.gpr.get(number)))
}

/// The segment register `register` names.
fn segment(registers: &GuestRegisters, register: Register) -> Option<&Segment> {
    match register {
        Register::ES => Some(&registers.es),
        Register::CS => Some(&registers.cs),
        Register::SS => Some(&registers.ss),
        Register::DS => Some(&registers.ds),
        Register::FS => Some(&registers.fs),
        Register::GS => Some(&registers.gs),
        _ => None,
    }
}

/// The mask for an address size of `bits`.
const fn address_mask(bits: u32) -> u64 {
    match bits {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The bits of a register as an address component (16, 32 or 64).
const fn part_bits(part: RegisterPart) -> u32 {
    match part {
        RegisterPart::Low8 | RegisterPart::High8 | RegisterPart::Low16 => 16,
        RegisterPart::Low32 => 32,
        RegisterPart::Full => 64,
    }
}

/// The linear address of `instruction`'s memory operand.
fn operand_linear(instruction: &Instruction, registers: &GuestRegisters, bitness: u32) -> u64 {
    let base = instruction.memory_base();
    let index = instruction.memory_index();
    let displacement = instruction.memory_displacement64();
    let offset = match base {
        // iced has already added the next instruction's address.
        Register::RIP => displacement,
        Register::EIP => displacement & 0xffff_ffff,
        _ => {
            // The address size is the width of the base or index register. With neither,
            // iced has already extended the displacement for the address size (zero- for
            // 16 and 32 bits, sign- for 64).
            let bits = [base, index]
                .into_iter()
                .find_map(gpr)
                .map_or(64, |(_, part)| part_bits(part));
            let base = read_gpr(registers, base).unwrap_or(0);
            let index = read_gpr(registers, index).unwrap_or(0);
            let scale = u64::from(instruction.memory_index_scale());
            base.wrapping_add(index.wrapping_mul(scale))
                .wrapping_add(displacement)
                & address_mask(bits)
        }
    };
    let segment_register = instruction.memory_segment();
    if bitness == 64 {
        // Only FS and GS have a base in 64-bit mode.
        match segment_register {
            Register::FS | Register::GS => segment(registers, segment_register)
                .map_or(offset, |segment| segment.base.wrapping_add(offset)),
            _ => offset,
        }
    } else {
        let base = segment(registers, segment_register).map_or(0, |segment| segment.base);
        base.wrapping_add(offset) & 0xffff_ffff
    }
}

/// The shape of a supported instruction.
enum Form {
    /// Register ← memory.
    Load(Extension),
    /// Memory ← register (operand 1).
    Store,
    /// Memory ← immediate (operand 1).
    StoreImmediate(u64),
}

/// Decodes the instruction at the start of `bytes` (fetched at the guest's RIP, in
/// `bitness`-bit code) as an MMIO access, with the guest's `registers` supplying a
/// write's value and the operand's address.
pub fn decode(
    bytes: &[u8],
    bitness: u32,
    registers: &GuestRegisters,
) -> Result<Decoded, MmioError> {
    let instruction = decode_one(bytes, bitness, registers.rip)?;
    let mnemonic = instruction.mnemonic();
    let unsupported = MmioError::Unsupported { mnemonic };
    if instruction.has_lock_prefix() {
        return Err(unsupported);
    }
    let (form, size) = match instruction.code() {
        Code::Mov_rm8_r8 | Code::Mov_moffs8_AL => (Form::Store, 1),
        Code::Mov_rm16_r16 | Code::Mov_moffs16_AX => (Form::Store, 2),
        Code::Mov_rm32_r32 | Code::Mov_moffs32_EAX => (Form::Store, 4),
        Code::Mov_rm64_r64 | Code::Mov_moffs64_RAX => (Form::Store, 8),
        Code::Mov_r8_rm8 | Code::Mov_AL_moffs8 => (Form::Load(Extension::Zero), 1),
        Code::Mov_r16_rm16 | Code::Mov_AX_moffs16 => (Form::Load(Extension::Zero), 2),
        Code::Mov_r32_rm32 | Code::Mov_EAX_moffs32 => (Form::Load(Extension::Zero), 4),
        Code::Mov_r64_rm64 | Code::Mov_RAX_moffs64 => (Form::Load(Extension::Zero), 8),
        Code::Mov_rm8_imm8 => (Form::StoreImmediate(u64::from(instruction.immediate8())), 1),
        Code::Mov_rm16_imm16 => (
            Form::StoreImmediate(u64::from(instruction.immediate16())),
            2,
        ),
        Code::Mov_rm32_imm32 => (
            Form::StoreImmediate(u64::from(instruction.immediate32())),
            4,
        ),
        Code::Mov_rm64_imm32 => (
            Form::StoreImmediate(instruction.immediate32to64() as u64),
            8,
        ),
        Code::Movzx_r16_rm8 | Code::Movzx_r32_rm8 | Code::Movzx_r64_rm8 => {
            (Form::Load(Extension::Zero), 1)
        }
        Code::Movzx_r16_rm16 | Code::Movzx_r32_rm16 | Code::Movzx_r64_rm16 => {
            (Form::Load(Extension::Zero), 2)
        }
        Code::Movsx_r16_rm8 | Code::Movsx_r32_rm8 | Code::Movsx_r64_rm8 => {
            (Form::Load(Extension::Sign), 1)
        }
        Code::Movsx_r16_rm16 | Code::Movsx_r32_rm16 | Code::Movsx_r64_rm16 => {
            (Form::Load(Extension::Sign), 2)
        }
        Code::Movsxd_r64_rm32 => (Form::Load(Extension::Sign), 4),
        _ => return Err(unsupported),
    };
    let (memory_operand, register_operand) = match form {
        Form::Load(_) => (1, 0),
        Form::Store | Form::StoreImmediate(_) => (0, 1),
    };
    if instruction.op_kind(memory_operand) != OpKind::Memory {
        return Err(MmioError::NoMemoryOperand { mnemonic });
    }
    let access = match form {
        Form::Load(extension) => {
            let (register, part) =
                gpr(instruction.op_register(register_operand)).ok_or(unsupported)?;
            MmioAccess::Read {
                size,
                destination: Destination {
                    register,
                    part,
                    extension,
                },
            }
        }
        Form::Store => MmioAccess::Write {
            size,
            value: read_gpr(registers, instruction.op_register(register_operand))
                .ok_or(unsupported)?,
        },
        Form::StoreImmediate(value) => MmioAccess::Write {
            size,
            value: value & size_mask(size),
        },
    };
    Ok(Decoded {
        access,
        length: instruction.len() as u8,
        linear: operand_linear(&instruction, registers, bitness),
    })
}

/// The mask for `size` bytes (1–8; anything else counts as 8).
const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Completes a read: writes `value` (the device's `size` bytes, in the low bytes) into the
/// destination as the instruction does — extended per [`Destination::extension`], then
/// written to its [`RegisterPart`] (an 8- or 16-bit write keeps the rest of the register,
/// a 32-bit one zero-extends to 64). A [`MmioAccess::Write`] changes nothing.
pub fn complete_read(registers: &mut GuestRegisters, access: MmioAccess, value: u64) {
    let MmioAccess::Read { size, destination } = access else {
        return;
    };
    let bits = match size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => 64,
    };
    let value = value & size_mask(size);
    let value = match destination.extension {
        Extension::Sign if bits < 64 => {
            let unused = 64 - bits;
            (((value << unused) as i64) >> unused) as u64
        }
        _ => value,
    };
    let number = destination.register;
    let old = registers.gpr.get(number);
    registers
        .gpr
        .set(number, destination.part.write(old, value));
}
