//! Unit tests of each capability-space operation and each refusal.

use super::*;
use esker_abi::Error;
use std::boxed::Box;
use std::collections::HashSet;
use std::format;
use std::vec::Vec;

type Small = CapSpaceOf<3, 8>;

fn endpoint(object: ObjectId, rights: Rights) -> Capability {
    Capability {
        object,
        kind: ObjectKind::Endpoint,
        rights,
        badge: 0,
    }
}

const CALL_GRANT: Rights = Rights::CALL.union(Rights::GRANT);

#[test]
fn size_of_the_kernel_space_is_reasonable_and_it_starts_empty() {
    let size = core::mem::size_of::<CapSpace>();
    std::println!("size_of::<CapSpace>() = {size} bytes");
    assert!(size < 256 * 1024);
    assert_eq!(core::mem::size_of::<Node>(), 32);
    let space = Box::new(CapSpace::new());
    assert_eq!(space.count(), 0);
    assert_eq!(space.capacity(), MAX_CAPS);
    assert_eq!(space.first_free_slot(0), Some(0));
    assert_eq!(space.caps_of(0).count(), 0);
    space.check_invariants();
}

#[test]
fn install_then_lookup_returns_the_capability() {
    let mut space = Small::new();
    let cap = Capability {
        object: 7,
        kind: ObjectKind::Memory,
        rights: Rights::READ,
        badge: 9,
    };
    space.install(1, 5, cap).unwrap();
    assert_eq!(space.lookup(1, 5), Ok(cap));
    assert_eq!(space.parent(1, 5), Ok(None));
    assert_eq!(space.count(), 1);
    assert_eq!(space.lookup(1, 4), Err(CapError::EmptySlot { slot: 4 }));
    assert_eq!(space.lookup(0, 5), Err(CapError::EmptySlot { slot: 5 }));
    space.check_invariants();
}

#[test]
fn install_refuses_bad_worlds_bad_slots_and_occupied_slots() {
    let mut space = Small::new();
    let cap = endpoint(1, Rights::ALL);
    assert_eq!(
        space.install(3, 0, cap),
        Err(CapError::WorldOutOfRange { world: 3 })
    );
    assert_eq!(
        space.install(0, 256, cap),
        Err(CapError::SlotOutOfRange { slot: 256 })
    );
    assert_eq!(
        space.install(0, u32::MAX, cap),
        Err(CapError::SlotOutOfRange { slot: u32::MAX })
    );
    space.install(0, 255, cap).unwrap();
    assert_eq!(
        space.install(0, 255, cap),
        Err(CapError::SlotOccupied { slot: 255 })
    );
    assert_eq!(space.count(), 1);
}

#[test]
fn lookup_refuses_bad_worlds_and_slots() {
    let space = Small::new();
    assert_eq!(
        space.lookup(u16::MAX, 0),
        Err(CapError::WorldOutOfRange { world: u16::MAX })
    );
    assert_eq!(
        space.lookup(0, 1000),
        Err(CapError::SlotOutOfRange { slot: 1000 })
    );
}

#[test]
fn derive_narrows_rights_sets_a_badge_and_records_the_parent() {
    let mut space = Small::new();
    space
        .install(0, 0, endpoint(3, CALL_GRANT | Rights::RECEIVE))
        .unwrap();
    let slot = space
        .derive(0, 0, Rights::CALL | Rights::WRITE, 0x42, 1, None)
        .unwrap();
    assert_eq!(slot, 0);
    let copy = space.lookup(1, 0).unwrap();
    assert_eq!(
        copy,
        Capability {
            object: 3,
            kind: ObjectKind::Endpoint,
            rights: Rights::CALL,
            badge: 0x42
        }
    );
    assert_eq!(space.parent(1, 0), Ok(Some((0, 0))));
    // Badge 0 keeps the source's badge.
    space
        .install(
            2,
            0,
            Capability {
                badge: 7,
                ..endpoint(4, Rights::ALL)
            },
        )
        .unwrap();
    let slot = space.derive(2, 0, Rights::ALL, 0, 2, Some(9)).unwrap();
    assert_eq!(slot, 9);
    assert_eq!(space.lookup(2, 9).unwrap().badge, 7);
    assert_eq!(space.lookup(2, 9).unwrap().rights, Rights::ALL);
    space.check_invariants();
}

#[test]
fn derive_fills_the_lowest_free_slot() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    space.install(0, 2, endpoint(2, Rights::ALL)).unwrap();
    assert_eq!(space.derive(0, 0, Rights::ALL, 0, 0, None), Ok(1));
    assert_eq!(space.derive(0, 0, Rights::ALL, 0, 0, None), Ok(3));
    assert_eq!(space.first_free_slot(0), Some(4));
    let slots: Vec<CapSlot> = space.caps_of(0).map(|(slot, _)| slot).collect();
    assert_eq!(slots, [0, 1, 2, 3]);
}

#[test]
fn derive_refuses_without_grant() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::CALL)).unwrap();
    assert_eq!(
        space.derive(0, 0, Rights::CALL, 0, 1, None),
        Err(CapError::InsufficientRights {
            needed: Rights::GRANT,
            held: Rights::CALL
        })
    );
    assert_eq!(space.count(), 1);
}

#[test]
fn derive_refuses_to_rebadge() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    space.derive(0, 0, Rights::ALL, 5, 0, Some(1)).unwrap();
    assert_eq!(
        space.derive(0, 1, Rights::ALL, 6, 0, None),
        Err(CapError::BadgeAlreadySet)
    );
    assert_eq!(
        space.derive(0, 1, Rights::ALL, 5, 0, None),
        Err(CapError::BadgeAlreadySet)
    );
    assert_eq!(space.derive(0, 1, Rights::ALL, 0, 0, Some(2)), Ok(2));
    assert_eq!(space.lookup(0, 2).unwrap().badge, 5);
}

#[test]
fn derive_refuses_bad_sources_and_destinations_without_side_effects() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    assert_eq!(
        space.derive(0, 1, Rights::ALL, 0, 0, None),
        Err(CapError::EmptySlot { slot: 1 })
    );
    assert_eq!(
        space.derive(9, 0, Rights::ALL, 0, 0, None),
        Err(CapError::WorldOutOfRange { world: 9 })
    );
    assert_eq!(
        space.derive(0, 0, Rights::ALL, 0, 9, None),
        Err(CapError::WorldOutOfRange { world: 9 })
    );
    assert_eq!(
        space.derive(0, 0, Rights::ALL, 0, 9, Some(0)),
        Err(CapError::WorldOutOfRange { world: 9 })
    );
    assert_eq!(
        space.derive(0, 0, Rights::ALL, 0, 0, Some(0)),
        Err(CapError::SlotOccupied { slot: 0 })
    );
    assert_eq!(
        space.derive(0, 0, Rights::ALL, 0, 1, Some(256)),
        Err(CapError::SlotOutOfRange { slot: 256 })
    );
    assert_eq!(space.count(), 1);
    space.check_invariants();
}

#[test]
fn derive_refuses_into_a_full_table() {
    let mut space = CapSpaceOf::<2, 300>::new();
    for slot in 0..CAP_SLOTS as CapSlot {
        space.install(1, slot, endpoint(slot, Rights::ALL)).unwrap();
    }
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    assert_eq!(space.first_free_slot(1), None);
    assert_eq!(
        space.derive(0, 0, Rights::ALL, 0, 1, None),
        Err(CapError::NoFreeSlot { world: 1 })
    );
    assert_eq!(space.count(), CAP_SLOTS + 1);
}

#[test]
fn running_out_of_nodes_is_refused_and_freed_nodes_are_reused() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(0, Rights::ALL)).unwrap();
    for _ in 1..8 {
        space.derive(0, 0, Rights::ALL, 0, 1, None).unwrap();
    }
    assert_eq!(
        space.derive(0, 0, Rights::ALL, 0, 1, None),
        Err(CapError::OutOfNodes)
    );
    assert_eq!(
        space.install(2, 0, endpoint(0, Rights::ALL)),
        Err(CapError::OutOfNodes)
    );
    assert_eq!(space.revoke(0, 0), Ok(7));
    for _ in 1..8 {
        space.derive(0, 0, Rights::ALL, 0, 2, None).unwrap();
    }
    assert_eq!(space.count(), 8);
    space.check_invariants();
}

#[test]
fn delete_empties_the_slot_and_keeps_the_children_under_the_grandparent() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    space.derive(0, 0, Rights::ALL, 0, 1, Some(0)).unwrap(); // child
    space.derive(1, 0, Rights::ALL, 0, 2, Some(0)).unwrap(); // grandchild
    space.derive(1, 0, Rights::ALL, 0, 2, Some(1)).unwrap(); // grandchild
    space.delete(1, 0).unwrap();
    assert_eq!(space.lookup(1, 0), Err(CapError::EmptySlot { slot: 0 }));
    assert_eq!(space.parent(2, 0), Ok(Some((0, 0))));
    assert_eq!(space.parent(2, 1), Ok(Some((0, 0))));
    space.check_invariants();
    assert_eq!(space.revoke(0, 0), Ok(2));
    assert_eq!(space.count(), 1);
    assert_eq!(space.delete(1, 0), Err(CapError::EmptySlot { slot: 0 }));
    assert_eq!(
        space.delete(1, 256),
        Err(CapError::SlotOutOfRange { slot: 256 })
    );
    assert_eq!(
        space.delete(3, 0),
        Err(CapError::WorldOutOfRange { world: 3 })
    );
}

#[test]
fn deleting_an_original_makes_its_children_originals() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    space.derive(0, 0, Rights::ALL, 0, 1, Some(0)).unwrap();
    space.derive(0, 0, Rights::ALL, 0, 1, Some(1)).unwrap();
    space.derive(1, 1, Rights::ALL, 0, 2, Some(0)).unwrap();
    space.delete(0, 0).unwrap();
    assert_eq!(space.parent(1, 0), Ok(None));
    assert_eq!(space.parent(1, 1), Ok(None));
    assert_eq!(space.parent(2, 0), Ok(Some((1, 1))));
    space.check_invariants();
    assert_eq!(space.revoke(1, 0), Ok(0));
    assert_eq!(space.revoke(1, 1), Ok(1));
}

#[test]
fn revoke_deletes_exactly_the_descendants_in_every_world() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    space.install(0, 1, endpoint(2, Rights::ALL)).unwrap(); // unrelated
    space.derive(0, 0, Rights::ALL, 0, 1, Some(0)).unwrap(); // child
    space.derive(1, 0, Rights::ALL, 0, 2, Some(0)).unwrap(); // grandchild
    space.derive(2, 0, Rights::ALL, 0, 0, Some(2)).unwrap(); // great-grandchild, back in world 0
    space.derive(0, 1, Rights::ALL, 0, 2, Some(1)).unwrap(); // child of the unrelated one
    let mut seen = HashSet::new();
    let deleted = space.revoke_with(0, 0, |world, slot, cap| {
        assert_eq!(cap.object, 1);
        seen.insert((world, slot));
    });
    assert_eq!(deleted, Ok(3));
    assert_eq!(seen, HashSet::from([(1, 0), (2, 0), (0, 2)]));
    assert!(space.lookup(0, 0).is_ok());
    assert!(space.lookup(0, 1).is_ok() && space.lookup(2, 1).is_ok());
    assert_eq!(space.count(), 3);
    assert_eq!(space.revoke(0, 0), Ok(0));
    assert_eq!(space.revoke(0, 3), Err(CapError::EmptySlot { slot: 3 }));
    space.check_invariants();
}

#[test]
fn revoke_of_a_long_chain_and_a_wide_fan_deletes_everything_below() {
    let mut space = CapSpace::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    let mut at = (0, 0);
    for i in 0..1000u32 {
        let world = (i % 16) as WorldId;
        let slot = space
            .derive(at.0, at.1, Rights::ALL, 0, world, None)
            .unwrap();
        at = (world, slot);
    }
    for i in 0..2000u32 {
        space
            .derive(0, 0, Rights::ALL, 0, (i % 16) as WorldId, None)
            .unwrap();
    }
    let before = space.count();
    assert_eq!(space.revoke(0, 0), Ok(before - 1));
    assert_eq!(space.count(), 1);
    space.check_invariants();
}

#[test]
fn clear_world_deletes_what_the_world_holds_and_keeps_children_elsewhere() {
    let mut space = Small::new();
    space.install(0, 0, endpoint(1, Rights::ALL)).unwrap();
    space.derive(0, 0, Rights::ALL, 0, 1, Some(0)).unwrap();
    space.derive(1, 0, Rights::ALL, 0, 1, Some(1)).unwrap();
    space.derive(1, 1, Rights::ALL, 0, 2, Some(0)).unwrap();
    let mut seen = Vec::new();
    assert_eq!(
        space.clear_world_with(1, |world, slot, _| seen.push((world, slot))),
        2
    );
    assert_eq!(seen, [(1, 0), (1, 1)]);
    assert_eq!(space.caps_of(1).count(), 0);
    assert_eq!(space.parent(2, 0), Ok(Some((0, 0))));
    assert_eq!(space.clear_world(1), 0);
    assert_eq!(space.clear_world(99), 0);
    assert_eq!(space.revoke(0, 0), Ok(1));
    space.check_invariants();
}

#[test]
fn every_node_is_reusable_after_clearing_a_full_space() {
    let mut space = Box::new(CapSpace::new());
    for round in 0..2 {
        for world in 0..MAX_WORLDS as WorldId {
            for slot in 0..CAP_SLOTS as CapSlot {
                let cap = endpoint(slot + round, Rights::ALL);
                if slot == 0 {
                    space.install(world, slot, cap).unwrap();
                } else {
                    space
                        .derive(world, slot - 1, Rights::ALL, 0, world, Some(slot))
                        .unwrap();
                }
            }
        }
        assert_eq!(space.count(), MAX_CAPS);
        space.check_invariants();
        let cleared: usize = (0..MAX_WORLDS as WorldId)
            .map(|w| space.clear_world(w))
            .sum();
        assert_eq!(cleared, MAX_CAPS);
        assert_eq!(space.count(), 0);
        space.check_invariants();
    }
}

#[test]
fn caps_of_lists_in_slot_order_and_ignores_unknown_worlds() {
    let mut space = Small::new();
    space.install(0, 7, endpoint(7, Rights::ALL)).unwrap();
    space.install(0, 3, endpoint(3, Rights::ALL)).unwrap();
    let listed: Vec<(CapSlot, ObjectId)> = space.caps_of(0).map(|(s, c)| (s, c.object)).collect();
    assert_eq!(listed, [(3, 3), (7, 7)]);
    assert_eq!(space.caps_of(3).count(), 0);
    assert_eq!(space.first_free_slot(3), None);
}

#[test]
fn errors_map_to_abi_codes_and_describe_themselves() {
    let cases = [
        (
            CapError::SlotOutOfRange { slot: 300 },
            Error::InvalidCapability,
            "slot 300 is out of range",
        ),
        (
            CapError::EmptySlot { slot: 4 },
            Error::InvalidCapability,
            "slot 4 is empty",
        ),
        (
            CapError::SlotOccupied { slot: 5 },
            Error::NoFreeSlot,
            "slot 5 is already in use",
        ),
        (
            CapError::NoFreeSlot { world: 2 },
            Error::NoFreeSlot,
            "world 2 has no free",
        ),
        (
            CapError::InsufficientRights {
                needed: Rights::GRANT,
                held: Rights::CALL,
            },
            Error::InsufficientRights,
            "needs the rights grant but holds only call",
        ),
        (
            CapError::BadgeAlreadySet,
            Error::InsufficientRights,
            "already carries a badge",
        ),
        (CapError::OutOfNodes, Error::OutOfMemory, "nodes are in use"),
        (
            CapError::WorldOutOfRange { world: 20 },
            Error::InvalidArgument,
            "world 20 has no",
        ),
    ];
    for (error, code, text) in cases {
        assert_eq!(Error::from(error), code);
        let shown = format!("{error}");
        assert!(shown.contains(text), "{shown:?} lacks {text:?}");
    }
}
