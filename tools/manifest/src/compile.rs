//! From a [`Manifest`] to the kernel's objects and per-world capabilities.
//!
//! Everything here is deterministic — the same manifest always yields the same object
//! indices, slots and badges — because the booted kernel's report of what it installed is
//! compared line by line with [`CompiledOwned`]. The layout:
//!
//! * **Objects**, in this order: one `Log` per world; one `Endpoint` per channel; each
//!   declared notification; each memory region; then per device its `IoPorts` ranges, its
//!   `Mmio` regions and, if it has an interrupt line, a notification `irq:<device>`
//!   followed by the `Interrupt` object that signals bit 0 of it.
//! * **Capabilities** of each world, slots counted from 0 in this order: `log` (LOG);
//!   `serve:<channel>` (RECEIVE) for each channel it serves; `call:<channel>` (CALL, badge
//!   `esker_abi::badge::encode(world index, operation mask)`) for each channel it calls;
//!   per device it holds `device:<d>:ioports`, `device:<d>:mmio` (DEVICE; mmio also
//!   READ+WRITE+MAP), `device:<d>:irq` (DEVICE, to acknowledge) and `irq:<d>` (WAIT on the
//!   interrupt's notification); `memory:<region>` with the listed rights; then per
//!   notification `wait:<n>` (WAIT) if it is the waiter and `signal:<n>` (SIGNAL) if it
//!   signals. A device with several port ranges (or MMIO regions) names them
//!   `device:<d>:ioports:0`, `device:<d>:ioports:1`, …
//!
//! Compilation never fails: references that do not resolve (possible only in a manifest
//! altered after loading) are skipped, and [`CompiledOwned::to_kernel`] reports a result
//! beyond the kernel's limits.

use esker_abi::{ObjectKind, Rights, badge};
use esker_kernel_core::manifest::{
    CapSpec, CompiledManifest, MAX_OBJECTS, MAX_WORLD_CAPS, MAX_WORLDS, ObjectSpec, SchedParams,
    WorldSpec,
};

use crate::model::{Device, Manifest};

/// The compiled manifest, owning its strings; [`to_kernel`](Self::to_kernel) borrows it as
/// the kernel's [`CompiledManifest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledOwned {
    /// Worlds in manifest order (index = world id).
    pub worlds: Vec<CompiledWorld>,
    /// Kernel objects.
    pub objects: Vec<CompiledObject>,
    /// For each object, the declaration it comes from (`world "x"`, `device "d"`) and its line.
    origins: Vec<(String, usize)>,
}

/// One world to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledWorld {
    /// Unique name.
    pub name: String,
    /// Its binary.
    pub binary: String,
    /// Memory budget in KiB.
    pub memory_kib: u32,
    /// Scheduling parameters.
    pub sched: SchedParams,
    /// Whether guest input reaches it.
    pub guest_facing: bool,
    /// Threads sharing its address space (a VM monitor: one per vCPU).
    pub threads: u8,
    /// Its capabilities, by slot.
    pub caps: Vec<CompiledCap>,
}

/// One capability to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledCap {
    /// Slot in the world's table.
    pub slot: u32,
    /// Name the world looks it up by.
    pub name: String,
    /// Index into [`CompiledOwned::objects`].
    pub object: u16,
    /// Rights.
    pub rights: Rights,
    /// Badge (0 = none).
    pub badge: u64,
}

/// An owned [`ObjectSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompiledObject {
    /// A world's log right.
    Log {
        /// The world.
        world: String,
    },
    /// A channel's endpoint.
    Endpoint {
        /// The channel.
        name: String,
    },
    /// A world, for the worlds that control it (`controls`).
    World {
        /// The world.
        name: String,
    },
    /// A notification.
    Notification {
        /// Its name (`irq:<device>` for an interrupt's).
        name: String,
    },
    /// RAM allocated at boot.
    Memory {
        /// Region name.
        name: String,
        /// Size in KiB.
        size_kib: u32,
    },
    /// I/O ports.
    IoPorts {
        /// Device name.
        name: String,
        /// First port.
        base: u16,
        /// Number of ports.
        count: u16,
    },
    /// Device MMIO.
    Mmio {
        /// Device name.
        name: String,
        /// Physical base.
        phys: u64,
        /// Size in bytes.
        size: u64,
    },
    /// A virtual machine.
    Vm {
        /// Its name.
        name: String,
    },
    /// A virtual CPU.
    Vcpu {
        /// `<vm>-vcpu<n>`.
        name: String,
        /// Index of its VM.
        vm: u16,
    },
    /// Input typed at the host console.
    Console,
    /// A VM's package, filled from a bundle binary.
    Package {
        /// `<vm>-package`.
        name: String,
        /// The binary.
        binary: String,
    },
    /// An interrupt line.
    Interrupt {
        /// Device name.
        name: String,
        /// Legacy line.
        line: u8,
        /// Index of the notification it signals.
        notification: u16,
        /// The bit it sets.
        bit: u8,
    },
}

impl CompiledObject {
    /// As the kernel's borrowed type.
    pub fn spec(&self) -> ObjectSpec<'_> {
        match self {
            Self::Log { world } => ObjectSpec::Log { world },
            Self::Endpoint { name } => ObjectSpec::Endpoint { name },
            Self::World { name } => ObjectSpec::World { name },
            Self::Notification { name } => ObjectSpec::Notification { name },
            Self::Memory { name, size_kib } => ObjectSpec::Memory {
                name,
                size_kib: *size_kib,
            },
            Self::IoPorts { name, base, count } => ObjectSpec::IoPorts {
                name,
                base: *base,
                count: *count,
            },
            Self::Mmio { name, phys, size } => ObjectSpec::Mmio {
                name,
                phys: *phys,
                size: *size,
            },
            Self::Vm { name } => ObjectSpec::Vm { name },
            Self::Vcpu { name, vm } => ObjectSpec::Vcpu { name, vm: *vm },
            Self::Package { name, binary } => ObjectSpec::Package { name, binary },
            Self::Console => ObjectSpec::Console { name: "console" },
            Self::Interrupt {
                name,
                line,
                notification,
                bit,
            } => ObjectSpec::Interrupt {
                name,
                line: *line,
                notification: *notification,
                bit: *bit,
            },
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ObjectKind {
        self.spec().kind()
    }

    /// Its name (a log object's is its world's).
    pub fn name(&self) -> &str {
        match self {
            Self::Log { world: name }
            | Self::Endpoint { name }
            | Self::World { name }
            | Self::Notification { name }
            | Self::Memory { name, .. }
            | Self::IoPorts { name, .. }
            | Self::Mmio { name, .. }
            | Self::Interrupt { name, .. }
            | Self::Vm { name }
            | Self::Vcpu { name, .. }
            | Self::Package { name, .. } => name,
            Self::Console => "console",
        }
    }
}

impl CompiledOwned {
    /// The kernel's view, borrowing from `self`; fails if a limit of the kernel is exceeded.
    pub fn to_kernel(&self) -> Result<CompiledManifest<'_>, String> {
        let mut manifest = CompiledManifest {
            worlds: heapless::Vec::new(),
            objects: heapless::Vec::new(),
        };
        for object in &self.objects {
            manifest.objects.push(object.spec()).map_err(|_| {
                format!(
                    "{} kernel objects; the kernel creates at most {MAX_OBJECTS}",
                    self.objects.len()
                )
            })?;
        }
        for world in &self.worlds {
            let mut caps = heapless::Vec::new();
            for cap in &world.caps {
                let spec = CapSpec {
                    slot: cap.slot,
                    name: &cap.name,
                    object: cap.object,
                    rights: cap.rights,
                    badge: cap.badge,
                };
                caps.push(spec).map_err(|_| {
                    format!(
                        "world \"{}\" holds {} capabilities; the kernel installs at most {MAX_WORLD_CAPS}",
                        world.name,
                        world.caps.len()
                    )
                })?;
            }
            let spec = WorldSpec {
                name: &world.name,
                binary: &world.binary,
                memory_kib: world.memory_kib,
                sched: world.sched,
                guest_facing: world.guest_facing,
                threads: world.threads,
                caps,
            };
            manifest.worlds.push(spec).map_err(|_| {
                format!(
                    "{} worlds; the kernel creates at most {MAX_WORLDS}",
                    self.worlds.len()
                )
            })?;
        }
        Ok(manifest)
    }

    /// The declaration an object comes from and its line.
    pub fn origin(&self, object: usize) -> Option<(&str, usize)> {
        self.origins
            .get(object)
            .map(|(what, line)| (what.as_str(), *line))
    }
}

impl Manifest {
    /// Compiles to objects and capabilities (see the module documentation for the layout).
    pub fn compile(&self) -> CompiledOwned {
        let mut out = Objects::default();
        for world in &self.worlds {
            out.add(
                CompiledObject::Log {
                    world: world.name.clone(),
                },
                format!("world \"{}\"", world.name),
                world.line,
            );
        }
        for controlled in self
            .worlds
            .iter()
            .filter(|w| self.worlds.iter().any(|c| c.controls.contains(&w.name)))
        {
            out.add(
                CompiledObject::World {
                    name: controlled.name.clone(),
                },
                format!("world \"{}\" (controlled)", controlled.name),
                controlled.line,
            );
        }
        for c in &self.channels {
            out.add(
                CompiledObject::Endpoint {
                    name: c.name.clone(),
                },
                format!("channel \"{}\"", c.name),
                c.line,
            );
        }
        for n in &self.notifications {
            out.add(
                CompiledObject::Notification {
                    name: n.name.clone(),
                },
                format!("notification \"{}\"", n.name),
                n.line,
            );
        }
        for m in &self.memory {
            let object = CompiledObject::Memory {
                name: m.name.clone(),
                size_kib: m.size_kib,
            };
            out.add(object, format!("memory \"{}\"", m.name), m.line);
        }
        for device in &self.devices {
            out.add_device(device);
        }
        for vm in &self.vms {
            out.add_vm(vm);
        }
        if let Some(world) = self.worlds.iter().find(|w| w.console) {
            out.add(
                CompiledObject::Console,
                format!("world \"{}\" (console)", world.name),
                world.line,
            );
        }
        let worlds = self
            .worlds
            .iter()
            .enumerate()
            .map(|(index, world)| out.world(self, index, world))
            .collect();
        CompiledOwned {
            worlds,
            objects: out.objects,
            origins: out.origins,
        }
    }
}

/// Objects being laid out, and where each device's ended up.
#[derive(Default)]
struct Objects {
    objects: Vec<CompiledObject>,
    origins: Vec<(String, usize)>,
}

impl Objects {
    fn add(&mut self, object: CompiledObject, origin: String, line: usize) -> u16 {
        self.objects.push(object);
        self.origins.push((origin, line));
        index(self.objects.len() - 1)
    }

    fn add_device(&mut self, device: &Device) {
        let origin = format!("device \"{}\"", device.name);
        for r in &device.ioports {
            let object = CompiledObject::IoPorts {
                name: device.name.clone(),
                base: r.base,
                count: r.count,
            };
            self.add(object, origin.clone(), device.line);
        }
        for r in &device.mmio {
            let object = CompiledObject::Mmio {
                name: device.name.clone(),
                phys: r.phys,
                size: r.size,
            };
            self.add(object, origin.clone(), device.line);
        }
        if let Some(line) = device.interrupt {
            let name = irq_notification(&device.name);
            let notification = self.add(
                CompiledObject::Notification { name },
                origin.clone(),
                device.line,
            );
            let object = CompiledObject::Interrupt {
                name: device.name.clone(),
                line,
                notification,
                bit: 0,
            };
            self.add(object, origin, device.line);
        }
    }

    /// Index of the first object matching `pred`.
    fn find(&self, pred: impl Fn(&CompiledObject) -> bool) -> Option<u16> {
        self.objects.iter().position(pred).map(index)
    }

    /// A VM's objects: the VM, its RAM (`<vm>-ram`), its vCPUs and its package.
    fn add_vm(&mut self, vm: &crate::model::Vm) {
        let origin = format!("vm \"{}\"", vm.name);
        let machine = self.add(
            CompiledObject::Vm {
                name: vm.name.clone(),
            },
            origin.clone(),
            vm.line,
        );
        self.add(
            CompiledObject::Memory {
                name: format!("{}-ram", vm.name),
                size_kib: vm.memory_mb.saturating_mul(1024),
            },
            origin.clone(),
            vm.line,
        );
        for n in 0..vm.vcpus {
            self.add(
                CompiledObject::Vcpu {
                    name: format!("{}-vcpu{n}", vm.name),
                    vm: machine,
                },
                origin.clone(),
                vm.line,
            );
        }
        if let Some(binary) = &vm.package {
            self.add(
                CompiledObject::Package {
                    name: format!("{}-package", vm.name),
                    binary: binary.clone(),
                },
                origin,
                vm.line,
            );
        }
    }

    /// The capabilities a monitor holds on its VM: `vm` (map guest memory), `memory:guest-ram`
    /// (its RAM, to map into the VM and into itself), `vcpu:<n>` (run), and
    /// `memory:vm-package` (read the package).
    fn vm_caps(&self, caps: &mut Caps, vm: &crate::model::Vm) {
        let named =
            |kind: ObjectKind, name: &str| self.find(|o| o.kind() == kind && o.name() == name);
        if let Some(object) = named(ObjectKind::Vm, &vm.name) {
            caps.push("vm".into(), object, Rights::MAP | Rights::READ, 0);
        }
        if let Some(object) = named(ObjectKind::Memory, &format!("{}-ram", vm.name)) {
            caps.push(
                "memory:guest-ram".into(),
                object,
                Rights::READ | Rights::WRITE | Rights::EXECUTE | Rights::MAP,
                0,
            );
        }
        for n in 0..vm.vcpus {
            if let Some(object) = named(ObjectKind::Vcpu, &format!("{}-vcpu{n}", vm.name)) {
                caps.push(format!("vcpu:{n}"), object, Rights::READ | Rights::WRITE, 0);
            }
        }
        if let Some(object) = named(ObjectKind::Memory, &format!("{}-package", vm.name)) {
            caps.push(
                "memory:vm-package".into(),
                object,
                Rights::READ | Rights::MAP,
                0,
            );
        }
    }

    fn world(
        &self,
        manifest: &Manifest,
        world_index: usize,
        world: &crate::model::World,
    ) -> CompiledWorld {
        let mut caps = Caps::default();
        let me = world.name.as_str();
        if let Some(log) = self.find(|o| matches!(o, CompiledObject::Log { world } if world == me))
        {
            caps.push("log".into(), log, Rights::LOG, 0);
        }
        let endpoint = |name: &str| {
            self.find(|o| matches!(o, CompiledObject::Endpoint { name: n } if n == name))
        };
        for c in manifest
            .channels
            .iter()
            .filter(|c| c.servers.iter().any(|s| s == me))
        {
            if let Some(object) = endpoint(&c.name) {
                caps.push(format!("serve:{}", c.name), object, Rights::RECEIVE, 0);
            }
        }
        for c in &manifest.channels {
            let (Some(client), Some(object)) = (
                c.clients.iter().find(|cl| cl.world == me),
                endpoint(&c.name),
            ) else {
                continue;
            };
            let mask = client
                .operations
                .iter()
                .filter_map(|op| esker_protocols::operation_index(&c.protocol, op))
                .fold(0u32, |mask, bit| mask | (1 << bit));
            let client_id = u16::try_from(world_index).unwrap_or(u16::MAX);
            let rights = if client.grant {
                Rights::CALL | Rights::GRANT
            } else {
                Rights::CALL
            };
            caps.push(
                format!("call:{}", c.name),
                object,
                rights,
                badge::encode(client_id, mask),
            );
        }
        for d in manifest
            .devices
            .iter()
            .filter(|d| d.holders.iter().any(|h| h == me))
        {
            self.device_caps(&mut caps, d);
        }
        for m in &manifest.memory {
            let memory =
                self.find(|o| matches!(o, CompiledObject::Memory { name, .. } if *name == m.name));
            if let (Some(share), Some(object)) = (m.shared.iter().find(|s| s.world == me), memory) {
                caps.push(format!("memory:{}", m.name), object, share.rights, 0);
            }
        }
        for n in &manifest.notifications {
            let Some(object) = self
                .find(|o| matches!(o, CompiledObject::Notification { name } if *name == n.name))
            else {
                continue;
            };
            if n.waiter == me {
                caps.push(format!("wait:{}", n.name), object, Rights::WAIT, 0);
            }
            if n.signallers.iter().any(|s| s == me) {
                caps.push(format!("signal:{}", n.name), object, Rights::SIGNAL, 0);
            }
        }
        if world.console
            && let Some(console) = self.find(|o| matches!(o, CompiledObject::Console))
        {
            caps.push("console".into(), console, Rights::READ, 0);
        }
        for vm in manifest.vms.iter().filter(|vm| vm.monitor == me) {
            self.vm_caps(&mut caps, vm);
        }
        for target in &world.controls {
            if let Some(object) =
                self.find(|o| matches!(o, CompiledObject::World { name } if name == target))
            {
                caps.push(
                    format!("world:{target}"),
                    object,
                    Rights::READ | Rights::WRITE,
                    0,
                );
            }
        }
        CompiledWorld {
            name: world.name.clone(),
            binary: world.binary.clone(),
            memory_kib: world.memory_kib,
            sched: world.sched,
            guest_facing: world.guest_facing,
            // A VM's monitor runs one thread per vCPU (the parser bounds vcpus).
            threads: manifest
                .vms
                .iter()
                .find(|vm| vm.monitor == world.name)
                .map_or(1, |vm| u8::try_from(vm.vcpus).unwrap_or(u8::MAX).max(1)),
            caps: caps.0,
        }
    }

    fn device_caps(&self, caps: &mut Caps, d: &Device) {
        let of_device =
            |o: &CompiledObject, kind: ObjectKind| o.kind() == kind && o.name() == d.name;
        let ranges = |kind: ObjectKind| -> Vec<u16> {
            (0..self.objects.len())
                .filter(|i| of_device(&self.objects[*i], kind))
                .map(index)
                .collect()
        };
        let mmio_rights = Rights::DEVICE | Rights::READ | Rights::WRITE | Rights::MAP;
        for (kind, label, rights) in [
            (ObjectKind::IoPorts, "ioports", Rights::DEVICE),
            (ObjectKind::Mmio, "mmio", mmio_rights),
        ] {
            let objects = ranges(kind);
            for (i, object) in objects.iter().enumerate() {
                let name = if objects.len() == 1 {
                    format!("device:{}:{label}", d.name)
                } else {
                    format!("device:{}:{label}:{i}", d.name)
                };
                caps.push(name, *object, rights, 0);
            }
        }
        if let Some(&interrupt) = ranges(ObjectKind::Interrupt).first()
            && let Some(CompiledObject::Interrupt { notification, .. }) =
                self.objects.get(usize::from(interrupt))
        {
            caps.push(
                format!("device:{}:irq", d.name),
                interrupt,
                Rights::DEVICE,
                0,
            );
            caps.push(irq_notification(&d.name), *notification, Rights::WAIT, 0);
        }
    }
}

/// Capabilities being assigned slots in order.
#[derive(Default)]
struct Caps(Vec<CompiledCap>);

impl Caps {
    fn push(&mut self, name: String, object: u16, rights: Rights, badge: u64) {
        let slot = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0.push(CompiledCap {
            slot,
            name,
            object,
            rights,
            badge,
        });
    }
}

/// The name of a device's interrupt notification (and of the capability to wait on it).
pub fn irq_notification(device: &str) -> String {
    format!("irq:{device}")
}

fn index(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}
