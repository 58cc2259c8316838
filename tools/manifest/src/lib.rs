//! Esker's system manifest: the human-written `system.toml`, checked and compiled.
//!
//! The kernel creates exactly the worlds, kernel objects and capabilities the manifest
//! lists, and nothing else. This crate reads the TOML ([`load`], [`parse`]), reports every
//! mistake as `system.toml:LINE: <what is wrong, naming the declaration>` ([`Diagnostic`]),
//! compiles the result ([`Manifest::compile`]) into the kernel's
//! [`CompiledManifest`](esker_kernel_core::manifest::CompiledManifest) layout, and packs it
//! with the world binaries into the boot bundle ([`build_bundle`]).
//!
//! # Format
//!
//! Five sections, each a table of named declarations. Names (of worlds, channels,
//! devices, memory, notifications, binaries and VMs) are 1 to 32 of `a-z 0-9 - _`.
//! Declarations keep the order they are written in; a world's position is its index
//! (used in badges).
//!
//! ```toml
//! [worlds.vmkauthd]          # a user world; the key is its unique name and log source
//! binary = "vmkauthd"        # required: program name (servers/<binary>)
//! memory_kib = 512           # required: heap + stack budget, a multiple of 4
//! shares = 1000              # optional (default 1000, 1..=1000000)
//! reservation_mhz = 0        # optional (default 0 = none)
//! limit_mhz = 0              # optional (default 0 = unlimited; else >= reservation)
//! affinity = [0, 1]          # optional CPU list (0..=63; default: all CPUs)
//! coschedule = true          # optional: its threads (a VM's vCPUs) co-scheduled, relaxed
//! guest_facing = false       # optional: true if it parses guest-controlled input
//! vm = "vm1"                 # the VM it monitors; required when guest_facing
//!
//! [channels.auth]            # one endpoint
//! server = "vmkauthd"        # required; a list is accepted so the audit can object to it
//! protocol = "auth"          # required: a protocol of esker-protocols
//! clients = { hostd = ["status", "issue_ticket"], vmx = ["status"] }  # optional
//!
//! [devices.ata0]             # hardware granted to worlds
//! holders = ["storage"]      # required list (the audit wants exactly one holder)
//! ioports = [{ base = 0x1f0, count = 8 }, { base = 0x3f6, count = 1 }]  # or one table
//! mmio = { phys = 0xfebf0000, size = 0x1000 }  # or a list; page-aligned
//! interrupt = 14             # legacy line 0..=23
//!
//! [memory.ring-vm1-vswitch]  # RAM allocated at boot
//! size_kib = 64              # required, a multiple of 4
//! owner_vm = "vm1"           # optional: the VM whose memory this is
//! shared = { vmx = ["read", "write", "map"], vswitch = ["read", "write", "map"] }
//!                            # required; rights: read, write, execute, grant, map
//!
//! [notifications.ring-vm1]
//! waiter = "vswitch"         # required
//! signallers = ["vmx"]       # optional
//! ```
//!
//! What is checked: TOML syntax and duplicate keys; unknown sections and keys; types and
//! required keys; names; references to undeclared worlds; unknown protocols and
//! operations; a channel without a server; a world both serving and calling a channel;
//! clients or sharers given nothing; unknown or inapplicable rights; sizes not multiples
//! of 4 KiB; overlapping ports, MMIO or interrupt lines; and the kernel's limits
//! (`MAX_WORLDS`, `MAX_OBJECTS`, `MAX_WORLD_CAPS`, `MAX_BINARIES`).
//!
//! The object and capability layout the compiler produces is described in [`compile`].

mod bundle;
pub mod compile;
mod diagnostic;
mod limits;
mod model;
mod parse;
pub mod toml_read;

use std::path::Path;

pub use bundle::{MAX_BUNDLE_BYTES, build_bundle};
pub use compile::{CompiledCap, CompiledObject, CompiledOwned, CompiledWorld, irq_notification};
pub use diagnostic::{Diagnostic, Diagnostics, Source};
pub use model::{
    Channel, Client, Device, IoPortRange, MEMORY_RIGHTS, Manifest, MemoryRegion, MmioRange,
    Notification, Share, World,
};
pub use parse::{MAX_NAME_LEN, is_valid_name, parse};

/// Reads and checks the manifest at `path`; diagnostics name the file as `path` is written.
pub fn load(path: &Path) -> Result<Manifest, Vec<Diagnostic>> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &file),
        Err(e) => Err(vec![Diagnostic {
            file,
            line: 0,
            message: format!("cannot read the manifest: {e}"),
        }]),
    }
}
