//! Errors of the decoder and of the QEMU runner, each naming the file or command involved.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Something the log tools could not do.
#[derive(Debug)]
pub enum Error {
    /// An ELF (or another input file) could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The ELF parsed, but carries no `.defmt` table (built without defmt, or linked
    /// without `-Tdefmt.x`, or stripped).
    NoDefmtTable {
        /// The ELF.
        path: PathBuf,
    },
    /// The ELF's defmt table or section layout could not be parsed.
    BadElf {
        /// The ELF.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// QEMU could not be started.
    SpawnQemu {
        /// The program that was run.
        program: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The raw serial capture file could not be created.
    Capture {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::NoDefmtTable { path } => write!(
                f,
                "{} has no defmt table (no `.defmt` section: built without defmt, linked \
                 without -Tdefmt.x, or stripped)",
                path.display()
            ),
            Error::BadElf { path, message } => {
                write!(f, "cannot use {}: {message}", path.display())
            }
            Error::SpawnQemu { program, source } => write!(
                f,
                "cannot start {program}: {source} (install it with `apt-get install -y \
                 qemu-system-x86`)"
            ),
            Error::Capture { path, source } => {
                write!(
                    f,
                    "cannot create serial capture {}: {source}",
                    path.display()
                )
            }
        }
    }
}

/// The underlying I/O error is part of the message, so it is not also a `source()`
/// (which would print it twice in an error chain).
impl std::error::Error for Error {}
