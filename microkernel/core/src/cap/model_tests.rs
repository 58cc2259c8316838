//! Property tests: random operation sequences against a simple model of the derivation
//! tree (a map from node to parent), checking results, contents and tree invariants.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

/// A small space: 3 worlds and far fewer nodes than slots, so `OutOfNodes` happens.
const WORLDS: usize = 3;
const NODES: usize = 16;
type Space = CapSpaceOf<WORLDS, NODES>;

#[derive(Clone, Debug)]
enum Op {
    Install {
        world: WorldId,
        slot: CapSlot,
        cap: Capability,
    },
    Derive {
        world: WorldId,
        slot: CapSlot,
        rights: Rights,
        badge: u64,
        to_world: WorldId,
        to_slot: Option<CapSlot>,
    },
    Delete {
        world: WorldId,
        slot: CapSlot,
    },
    Revoke {
        world: WorldId,
        slot: CapSlot,
    },
    Clear {
        world: WorldId,
    },
}

#[derive(Clone, Copy, Debug)]
struct ModelNode {
    cap: Capability,
    parent: Option<(WorldId, CapSlot)>,
}

/// The model: slot -> capability and parent (by the parent's slot).
#[derive(Default)]
struct Model {
    nodes: BTreeMap<(WorldId, CapSlot), ModelNode>,
}

impl Model {
    fn check_slot(&self, world: WorldId, slot: CapSlot) -> Result<(), CapError> {
        if usize::from(world) >= WORLDS {
            return Err(CapError::WorldOutOfRange { world });
        }
        if slot as usize >= CAP_SLOTS {
            return Err(CapError::SlotOutOfRange { slot });
        }
        Ok(())
    }

    fn get(&self, world: WorldId, slot: CapSlot) -> Result<ModelNode, CapError> {
        self.check_slot(world, slot)?;
        self.nodes
            .get(&(world, slot))
            .copied()
            .ok_or(CapError::EmptySlot { slot })
    }

    fn check_empty(&self, world: WorldId, slot: CapSlot) -> Result<(), CapError> {
        self.check_slot(world, slot)?;
        match self.nodes.contains_key(&(world, slot)) {
            true => Err(CapError::SlotOccupied { slot }),
            false => Ok(()),
        }
    }

    fn first_free(&self, world: WorldId) -> Option<CapSlot> {
        (0..CAP_SLOTS as CapSlot).find(|slot| !self.nodes.contains_key(&(world, *slot)))
    }

    fn descendants(&self, of: (WorldId, CapSlot)) -> BTreeSet<(WorldId, CapSlot)> {
        let mut found = BTreeSet::new();
        loop {
            let more: Vec<_> = self
                .nodes
                .iter()
                .filter(|(at, node)| {
                    !found.contains(*at)
                        && node.parent.is_some_and(|p| p == of || found.contains(&p))
                })
                .map(|(at, _)| *at)
                .collect();
            if more.is_empty() {
                return found;
            }
            found.extend(more);
        }
    }

    fn remove(&mut self, at: (WorldId, CapSlot)) {
        let Some(gone) = self.nodes.remove(&at) else {
            return;
        };
        for node in self.nodes.values_mut() {
            if node.parent == Some(at) {
                node.parent = gone.parent;
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<Option<usize>, CapError> {
        match *op {
            Op::Install { world, slot, cap } => {
                self.check_empty(world, slot)?;
                if self.nodes.len() == NODES {
                    return Err(CapError::OutOfNodes);
                }
                self.nodes
                    .insert((world, slot), ModelNode { cap, parent: None });
                Ok(None)
            }
            Op::Derive {
                world,
                slot,
                rights,
                badge,
                to_world,
                to_slot,
            } => {
                let source = self.get(world, slot)?;
                let mut cap = source.cap;
                if !cap.rights.contains(Rights::GRANT) {
                    return Err(CapError::InsufficientRights {
                        needed: Rights::GRANT,
                        held: cap.rights,
                    });
                }
                if badge != 0 {
                    if cap.badge != 0 {
                        return Err(CapError::BadgeAlreadySet);
                    }
                    cap.badge = badge;
                }
                cap.rights = cap.rights.intersection(rights);
                let to_slot = match to_slot {
                    Some(to_slot) => {
                        self.check_empty(to_world, to_slot)?;
                        to_slot
                    }
                    None => {
                        self.check_slot(to_world, 0)?;
                        self.first_free(to_world)
                            .ok_or(CapError::NoFreeSlot { world: to_world })?
                    }
                };
                if self.nodes.len() == NODES {
                    return Err(CapError::OutOfNodes);
                }
                self.nodes.insert(
                    (to_world, to_slot),
                    ModelNode {
                        cap,
                        parent: Some((world, slot)),
                    },
                );
                Ok(Some(to_slot as usize))
            }
            Op::Delete { world, slot } => {
                self.get(world, slot)?;
                self.remove((world, slot));
                Ok(None)
            }
            Op::Revoke { world, slot } => {
                self.get(world, slot)?;
                let doomed = self.descendants((world, slot));
                for at in &doomed {
                    self.nodes.remove(at);
                }
                Ok(Some(doomed.len()))
            }
            Op::Clear { world } => {
                let held: Vec<_> = self
                    .nodes
                    .keys()
                    .filter(|(w, _)| *w == world)
                    .copied()
                    .collect();
                for at in &held {
                    self.remove(*at);
                }
                Ok(Some(held.len()))
            }
        }
    }
}

fn apply(
    space: &mut Space,
    op: &Op,
    deleted: &mut BTreeSet<(WorldId, CapSlot)>,
) -> Result<Option<usize>, CapError> {
    match *op {
        Op::Install { world, slot, cap } => space.install(world, slot, cap).map(|()| None),
        Op::Derive {
            world,
            slot,
            rights,
            badge,
            to_world,
            to_slot,
        } => space
            .derive(world, slot, rights, badge, to_world, to_slot)
            .map(|s| Some(s as usize)),
        Op::Delete { world, slot } => space.delete(world, slot).map(|()| None),
        Op::Revoke { world, slot } => space
            .revoke_with(world, slot, |w, s, _| {
                assert!(deleted.insert((w, s)), "({w}, {s}) reported twice");
            })
            .map(Some),
        Op::Clear { world } => Ok(Some(space.clear_world_with(world, |w, s, _| {
            assert!(deleted.insert((w, s)), "({w}, {s}) reported twice");
        }))),
    }
}

fn world() -> impl Strategy<Value = WorldId> {
    prop_oneof![16 => 0..WORLDS as WorldId, 1 => Just(WORLDS as WorldId), 1 => Just(u16::MAX)]
}

fn slot() -> impl Strategy<Value = CapSlot> {
    prop_oneof![24 => 0..12u32, 1 => Just(255), 1 => Just(256), 1 => Just(u32::MAX)]
}

fn rights() -> impl Strategy<Value = Rights> {
    prop_oneof![
        4 => any::<u32>().prop_map(|bits| Rights::from_bits_truncate(bits).union(Rights::GRANT)),
        1 => any::<u32>().prop_map(Rights::from_bits_truncate),
    ]
}

fn badge() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0), 1 => 1..4u64]
}

/// Where an operation points: mostly at a capability that exists (the n-th held, so
/// that most operations do something), sometimes at any slot, empty or out of range.
#[derive(Clone, Copy, Debug)]
enum Target {
    Held(usize),
    Anywhere(WorldId, CapSlot),
}

/// An operation before its targets are resolved against the current contents.
#[derive(Clone, Debug)]
enum Plan {
    Install(WorldId, CapSlot, Capability),
    Derive(Target, Rights, u64, WorldId, Option<CapSlot>),
    Delete(Target),
    Revoke(Target),
    Clear(WorldId),
}

impl Model {
    fn resolve(&self, target: Target) -> (WorldId, CapSlot) {
        match target {
            Target::Held(n) if !self.nodes.is_empty() => {
                *self.nodes.keys().nth(n % self.nodes.len()).unwrap()
            }
            Target::Held(_) => (0, 0),
            Target::Anywhere(world, slot) => (world, slot),
        }
    }

    fn op(&self, plan: &Plan) -> Op {
        match *plan {
            Plan::Install(world, slot, cap) => Op::Install { world, slot, cap },
            Plan::Derive(from, rights, badge, to_world, to_slot) => {
                let (world, slot) = self.resolve(from);
                Op::Derive {
                    world,
                    slot,
                    rights,
                    badge,
                    to_world,
                    to_slot,
                }
            }
            Plan::Delete(target) => {
                let (world, slot) = self.resolve(target);
                Op::Delete { world, slot }
            }
            Plan::Revoke(target) => {
                let (world, slot) = self.resolve(target);
                Op::Revoke { world, slot }
            }
            Plan::Clear(world) => Op::Clear { world },
        }
    }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        9 => any::<usize>().prop_map(Target::Held),
        1 => (world(), slot()).prop_map(|(world, slot)| Target::Anywhere(world, slot)),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let cap = (0..4u32, rights(), badge()).prop_map(|(object, rights, badge)| Capability {
        object,
        kind: ObjectKind::ALL[object as usize],
        rights,
        badge,
    });
    let to_slot = prop_oneof![2 => Just(None), 1 => slot().prop_map(Some)];
    prop_oneof![
        2 => (world(), slot(), cap).prop_map(|(world, slot, cap)| Plan::Install(world, slot, cap)),
        8 => (target(), rights(), badge(), world(), to_slot)
            .prop_map(|(from, rights, badge, to_world, to_slot)| {
                Plan::Derive(from, rights, badge, to_world, to_slot)
            }),
        2 => target().prop_map(Plan::Delete),
        2 => target().prop_map(Plan::Revoke),
        1 => world().prop_map(Plan::Clear),
    ]
}

/// The space holds exactly what the model holds, with the same parents.
fn assert_same(space: &Space, model: &Model) {
    assert_eq!(space.count(), model.nodes.len());
    for world in 0..WORLDS as WorldId {
        let held: Vec<_> = space.caps_of(world).collect();
        let expected: Vec<_> = model
            .nodes
            .iter()
            .filter(|((w, _), _)| *w == world)
            .map(|((_, s), n)| (*s, n.cap))
            .collect();
        assert_eq!(held, expected, "world {world} holds the wrong capabilities");
        for (slot, _) in held {
            assert_eq!(
                space.parent(world, slot),
                Ok(model.nodes[&(world, slot)].parent)
            );
        }
        assert_eq!(space.first_free_slot(world), model.first_free(world));
    }
}

/// Rights only shrink and a badge, once set, stays, all the way down every chain.
fn assert_monotone(space: &Space) {
    for world in 0..WORLDS as WorldId {
        for (slot, cap) in space.caps_of(world) {
            let mut at = space.parent(world, slot).unwrap();
            while let Some((w, s)) = at {
                let ancestor = space.lookup(w, s).unwrap();
                assert!(
                    ancestor.rights.contains(cap.rights),
                    "({world}, {slot}) has rights its ancestor lacks"
                );
                assert_eq!(ancestor.object, cap.object);
                if ancestor.badge != 0 {
                    assert_eq!(
                        ancestor.badge, cap.badge,
                        "({world}, {slot}) changed a badge"
                    );
                }
                at = space.parent(w, s).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_operations_match_the_model(plans in proptest::collection::vec(plan(), 1..120)) {
        let mut space = Space::new();
        let mut model = Model::default();
        // Start from one original per world, so that most early operations act on something.
        let seed = (0..WORLDS as WorldId).map(|world| {
            let cap = Capability { object: 0, kind: ObjectKind::World, rights: Rights::ALL, badge: 0 };
            Plan::Install(world, 0, cap)
        });
        for plan in &seed.chain(plans).collect::<Vec<_>>() {
            let op = &model.op(plan);
            let before: BTreeSet<_> = model.nodes.keys().copied().collect();
            let mut deleted = BTreeSet::new();
            let expected = model.apply(op);
            let got = apply(&mut space, op, &mut deleted);
            prop_assert_eq!(got, expected, "{:?}", op);
            if got.is_err() {
                prop_assert!(deleted.is_empty());
            }
            // Exactly the capabilities that left the model were reported, and they are gone.
            if matches!(op, Op::Revoke { .. } | Op::Clear { .. }) {
                let after: BTreeSet<_> = model.nodes.keys().copied().collect();
                let gone: BTreeSet<_> = before.difference(&after).copied().collect();
                prop_assert_eq!(&deleted, &gone);
            }
            for (w, s) in &deleted {
                prop_assert_eq!(space.lookup(*w, *s), Err(CapError::EmptySlot { slot: *s }));
            }
            space.check_invariants();
            assert_same(&space, &model);
            assert_monotone(&space);
        }
        // Clearing everything leaks no node: all of them can be used again.
        for world in 0..WORLDS as WorldId {
            space.clear_world(world);
        }
        prop_assert_eq!(space.count(), 0);
        space.check_invariants();
        for i in 0..NODES as CapSlot {
            let cap = Capability { object: i, kind: ObjectKind::Log, rights: Rights::ALL, badge: 0 };
            prop_assert_eq!(space.install((i % 3) as WorldId, i, cap), Ok(()));
        }
        let cap = Capability { object: 0, kind: ObjectKind::Log, rights: Rights::ALL, badge: 0 };
        prop_assert_eq!(space.install(0, 200, cap), Err(CapError::OutOfNodes));
        space.check_invariants();
    }
}
