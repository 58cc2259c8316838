//! The backend-neutral vCPU interface: what a VM exit looks like to the per-VM monitor
//! (`vmx` world), and what the monitor answers.
//!
//! The kernel turns a hardware exit into an [`ExitMessage`] ([`svm::exit_message`] for
//! AMD's VMCB, [`vmx::exit_message`] for Intel's VMCS), sends it to the monitor as a
//! postcard-encoded IPC message, and applies the monitor's [`ExitReply`] before it resumes
//! the guest ([`svm::apply_reply`], [`vmx::apply_reply`]). Both types are serde types that
//! fit comfortably in one 4 KiB IPC message (under 500 bytes at worst). Exits the kernel
//! handles itself (host interrupts, pre-authorised nested page faults) resume with
//! [`svm::resume_unchanged`] / [`vmx::resume_unchanged`], which keep an interrupted
//! event alive.
//!
//! This module never decides anything for the guest: it does not emulate instructions,
//! pick CPUID values or choose which interrupt to deliver — it only carries facts and
//! applies what the monitor decided, refusing replies the hardware would refuse.

pub mod svm;
pub mod vmx;

#[cfg(test)]
mod tests;

pub use crate::virt::x86::{DescriptorTable, Segment, SegmentAttributes};
use crate::virt::x86::{cr0, cr4, efer, exception_has_error_code, rflags};
use core::fmt;
use serde::{Deserialize, Serialize};

/// The sixteen general-purpose registers in instruction-encoding order (RAX = 0 … R15 =
/// 15), `#[repr(C)]` so the kernel's VMRUN/VMRESUME stub can save and restore them at
/// fixed offsets (register n at byte 8 × n).
///
/// With SVM, RAX and RSP live in the VMCB: the stub leaves those two slots alone and
/// [`svm::read_registers`] fills them from the VMCB. With VMX only RSP lives in the VMCS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GeneralRegisters {
    /// 0.
    pub rax: u64,
    /// 1.
    pub rcx: u64,
    /// 2.
    pub rdx: u64,
    /// 3.
    pub rbx: u64,
    /// 4.
    pub rsp: u64,
    /// 5.
    pub rbp: u64,
    /// 6.
    pub rsi: u64,
    /// 7.
    pub rdi: u64,
    /// 8.
    pub r8: u64,
    /// 9.
    pub r9: u64,
    /// 10.
    pub r10: u64,
    /// 11.
    pub r11: u64,
    /// 12.
    pub r12: u64,
    /// 13.
    pub r13: u64,
    /// 14.
    pub r14: u64,
    /// 15.
    pub r15: u64,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<GeneralRegisters>() == 128);
    assert!(offset_of!(GeneralRegisters, rax) == 0);
    assert!(offset_of!(GeneralRegisters, rsp) == 4 * 8);
    assert!(offset_of!(GeneralRegisters, r8) == 8 * 8);
    assert!(offset_of!(GeneralRegisters, r15) == 15 * 8);
};

impl GeneralRegisters {
    /// Register `number` (only the low four bits count: 0 = RAX … 15 = R15).
    pub const fn get(&self, number: u8) -> u64 {
        match number & 0xf {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    /// Sets register `number` (only the low four bits count).
    pub fn set(&mut self, number: u8, value: u64) {
        let slot = match number & 0xf {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        };
        *slot = value;
    }
}

impl GeneralRegisters {
    /// Bytes of the wire form: the sixteen registers, little-endian, in encoding order.
    pub const WIRE_BYTES: usize = 16 * 8;

    /// The registers in encoding order (RAX = 0 … R15 = 15).
    pub const fn words(&self) -> [u64; 16] {
        [
            self.rax, self.rcx, self.rdx, self.rbx, self.rsp, self.rbp, self.rsi, self.rdi,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
        ]
    }

    /// The registers from their values in encoding order.
    pub const fn from_words(w: [u64; 16]) -> Self {
        Self {
            rax: w[0],
            rcx: w[1],
            rdx: w[2],
            rbx: w[3],
            rsp: w[4],
            rbp: w[5],
            rsi: w[6],
            rdi: w[7],
            r8: w[8],
            r9: w[9],
            r10: w[10],
            r11: w[11],
            r12: w[12],
            r13: w[13],
            r14: w[14],
            r15: w[15],
        }
    }

    /// The fixed little-endian wire form.
    pub fn to_wire(&self) -> [u8; Self::WIRE_BYTES] {
        let mut out = [0u8; Self::WIRE_BYTES];
        write_words(&mut out, &self.words());
        out
    }

    /// Reads the wire form; `None` unless `bytes` is exactly [`Self::WIRE_BYTES`] long.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::WIRE_BYTES] = bytes.try_into().ok()?;
        let mut w = [0u64; 16];
        read_words(bytes, &mut w);
        Some(Self::from_words(w))
    }
}

/// Writes `words` little-endian into `out`, 8 bytes each.
fn write_words(out: &mut [u8], words: &[u64]) {
    for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
}

/// Reads little-endian words from `bytes` into `words`.
fn read_words(bytes: &[u8], words: &mut [u64]) {
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
}

impl Serialize for GeneralRegisters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for GeneralRegisters {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Wire;
        impl serde::de::Visitor<'_> for Wire {
            type Value = GeneralRegisters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{} bytes of general registers",
                    GeneralRegisters::WIRE_BYTES
                )
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                GeneralRegisters::from_wire(bytes)
                    .ok_or_else(|| E::invalid_length(bytes.len(), &self))
            }
        }
        deserializer.deserialize_bytes(Wire)
    }
}

/// The guest register state that travels in exit messages and replies.
///
/// Values are what the guest sees: EFER never shows SVME (the SVM backend adds it), and
/// on VMX CR0/CR4 are read through their read shadows.
///
/// On the wire (serde) it is one byte string of [`GuestRegisters::WIRE_BYTES`] in a fixed
/// little-endian layout ([`GuestRegisters::to_wire`]): every exit carries it out and many
/// replies carry it back, and field-by-field varints cost thousands of instructions per
/// round trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegisters {
    /// RAX … R15.
    pub gpr: GeneralRegisters,
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2 (the last page-fault address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER as the guest sees it.
    pub efer: u64,
    /// Code segment. Its DPL is the CPL the backends load.
    pub cs: Segment,
    /// Data segment.
    pub ds: Segment,
    /// Extra segment.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// Stack segment (its DPL is the CPL).
    pub ss: Segment,
    /// Task register.
    pub tr: Segment,
    /// Local descriptor table register.
    pub ldtr: Segment,
    /// Global descriptor table register.
    pub gdtr: DescriptorTable,
    /// Interrupt descriptor table register.
    pub idtr: DescriptorTable,
}

impl GuestRegisters {
    /// Bytes of the wire form: 23 words of registers, 8 segments of 2 words, 2 descriptor
    /// tables of 2 words.
    pub const WIRE_BYTES: usize = (23 + 8 * 2 + 2 * 2) * 8;

    /// Words of the wire form.
    const WIRE_WORDS: usize = Self::WIRE_BYTES / 8;

    /// The fixed little-endian wire form.
    pub fn to_wire(&self) -> [u8; Self::WIRE_BYTES] {
        let segment = |s: &Segment| {
            u64::from(s.selector) | u64::from(s.attributes.0) << 16 | u64::from(s.limit) << 32
        };
        let rest: [u64; Self::WIRE_WORDS - 16] = [
            self.rip,
            self.rflags,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.efer,
            segment(&self.cs),
            self.cs.base,
            segment(&self.ds),
            self.ds.base,
            segment(&self.es),
            self.es.base,
            segment(&self.fs),
            self.fs.base,
            segment(&self.gs),
            self.gs.base,
            segment(&self.ss),
            self.ss.base,
            segment(&self.tr),
            self.tr.base,
            segment(&self.ldtr),
            self.ldtr.base,
            self.gdtr.base,
            u64::from(self.gdtr.limit),
            self.idtr.base,
            u64::from(self.idtr.limit),
        ];
        let mut out = [0u8; Self::WIRE_BYTES];
        let (general, others) = out.split_at_mut(GeneralRegisters::WIRE_BYTES);
        write_words(general, &self.gpr.words());
        write_words(others, &rest);
        out
    }

    /// Reads the wire form; `None` unless `bytes` is exactly [`Self::WIRE_BYTES`] long and
    /// every narrow field fits.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::WIRE_BYTES] = bytes.try_into().ok()?;
        let mut w = [0u64; Self::WIRE_WORDS];
        read_words(bytes, &mut w);
        let segment = |packed: u64, base: u64| Segment {
            selector: packed as u16,
            attributes: SegmentAttributes((packed >> 16) as u16),
            limit: (packed >> 32) as u32,
            base,
        };
        let mut general = [0u64; 16];
        general.copy_from_slice(&w[..16]);
        Some(Self {
            gpr: GeneralRegisters::from_words(general),
            rip: w[16],
            rflags: w[17],
            cr0: w[18],
            cr2: w[19],
            cr3: w[20],
            cr4: w[21],
            efer: w[22],
            cs: segment(w[23], w[24]),
            ds: segment(w[25], w[26]),
            es: segment(w[27], w[28]),
            fs: segment(w[29], w[30]),
            gs: segment(w[31], w[32]),
            ss: segment(w[33], w[34]),
            tr: segment(w[35], w[36]),
            ldtr: segment(w[37], w[38]),
            gdtr: DescriptorTable {
                base: w[39],
                limit: u16::try_from(w[40]).ok()?,
            },
            idtr: DescriptorTable {
                base: w[41],
                limit: u16::try_from(w[42]).ok()?,
            },
        })
    }
}

impl Serialize for GuestRegisters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for GuestRegisters {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Wire;
        impl serde::de::Visitor<'_> for Wire {
            type Value = GuestRegisters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} bytes of guest registers", GuestRegisters::WIRE_BYTES)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                GuestRegisters::from_wire(bytes)
                    .ok_or_else(|| E::invalid_length(bytes.len(), &self))
            }
        }
        deserializer.deserialize_bytes(Wire)
    }
}

/// Linux's `__BOOT_CS`, the code selector the 64-bit boot protocol expects.
pub const LINUX_BOOT_CS: u16 = 0x10;
/// Linux's `__BOOT_DS`, the data selector the 64-bit boot protocol expects.
pub const LINUX_BOOT_DS: u16 = 0x18;

impl GuestRegisters {
    /// The state after INIT that both entry states start from: every segment null
    /// except TR and LDTR (present system segments, as after reset), descriptor tables at
    /// 0 with limit 0xffff, RFLAGS bit 1 set.
    const fn base() -> Self {
        Self {
            gpr: GeneralRegisters {
                rax: 0,
                rcx: 0,
                rdx: 0,
                rbx: 0,
                rsp: 0,
                rbp: 0,
                rsi: 0,
                rdi: 0,
                r8: 0,
                r9: 0,
                r10: 0,
                r11: 0,
                r12: 0,
                r13: 0,
                r14: 0,
                r15: 0,
            },
            rip: 0,
            rflags: rflags::FIXED,
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs: Segment::flat(0, SegmentAttributes(0)),
            ds: Segment::flat(0, SegmentAttributes(0)),
            es: Segment::flat(0, SegmentAttributes(0)),
            fs: Segment::flat(0, SegmentAttributes(0)),
            gs: Segment::flat(0, SegmentAttributes(0)),
            ss: Segment::flat(0, SegmentAttributes(0)),
            tr: Segment {
                selector: 0,
                attributes: SegmentAttributes::TSS_BUSY,
                limit: 0xffff,
                base: 0,
            },
            ldtr: Segment {
                selector: 0,
                attributes: SegmentAttributes::LDT,
                limit: 0xffff,
                base: 0,
            },
            gdtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
            idtr: DescriptorTable {
                base: 0,
                limit: 0xffff,
            },
        }
    }

    /// 32-bit protected mode, paging off, flat 4 GiB ring-0 code (selector 0x08) and data
    /// (0x10) segments, interrupts off, at `entry` — the machine state Multiboot v1
    /// promises a kernel. The caller sets EAX (the loader magic) and EBX (the information
    /// structure) in [`Self::gpr`]; the guest must load its own GDT and IDT.
    pub const fn protected_mode_flat(entry: u32) -> Self {
        let mut state = Self::base();
        state.rip = entry as u64;
        state.cr0 = cr0::PE | cr0::ET | cr0::NE;
        state.cs = Segment::flat(0x08, SegmentAttributes::CODE32);
        state.ds = Segment::flat(0x10, SegmentAttributes::DATA);
        state.es = Segment::flat(0x10, SegmentAttributes::DATA);
        state.fs = Segment::flat(0x10, SegmentAttributes::DATA);
        state.gs = Segment::flat(0x10, SegmentAttributes::DATA);
        state.ss = Segment::flat(0x10, SegmentAttributes::DATA);
        state
    }

    /// 64-bit long mode with paging at `entry`: CR0.PE|PG, CR4.PAE, EFER.LME|LMA, the page
    /// tables at `cr3`, a 64-bit code segment with selector [`LINUX_BOOT_CS`] and data
    /// segments with [`LINUX_BOOT_DS`] from the GDT at `gdtr` — what Linux's 64-bit boot
    /// protocol asks for. The caller sets RSI (the `boot_params` address) in
    /// [`Self::gpr`], and must have written a GDT with those two descriptors at `gdtr`.
    pub const fn long_mode(entry: u64, cr3: u64, gdtr: DescriptorTable) -> Self {
        let mut state = Self::base();
        state.rip = entry;
        state.cr0 = cr0::PE | cr0::ET | cr0::NE | cr0::PG;
        state.cr3 = cr3;
        state.cr4 = cr4::PAE;
        state.efer = efer::LME | efer::LMA;
        state.cs = Segment::flat(LINUX_BOOT_CS, SegmentAttributes::CODE64);
        state.ds = Segment::flat(LINUX_BOOT_DS, SegmentAttributes::DATA);
        state.es = Segment::flat(LINUX_BOOT_DS, SegmentAttributes::DATA);
        state.fs = Segment::flat(LINUX_BOOT_DS, SegmentAttributes::DATA);
        state.gs = Segment::flat(LINUX_BOOT_DS, SegmentAttributes::DATA);
        state.ss = Segment::flat(LINUX_BOOT_DS, SegmentAttributes::DATA);
        state.tr.limit = 0x67;
        state.gdtr = gdtr;
        state
    }

    /// What a CPU looks like when a start-up IPI with `vector` wakes it after INIT: real
    /// mode at `vector` × 4096 (CS = `vector` × 256, IP 0), every data segment at 0 with a
    /// 64 KiB limit, interrupts off — where an SMP guest's application processors begin.
    pub const fn real_mode_startup(vector: u8) -> Self {
        /// Present, code/data, accessed; readable code or writable data.
        const REAL_CODE: SegmentAttributes = SegmentAttributes(0x9b);
        const REAL_DATA: SegmentAttributes = SegmentAttributes(0x93);
        let data = Segment {
            selector: 0,
            attributes: REAL_DATA,
            limit: 0xffff,
            base: 0,
        };
        let mut state = Self::base();
        state.cr0 = cr0::ET;
        state.cs = Segment {
            selector: (vector as u16) << 8,
            attributes: REAL_CODE,
            limit: 0xffff,
            base: (vector as u64) << 12,
        };
        state.ds = data;
        state.es = data;
        state.fs = data;
        state.gs = data;
        state.ss = data;
        state
    }

    /// Whether the guest runs 64-bit code (EFER.LMA and CS.L).
    pub const fn in_64bit_mode(&self) -> bool {
        self.efer & efer::LMA != 0 && self.cs.attributes.long()
    }

    /// `rip` plus `length`, wrapping as the guest's instruction pointer does (at 2^64 in
    /// 64-bit mode, at 2^32 otherwise).
    pub const fn rip_after(&self, length: u8) -> u64 {
        next_rip(self.rip, length as u64, self.in_64bit_mode())
    }

    /// Completes an IN of `size` bytes (1, 2 or 4) that read `value`: writes AL, AX or
    /// EAX as the instruction would (an 8- or 16-bit IN keeps the rest of RAX, a 32-bit
    /// one zero-extends into RAX).
    pub fn complete_port_read(&mut self, size: u8, value: u32) {
        let rax = self.gpr.rax;
        self.gpr.rax = match size {
            1 => (rax & !0xff) | u64::from(value & 0xff),
            2 => (rax & !0xffff) | u64::from(value & 0xffff),
            _ => u64::from(value),
        };
    }
}

/// `rip + length`, wrapping at 2^64 in 64-bit code and at 2^32 otherwise.
pub(crate) const fn next_rip(rip: u64, length: u64, long: bool) -> u64 {
    let next = rip.wrapping_add(length);
    if long { next } else { next & 0xffff_ffff }
}

/// An event to deliver to the guest, or one the hardware was delivering when it exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A maskable interrupt (from a virtual interrupt controller).
    ExternalInterrupt {
        /// IDT vector.
        vector: u8,
    },
    /// A non-maskable interrupt.
    Nmi,
    /// A fault or trap.
    Exception {
        /// Exception vector (0–31).
        vector: u8,
        /// The error code, exactly when the CPU pushes one for `vector` (and never in
        /// real mode).
        error_code: Option<u32>,
    },
    /// An `INT n` of `instruction_length` bytes at RIP, delivered as the instruction
    /// would be (the return address is the following instruction).
    SoftwareInterrupt {
        /// IDT vector.
        vector: u8,
        /// Length of the INT instruction (1–15).
        instruction_length: u8,
    },
}

/// Why an event cannot be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventError {
    /// The vector is not an exception the backend can inject (2 is the NMI; reserved
    /// vectors and 32 and up are interrupts).
    NotAnException {
        /// The vector.
        vector: u8,
    },
    /// An error code was given for an exception that pushes none, or missing for one
    /// that pushes one (in real mode, none may be given).
    ErrorCodeMismatch {
        /// The vector.
        vector: u8,
        /// Whether one was given.
        given: bool,
    },
    /// A software interrupt's instruction length is not 1–15.
    BadInstructionLength {
        /// The length given.
        length: u8,
    },
    /// An external interrupt while the guest has RFLAGS.IF clear or is in an interrupt
    /// shadow: it cannot take one now (VMX refuses the entry, SVM would deliver it
    /// anyway). Ask for [`ExitReply::interrupt_window`] instead.
    InterruptsMasked,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotAnException { vector } => {
                write!(f, "vector {vector} cannot be injected as an exception")
            }
            Self::ErrorCodeMismatch {
                vector,
                given: true,
            } => write!(
                f,
                "exception {vector} takes no error code here, one was given"
            ),
            Self::ErrorCodeMismatch {
                vector,
                given: false,
            } => write!(f, "exception {vector} needs an error code, none was given"),
            Self::BadInstructionLength { length } => {
                write!(f, "instruction length {length} is not 1-15")
            }
            Self::InterruptsMasked => f.write_str(
                "the guest cannot take an external interrupt now (IF clear or interrupt shadow)",
            ),
        }
    }
}

impl Event {
    /// Checks the rules both backends share, for a guest with `guest_cr0` and
    /// `guest_rflags`, in an interrupt shadow or not: an exception's error code is present
    /// exactly when the CPU would push one (never in real mode); a software interrupt's
    /// length is an instruction length; an external interrupt needs IF set and no
    /// interrupt shadow. Vector rules are the backends' own.
    pub fn check(
        &self,
        guest_cr0: u64,
        guest_rflags: u64,
        interrupt_shadow: bool,
    ) -> Result<(), EventError> {
        match *self {
            Self::ExternalInterrupt { .. }
                if guest_rflags & rflags::IF == 0 || interrupt_shadow =>
            {
                Err(EventError::InterruptsMasked)
            }
            Self::Exception { vector, error_code } => {
                let wanted = guest_cr0 & cr0::PE != 0 && exception_has_error_code(vector);
                if error_code.is_some() != wanted {
                    return Err(EventError::ErrorCodeMismatch {
                        vector,
                        given: error_code.is_some(),
                    });
                }
                Ok(())
            }
            Self::SoftwareInterrupt {
                instruction_length, ..
            } if !(1..=MAX_INSTRUCTION_LENGTH).contains(&instruction_length) => {
                Err(EventError::BadInstructionLength {
                    length: instruction_length,
                })
            }
            _ => Ok(()),
        }
    }
}

/// The longest x86 instruction.
pub const MAX_INSTRUCTION_LENGTH: u8 = 15;

/// Which hardware produced an [`Exit::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// AMD SVM: `code` is EXITCODE, `info1`/`info2` are EXITINFO1/2.
    Svm,
    /// Intel VMX: `code` is the exit reason, `info1` the exit qualification, `info2` the
    /// guest-physical or guest-linear address where one applies.
    Vmx,
}

/// Instructions a monitor may see intercepted that need no operands in the message: it
/// emulates them (usually as a no-op plus a RIP advance) or injects #UD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instruction {
    /// INVD (never let a guest drop the host's dirty cache lines).
    Invd,
    /// WBINVD/WBNOINVD.
    Wbinvd,
    /// MONITOR/MONITORX.
    Monitor,
    /// MWAIT/MWAITX.
    Mwait,
    /// RDTSC.
    Rdtsc,
    /// RDTSCP.
    Rdtscp,
    /// RDPMC.
    Rdpmc,
    /// RDPRU.
    Rdpru,
    /// RSM.
    Rsm,
    /// PAUSE.
    Pause,
    /// INVLPG.
    Invlpg,
    /// INVPCID.
    Invpcid,
    /// ICEBP (INT1).
    Icebp,
    /// A virtualisation instruction (VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA,
    /// or any VMX instruction): Esker offers no nested virtualisation, so #UD.
    Virtualization,
}

/// Why the guest stopped, as the monitor receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// A port access.
    Io {
        /// The port (the first, for a multi-byte access).
        port: u16,
        /// 1, 2 or 4 bytes.
        size: u8,
        /// OUT/OUTS (the guest writes) rather than IN/INS.
        write: bool,
        /// For a non-string OUT, the value written (AL/AX/EAX); 0 otherwise.
        value: u32,
        /// INS/OUTS: the data is in guest memory, the monitor emulates the instruction.
        string: bool,
        /// With a REP prefix (RCX holds the count).
        rep: bool,
    },
    /// CPUID.
    Cpuid {
        /// EAX.
        leaf: u32,
        /// ECX.
        subleaf: u32,
    },
    /// RDMSR or WRMSR.
    Msr {
        /// WRMSR.
        write: bool,
        /// ECX.
        index: u32,
        /// EDX:EAX for a WRMSR; 0 for a RDMSR.
        value: u64,
    },
    /// A guest-physical access the nested page tables do not allow.
    NestedPageFault {
        /// The guest-physical address.
        gpa: u64,
        /// A write.
        write: bool,
        /// An instruction fetch.
        fetch: bool,
        /// A mapping was there but did not allow the access (rather than missing).
        present: bool,
        /// The access was the guest's own page-table walk, not the final access.
        page_walk: bool,
        /// The nested entry is malformed (a reserved bit, an EPT misconfiguration): a
        /// bug in whoever built the table, not a guest access to handle.
        misconfigured: bool,
    },
    /// HLT.
    Hlt,
    /// Triple fault: the guest is dead.
    Shutdown,
    /// An intercepted exception.
    Exception {
        /// Vector.
        vector: u8,
        /// The error code, for exceptions that have one.
        error_code: Option<u32>,
        /// The faulting address, for a page fault.
        fault_address: Option<u64>,
    },
    /// A host interrupt (or the preemption timer) stopped the guest; nothing to do.
    Interrupt,
    /// A host NMI stopped the guest.
    Nmi,
    /// The guest can now take an interrupt (requested with
    /// [`ExitReply::interrupt_window`]).
    InterruptWindow,
    /// VMMCALL/VMCALL: a hypercall, arguments in the registers.
    Vmcall,
    /// XSETBV.
    Xsetbv {
        /// ECX: which XCR.
        index: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// Another intercepted instruction.
    Instruction(Instruction),
    /// VMRUN or VM entry refused the vCPU state (the kernel's consistency check missed
    /// something): the backend's raw reason.
    Invalid {
        /// EXITCODE (SVM) or exit reason (VMX).
        reason: u64,
    },
    /// Anything else, raw.
    Other {
        /// Which hardware.
        backend: Backend,
        /// EXITCODE or exit reason.
        code: u64,
        /// EXITINFO1 or exit qualification.
        info1: u64,
        /// EXITINFO2 or the guest-physical/linear address.
        info2: u64,
    },
}

/// What the monitor receives for one exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitMessage {
    /// Why the guest stopped.
    pub exit: Exit,
    /// The guest's registers at the exit (RIP at the exiting instruction).
    pub registers: GuestRegisters,
    /// The exiting instruction's length when the hardware reported it (SVM: IOIO's
    /// EXITINFO2 or nRIP; VMX: the exit instruction length). QEMU's TCG reports it only
    /// for port I/O; otherwise the monitor decodes the instruction itself.
    pub instruction_length: Option<u8>,
    /// An event the CPU was delivering when it exited (EXITINTINFO, IDT-vectoring
    /// information). It is lost unless the reply injects it again, as
    /// [`ExitReply::resume`] does.
    pub pending_event: Option<Event>,
    /// The guest is in an interrupt shadow (after STI or MOV SS).
    pub interrupt_shadow: bool,
}

/// What the monitor answers to resume the guest. Applied in field order: registers, then
/// the RIP advance (from the new RIP), then the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReply {
    /// New register values, `None` to keep the guest's.
    pub registers: Option<GuestRegisters>,
    /// New general registers only (applied after `registers`): the common case — CPUID,
    /// port and MMIO reads, RDMSR — is cheaper to send and needs no VMRUN re-check.
    pub gprs: Option<GeneralRegisters>,
    /// Bytes to advance RIP by (the length of an instruction the monitor emulated), 0 to
    /// leave it. Advancing ends an interrupt shadow.
    pub advance_rip: u8,
    /// An event to deliver on entry.
    pub inject: Option<Event>,
    /// Exit with [`Exit::InterruptWindow`] as soon as the guest can take an interrupt.
    pub interrupt_window: bool,
}

impl ExitReply {
    /// Resume with nothing changed except re-delivering the event the exit interrupted.
    pub const fn resume(message: &ExitMessage) -> Self {
        Self {
            registers: None,
            gprs: None,
            advance_rip: 0,
            inject: message.pending_event,
            interrupt_window: false,
        }
    }

    /// Resume after the exiting instruction, which the monitor emulated and which is
    /// `length` bytes long.
    pub const fn skip_instruction(message: &ExitMessage, length: u8) -> Self {
        Self {
            advance_rip: length,
            ..Self::resume(message)
        }
    }
}

/// Why a reply was not applied. The backend's state may have been partly updated: the
/// vCPU must not run before a good reply is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// `advance_rip` is more than 15.
    InstructionTooLong {
        /// The length given.
        length: u8,
    },
    /// The event cannot be delivered.
    BadEvent {
        /// The event.
        event: Event,
        /// Why.
        error: EventError,
    },
    /// The resulting SVM state would fail VMRUN.
    Inconsistent(crate::virt::svm::ConsistencyError),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InstructionTooLong { length } => write!(
                f,
                "cannot advance RIP by {length} bytes: instructions are at most 15"
            ),
            Self::BadEvent { event, error } => write!(f, "cannot inject {event:?}: {error}"),
            Self::Inconsistent(error) => write!(f, "{error}"),
        }
    }
}
