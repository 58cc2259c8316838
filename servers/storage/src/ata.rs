//! The first look at the ATA controller: read its status registers and say what is there.
//!
//! The controller's ports come from the world's `device:ata0:ioports:*` capabilities; the
//! reads go through [`AtaPorts`] so tests use fixed values. Reading the command block's
//! status register also acknowledges a pending drive interrupt; the control block's
//! alternate status reads the same bits without side effects.

use esker_rt::Error;

/// The primary channel's command block (8 ports).
pub const COMMAND_BLOCK: u16 = 0x1f0;
/// The status register, in the command block.
pub const STATUS: u16 = COMMAND_BLOCK + 7;
/// The alternate-status register (the control block's one port).
pub const ALTERNATE_STATUS: u16 = 0x3f6;

/// Status bits.
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DF: u8 = 0x20;
const ERR: u8 = 0x01;

/// Reads of the two status registers.
pub trait AtaPorts {
    /// The status register (acknowledges a pending interrupt).
    fn status(&mut self) -> Result<u8, Error>;
    /// The alternate-status register.
    fn alternate_status(&mut self) -> Result<u8, Error>;
}

/// What the status registers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Floating bus or all-zero status: nothing answers on the channel.
    NoDrive,
    /// The drive is busy (still resetting).
    Busy,
    /// The drive reports an error or a device fault.
    Faulted,
    /// The drive is present but not ready.
    NotReady,
    /// The drive is ready for commands.
    Ready,
}

impl Probe {
    /// Reads a status byte.
    pub const fn classify(status: u8) -> Self {
        match status {
            0x00 | 0x7f | 0xff => Self::NoDrive,
            s if s & BSY != 0 => Self::Busy,
            s if s & (ERR | DF) != 0 => Self::Faulted,
            s if s & DRDY != 0 => Self::Ready,
            _ => Self::NotReady,
        }
    }

    /// Lower-case description for logs.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::NoDrive => "no drive",
            Self::Busy => "busy",
            Self::Faulted => "faulted",
            Self::NotReady => "not ready",
            Self::Ready => "ready",
        }
    }
}

/// What one probe read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The status register.
    pub status: u8,
    /// The alternate-status register.
    pub alternate_status: u8,
    /// The verdict (from the alternate status, which has no side effects).
    pub probe: Probe,
}

/// Reads both status registers.
pub fn probe(ports: &mut impl AtaPorts) -> Result<ProbeResult, Error> {
    let alternate_status = ports.alternate_status()?;
    let status = ports.status()?;
    Ok(ProbeResult {
        status,
        alternate_status,
        probe: Probe::classify(alternate_status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<u8, Error>, Result<u8, Error>);

    impl AtaPorts for Fixed {
        fn status(&mut self) -> Result<u8, Error> {
            self.0
        }
        fn alternate_status(&mut self) -> Result<u8, Error> {
            self.1
        }
    }

    #[test]
    fn status_bytes_are_classified() {
        assert_eq!(
            Probe::classify(0x50),
            Probe::Ready,
            "DRDY + DSC, what QEMU's disk shows"
        );
        assert_eq!(Probe::classify(0xff), Probe::NoDrive, "floating bus");
        assert_eq!(Probe::classify(0x00), Probe::NoDrive);
        assert_eq!(Probe::classify(0xd0), Probe::Busy);
        assert_eq!(Probe::classify(0x51), Probe::Faulted);
        assert_eq!(Probe::classify(0x10), Probe::NotReady);
    }

    #[test]
    fn probe_reads_both_registers_and_passes_errors_on() {
        let result = probe(&mut Fixed(Ok(0x50), Ok(0x50))).unwrap();
        assert_eq!(
            result,
            ProbeResult {
                status: 0x50,
                alternate_status: 0x50,
                probe: Probe::Ready
            }
        );
        assert_eq!(
            probe(&mut Fixed(Ok(0x50), Err(Error::OutOfRange))),
            Err(Error::OutOfRange)
        );
        assert_eq!(
            probe(&mut Fixed(Err(Error::InvalidCapability), Ok(0))),
            Err(Error::InvalidCapability)
        );
    }
}
