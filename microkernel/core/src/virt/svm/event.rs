//! The event format of EVENTINJ (what to deliver on VMRUN) and EXITINTINFO (what was
//! being delivered when the guest exited), APM vol. 2 §15.20, figure 15-4: bits 0–7
//! vector, 8–10 type, 11 error code valid, 31 valid, 32–63 error code.
//!
//! [`EventInjection::check`] holds the two rules VMRUN enforces (a reserved type, or an
//! "exception" whose vector is not an exception, fail with VMEXIT_INVALID).

use core::fmt;

/// The TYPE field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// 0: external (maskable) interrupt.
    ExternalInterrupt,
    /// 2: NMI (the vector is ignored).
    Nmi,
    /// 3: exception (fault or trap).
    Exception,
    /// 4: software interrupt (INTn).
    SoftwareInterrupt,
    /// 1, 5, 6 or 7: reserved; VMRUN refuses them.
    Reserved(u8),
}

impl EventType {
    /// The three-bit TYPE value.
    pub const fn bits(self) -> u8 {
        match self {
            Self::ExternalInterrupt => 0,
            Self::Nmi => 2,
            Self::Exception => 3,
            Self::SoftwareInterrupt => 4,
            Self::Reserved(bits) => bits & 7,
        }
    }

    /// The type for a three-bit TYPE value (higher bits are ignored).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Self::ExternalInterrupt,
            2 => Self::Nmi,
            3 => Self::Exception,
            4 => Self::SoftwareInterrupt,
            other => Self::Reserved(other),
        }
    }
}

/// An event for EVENTINJ, or read from EXITINTINFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventInjection {
    /// The IDT vector (2 for an NMI).
    pub vector: u8,
    /// What kind of event.
    pub kind: EventType,
    /// The error code to push, if any.
    pub error_code: Option<u32>,
}

/// Why VMRUN would refuse an event (APM vol. 2 §15.20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventInjectionError {
    /// TYPE is 1, 5, 6 or 7.
    ReservedType {
        /// The TYPE value.
        kind: u8,
    },
    /// TYPE is "exception" but the vector is not one (2 is the NMI, reserved vectors
    /// and 32 and up are interrupts).
    NotAnException {
        /// The vector.
        vector: u8,
    },
}

impl fmt::Display for EventInjectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ReservedType { kind } => {
                write!(f, "event injection type {kind} is reserved")
            }
            Self::NotAnException { vector } => write!(
                f,
                "event injection of an exception with vector {vector}, which is not an exception"
            ),
        }
    }
}

impl EventInjection {
    /// Bits 0–7.
    pub const VECTOR_MASK: u64 = 0xff;
    /// Bits 8–10.
    pub const TYPE_SHIFT: u32 = 8;
    /// Bit 11: push [`Self::error_code`].
    pub const ERROR_CODE_VALID: u64 = 1 << 11;
    /// Bit 31: the field holds an event.
    pub const VALID: u64 = 1 << 31;
    /// Bits 32–63.
    pub const ERROR_CODE_SHIFT: u32 = 32;

    /// An external interrupt with `vector`.
    pub const fn external_interrupt(vector: u8) -> Self {
        Self {
            vector,
            kind: EventType::ExternalInterrupt,
            error_code: None,
        }
    }

    /// An NMI.
    pub const fn nmi() -> Self {
        Self {
            vector: 2,
            kind: EventType::Nmi,
            error_code: None,
        }
    }

    /// An exception with `vector` and, if it has one, `error_code`.
    pub const fn exception(vector: u8, error_code: Option<u32>) -> Self {
        Self {
            vector,
            kind: EventType::Exception,
            error_code,
        }
    }

    /// A software interrupt (INTn) with `vector`.
    pub const fn software_interrupt(vector: u8) -> Self {
        Self {
            vector,
            kind: EventType::SoftwareInterrupt,
            error_code: None,
        }
    }

    /// The 64-bit EVENTINJ value, with the valid bit set.
    pub const fn encode(self) -> u64 {
        let mut raw =
            Self::VALID | self.vector as u64 | ((self.kind.bits() as u64) << Self::TYPE_SHIFT);
        if let Some(code) = self.error_code {
            raw |= Self::ERROR_CODE_VALID | ((code as u64) << Self::ERROR_CODE_SHIFT);
        }
        raw
    }

    /// The event in an EVENTINJ or EXITINTINFO value, `None` if its valid bit is clear.
    /// Every valid value decodes; reserved bits 12–30 are ignored.
    pub const fn decode(raw: u64) -> Option<Self> {
        if raw & Self::VALID == 0 {
            return None;
        }
        Some(Self {
            vector: (raw & Self::VECTOR_MASK) as u8,
            kind: EventType::from_bits((raw >> Self::TYPE_SHIFT) as u8),
            error_code: if raw & Self::ERROR_CODE_VALID != 0 {
                Some((raw >> Self::ERROR_CODE_SHIFT) as u32)
            } else {
                None
            },
        })
    }

    /// Whether VMRUN would accept this event.
    pub const fn check(self) -> Result<(), EventInjectionError> {
        match self.kind {
            EventType::Reserved(kind) => Err(EventInjectionError::ReservedType { kind }),
            EventType::Exception if !is_exception_vector(self.vector) => {
                Err(EventInjectionError::NotAnException {
                    vector: self.vector,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Whether `vector` is an exception AMD defines (APM vol. 2 table 8-1): 0, 1, 3–8,
/// 10–14, 16–19, 21 and 28–30. Vector 2 is the NMI; 9, 15, 20, 22–27 and 31 are reserved
/// (QEMU's TCG refuses 31 and up, KVM refuses the reserved ones as the hardware does).
pub const fn is_exception_vector(vector: u8) -> bool {
    matches!(vector, 0 | 1 | 3..=8 | 10..=14 | 16..=19 | 21 | 28..=30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodings_match_the_apm_figure() {
        assert_eq!(
            EventInjection::external_interrupt(0x20).encode(),
            0x8000_0020
        );
        assert_eq!(EventInjection::nmi().encode(), 0x8000_0202);
        assert_eq!(
            EventInjection::exception(14, Some(0x6)).encode(),
            0x0000_0006_8000_0b0e
        );
        assert_eq!(EventInjection::exception(6, None).encode(), 0x8000_0306);
        assert_eq!(
            EventInjection::software_interrupt(0x80).encode(),
            0x8000_0480
        );
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        for event in [
            EventInjection::external_interrupt(0xff),
            EventInjection::nmi(),
            EventInjection::exception(13, Some(0xffff_ffff)),
            EventInjection::exception(3, None),
            EventInjection::software_interrupt(0x21),
        ] {
            assert_eq!(EventInjection::decode(event.encode()), Some(event));
        }
        assert_eq!(EventInjection::decode(0x0000_0306), None, "valid bit clear");
    }

    #[test]
    fn reserved_types_and_non_exceptions_are_refused() {
        for kind in [1, 5, 6, 7] {
            let event = EventInjection::decode(EventInjection::VALID | (kind << 8)).unwrap();
            assert_eq!(
                event.check(),
                Err(EventInjectionError::ReservedType { kind: kind as u8 })
            );
        }
        for vector in [2, 9, 15, 20, 22, 27, 31, 32, 0x80, 0xff] {
            assert_eq!(
                EventInjection::exception(vector, None).check(),
                Err(EventInjectionError::NotAnException { vector }),
                "vector {vector}"
            );
        }
        for vector in [0, 1, 3, 8, 13, 14, 17, 18, 21, 28, 30] {
            assert_eq!(EventInjection::exception(vector, None).check(), Ok(()));
        }
        // Interrupts may use any vector, exceptions' included.
        assert_eq!(EventInjection::external_interrupt(2).check(), Ok(()));
        assert_eq!(EventInjection::software_interrupt(14).check(), Ok(()));
    }

    proptest! {
        #[test]
        fn any_raw_value_decodes_without_panicking(raw: u64) {
            if let Some(event) = EventInjection::decode(raw) {
                let _ = event.check();
                // Re-encoding keeps every field the format defines.
                let defined = 0xffff_ffff_0000_0fffu64 | EventInjection::VALID;
                let expected = if raw & EventInjection::ERROR_CODE_VALID != 0 {
                    raw & defined
                } else {
                    raw & 0x8000_07ff
                };
                prop_assert_eq!(event.encode(), expected);
            }
        }
    }
}
