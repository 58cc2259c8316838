//! Fixed-capacity indexed binary min-heaps of entity numbers: each CPU's run queues.
//!
//! A heap stores only entity numbers; the key lives in the entity (its virtual time, its
//! reservation tag or its release time, chosen by [`Queue`]), and every entity records
//! its position in each kind of queue, so inserting, removing any entity and finding the
//! minimum cost O(log n) and O(1). Ties are broken by the lower entity number, so every
//! decision is deterministic. Every comparison is added to the caller's step counter,
//! which is how the cost of a scheduling decision is measured.
//!
//! A heap never changes a key: the scheduler changes keys only of entities that are in no
//! heap (the running one, or one it has just taken out).

use super::entity::Entity;

/// Which of a CPU's three queues (and which key) a heap is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queue {
    /// Ready entities by virtual time (proportional share).
    Share = 0,
    /// Ready entities with a reservation, by reservation tag.
    Reserve = 1,
    /// Entities that used up their limit, by release time.
    Throttle = 2,
}

/// Up to `E` entity numbers ordered by the key [`Queue`] names.
pub(super) struct Heap<const E: usize> {
    items: [u16; E],
    len: u16,
}

impl<const E: usize> Heap<E> {
    /// The empty heap.
    pub(super) const EMPTY: Self = Self {
        items: [0; E],
        len: 0,
    };

    /// Entities in the heap.
    pub(super) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the heap is empty.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entity with the smallest key.
    pub(super) fn peek(&self) -> Option<usize> {
        self.at(0)
    }

    /// The entity at array position `index` (0 is the minimum; the first few positions
    /// hold the smallest keys, roughly in order).
    pub(super) fn at(&self, index: usize) -> Option<usize> {
        (index < self.len()).then(|| usize::from(self.items[index]))
    }

    /// Inserts `id` (not in any heap of this kind). Returns false if the heap is full,
    /// which cannot happen while every entity is in at most one heap of a kind.
    pub(super) fn push(
        &mut self,
        id: usize,
        queue: Queue,
        entities: &mut [Entity],
        steps: &mut u64,
    ) -> bool {
        let index = self.len();
        if index >= E || entities[id].pos[queue as usize] != 0 {
            return false;
        }
        self.items[index] = id as u16;
        self.len += 1;
        entities[id].pos[queue as usize] = index as u16 + 1;
        self.sift_up(index, queue, entities, steps);
        true
    }

    /// Removes `id` if it is in this heap (the caller knows which heap holds it).
    pub(super) fn remove(
        &mut self,
        id: usize,
        queue: Queue,
        entities: &mut [Entity],
        steps: &mut u64,
    ) -> bool {
        let Some(index) = usize::from(entities[id].pos[queue as usize]).checked_sub(1) else {
            return false;
        };
        if index >= self.len() || usize::from(self.items[index]) != id {
            return false;
        }
        entities[id].pos[queue as usize] = 0;
        self.len -= 1;
        let last = self.len();
        if index != last {
            let moved = usize::from(self.items[last]);
            self.items[index] = moved as u16;
            entities[moved].pos[queue as usize] = index as u16 + 1;
            if index > 0
                && before(
                    entities,
                    queue,
                    moved,
                    usize::from(self.items[(index - 1) / 2]),
                )
            {
                *steps += 1;
                self.sift_up(index, queue, entities, steps);
            } else {
                self.sift_down(index, queue, entities, steps);
            }
        }
        true
    }

    fn sift_up(
        &mut self,
        mut index: usize,
        queue: Queue,
        entities: &mut [Entity],
        steps: &mut u64,
    ) {
        let id = usize::from(self.items[index]);
        while index > 0 {
            let parent = (index - 1) / 2;
            let above = usize::from(self.items[parent]);
            *steps += 1;
            if !before(entities, queue, id, above) {
                break;
            }
            self.items[index] = above as u16;
            entities[above].pos[queue as usize] = index as u16 + 1;
            index = parent;
        }
        self.items[index] = id as u16;
        entities[id].pos[queue as usize] = index as u16 + 1;
    }

    fn sift_down(
        &mut self,
        mut index: usize,
        queue: Queue,
        entities: &mut [Entity],
        steps: &mut u64,
    ) {
        let id = usize::from(self.items[index]);
        let len = self.len();
        loop {
            let left = 2 * index + 1;
            if left >= len {
                break;
            }
            let mut child = left;
            let right = left + 1;
            if right < len {
                *steps += 1;
                if before(
                    entities,
                    queue,
                    usize::from(self.items[right]),
                    usize::from(self.items[left]),
                ) {
                    child = right;
                }
            }
            let below = usize::from(self.items[child]);
            *steps += 1;
            if !before(entities, queue, below, id) {
                break;
            }
            self.items[index] = below as u16;
            entities[below].pos[queue as usize] = index as u16 + 1;
            index = child;
        }
        self.items[index] = id as u16;
        entities[id].pos[queue as usize] = index as u16 + 1;
    }

    /// Checks the heap order and the recorded positions; panics on the first violation.
    #[cfg(test)]
    pub(super) fn check(&self, queue: Queue, entities: &[Entity]) {
        for index in 0..self.len() {
            let id = usize::from(self.items[index]);
            assert_eq!(
                usize::from(entities[id].pos[queue as usize]),
                index + 1,
                "entity {id} has a wrong {queue:?} position"
            );
            if index > 0 {
                let parent = usize::from(self.items[(index - 1) / 2]);
                assert!(
                    !before(entities, queue, id, parent),
                    "{queue:?} heap order broken at {index}"
                );
            }
        }
    }
}

/// Whether `a` comes before `b` in `queue`: smaller key, then smaller number.
fn before(entities: &[Entity], queue: Queue, a: usize, b: usize) -> bool {
    let (ka, kb) = (entities[a].key(queue), entities[b].key(queue));
    ka < kb || (ka == kb && a < b)
}
