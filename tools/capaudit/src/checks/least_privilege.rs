//! `least-privilege` and `granted-uses`: what each world holds against what its program
//! declares it uses (the `.esker_uses` records, see [`crate::uses`]).
//!
//! A granted capability, right or channel operation the program never declares is excess
//! privilege. The converse — a declared use the manifest does not grant — would fail at
//! run time, and is reported as `granted-uses`. On a `serve:` capability the declared
//! operations are those the server handles; they need only exist in the channel's protocol.

use esker_abi::Rights;

use super::{Rule, Violation};
use crate::graph::{Graph, WorldNode};
use crate::uses::Uses;

/// What is known of one world's declared uses.
pub(crate) enum UsesOf<'a> {
    /// Nothing was given for it.
    NotGiven,
    /// Its ELF could not be read; the reason.
    Unreadable(String),
    /// Its declarations.
    Declared(&'a Uses),
}

/// Checks every world against `uses_of(world)`.
pub(crate) fn least_privilege<'a>(
    graph: &Graph,
    uses_of: impl Fn(&WorldNode) -> UsesOf<'a>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (index, world) in graph.worlds.iter().enumerate() {
        let name = world.name.as_str();
        let lp = |cap: &str, message: String| {
            Violation::new(Rule::LeastPrivilege, Some(name), Some(cap), message)
        };
        let gu = |cap: &str, message: String| {
            Violation::new(Rule::GrantedUses, Some(name), Some(cap), message)
        };
        let uses = match uses_of(world) {
            UsesOf::Declared(uses) => uses,
            UsesOf::NotGiven => {
                let message = format!(
                    "world \"{name}\": no ELF was given for binary \"{}\", so its use of capabilities cannot be checked",
                    world.binary
                );
                out.push(Violation::new(
                    Rule::LeastPrivilege,
                    Some(name),
                    None,
                    message,
                ));
                continue;
            }
            UsesOf::Unreadable(reason) => {
                let message = format!(
                    "world \"{name}\": the ELF of binary \"{}\" cannot be checked: {reason}",
                    world.binary
                );
                out.push(Violation::new(
                    Rule::LeastPrivilege,
                    Some(name),
                    None,
                    message,
                ));
                continue;
            }
        };
        let caps: Vec<_> = graph.caps.iter().filter(|c| c.world == index).collect();
        for cap in &caps {
            let Some(used) = uses.caps.get(&cap.name) else {
                out.push(lp(
                    &cap.name,
                    format!("world \"{name}\" holds {}, which it never uses", cap.name),
                ));
                continue;
            };
            for (right_name, right) in Rights::NAMES {
                if cap.rights.contains(right) && !used.rights.contains(right) {
                    let message = format!(
                        "world \"{name}\" holds {} with right {right_name}, which it never uses",
                        cap.name
                    );
                    out.push(lp(&cap.name, message));
                }
                if used.rights.contains(right) && !cap.rights.contains(right) {
                    let message = format!(
                        "world \"{name}\" uses {} with right {right_name}, which the manifest does not grant",
                        cap.name
                    );
                    out.push(gu(&cap.name, message));
                }
            }
            if cap.rights.contains(Rights::RECEIVE) {
                // A server lists the operations it handles; they only have to exist.
                let protocol = graph.protocol_operations(cap.object);
                for op in used
                    .operations
                    .iter()
                    .filter(|op| !protocol.contains(&op.as_str()))
                {
                    let message = format!(
                        "world \"{name}\" serves operation {op} on {}, which its protocol does not have",
                        cap.name
                    );
                    out.push(gu(&cap.name, message));
                }
                continue;
            }
            let allowed = graph.operations(cap);
            for op in allowed.iter().filter(|op| !used.operations.contains(**op)) {
                let message = format!(
                    "world \"{name}\" holds {} with operation {op}, which it never uses",
                    cap.name
                );
                out.push(lp(&cap.name, message));
            }
            for op in used
                .operations
                .iter()
                .filter(|op| !allowed.contains(&op.as_str()))
            {
                let message = format!(
                    "world \"{name}\" uses {} with operation {op}, which the manifest does not grant",
                    cap.name
                );
                out.push(gu(&cap.name, message));
            }
        }
        // A monitor program declares its VM's capabilities, but only a monitor of a VM
        // the manifest powers on (a `[vms]` entry) is given them.
        let runs_vm = world.vm.as_ref().is_some_and(|vm| {
            graph
                .objects
                .iter()
                .any(|o| o.kind == esker_abi::ObjectKind::Vm && o.name == *vm)
        });
        for declared in uses
            .caps
            .keys()
            .filter(|d| !caps.iter().any(|c| c.name == **d))
            .filter(|d| runs_vm || !is_vm_capability(d))
        {
            out.push(gu(
                declared,
                format!("world \"{name}\" uses {declared}, which the manifest does not grant"),
            ));
        }
    }
    out
}

/// The capabilities a monitor holds on the VM it runs (see `esker-manifest`'s compiler),
/// and the host console, which goes to the first VM's monitor.
fn is_vm_capability(name: &str) -> bool {
    matches!(
        name,
        "vm" | "memory:guest-ram" | "memory:vm-package" | "console"
    ) || name.starts_with("vcpu:")
}
