//! The checked manifest: what `system.toml` declares, as plain owned data.
//!
//! A [`Manifest`] returned by [`load`](crate::load) or [`parse`](crate::parse) has passed
//! every check: names are unique and well formed, every reference names a declared world,
//! every operation exists in its channel's protocol, sizes are aligned and the kernel's
//! limits hold. The fields are public so that tools (and tests) can inspect or alter it;
//! compiling an altered manifest never panics, it only skips references that do not
//! resolve. Declarations keep the order they were written in, and `line` is where each
//! one starts in the source.

use esker_abi::Rights;
use esker_kernel_core::manifest::SchedParams;

/// The whole system as declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The file it was read from (for messages).
    pub file: String,
    /// Worlds; the position is the world index used in badges.
    pub worlds: Vec<World>,
    /// Channels (one endpoint each).
    pub channels: Vec<Channel>,
    /// Hardware granted to worlds.
    pub devices: Vec<Device>,
    /// RAM allocated at boot.
    pub memory: Vec<MemoryRegion>,
    /// Notifications.
    pub notifications: Vec<Notification>,
    /// Virtual machines powered on at boot.
    pub vms: Vec<Vm>,
}

/// A `[vms.<name>]` table: a VM powered on at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    /// Unique name.
    pub name: String,
    /// The world that monitors it (holds its vm, vcpu, RAM and package capabilities).
    pub monitor: String,
    /// Guest RAM in MiB.
    pub memory_mb: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// The bundle binary holding its package (configuration, kernel, initrd), if any.
    pub package: Option<String>,
    /// Line of its declaration.
    pub line: usize,
}

/// A `[worlds.<name>]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// Unique name; also its log source name.
    pub name: String,
    /// Program name (`servers/<binary>`).
    pub binary: String,
    /// Heap and stack budget in KiB (a multiple of 4).
    pub memory_kib: u32,
    /// Scheduling parameters.
    pub sched: SchedParams,
    /// Whether it parses guest-controlled input.
    pub guest_facing: bool,
    /// The VM a guest-facing world monitors.
    pub vm: Option<String>,
    /// Worlds it holds a World capability on (`world:<name>`, read + write).
    pub controls: Vec<String>,
    /// Whether it receives what is typed at the host console (`console = true`).
    pub console: bool,
    /// Line of its declaration.
    pub line: usize,
}

/// A `[channels.<name>]` table: one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Unique name.
    pub name: String,
    /// The worlds that receive on it. The manifest accepts several so that the audit's
    /// `one-server` rule, not the parser, states that there must be exactly one.
    pub servers: Vec<String>,
    /// Its protocol in `esker-protocols`.
    pub protocol: String,
    /// Who may call it, with which operations.
    pub clients: Vec<Client>,
    /// Line of its declaration.
    pub line: usize,
}

/// One client of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The calling world.
    pub world: String,
    /// The operations it may invoke (names from the protocol).
    pub operations: Vec<String>,
    /// Whether it may also derive and pass on its capability (GRANT).
    pub grant: bool,
}

/// A `[devices.<name>]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Unique name.
    pub name: String,
    /// The worlds given the device (the audit requires exactly one).
    pub holders: Vec<String>,
    /// I/O-port ranges.
    pub ioports: Vec<IoPortRange>,
    /// MMIO regions.
    pub mmio: Vec<MmioRange>,
    /// Legacy interrupt line.
    pub interrupt: Option<u8>,
    /// Line of its declaration.
    pub line: usize,
}

/// A range of I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPortRange {
    /// First port.
    pub base: u16,
    /// Number of ports (at least 1; `base + count <= 0x10000`).
    pub count: u16,
}

/// A region of device MMIO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRange {
    /// Physical base, page-aligned.
    pub phys: u64,
    /// Size in bytes, a non-zero page multiple.
    pub size: u64,
}

/// A `[memory.<name>]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Unique name.
    pub name: String,
    /// Size in KiB (a multiple of 4).
    pub size_kib: u32,
    /// The VM whose memory this is, if any.
    pub owner_vm: Option<String>,
    /// The worlds it is shared with and their rights.
    pub shared: Vec<Share>,
    /// Line of its declaration.
    pub line: usize,
}

/// One world's access to a memory region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The world.
    pub world: String,
    /// Its rights (a subset of [`MEMORY_RIGHTS`]).
    pub rights: Rights,
}

/// A `[notifications.<name>]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Unique name.
    pub name: String,
    /// The world that waits on it.
    pub waiter: String,
    /// The worlds that may signal it.
    pub signallers: Vec<String>,
    /// Line of its declaration.
    pub line: usize,
}

/// The rights a memory capability may carry.
pub const MEMORY_RIGHTS: [Rights; 5] = [
    Rights::READ,
    Rights::WRITE,
    Rights::EXECUTE,
    Rights::GRANT,
    Rights::MAP,
];

impl Manifest {
    /// The index of a world (its id in badges).
    pub fn world_index(&self, name: &str) -> Option<usize> {
        self.worlds.iter().position(|w| w.name == name)
    }

    /// A world by name.
    pub fn world(&self, name: &str) -> Option<&World> {
        self.worlds.iter().find(|w| w.name == name)
    }

    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// A memory region by name.
    pub fn memory_region(&self, name: &str) -> Option<&MemoryRegion> {
        self.memory.iter().find(|m| m.name == name)
    }
}
