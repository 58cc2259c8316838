//! Host side of Esker's serial log.
//!
//! The kernel owns COM1 and sends everything over it as framed packets
//! (`esker_kernel_core::logframe`): its own defmt frames, later those of user worlds and
//! the text of guest consoles. [`LogDecoder`] turns that byte stream back into readable
//! [`LogEvent`]s, decoding each source's defmt frames with the source's ELF from an image
//! directory (`esker.elf` for the kernel, `worlds/<name>.elf` for announced sources).
//!
//! The crate also owns the two other things every host tool shares: how QEMU is started
//! ([`qemu`]: one command line for `cargo xtask run`, `bench` and the QEMU tests) and how
//! an ELF's sections are read ([`elf`]).
//!
//! Nothing here panics on what arrives over the serial line.

mod decoder;
pub mod elf;
mod error;
mod event;
mod garbage;
pub mod qemu;
mod source;

pub use decoder::{KERNEL_ELF, KERNEL_SOURCE_NAME, LogDecoder, WORLDS_DIR};
pub use error::Error;
pub use event::{EventKind, Level, LogEvent, QEMU_SOURCE_NAME, SERIAL_SOURCE_NAME};
