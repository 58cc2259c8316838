//! The capability-policy audit of an Esker system.
//!
//! Reads the checked manifest (`esker-manifest`), a rule file ([`Rules`], `audit.toml`)
//! and optionally the worlds' ELFs, builds the capability graph exactly as the kernel will
//! install it ([`Graph`]), and proves these rules, reporting each break as one
//! [`Violation`] line naming the rule, the world and the capability:
//!
//! * `only-callers` (from the rule file): only the listed worlds hold a capability whose
//!   badge allows a given channel operation;
//! * `exclusive-device`: every device is held by exactly one world (the message names all
//!   holders);
//! * `one-server`: every channel has exactly one server;
//! * `vm-memory-isolation`: no guest-facing world can reach, by any take-grant path
//!   ([`Reach`]), memory owned by another VM;
//! * `least-privilege` / `granted-uses` (only when programs' declarations are given): no
//!   world holds a capability, right or operation its program never declares in
//!   `.esker_uses` ([`Uses`]), and every declared use is granted.
//!
//! [`expected_capabilities`] gives one canonical line per installed capability — the list a
//! QEMU test compares with what the booted kernel reports it installed.

mod checks;
mod graph;
mod reach;
mod rules;
mod uses;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use checks::{Rule, Violation};
pub use graph::{CapEdge, Graph, ObjectNode, WorldNode};
pub use reach::{Origin, Reach, Reached};
pub use rules::{OnlyCallers, Rules};
pub use uses::{USES_SECTION, Use, Uses};

use checks::UsesOf;
use esker_manifest::Manifest;

/// The result of an audit.
#[derive(Clone, Debug)]
pub struct AuditReport {
    graph: Graph,
    violations: Vec<Violation>,
}

impl AuditReport {
    /// Every violation, rule by rule in the order of [`Rule`], then by world or object.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether no rule is broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The capability graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph as text: per world, slot, capability, object, rights and decoded badge.
    pub fn graph_text(&self) -> String {
        self.graph.text()
    }

    /// The graph as Graphviz DOT.
    pub fn graph_dot(&self) -> String {
        self.graph.dot()
    }

    /// Writes `capabilities.dot` into `dir` (created if needed) and, when Graphviz's `dot`
    /// is on `PATH`, `capabilities.svg`. Returns the files written.
    pub fn write_graph(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let dot = dir.join("capabilities.dot");
        std::fs::write(&dot, self.graph_dot())
            .map_err(|e| format!("cannot write {}: {e}", dot.display()))?;
        let svg = dir.join("capabilities.svg");
        match std::process::Command::new("dot")
            .arg("-Tsvg")
            .arg("-o")
            .arg(&svg)
            .arg(&dot)
            .status()
        {
            Ok(status) if status.success() => Ok(vec![dot, svg]),
            Ok(status) => Err(format!("dot -Tsvg {} failed ({status})", dot.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![dot]),
            Err(e) => Err(format!("cannot run dot: {e}")),
        }
    }
}

/// Audits `manifest` against `rules`. With `elfs` — ELF bytes keyed by world name or by
/// binary name (the world name is tried first) — `least-privilege` and `granted-uses` are
/// checked too, and a world without a readable ELF is itself a violation.
pub fn audit(
    manifest: &Manifest,
    rules: &Rules,
    elfs: Option<&HashMap<String, Vec<u8>>>,
) -> AuditReport {
    let Some(elfs) = elfs else {
        return run(manifest, rules, None::<fn(&WorldNode) -> UsesOf<'static>>);
    };
    let parsed: HashMap<&str, Result<Uses, String>> = elfs
        .iter()
        .map(|(k, v)| (k.as_str(), Uses::from_elf(v)))
        .collect();
    run(
        manifest,
        rules,
        Some(|w: &WorldNode| {
            match parsed
                .get(w.name.as_str())
                .or_else(|| parsed.get(w.binary.as_str()))
            {
                None => UsesOf::NotGiven,
                Some(Ok(uses)) => UsesOf::Declared(uses),
                Some(Err(e)) => UsesOf::Unreadable(e.clone()),
            }
        }),
    )
}

/// Like [`audit`], with each program's declared uses given directly (keyed by world name,
/// then binary name) instead of read from ELFs.
pub fn audit_with_uses(
    manifest: &Manifest,
    rules: &Rules,
    uses: Option<&HashMap<String, Uses>>,
) -> AuditReport {
    run(
        manifest,
        rules,
        uses.map(|uses| {
            |w: &WorldNode| match uses.get(&w.name).or_else(|| uses.get(&w.binary)) {
                Some(declared) => UsesOf::Declared(declared),
                None => UsesOf::NotGiven,
            }
        }),
    )
}

fn run<'a>(
    manifest: &Manifest,
    rules: &Rules,
    uses_of: Option<impl Fn(&WorldNode) -> UsesOf<'a>>,
) -> AuditReport {
    let graph = Graph::of(manifest);
    let reach = Reach::of(&graph);
    let mut violations = checks::only_callers(&graph, rules);
    violations.extend(checks::exclusive_device(manifest, &graph));
    violations.extend(checks::one_server(&graph));
    violations.extend(checks::vm_memory_isolation(&graph, &reach));
    if let Some(uses_of) = uses_of {
        violations.extend(checks::least_privilege(&graph, uses_of));
    }
    violations.sort_by_key(|v| v.rule);
    AuditReport { graph, violations }
}

/// One line per capability the kernel installs from `manifest`, in world then slot order:
///
/// ```text
/// world=<world> slot=<slot> kind=<kind> object=<object> rights=<rights> badge=<badge>
/// ```
///
/// `kind` is `esker_abi::ObjectKind::name` of the object, `object` its name as in
/// `ObjectSpec::name` (a log object's is its world's, a device object's its device's),
/// `rights` the `Display` of `esker_abi::Rights` (`read+write+map`, `none`), and `badge`
/// lower-case hex with `0x` and no padding (`0x0`, `0x300000007`). Fields are separated by
/// one space; names never contain spaces or `=`.
pub fn expected_capabilities(manifest: &Manifest) -> Vec<String> {
    let compiled = manifest.compile();
    let mut lines = Vec::new();
    for world in &compiled.worlds {
        for cap in &world.caps {
            let (kind, object) = compiled
                .objects
                .get(usize::from(cap.object))
                .map_or(("?", "?"), |o| (o.kind().name(), o.name()));
            lines.push(format!(
                "world={} slot={} kind={kind} object={object} rights={} badge={:#x}",
                world.name, cap.slot, cap.rights, cap.badge
            ));
        }
    }
    lines
}

/// Reads the ELF of each world from `dir`: the first of `<world>.elf`, `<binary>.elf`,
/// `<binary>` that exists, keyed by world name. Worlds with none are left out (the audit
/// then reports them); an unreadable file is an error.
pub fn read_elf_dir(manifest: &Manifest, dir: &Path) -> Result<HashMap<String, Vec<u8>>, String> {
    let mut elfs = HashMap::new();
    for world in &manifest.worlds {
        let candidates = [
            dir.join(format!("{}.elf", world.name)),
            dir.join(format!("{}.elf", world.binary)),
            dir.join(&world.binary),
        ];
        if let Some(path) = candidates.iter().find(|p| p.is_file()) {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            elfs.insert(world.name.clone(), bytes);
        }
    }
    Ok(elfs)
}
