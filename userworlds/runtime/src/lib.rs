//! The runtime every Esker user world links.
//!
//! It owns what sits between a world's logic and the kernel ABI (`esker-abi`):
//!
//! * the entry point (`_start`, [`entry!`]): decodes the start-info record, sets up the
//!   logger and the heap, and calls the world's `fn(Runtime) -> !`;
//! * typed system-call wrappers ([`sys`]), each returning `Result<_, esker_abi::Error>`;
//! * capability-use declarations ([`uses!`]), kept in the ELF section `.esker_uses` for the
//!   capability audit, and the only way to look a capability up by name ([`Runtime::slot`]);
//! * typed channels ([`channel`]): postcard-encoded request/reply enums over the IPC
//!   buffer, with a server loop that refuses operations the caller's badge lacks;
//! * the defmt logger (frames go out through the `log` system call) and the panic handler;
//! * a heap (talc over an arena the world sizes in [`entry!`]);
//! * single-producer single-consumer byte-record rings over shared memory ([`ring`]).
//!
//! Logic is plain Rust tested on the host; only `sys::raw`, the IPC-buffer access, the
//! logger, the heap and the entry point touch hardware or the kernel, and they compile only
//! for `target_os = "none"` (on the host, system calls return `InvalidSyscall`).
//!
//! The runtime never trusts what arrives from outside the world: start info, messages,
//! badges and shared rings are all checked, and a bad one is an error, never a panic.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod arch;
pub mod channel;
pub mod ipc;
pub mod logger;
pub mod ring;
pub mod sys;
pub mod thread;
pub mod time;
pub mod uses;

#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
mod start;

pub use channel::{ChannelError, Client, Service};
pub use esker_abi as abi;
pub use esker_abi::{CapSlot, Error};
pub use esker_protocols as protocols;
pub use uses::Declared;

use esker_abi::start_info::{StartInfo, StartInfoError};

/// Exit code of a world that panicked.
pub const EXIT_PANIC: u64 = 101;
/// Exit code of a world whose start-info record did not decode.
pub const EXIT_BAD_START_INFO: u64 = 102;

/// Default heap size of a world ([`entry!`] without `heap = …`).
pub const DEFAULT_HEAP_BYTES: usize = 64 * 1024;

/// A capability named in a `uses!` declaration is missing from the start info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingCapability {
    /// The declared name (`call:auth`, …).
    pub name: &'static str,
}

impl defmt::Format for MissingCapability {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "capability `{=str}` is not in this world's start info",
            self.name
        );
    }
}

/// What the world was started with: its name and its capability directory.
///
/// Handed to the world's main function by [`entry!`]. Capabilities are looked up by the
/// handles [`uses!`] returns, so a world can only find what it declared.
#[derive(Clone, Copy, Debug)]
pub struct Runtime {
    info: StartInfo<'static>,
}

impl Runtime {
    /// Decodes a start-info record (the entry point does this with the record the kernel
    /// wrote; tests use their own).
    pub fn from_start_info(record: &'static [u8]) -> Result<Self, StartInfoError> {
        Ok(Self {
            info: StartInfo::decode(record)?,
        })
    }

    /// The world's name (also the name its log lines are tagged with).
    pub fn world_name(&self) -> &'static str {
        self.info.world_name
    }

    /// The slot of a declared capability.
    ///
    /// A declared capability the kernel did not hand over is an error, logged loudly on
    /// the target: either the manifest or the declaration is wrong.
    pub fn slot(&self, cap: &Declared) -> Result<CapSlot, MissingCapability> {
        match self.info.slot(cap.name()) {
            Some(slot) => Ok(slot),
            None => {
                #[cfg(target_os = "none")]
                defmt::error!(
                    "runtime: declared capability `{=str}` is not in the start info",
                    cap.name()
                );
                Err(MissingCapability { name: cap.name() })
            }
        }
    }

    /// Every `(slot, name)` of the start info, declared or not (for diagnostics and the
    /// hostile test world; use [`Runtime::slot`] to use a capability).
    pub fn directory(&self) -> impl Iterator<Item = (CapSlot, &'static str)> + 'static {
        self.info.caps()
    }

    /// A client of the channel behind a declared `call:` capability.
    #[cfg(target_os = "none")]
    pub fn client<P: esker_protocols::Protocol>(
        &self,
        cap: &Declared,
    ) -> Result<Client<P, ipc::KernelTransport>, MissingCapability> {
        Ok(Client::new(self.slot(cap)?, ipc::KernelTransport::new()))
    }

    /// Serves the channel behind a declared `serve:` capability with `service`, forever.
    ///
    /// Returns only if receiving fails for good (the endpoint capability is unusable);
    /// the error is logged before it is returned.
    #[cfg(target_os = "none")]
    pub fn serve<P, S>(&self, cap: &Declared, service: &mut S) -> Error
    where
        P: esker_protocols::Protocol,
        S: Service<P>,
    {
        let Ok(slot) = self.slot(cap) else {
            return Error::InvalidCapability;
        };
        let error = channel::serve::<P, S, _>(&mut ipc::KernelTransport::new(), slot, service);
        defmt::error!(
            "runtime: serving `{=str}` stopped: {=str}",
            cap.name(),
            error.describe()
        );
        error
    }
}

/// Declares the world's main function (and optionally its heap size).
///
/// ```ignore
/// esker_rt::entry!(world_main);                      // 64 KiB heap
/// esker_rt::entry!(world_main, heap = 256 * 1024);
///
/// #[cfg(target_os = "none")]
/// fn world_main(rt: esker_rt::Runtime) -> ! { … }
/// ```
///
/// On the target this defines the symbols the runtime's `_start` calls. On the host it
/// defines a stub `fn main()` that says the program runs on Esker only (so `cargo test
/// --workspace` and host clippy build every world); the world function itself should be
/// `#[cfg(target_os = "none")]`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!($main, heap = $crate::DEFAULT_HEAP_BYTES);
    };
    ($main:path, heap = $bytes:expr) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        fn __esker_rt_main(rt: $crate::Runtime) -> ! {
            let main: fn($crate::Runtime) -> ! = $main;
            main(rt)
        }

        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        fn __esker_rt_heap() -> (*mut u8, usize) {
            static ARENA: $crate::heap::Arena<{ $bytes }> = $crate::heap::Arena::new();
            ARENA.region()
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            ::std::eprintln!(
                "{} is an Esker user world: build it with --target x86_64-unknown-none.",
                ::core::env!("CARGO_PKG_NAME")
            );
            ::std::process::exit(2);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bytes: &[u8]) -> &'static [u8] {
        std::boxed::Box::leak(bytes.to_vec().into_boxed_slice())
    }

    #[test]
    fn runtime_finds_declared_capabilities_only_by_handle() {
        let mut buf = [0u8; 128];
        let n = esker_abi::start_info::encode("hostd", [(0, "log"), (4, "call:auth")], &mut buf)
            .unwrap();
        let rt = Runtime::from_start_info(record(&buf[..n])).unwrap();
        assert_eq!(rt.world_name(), "hostd");
        let auth = uses!("call:auth", "call", "status");
        let storage = uses!("call:storage", "call", "status");
        assert_eq!(rt.slot(&auth), Ok(4));
        assert_eq!(
            rt.slot(&storage),
            Err(MissingCapability {
                name: "call:storage"
            })
        );
        assert_eq!(rt.directory().count(), 2);
    }

    #[test]
    fn malformed_start_info_is_refused() {
        assert!(Runtime::from_start_info(record(&[5, b'a'])).is_err());
        assert!(Runtime::from_start_info(record(&[])).is_err());
    }
}
