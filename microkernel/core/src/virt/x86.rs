//! Architectural x86-64 facts both virtualisation backends share: control-register, EFER
//! and RFLAGS bits, exception vectors, and guest segment state.
//!
//! Segment attributes are kept in the 12-bit layout of AMD's VMCB (the descriptor's
//! attribute bits 8–15 and 20–23 packed together); [`SegmentAttributes`] converts to and
//! from Intel's VMCS access-rights layout. Nothing here knows about a particular guest.

use serde::{Deserialize, Serialize};

/// CR0 bits (AMD APM vol. 2 §3.1.1, Intel SDM vol. 3A §2.5).
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type (reads as 1 on every CPU with SVM or VMX).
    pub const ET: u64 = 1 << 4;
    /// Native x87 error reporting.
    pub const NE: u64 = 1 << 5;
    /// Write protect (supervisor writes honour read-only pages).
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (AMD APM vol. 2 §3.1.3, Intel SDM vol. 3A §2.5).
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// RDTSC only at CPL 0.
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// 4 MiB pages without PAE.
    pub const PSE: u64 = 1 << 4;
    /// Physical-address extension (required for long mode).
    pub const PAE: u64 = 1 << 5;
    /// Machine-check enable.
    pub const MCE: u64 = 1 << 6;
    /// Global pages.
    pub const PGE: u64 = 1 << 7;
    /// RDPMC at any CPL.
    pub const PCE: u64 = 1 << 8;
    /// FXSAVE/FXRSTOR and SSE.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD floating-point exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u64 = 1 << 11;
    /// 5-level paging.
    pub const LA57: u64 = 1 << 12;
    /// VMX enable (Intel; reserved on AMD).
    pub const VMXE: u64 = 1 << 13;
    /// SMX enable (Intel; reserved on AMD).
    pub const SMXE: u64 = 1 << 14;
    /// RDFSBASE and friends.
    pub const FSGSBASE: u64 = 1 << 16;
    /// Process-context identifiers.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and extended states.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user pages.
    pub const PKE: u64 = 1 << 22;
    /// Control-flow enforcement.
    pub const CET: u64 = 1 << 23;
}

/// EFER (MSR `0xc000_0080`) bits (AMD APM vol. 2 §3.1.7).
pub mod efer {
    /// The MSR number.
    pub const MSR: u32 = 0xc000_0080;
    /// SYSCALL/SYSRET enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// Secure virtual machine enable (must be set in every VMCB).
    pub const SVME: u64 = 1 << 12;
    /// Long-mode segment limit enable.
    pub const LMSLE: u64 = 1 << 13;
    /// Fast FXSAVE/FXRSTOR.
    pub const FFXSR: u64 = 1 << 14;
    /// Translation cache extension.
    pub const TCE: u64 = 1 << 15;
    /// MCOMMIT enable.
    pub const MCOMMIT: u64 = 1 << 17;
    /// Interruptible WBINVD/WBNOINVD.
    pub const INTWB: u64 = 1 << 18;
    /// Upper address ignore.
    pub const UAIE: u64 = 1 << 20;
    /// Automatic IBRS.
    pub const AIBRSE: u64 = 1 << 21;
}

/// RFLAGS bits.
pub mod rflags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Bit 1 always reads as 1.
    pub const FIXED: u64 = 1 << 1;
    /// Trap (single step).
    pub const TF: u64 = 1 << 8;
    /// Interrupts enabled.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
}

/// Exception vectors (AMD APM vol. 2 table 8-1, Intel SDM vol. 3A table 6-1).
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt (an interrupt, not an exception).
    pub const NMI: u8 = 2;
    /// Breakpoint (INT3).
    pub const BP: u8 = 3;
    /// Overflow (INTO).
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating point.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check.
    pub const MC: u8 = 18;
    /// SIMD floating point.
    pub const XF: u8 = 19;
    /// Virtualisation exception (Intel only).
    pub const VE: u8 = 20;
    /// Control-protection.
    pub const CP: u8 = 21;
    /// Hypervisor injection (AMD SEV-SNP).
    pub const HV: u8 = 28;
    /// VMM communication (AMD SEV-ES).
    pub const VC: u8 = 29;
    /// Security exception (AMD).
    pub const SX: u8 = 30;
}

/// Whether exception `vector` pushes an error code when the CPU delivers it.
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(
        vector,
        vector::DF
            | vector::TS
            | vector::NP
            | vector::SS
            | vector::GP
            | vector::PF
            | vector::AC
            | vector::CP
            | vector::VC
            | vector::SX
    )
}

/// A segment register's selector and hidden state, as both VMCB and VMCS keep it.
///
/// `#[repr(C)]` with the VMCB's field order, so it is also the 16-byte VMCB segment
/// record (selector at 0, attributes at 2, limit at 4, base at 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct Segment {
    /// The visible selector.
    pub selector: u16,
    /// Type, S, DPL, P, AVL, L, D/B, G.
    pub attributes: SegmentAttributes,
    /// The limit in bytes (already scaled by G, as the CPU caches it).
    pub limit: u32,
    /// The base address.
    pub base: u64,
}

impl Segment {
    /// A flat 4 GiB segment: base 0, limit `0xffff_ffff`.
    pub const fn flat(selector: u16, attributes: SegmentAttributes) -> Self {
        Self {
            selector,
            attributes,
            limit: 0xffff_ffff,
            base: 0,
        }
    }
}

/// GDTR or IDTR: base and limit, no selector or attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit (size in bytes minus one).
    pub limit: u16,
}

/// Segment attributes in the VMCB's 12-bit layout: bits 0–3 type, 4 S (code/data),
/// 5–6 DPL, 7 P, 8 AVL, 9 L, 10 D/B, 11 G. These are descriptor bits 40–47 and 52–55.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SegmentAttributes(pub u16);

impl SegmentAttributes {
    /// Bits 0–3: the descriptor type.
    pub const TYPE_MASK: u16 = 0xf;
    /// Type bit 0: accessed.
    pub const ACCESSED: u16 = 1 << 0;
    /// Type bit 1: readable (code) or writable (data).
    pub const READ_WRITE: u16 = 1 << 1;
    /// Type bit 3: code segment.
    pub const CODE: u16 = 1 << 3;
    /// Bit 4: code or data segment (clear for system segments).
    pub const S: u16 = 1 << 4;
    /// Bits 5–6: descriptor privilege level.
    pub const DPL_SHIFT: u16 = 5;
    /// Bit 7: present.
    pub const P: u16 = 1 << 7;
    /// Bit 8: available to software.
    pub const AVL: u16 = 1 << 8;
    /// Bit 9: 64-bit code segment.
    pub const L: u16 = 1 << 9;
    /// Bit 10: default operand size 32 bits (code) or big stack (data).
    pub const DB: u16 = 1 << 10;
    /// Bit 11: limit in 4 KiB units.
    pub const G: u16 = 1 << 11;
    /// The bits that mean anything.
    pub const VALID_MASK: u16 = 0xfff;

    /// 32-bit ring-0 code: execute/read, accessed, present, D, G.
    pub const CODE32: Self = Self(0xb | Self::S | Self::P | Self::DB | Self::G);
    /// 64-bit ring-0 code: execute/read, accessed, present, L, G.
    pub const CODE64: Self = Self(0xb | Self::S | Self::P | Self::L | Self::G);
    /// Ring-0 data: read/write, accessed, present, B, G.
    pub const DATA: Self = Self(0x3 | Self::S | Self::P | Self::DB | Self::G);
    /// A busy 32/64-bit TSS, present.
    pub const TSS_BUSY: Self = Self(0xb | Self::P);
    /// An LDT, present.
    pub const LDT: Self = Self(0x2 | Self::P);

    /// The descriptor type (bits 0–3).
    pub const fn segment_type(self) -> u8 {
        (self.0 & Self::TYPE_MASK) as u8
    }

    /// Whether it is a code or data segment (S set) rather than a system segment.
    pub const fn is_code_or_data(self) -> bool {
        self.0 & Self::S != 0
    }

    /// Descriptor privilege level.
    pub const fn dpl(self) -> u8 {
        ((self.0 >> Self::DPL_SHIFT) & 3) as u8
    }

    /// Present.
    pub const fn present(self) -> bool {
        self.0 & Self::P != 0
    }

    /// 64-bit code segment (L).
    pub const fn long(self) -> bool {
        self.0 & Self::L != 0
    }

    /// Default operand size / big (D/B).
    pub const fn default_big(self) -> bool {
        self.0 & Self::DB != 0
    }

    /// Page granularity (G).
    pub const fn granularity(self) -> bool {
        self.0 & Self::G != 0
    }

    /// Intel VMCS access rights: bits 0–7 as here, AVL/L/D/B/G at 12–15, bit 16
    /// "unusable", which is set for a segment that is not present.
    pub const fn to_vmx_access_rights(self) -> u32 {
        let low = (self.0 & 0xff) as u32;
        let high = ((self.0 >> 8) & 0xf) as u32;
        let unusable = if self.present() { 0 } else { 1 << 16 };
        low | (high << 12) | unusable
    }

    /// From Intel VMCS access rights; an unusable segment reads back as not present
    /// (its other bits are kept, as the VMCS keeps them).
    pub const fn from_vmx_access_rights(access_rights: u32) -> Self {
        let low = (access_rights & 0xff) as u16;
        let high = ((access_rights >> 12) & 0xf) as u16;
        let attributes = low | (high << 8);
        if access_rights & (1 << 16) != 0 {
            Self(attributes & !Self::P)
        } else {
            Self(attributes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_attributes_have_the_documented_values() {
        // The values KVM, Xen and QEMU use for flat ring-0 segments in a VMCB.
        assert_eq!(SegmentAttributes::CODE32.0, 0xc9b);
        assert_eq!(SegmentAttributes::CODE64.0, 0xa9b);
        assert_eq!(SegmentAttributes::DATA.0, 0xc93);
        assert_eq!(SegmentAttributes::TSS_BUSY.0, 0x8b);
        assert!(SegmentAttributes::CODE64.long());
        assert!(!SegmentAttributes::CODE64.default_big());
        assert_eq!(SegmentAttributes(3 << 5).dpl(), 3);
    }

    #[test]
    fn vmx_access_rights_round_trip() {
        // Intel's flat 32-bit code segment access rights are 0xc09b.
        assert_eq!(SegmentAttributes::CODE32.to_vmx_access_rights(), 0xc09b);
        assert_eq!(SegmentAttributes::CODE64.to_vmx_access_rights(), 0xa09b);
        for raw in 0..=SegmentAttributes::VALID_MASK {
            let attributes = SegmentAttributes(raw);
            let back = SegmentAttributes::from_vmx_access_rights(attributes.to_vmx_access_rights());
            assert_eq!(back, attributes);
        }
        let unusable = SegmentAttributes::from_vmx_access_rights(0x1_c093);
        assert!(!unusable.present());
    }

    #[test]
    fn error_code_exceptions_are_exactly_the_documented_ones() {
        let with: Vec<u8> = (0..=255).filter(|&v| exception_has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }
}
