//! Rules about who holds what directly: `exclusive-device`, `one-server`, `only-callers`.

use std::collections::BTreeSet;

use esker_abi::{ObjectKind, Rights, badge};
use esker_manifest::Manifest;

use super::{Rule, Violation, count_worlds};
use crate::graph::Graph;
use crate::rules::Rules;

/// Names of the worlds (in index order) holding a capability with `rights` to any object
/// matching `pred`.
fn holders(graph: &Graph, rights: Rights, pred: impl Fn(usize) -> bool) -> Vec<String> {
    let worlds: BTreeSet<usize> = graph
        .caps
        .iter()
        .filter(|c| c.rights.contains(rights) && pred(c.object))
        .map(|c| c.world)
        .collect();
    worlds.into_iter().map(|w| graph.world_name(w)).collect()
}

/// Every device is held by exactly one world.
pub(crate) fn exclusive_device(manifest: &Manifest, graph: &Graph) -> Vec<Violation> {
    let device_kinds = [ObjectKind::IoPorts, ObjectKind::Mmio, ObjectKind::Interrupt];
    let mut out = Vec::new();
    for device in &manifest.devices {
        let of_device = |o: usize| {
            graph
                .objects
                .get(o)
                .is_some_and(|o| device_kinds.contains(&o.kind) && o.name == device.name)
        };
        let names = holders(graph, Rights::DEVICE, of_device);
        if names.len() != 1 {
            let cap = format!("device:{}", device.name);
            let message = format!(
                "device \"{}\" is held by {}; a device must be held by exactly one world",
                device.name,
                count_worlds(&names)
            );
            out.push(Violation::new(
                Rule::ExclusiveDevice,
                None,
                Some(&cap),
                message,
            ));
        }
    }
    out
}

/// Every channel has exactly one server (holder of a receive capability).
pub(crate) fn one_server(graph: &Graph) -> Vec<Violation> {
    let mut out = Vec::new();
    for (index, object) in graph
        .objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind == ObjectKind::Endpoint)
    {
        let names = holders(graph, Rights::RECEIVE, |o| o == index);
        if names.len() != 1 {
            let cap = format!("serve:{}", object.name);
            let message = format!(
                "channel \"{}\" is served by {}; a channel must have exactly one server",
                object.name,
                count_worlds(&names)
            );
            out.push(Violation::new(Rule::OneServer, None, Some(&cap), message));
        }
    }
    out
}

/// `[[only_callers]]`: no world outside the list holds a capability allowing the operation.
pub(crate) fn only_callers(graph: &Graph, rules: &Rules) -> Vec<Violation> {
    let mut out = Vec::new();
    for rule in &rules.only_callers {
        let endpoint = graph
            .objects
            .iter()
            .position(|o| o.kind == ObjectKind::Endpoint && o.name == rule.channel);
        let bit = endpoint
            .and_then(|e| graph.objects[e].protocol.as_deref())
            .and_then(|p| esker_protocols::operation_index(p, &rule.operation));
        let (Some(endpoint), Some(bit)) = (endpoint, bit) else {
            continue;
        };
        for cap in graph
            .caps
            .iter()
            .filter(|c| c.object == endpoint && c.rights.contains(Rights::CALL))
        {
            let world = graph.world_name(cap.world);
            if badge::allows(cap.badge, bit) && !rule.worlds.contains(&world) {
                let message = format!(
                    "world \"{world}\" holds {}, which allows operation {}; only {} may (rule at {}:{})",
                    cap.name,
                    rule.operation,
                    if rule.worlds.is_empty() {
                        "no world".to_owned()
                    } else {
                        rule.worlds.join(", ")
                    },
                    rules.file,
                    rule.line
                );
                out.push(Violation::new(
                    Rule::OnlyCallers,
                    Some(&world),
                    Some(&cap.name),
                    message,
                ));
            }
        }
    }
    out
}
