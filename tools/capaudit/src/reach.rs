//! Which objects each world can come to hold: a take-grant style closure over the graph.
//!
//! A world *reaches* an object if it holds a capability to it, or if some world that
//! reaches it with the GRANT right can send to this world. World A can send to world B if
//! A can call an endpoint B receives on (the call carries capabilities) or B can call an
//! endpoint A receives on (the reply carries them). Who can call or receive on an
//! endpoint is itself read from the closure, so endpoint capabilities passed with GRANT
//! widen the graph. The passed copy may keep every right of the original (GRANT
//! included), so the iteration runs to a fixed point. Rights are tracked per capability,
//! not merged per object: holding a grantable CALL capability and a separate RECEIVE one
//! to the same endpoint does not make RECEIVE passable. Each reached pair remembers how
//! it was first reached, which gives the path a violation reports.

use std::collections::BTreeMap;

use esker_abi::{ObjectKind, Rights};

use crate::graph::Graph;

/// How a world first came to reach an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// It holds the named capability from boot.
    Held {
        /// Capability name.
        cap: String,
        /// Its rights.
        rights: Rights,
    },
    /// Another world passed it over a channel.
    Passed {
        /// The sending world.
        from: usize,
        /// The endpoint object used.
        endpoint: usize,
        /// Whether it travelled in a call (else in a reply).
        in_call: bool,
    },
}

/// What a world reaches of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    /// Union of the rights it can obtain.
    pub rights: Rights,
    /// The distinct capabilities (by rights) it can hold; none is a subset of another.
    pub caps: Vec<Rights>,
    /// How it first reached it.
    pub origin: Origin,
}

impl Reached {
    /// Adds a capability with `rights`; returns whether that gave anything new.
    fn add(&mut self, rights: Rights) -> bool {
        if self.caps.iter().any(|c| c.contains(rights)) {
            return false;
        }
        self.caps.retain(|c| !rights.contains(*c));
        self.caps.push(rights);
        self.rights = self.rights | rights;
        true
    }

    /// Whether one of its capabilities has all of `rights`.
    pub fn has(&self, rights: Rights) -> bool {
        self.caps.iter().any(|c| c.contains(rights))
    }
}

/// The closure: `(world, object) -> Reached`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    entries: BTreeMap<(usize, usize), Reached>,
}

impl Reach {
    /// Computes the closure of `graph`.
    pub fn of(graph: &Graph) -> Self {
        let mut reach = Self::default();
        for cap in &graph.caps {
            let origin = Origin::Held {
                cap: cap.name.clone(),
                rights: cap.rights,
            };
            reach.entry(cap.world, cap.object, origin).add(cap.rights);
        }
        let endpoints: Vec<usize> = (0..graph.objects.len())
            .filter(|o| graph.objects[*o].kind == ObjectKind::Endpoint)
            .collect();
        loop {
            let mut passes = Vec::new();
            for &endpoint in &endpoints {
                let callers = reach.holders(endpoint, Rights::CALL);
                let servers = reach.holders(endpoint, Rights::RECEIVE);
                for &caller in &callers {
                    for &server in servers.iter().filter(|s| **s != caller) {
                        passes.push((caller, server, endpoint, true));
                        passes.push((server, caller, endpoint, false));
                    }
                }
            }
            // Passes read the state of the previous round, so first origins are shortest paths.
            let before = reach.entries.clone();
            let mut changed = false;
            for (from, to, endpoint, in_call) in passes {
                let grantable: Vec<(usize, Rights)> = before
                    .range((from, 0)..(from + 1, 0))
                    .flat_map(|((_, object), r)| r.caps.iter().map(move |c| (*object, *c)))
                    .filter(|(_, rights)| rights.contains(Rights::GRANT))
                    .collect();
                for (object, rights) in grantable {
                    changed |= reach
                        .entry(
                            to,
                            object,
                            Origin::Passed {
                                from,
                                endpoint,
                                in_call,
                            },
                        )
                        .add(rights);
                }
            }
            if !changed {
                return reach;
            }
        }
    }

    /// The entry of `(world, object)`, created with `origin` if new.
    fn entry(&mut self, world: usize, object: usize, origin: Origin) -> &mut Reached {
        self.entries
            .entry((world, object))
            .or_insert_with(|| Reached {
                rights: Rights::NONE,
                caps: Vec::new(),
                origin,
            })
    }

    /// What `world` reaches of `object`.
    pub fn get(&self, world: usize, object: usize) -> Option<&Reached> {
        self.entries.get(&(world, object))
    }

    /// Worlds reaching `object` with all of `rights`, in index order.
    pub fn holders(&self, object: usize, rights: Rights) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|((_, o), r)| *o == object && r.has(rights))
            .map(|((w, _), _)| *w)
            .collect()
    }

    /// How `world` reaches `object`, as text:
    /// `hostd holds memory:x (read+grant) -> vmx (call on channel "vmx")`.
    pub fn path(&self, graph: &Graph, world: usize, object: usize) -> String {
        let mut steps = Vec::new();
        let mut at = world;
        // Origins point at entries created earlier, so this ends; the bound is a guard.
        for _ in 0..=graph.worlds.len() {
            let Some(reached) = self.get(at, object) else {
                break;
            };
            match &reached.origin {
                Origin::Held { cap, rights } => {
                    steps.push(format!("{} holds {cap} ({rights})", graph.world_name(at)));
                    break;
                }
                Origin::Passed {
                    from,
                    endpoint,
                    in_call,
                } => {
                    let channel = graph
                        .objects
                        .get(*endpoint)
                        .map_or("?", |o| o.name.as_str());
                    let how = if *in_call { "call" } else { "reply" };
                    steps.push(format!(
                        "{} ({how} on channel \"{channel}\")",
                        graph.world_name(at)
                    ));
                    at = *from;
                }
            }
        }
        steps.reverse();
        steps.join(" -> ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{CapEdge, ObjectNode, WorldNode};

    fn world(name: &str) -> WorldNode {
        WorldNode {
            name: name.to_owned(),
            binary: name.to_owned(),
            guest_facing: false,
            vm: None,
        }
    }

    fn object(kind: ObjectKind, name: &str) -> ObjectNode {
        ObjectNode {
            kind,
            name: name.to_owned(),
            owner_vm: None,
            protocol: None,
            signals: None,
            detail: String::new(),
        }
    }

    fn cap(world: usize, object: usize, rights: Rights) -> CapEdge {
        CapEdge {
            world,
            slot: 0,
            name: format!("cap{object}"),
            object,
            rights,
            badge: 0,
        }
    }

    /// a calls e1 (served by b); b may pass e3 (served by d) to a; a may pass m to d.
    #[test]
    fn granted_endpoints_widen_who_can_send_to_whom() {
        let graph = Graph {
            file: "t".to_owned(),
            worlds: vec![world("a"), world("b"), world("d")],
            objects: vec![
                object(ObjectKind::Endpoint, "e1"),
                object(ObjectKind::Endpoint, "e3"),
                object(ObjectKind::Memory, "m"),
            ],
            caps: vec![
                cap(0, 0, Rights::CALL),
                cap(1, 0, Rights::RECEIVE),
                cap(1, 1, Rights::CALL | Rights::GRANT),
                cap(2, 1, Rights::RECEIVE),
                cap(0, 2, Rights::READ | Rights::GRANT),
            ],
        };
        let reach = Reach::of(&graph);
        assert_eq!(
            reach.get(0, 1).map(|r| r.rights),
            Some(Rights::CALL | Rights::GRANT)
        );
        assert_eq!(
            reach.get(2, 1).map(|r| r.caps.clone()),
            Some(vec![Rights::RECEIVE, Rights::CALL | Rights::GRANT])
        );
        assert_eq!(
            reach.get(2, 2).map(|r| r.rights),
            Some(Rights::READ | Rights::GRANT)
        );
        assert_eq!(
            reach.path(&graph, 2, 2),
            "a holds cap2 (read+grant) -> d (call on channel \"e3\")"
        );
        assert_eq!(
            reach.path(&graph, 0, 1),
            "b holds cap1 (grant+call) -> a (reply on channel \"e1\")"
        );
        assert!(reach.get(1, 2).is_some(), "b receives m from a's call");
    }

    #[test]
    fn without_grant_nothing_moves() {
        let graph = Graph {
            file: "t".to_owned(),
            worlds: vec![world("a"), world("b")],
            objects: vec![
                object(ObjectKind::Endpoint, "e"),
                object(ObjectKind::Memory, "m"),
            ],
            caps: vec![
                cap(0, 0, Rights::CALL),
                cap(1, 0, Rights::RECEIVE),
                cap(0, 1, Rights::READ | Rights::WRITE),
            ],
        };
        assert_eq!(Reach::of(&graph).get(1, 1), None);
    }
}
