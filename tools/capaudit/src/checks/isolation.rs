//! `vm-memory-isolation`: no capability path lets a guest-facing world reach memory that
//! belongs to another VM.
//!
//! A guest-facing world parses input a guest controls, so it is assumed compromised by
//! that guest; whatever it can reach in the take-grant closure ([`Reach`]) the guest can
//! reach. Memory with an `owner_vm` other than the world's own `vm` must stay out of it.

use esker_abi::ObjectKind;

use super::{Rule, Violation};
use crate::graph::Graph;
use crate::reach::Reach;

/// Reports each (guest-facing world, foreign VM memory) pair the closure connects.
pub(crate) fn vm_memory_isolation(graph: &Graph, reach: &Reach) -> Vec<Violation> {
    let mut out = Vec::new();
    for (w, world) in graph
        .worlds
        .iter()
        .enumerate()
        .filter(|(_, w)| w.guest_facing)
    {
        for (m, memory) in graph
            .objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.kind == ObjectKind::Memory)
        {
            let Some(owner) = &memory.owner_vm else {
                continue;
            };
            if world.vm.as_ref() == Some(owner) || reach.get(w, m).is_none() {
                continue;
            }
            let own = world
                .vm
                .as_deref()
                .map_or_else(|| "no vm".to_owned(), |vm| format!("vm \"{vm}\""));
            let message = format!(
                "guest-facing world \"{}\" ({own}) can reach memory \"{}\" owned by vm \"{owner}\"; path: {}",
                world.name,
                memory.name,
                reach.path(graph, w, m)
            );
            let cap = format!("memory:{}", memory.name);
            out.push(Violation::new(
                Rule::VmMemoryIsolation,
                Some(&world.name),
                Some(&cap),
                message,
            ));
        }
    }
    out
}
