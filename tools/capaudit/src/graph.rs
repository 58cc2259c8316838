//! The capability graph: worlds and kernel objects as nodes, installed capabilities as
//! edges, built from the compiled manifest exactly as the kernel will install it.
//!
//! Also renders it — as aligned text (per world: slot, capability, object, rights, badge
//! decoded as client and operations) and as Graphviz DOT. It decides nothing about policy.

use std::fmt::Write as _;

use esker_abi::{ObjectKind, Rights, badge};
use esker_manifest::{CompiledObject, Manifest};

/// A world node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldNode {
    /// Name.
    pub name: String,
    /// Binary.
    pub binary: String,
    /// Whether guest input reaches it.
    pub guest_facing: bool,
    /// The VM it monitors.
    pub vm: Option<String>,
}

/// A kernel-object node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNode {
    /// Kind.
    pub kind: ObjectKind,
    /// Name (a log object's is its world's, a device object's its device's).
    pub name: String,
    /// For memory: the VM that owns it.
    pub owner_vm: Option<String>,
    /// For an endpoint: its channel's protocol.
    pub protocol: Option<String>,
    /// For an interrupt: the notification object it signals.
    pub signals: Option<usize>,
    /// Kind-specific detail for display (`64 KiB`, `ports 0x1f0+8`).
    pub detail: String,
}

/// One installed capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapEdge {
    /// Index into [`Graph::worlds`].
    pub world: usize,
    /// Slot in the world's table.
    pub slot: u32,
    /// Name the world looks it up by.
    pub name: String,
    /// Index into [`Graph::objects`].
    pub object: usize,
    /// Rights.
    pub rights: Rights,
    /// Badge.
    pub badge: u64,
}

/// Worlds, objects and the capabilities between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Graph {
    /// The manifest file.
    pub file: String,
    /// Worlds in manifest order.
    pub worlds: Vec<WorldNode>,
    /// Objects in compiled order.
    pub objects: Vec<ObjectNode>,
    /// Capabilities, by world then slot.
    pub caps: Vec<CapEdge>,
}

impl Graph {
    /// Builds the graph of what `manifest` compiles to.
    pub fn of(manifest: &Manifest) -> Self {
        let compiled = manifest.compile();
        let worlds = manifest
            .worlds
            .iter()
            .map(|w| WorldNode {
                name: w.name.clone(),
                binary: w.binary.clone(),
                guest_facing: w.guest_facing,
                vm: w.vm.clone(),
            })
            .collect();
        let objects = compiled
            .objects
            .iter()
            .map(|o| object_node(manifest, o))
            .collect();
        let caps = compiled
            .worlds
            .iter()
            .enumerate()
            .flat_map(|(world, w)| {
                w.caps.iter().map(move |c| CapEdge {
                    world,
                    slot: c.slot,
                    name: c.name.clone(),
                    object: usize::from(c.object),
                    rights: c.rights,
                    badge: c.badge,
                })
            })
            .collect();
        Self {
            file: manifest.file.clone(),
            worlds,
            objects,
            caps,
        }
    }

    /// A world's name (or `#<index>` for an index no world has).
    pub fn world_name(&self, index: usize) -> String {
        self.worlds
            .get(index)
            .map_or_else(|| format!("#{index}"), |w| w.name.clone())
    }

    /// Every operation of an endpoint's protocol (empty for other objects).
    pub fn protocol_operations(&self, object: usize) -> &'static [&'static str] {
        self.objects
            .get(object)
            .and_then(|o| o.protocol.as_deref())
            .and_then(esker_protocols::operations)
            .unwrap_or_default()
    }

    /// The operations a call capability's badge allows, by name.
    pub fn operations(&self, cap: &CapEdge) -> Vec<&'static str> {
        let ops = self.protocol_operations(cap.object);
        (0u32..)
            .zip(ops.iter())
            .filter(|(bit, _)| badge::allows(cap.badge, *bit))
            .map(|(_, op)| *op)
            .collect()
    }

    /// A badge as `client hostd: status, issue_ticket` (empty for 0).
    pub fn describe_badge(&self, cap: &CapEdge) -> String {
        if cap.badge == 0 {
            return String::new();
        }
        let client = self.world_name(usize::from(badge::client(cap.badge)));
        format!("client {client}: {}", self.operations(cap).join(", "))
    }

    /// Aligned text: per world, one line per capability.
    pub fn text(&self) -> String {
        let mut out = format!(
            "capability graph of {}: {} worlds, {} objects, {} capabilities\n",
            self.file,
            self.worlds.len(),
            self.objects.len(),
            self.caps.len()
        );
        for (index, world) in self.worlds.iter().enumerate() {
            let exposure = match (&world.vm, world.guest_facing) {
                (Some(vm), true) => format!(", guest-facing, vm {vm}"),
                (None, true) => ", guest-facing".to_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "\nworld {} (index {index}, binary {}{exposure})",
                world.name, world.binary
            );
            let rows: Vec<[String; 5]> = self
                .caps
                .iter()
                .filter(|c| c.world == index)
                .map(|c| {
                    let object = self.objects.get(c.object).map_or_else(
                        || "?".to_owned(),
                        |o| format!("{} {}", o.kind.name(), o.name),
                    );
                    let badge = if c.badge == 0 {
                        "-".to_owned()
                    } else {
                        format!("{:#x} ({})", c.badge, self.describe_badge(c))
                    };
                    [
                        c.slot.to_string(),
                        c.name.clone(),
                        object,
                        c.rights.to_string(),
                        badge,
                    ]
                })
                .collect();
            let header = ["slot", "capability", "object", "rights", "badge"].map(str::to_owned);
            let mut widths = [0usize; 4];
            for row in std::iter::once(&header).chain(&rows) {
                for (w, cell) in widths.iter_mut().zip(row.iter()) {
                    *w = (*w).max(cell.len());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let _ = writeln!(
                    out,
                    "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2],
                    w3 = widths[3]
                );
            }
        }
        out
    }

    /// Graphviz DOT: worlds as boxes (guest-facing ones red), objects as ellipses,
    /// capabilities as edges labelled `slot name` and rights (and operations), and a dashed
    /// edge from each interrupt to the notification it signals.
    pub fn dot(&self) -> String {
        let mut out = String::from(
            "digraph capabilities {\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n",
        );
        for (i, w) in self.worlds.iter().enumerate() {
            let mut label = format!("{}\\nworld {i}", escape(&w.name));
            let mut style = String::new();
            if w.guest_facing {
                label += &format!(
                    "\\nguest-facing{}",
                    w.vm.as_deref()
                        .map(|vm| format!(", vm {}", escape(vm)))
                        .unwrap_or_default()
                );
                style = ", style=filled, fillcolor=\"#f4cccc\"".to_owned();
            }
            let _ = writeln!(out, "  w{i} [shape=box, label=\"{label}\"{style}];");
        }
        for (i, o) in self.objects.iter().enumerate() {
            let mut label = format!("{}\\n{}", o.kind.name(), escape(&o.name));
            if !o.detail.is_empty() {
                label += &format!("\\n{}", escape(&o.detail));
            }
            let _ = writeln!(out, "  o{i} [shape=ellipse, label=\"{label}\"];");
        }
        for c in &self.caps {
            let mut label = format!("{} {}\\n{}", c.slot, escape(&c.name), c.rights);
            let ops = self.operations(c);
            if !ops.is_empty() {
                label += &format!("\\n{}", ops.join(","));
            }
            let _ = writeln!(out, "  w{} -> o{} [label=\"{label}\"];", c.world, c.object);
        }
        for (i, o) in self.objects.iter().enumerate() {
            if let Some(n) = o.signals {
                let _ = writeln!(out, "  o{i} -> o{n} [style=dashed, label=\"signals\"];");
            }
        }
        out + "}\n"
    }
}

fn object_node(manifest: &Manifest, object: &CompiledObject) -> ObjectNode {
    let mut node = ObjectNode {
        kind: object.kind(),
        name: object.name().to_owned(),
        owner_vm: None,
        protocol: None,
        signals: None,
        detail: String::new(),
    };
    match object {
        CompiledObject::Endpoint { name } => {
            node.protocol = manifest.channel(name).map(|c| c.protocol.clone());
            node.detail = node
                .protocol
                .as_ref()
                .map(|p| format!("protocol {p}"))
                .unwrap_or_default();
        }
        CompiledObject::Memory { name, size_kib } => {
            node.owner_vm = manifest
                .memory_region(name)
                .and_then(|m| m.owner_vm.clone())
                .or_else(|| {
                    manifest
                        .vms
                        .iter()
                        .find(|vm| *name == format!("{}-ram", vm.name))
                        .map(|vm| vm.name.clone())
                });
            node.detail = format!("{size_kib} KiB");
            if let Some(vm) = &node.owner_vm {
                node.detail += &format!(", vm {vm}");
            }
        }
        CompiledObject::IoPorts { base, count, .. } => {
            node.detail = format!("ports {base:#x}+{count}")
        }
        CompiledObject::Mmio { phys, size, .. } => node.detail = format!("{phys:#x}+{size:#x}"),
        CompiledObject::Interrupt {
            line, notification, ..
        } => {
            node.detail = format!("line {line}");
            node.signals = Some(usize::from(*notification));
        }
        CompiledObject::Vm { name } => {
            node.owner_vm = Some(name.clone());
            if let Some(vm) = manifest.vms.iter().find(|vm| vm.name == *name) {
                node.detail = format!("{} MiB, {} vCPUs", vm.memory_mb, vm.vcpus);
            }
        }
        CompiledObject::Vcpu { name, vm } => {
            node.owner_vm = name.rsplit_once("-vcpu").map(|(vm, _)| vm.to_owned());
            node.detail = format!("of object {vm}");
        }
        CompiledObject::Package { name, binary } => {
            node.owner_vm = name.strip_suffix("-package").map(str::to_owned);
            node.detail = format!("from {binary}");
        }
        CompiledObject::Console => node.detail = "host console input".into(),
        CompiledObject::Log { .. }
        | CompiledObject::Notification { .. }
        | CompiledObject::World { .. } => {}
    }
    node
}

/// Escapes a string for a DOT double-quoted label.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
