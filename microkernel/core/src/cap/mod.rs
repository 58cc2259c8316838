//! Capabilities: every world's capability table and the global capability derivation tree.
//!
//! This module owns which world holds which capability in which slot, and where every
//! capability came from. A capability installed at boot from the manifest is an *original*
//! (the root of its own derivation subtree); [`CapSpaceOf::derive`] makes a *child* copy —
//! in the same or another world — that can only drop rights and can set a badge only once.
//! The derivation tree (CDT) spans all worlds, so [`CapSpaceOf::revoke`] removes every copy
//! ever derived from a capability, wherever it went, in time proportional to the number of
//! copies. Deleting a capability keeps its children: they move up to its parent and stay
//! revocable from every ancestor.
//!
//! All storage is fixed-size arrays inside one struct (no heap), so the kernel can keep it
//! in a `static`; the empty table is all zero bytes and lands in `.bss`. Nodes are linked
//! with 16-bit indices (parent, first child, siblings), which keeps the default
//! [`CapSpace`] at about 136 KiB.
//!
//! This module never interprets the objects capabilities name: it does not know what an
//! endpoint or a memory region is, it never checks the rights an operation on an object
//! needs (only [`Rights::GRANT`] for deriving), and it never panics on a world or slot
//! number a user world passes in.

use core::fmt;
use esker_abi::{CAP_SLOTS, CapSlot, ObjectKind, Rights};

/// A world's index (as in the compiled manifest).
pub type WorldId = u16;
/// A kernel object's index (the kernel's object table decides what it means).
pub type ObjectId = u32;

/// Worlds the default [`CapSpace`] holds tables for (the manifest's limit).
pub const MAX_WORLDS: usize = crate::manifest::MAX_WORLDS;
/// Capabilities the default [`CapSpace`] holds in all worlds together.
pub const MAX_CAPS: usize = 4096;

/// The kernel's capability space: [`MAX_WORLDS`] tables of [`CAP_SLOTS`] slots sharing
/// [`MAX_CAPS`] derivation-tree nodes.
pub type CapSpace = CapSpaceOf<MAX_WORLDS, MAX_CAPS>;

const _: () = assert!(core::mem::size_of::<CapSpace>() < 256 * 1024);

/// What one slot holds: a reference to a kernel object, with rights and a badge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The object it names.
    pub object: ObjectId,
    /// The object's kind.
    pub kind: ObjectKind,
    /// What the holder may do with the object.
    pub rights: Rights,
    /// A value delivered with every message sent through it (0 = none yet).
    pub badge: u64,
}

/// Why a capability operation was refused. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// The slot number is not below [`CAP_SLOTS`].
    SlotOutOfRange {
        /// The slot asked for.
        slot: CapSlot,
    },
    /// The slot holds no capability.
    EmptySlot {
        /// The slot asked for.
        slot: CapSlot,
    },
    /// The destination slot already holds a capability.
    SlotOccupied {
        /// The slot asked for.
        slot: CapSlot,
    },
    /// The destination world's table is full.
    NoFreeSlot {
        /// The world whose table is full.
        world: WorldId,
    },
    /// The capability lacks a right the operation needs.
    InsufficientRights {
        /// What the operation needs.
        needed: Rights,
        /// What the capability carries.
        held: Rights,
    },
    /// A badge was asked for, but the source capability already carries one.
    BadgeAlreadySet,
    /// Every derivation-tree node is in use.
    OutOfNodes,
    /// The world number has no table.
    WorldOutOfRange {
        /// The world asked for.
        world: WorldId,
    },
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SlotOutOfRange { slot } => {
                write!(
                    f,
                    "capability slot {slot} is out of range (a table has {CAP_SLOTS} slots)"
                )
            }
            Self::EmptySlot { slot } => write!(f, "capability slot {slot} is empty"),
            Self::SlotOccupied { slot } => write!(f, "capability slot {slot} is already in use"),
            Self::NoFreeSlot { world } => write!(f, "world {world} has no free capability slot"),
            Self::InsufficientRights { needed, held } => {
                write!(
                    f,
                    "the capability needs the rights {needed} but holds only {held}"
                )
            }
            Self::BadgeAlreadySet => f.write_str("the capability already carries a badge"),
            Self::OutOfNodes => write!(f, "all capability nodes are in use"),
            Self::WorldOutOfRange { world } => write!(f, "world {world} has no capability table"),
        }
    }
}

impl From<CapError> for esker_abi::Error {
    fn from(error: CapError) -> Self {
        match error {
            CapError::SlotOutOfRange { .. } | CapError::EmptySlot { .. } => Self::InvalidCapability,
            CapError::SlotOccupied { .. } | CapError::NoFreeSlot { .. } => Self::NoFreeSlot,
            CapError::InsufficientRights { .. } | CapError::BadgeAlreadySet => {
                Self::InsufficientRights
            }
            CapError::OutOfNodes => Self::OutOfMemory,
            CapError::WorldOutOfRange { .. } => Self::InvalidArgument,
        }
    }
}

/// A reference to a node: 0 is none, `n` is node `n - 1` (so the empty table is all zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link(u16);

impl Link {
    const NONE: Self = Self(0);

    /// The link to node `index` (callers keep `index` below `NODES`, checked in `new`).
    fn to(index: usize) -> Self {
        Self(index as u16 + 1)
    }

    fn index(self) -> Option<usize> {
        (self.0 as usize).checked_sub(1)
    }

    fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// One capability and its place in the derivation tree (32 bytes).
#[derive(Clone, Copy)]
struct Node {
    badge: u64,
    object: ObjectId,
    rights: Rights,
    parent: Link,
    first_child: Link,
    /// The next child of the same parent; in a free node, the next free node.
    next_sibling: Link,
    prev_sibling: Link,
    world: WorldId,
    slot: u16,
    /// The [`ObjectKind`] number; 0 marks a free node.
    kind: u8,
}

impl Node {
    const FREE: Self = Self {
        badge: 0,
        object: 0,
        rights: Rights::NONE,
        parent: Link::NONE,
        first_child: Link::NONE,
        next_sibling: Link::NONE,
        prev_sibling: Link::NONE,
        world: 0,
        slot: 0,
        kind: 0,
    };

    fn capability(&self) -> Option<Capability> {
        Some(Capability {
            object: self.object,
            kind: ObjectKind::from_number(u64::from(self.kind))?,
            rights: self.rights,
            badge: self.badge,
        })
    }
}

/// Capability tables for `WORLDS` worlds of [`CAP_SLOTS`] slots each, sharing `NODES`
/// derivation-tree nodes. The kernel uses [`CapSpace`]; smaller sizes serve tests.
pub struct CapSpaceOf<const WORLDS: usize, const NODES: usize> {
    nodes: [Node; NODES],
    slots: [[Link; CAP_SLOTS]; WORLDS],
    /// Head of the list of freed nodes (linked through `next_sibling`).
    free_head: Link,
    /// Nodes at this index and above have never been used (they are free too).
    fresh: u16,
    /// Nodes holding a capability.
    used: u16,
}

impl<const WORLDS: usize, const NODES: usize> fmt::Debug for CapSpaceOf<WORLDS, NODES> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapSpace")
            .field("worlds", &WORLDS)
            .field("capabilities", &self.used)
            .field("nodes", &NODES)
            .finish()
    }
}

impl<const WORLDS: usize, const NODES: usize> Default for CapSpaceOf<WORLDS, NODES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORLDS: usize, const NODES: usize> CapSpaceOf<WORLDS, NODES> {
    const SIZES_FIT: () = {
        assert!(NODES < u16::MAX as usize, "node links are 16-bit");
        assert!(
            WORLDS <= WorldId::MAX as usize + 1,
            "world numbers are 16-bit"
        );
        assert!(
            CAP_SLOTS <= u16::MAX as usize,
            "slot numbers are stored in 16 bits"
        );
    };

    /// Empty tables (all zero bytes, so a `static` of it costs no image space).
    pub const fn new() -> Self {
        let () = Self::SIZES_FIT;
        Self {
            nodes: [Node::FREE; NODES],
            slots: [[Link::NONE; CAP_SLOTS]; WORLDS],
            free_head: Link::NONE,
            fresh: 0,
            used: 0,
        }
    }

    /// Puts an original capability (the root of a new derivation subtree) into an empty
    /// slot. Used at boot for what the manifest grants.
    pub fn install(
        &mut self,
        world: WorldId,
        slot: CapSlot,
        cap: Capability,
    ) -> Result<(), CapError> {
        self.check_empty(world, slot)?;
        let node = self.alloc_node().ok_or(CapError::OutOfNodes)?;
        self.place(node, world, slot, cap, Link::NONE);
        Ok(())
    }

    /// The capability in a slot.
    pub fn lookup(&self, world: WorldId, slot: CapSlot) -> Result<Capability, CapError> {
        let node = self.node_at(world, slot)?;
        self.nodes[node]
            .capability()
            .ok_or(CapError::EmptySlot { slot })
    }

    /// Copies the capability in `world`'s `slot` into `to_world` (into `to_slot`, or the
    /// lowest free slot if `None`) as its child in the derivation tree, and returns the
    /// slot used.
    ///
    /// The source needs [`Rights::GRANT`]. The copy holds the source's rights intersected
    /// with `rights`. A `badge` of 0 keeps the source's badge; any other value becomes the
    /// copy's badge, which is refused if the source already has one.
    pub fn derive(
        &mut self,
        world: WorldId,
        slot: CapSlot,
        rights: Rights,
        badge: u64,
        to_world: WorldId,
        to_slot: Option<CapSlot>,
    ) -> Result<CapSlot, CapError> {
        let source = self.node_at(world, slot)?;
        let mut cap = self.nodes[source]
            .capability()
            .ok_or(CapError::EmptySlot { slot })?;
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
                self.table(to_world)?;
                self.first_free_slot(to_world)
                    .ok_or(CapError::NoFreeSlot { world: to_world })?
            }
        };
        let node = self.alloc_node().ok_or(CapError::OutOfNodes)?;
        self.place(node, to_world, to_slot, cap, Link::to(source));
        Ok(to_slot)
    }

    /// Empties a slot. The capability's children move up to its parent (or become
    /// originals if it had none): they survive and stay revocable from every ancestor.
    pub fn delete(&mut self, world: WorldId, slot: CapSlot) -> Result<(), CapError> {
        let node = self.node_at(world, slot)?;
        self.remove(node);
        Ok(())
    }

    /// Deletes every capability derived from the one in this slot, directly or not, in
    /// every world; keeps the capability itself. Returns how many were deleted.
    pub fn revoke(&mut self, world: WorldId, slot: CapSlot) -> Result<usize, CapError> {
        self.revoke_with(world, slot, |_, _, _| {})
    }

    /// [`revoke`](Self::revoke), calling `on_delete(world, slot, capability)` for each
    /// capability deleted (so the kernel can undo mappings or wake waiters).
    pub fn revoke_with(
        &mut self,
        world: WorldId,
        slot: CapSlot,
        mut on_delete: impl FnMut(WorldId, CapSlot, Capability),
    ) -> Result<usize, CapError> {
        let root = self.node_at(world, slot)?;
        let mut deleted = 0;
        // Post-order walk that deletes leaves as it goes: every node is descended into
        // once and deleted once, so this is linear in the number of descendants.
        let mut current = root;
        loop {
            while let Some(child) = self.nodes[current].first_child.index() {
                current = child;
            }
            if current == root {
                return Ok(deleted);
            }
            let Some(parent) = self.nodes[current].parent.index() else {
                // Unreachable: a descendant of `root` always has a parent.
                return Ok(deleted);
            };
            let (holder, held_slot, cap) = self.remove(current);
            if let Some(cap) = cap {
                on_delete(holder, held_slot, cap);
            }
            deleted += 1;
            current = parent;
        }
    }

    /// Deletes every capability `world` holds (as [`delete`](Self::delete) does, so their
    /// children elsewhere survive). Returns how many were deleted; 0 for a world without
    /// a table.
    pub fn clear_world(&mut self, world: WorldId) -> usize {
        self.clear_world_with(world, |_, _, _| {})
    }

    /// [`clear_world`](Self::clear_world), calling `on_delete(world, slot, capability)`
    /// for each capability deleted.
    pub fn clear_world_with(
        &mut self,
        world: WorldId,
        mut on_delete: impl FnMut(WorldId, CapSlot, Capability),
    ) -> usize {
        let mut deleted = 0;
        for slot in 0..CAP_SLOTS as CapSlot {
            if let Ok(node) = self.node_at(world, slot) {
                let (_, _, cap) = self.remove(node);
                if let Some(cap) = cap {
                    on_delete(world, slot, cap);
                }
                deleted += 1;
            }
        }
        deleted
    }

    /// The capabilities `world` holds, in slot order (none for a world without a table).
    pub fn caps_of(&self, world: WorldId) -> impl Iterator<Item = (CapSlot, Capability)> + '_ {
        let table: &[Link] = self
            .slots
            .get(usize::from(world))
            .map_or(&[], |t| t.as_slice());
        table.iter().enumerate().filter_map(|(slot, link)| {
            let cap = self.nodes[link.index()?].capability()?;
            Some((slot as CapSlot, cap))
        })
    }

    /// The lowest empty slot of `world`, if it has a table and any slot is free.
    pub fn first_free_slot(&self, world: WorldId) -> Option<CapSlot> {
        let table = self.slots.get(usize::from(world))?;
        table
            .iter()
            .position(|link| link.is_none())
            .map(|slot| slot as CapSlot)
    }

    /// Where the capability in this slot was derived from: the holder and slot of its
    /// parent in the derivation tree, or `None` for an original.
    pub fn parent(
        &self,
        world: WorldId,
        slot: CapSlot,
    ) -> Result<Option<(WorldId, CapSlot)>, CapError> {
        let node = self.node_at(world, slot)?;
        Ok(self.nodes[node].parent.index().map(|p| {
            let parent = &self.nodes[p];
            (parent.world, CapSlot::from(parent.slot))
        }))
    }

    /// Capabilities held in all worlds together.
    pub fn count(&self) -> usize {
        usize::from(self.used)
    }

    /// Capabilities the space can hold in all worlds together.
    pub const fn capacity(&self) -> usize {
        NODES
    }

    fn table(&self, world: WorldId) -> Result<&[Link; CAP_SLOTS], CapError> {
        self.slots
            .get(usize::from(world))
            .ok_or(CapError::WorldOutOfRange { world })
    }

    fn link_at(&self, world: WorldId, slot: CapSlot) -> Result<Link, CapError> {
        let table = self.table(world)?;
        let index = usize::try_from(slot).map_err(|_| CapError::SlotOutOfRange { slot })?;
        table
            .get(index)
            .copied()
            .ok_or(CapError::SlotOutOfRange { slot })
    }

    fn node_at(&self, world: WorldId, slot: CapSlot) -> Result<usize, CapError> {
        self.link_at(world, slot)?
            .index()
            .ok_or(CapError::EmptySlot { slot })
    }

    fn check_empty(&self, world: WorldId, slot: CapSlot) -> Result<(), CapError> {
        match self.link_at(world, slot)? {
            Link::NONE => Ok(()),
            _ => Err(CapError::SlotOccupied { slot }),
        }
    }

    /// A free node's index, taken from the free list or the never-used tail.
    fn alloc_node(&mut self) -> Option<usize> {
        let node = match self.free_head.index() {
            Some(node) => {
                self.free_head = self.nodes[node].next_sibling;
                node
            }
            None if usize::from(self.fresh) < NODES => {
                self.fresh += 1;
                usize::from(self.fresh) - 1
            }
            None => return None,
        };
        self.used += 1;
        Some(node)
    }

    /// Fills a freshly allocated node, puts it in its slot and under `parent`.
    /// The slot was checked to exist and be empty.
    fn place(&mut self, node: usize, world: WorldId, slot: CapSlot, cap: Capability, parent: Link) {
        let next_sibling = match parent.index() {
            Some(p) => self.nodes[p].first_child,
            None => Link::NONE,
        };
        self.nodes[node] = Node {
            badge: cap.badge,
            object: cap.object,
            rights: cap.rights,
            parent,
            first_child: Link::NONE,
            next_sibling,
            prev_sibling: Link::NONE,
            world,
            slot: slot as u16,
            kind: cap.kind as u8,
        };
        if let Some(next) = next_sibling.index() {
            self.nodes[next].prev_sibling = Link::to(node);
        }
        if let Some(p) = parent.index() {
            self.nodes[p].first_child = Link::to(node);
        }
        self.slots[usize::from(world)][slot as usize] = Link::to(node);
    }

    /// Takes a node out of the tree (its children move up to its parent), empties its
    /// slot and frees it. Returns where it was held and what it held.
    fn remove(&mut self, node: usize) -> (WorldId, CapSlot, Option<Capability>) {
        let gone = self.nodes[node];
        // Unlink from the parent's child list.
        match gone.prev_sibling.index() {
            Some(prev) => self.nodes[prev].next_sibling = gone.next_sibling,
            None => {
                if let Some(p) = gone.parent.index() {
                    self.nodes[p].first_child = gone.next_sibling;
                }
            }
        }
        if let Some(next) = gone.next_sibling.index() {
            self.nodes[next].prev_sibling = gone.prev_sibling;
        }
        // Move the children up.
        let mut child = gone.first_child;
        let mut last_child = Link::NONE;
        while let Some(c) = child.index() {
            let next = self.nodes[c].next_sibling;
            self.nodes[c].parent = gone.parent;
            if gone.parent.is_none() {
                // Originals are not linked to each other.
                self.nodes[c].next_sibling = Link::NONE;
                self.nodes[c].prev_sibling = Link::NONE;
            }
            last_child = child;
            child = next;
        }
        if let (Some(p), Some(last)) = (gone.parent.index(), last_child.index()) {
            let old_first = self.nodes[p].first_child;
            self.nodes[last].next_sibling = old_first;
            if let Some(old_first) = old_first.index() {
                self.nodes[old_first].prev_sibling = last_child;
            }
            self.nodes[p].first_child = gone.first_child;
        }
        // Empty the slot and free the node.
        if let Some(slot) = self
            .slots
            .get_mut(usize::from(gone.world))
            .and_then(|table| table.get_mut(usize::from(gone.slot)))
        {
            *slot = Link::NONE;
        }
        self.nodes[node] = Node {
            next_sibling: self.free_head,
            ..Node::FREE
        };
        self.free_head = Link::to(node);
        self.used -= 1;
        (gone.world, CapSlot::from(gone.slot), gone.capability())
    }

    /// Checks every structural invariant; panics with a description on the first broken one.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut used = 0;
        for (index, node) in self.nodes.iter().enumerate() {
            if node.kind == 0 {
                continue;
            }
            used += 1;
            assert!(
                node.capability().is_some(),
                "node {index} has a bad kind {}",
                node.kind
            );
            assert_eq!(
                self.slots[usize::from(node.world)][usize::from(node.slot)],
                Link::to(index),
                "node {index} is not in its slot"
            );
            let mut sibling = match node.parent.index() {
                Some(p) => {
                    assert_ne!(self.nodes[p].kind, 0, "node {index} has a free parent");
                    self.nodes[p].first_child
                }
                None => {
                    assert!(node.prev_sibling.is_none() && node.next_sibling.is_none());
                    Link::NONE
                }
            };
            if !node.parent.is_none() {
                let mut found = false;
                let mut prev = Link::NONE;
                while let Some(s) = sibling.index() {
                    assert_eq!(
                        self.nodes[s].prev_sibling, prev,
                        "broken sibling list at {s}"
                    );
                    assert_eq!(
                        self.nodes[s].parent, node.parent,
                        "sibling {s} has another parent"
                    );
                    found |= s == index;
                    prev = sibling;
                    sibling = self.nodes[s].next_sibling;
                }
                assert!(found, "node {index} is missing from its parent's children");
            }
            let mut ancestor = node.parent;
            for _ in 0..=NODES {
                match ancestor.index() {
                    Some(a) => ancestor = self.nodes[a].parent,
                    None => break,
                }
            }
            assert!(ancestor.is_none(), "node {index} is on a parent cycle");
        }
        assert_eq!(used, self.count(), "used count is wrong");
        for (world, table) in self.slots.iter().enumerate() {
            for (slot, link) in table.iter().enumerate() {
                if let Some(node) = link.index() {
                    let n = &self.nodes[node];
                    assert!(
                        n.kind != 0 && usize::from(n.world) == world && usize::from(n.slot) == slot
                    );
                }
            }
        }
        let mut free = 0;
        let mut link = self.free_head;
        while let Some(node) = link.index() {
            assert!(
                node < usize::from(self.fresh),
                "free node {node} beyond the fresh mark"
            );
            assert_eq!(self.nodes[node].kind, 0, "free-list node {node} is in use");
            free += 1;
            assert!(free <= NODES, "free list has a cycle");
            link = self.nodes[node].next_sibling;
        }
        assert_eq!(
            free + used + (NODES - usize::from(self.fresh)),
            NODES,
            "nodes leaked"
        );
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
