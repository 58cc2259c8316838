//! The firmware memory map, normalised.
//!
//! Firmware E820 tables (and the PVH and Multiboot2 copies of them) may be unsorted,
//! overlapping, contain empty or wrapping entries, and list RAM in pieces that do not
//! start or end on page boundaries. [`MemoryMap::from_e820`] turns such a table into
//! sorted, disjoint, merged regions in which a byte is [`RegionKind::Usable`] only if no
//! entry says otherwise, and usable regions are whole 4 KiB pages. It never panics and
//! never allocates; it never trusts a length (an entry that runs past the end of the
//! address space is cut at `u64::MAX`).
//!
//! Overflow policy: if the normalised map has more than [`MAX_REGIONS`] regions, or more
//! than [`WORK_REGIONS`] at any point while entries are being merged in (possible only
//! with hundreds of disjoint entries), the map is refused with
//! [`BootInfoError::TooManyRegions`]; nothing is silently dropped.

use super::BootInfoError;
use crate::addr::PAGE_SIZE;

/// Most regions a normalised [`MemoryMap`] holds.
pub const MAX_REGIONS: usize = 128;

/// Most regions held while normalising.
pub const WORK_REGIONS: usize = 2 * MAX_REGIONS;

/// What a range of physical addresses is, by E820 type number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Type 1: RAM the kernel may use.
    Usable,
    /// Type 2: in use by firmware or devices.
    Reserved,
    /// Type 3: ACPI tables, usable once they have been read.
    AcpiReclaimable,
    /// Type 4: ACPI non-volatile storage, to be preserved.
    AcpiNvs,
    /// Type 5: RAM found to be faulty.
    Defective,
    /// Any other type number (treated as reserved).
    Other(u32),
}

impl RegionKind {
    /// The kind of an E820 type number.
    pub const fn from_e820_type(kind: u32) -> Self {
        match kind {
            1 => Self::Usable,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Defective,
            other => Self::Other(other),
        }
    }

    /// The E820 type number of this kind.
    pub const fn e820_type(self) -> u32 {
        match self {
            Self::Usable => 1,
            Self::Reserved => 2,
            Self::AcpiReclaimable => 3,
            Self::AcpiNvs => 4,
            Self::Defective => 5,
            Self::Other(other) => other,
        }
    }

    /// Which kind wins where entries overlap, from weakest to strongest: usable RAM,
    /// ACPI reclaimable, unknown types (the higher type number wins among them),
    /// reserved, ACPI NVS, defective. Every kind has its own rank, so the winner never
    /// depends on the order of the entries.
    const fn priority(self) -> u64 {
        let class: u64 = match self {
            Self::Usable => 0,
            Self::AcpiReclaimable => 1,
            Self::Other(_) => 2,
            Self::Reserved => 3,
            Self::AcpiNvs => 4,
            Self::Defective => 5,
        };
        let tie_break = match self {
            Self::Other(kind) => kind as u64,
            _ => 0,
        };
        (class << 32) | tie_break
    }
}

/// A range `[start, end)` of physical addresses of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// What it is.
    pub kind: RegionKind,
}

impl Region {
    /// Length in bytes.
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// A normalised memory map: sorted, disjoint, adjacent regions of the same kind merged,
/// usable regions page-aligned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryMap {
    regions: heapless::Vec<Region, MAX_REGIONS>,
}

type WorkList = heapless::Vec<Region, WORK_REGIONS>;

impl MemoryMap {
    /// Normalises firmware entries `(base, length, E820 type)`: drops empty entries,
    /// cuts entries that wrap at `u64::MAX`, lets any other kind win over usable RAM
    /// where entries overlap (see [`RegionKind`] for the order among the others),
    /// merges touching regions of one kind and shrinks usable regions inward to whole
    /// 4 KiB pages. The result does not depend on the order of the entries.
    pub fn from_e820(
        entries: impl IntoIterator<Item = (u64, u64, u32)>,
    ) -> Result<Self, BootInfoError> {
        let mut work = WorkList::new();
        for (base, len, kind) in entries {
            if len == 0 {
                continue;
            }
            let end = base.saturating_add(len);
            if end > base {
                paint(&mut work, base, end, RegionKind::from_e820_type(kind))?;
            }
        }
        let mut regions = heapless::Vec::new();
        for region in work {
            let region = match region.kind {
                RegionKind::Usable => {
                    let start = region.start.checked_next_multiple_of(PAGE_SIZE);
                    let end = region.end & !(PAGE_SIZE - 1);
                    match start {
                        Some(start) if start < end => Region {
                            start,
                            end,
                            ..region
                        },
                        _ => continue,
                    }
                }
                _ => region,
            };
            regions
                .push(region)
                .map_err(|_| BootInfoError::TooManyRegions)?;
        }
        Ok(Self { regions })
    }

    /// All regions, sorted by address.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The usable regions, sorted by address.
    pub fn usable(&self) -> impl Iterator<Item = &Region> {
        self.regions
            .iter()
            .filter(|region| region.kind == RegionKind::Usable)
    }

    /// Total bytes of usable RAM.
    pub fn usable_bytes(&self) -> u64 {
        self.usable().map(Region::size).sum()
    }

    /// One past the highest usable address, 0 if there is no usable RAM.
    pub fn highest_usable_end(&self) -> u64 {
        self.usable().map(|region| region.end).max().unwrap_or(0)
    }

    /// The kind of the region holding `addr`, `None` in a gap.
    pub fn kind_at(&self, addr: u64) -> Option<RegionKind> {
        self.regions
            .iter()
            .find(|region| region.contains(addr))
            .map(|region| region.kind)
    }
}

/// Paints `[start, end)` with `kind` into the sorted, disjoint, merged `work` list:
/// where a region already lies, the kind of higher priority stays; gaps take `kind`.
fn paint(work: &mut WorkList, start: u64, end: u64, kind: RegionKind) -> Result<(), BootInfoError> {
    // After splitting at both ends every region lies wholly inside or outside the range.
    split_at(work, start)?;
    split_at(work, end)?;
    let mut cursor = start;
    let mut index = work.partition_point(|region| region.end <= start);
    while cursor < end {
        let next = work.get(index).copied().filter(|region| region.start < end);
        let Some(existing) = next else {
            insert(
                work,
                index,
                Region {
                    start: cursor,
                    end,
                    kind,
                },
            )?;
            break;
        };
        if cursor < existing.start {
            insert(
                work,
                index,
                Region {
                    start: cursor,
                    end: existing.start,
                    kind,
                },
            )?;
            index += 1;
        }
        if let Some(region) = work.get_mut(index)
            && kind.priority() > region.kind.priority()
        {
            region.kind = kind;
        }
        cursor = existing.end;
        index += 1;
    }
    merge_touching(work);
    Ok(())
}

/// Splits the region that strictly contains `at` (if any) into two at `at`.
fn split_at(work: &mut WorkList, at: u64) -> Result<(), BootInfoError> {
    let index = work.partition_point(|region| region.end <= at);
    if let Some(region) = work.get_mut(index)
        && region.start < at
    {
        let upper = Region {
            start: at,
            ..*region
        };
        region.end = at;
        insert(work, index + 1, upper)?;
    }
    Ok(())
}

fn insert(work: &mut WorkList, index: usize, region: Region) -> Result<(), BootInfoError> {
    if index > work.len() {
        // Cannot happen: indices come from searching `work`. Refuse rather than panic.
        return Err(BootInfoError::TooManyRegions);
    }
    work.insert(index, region)
        .map_err(|_| BootInfoError::TooManyRegions)
}

/// Merges neighbours that touch and have the same kind.
fn merge_touching(work: &mut WorkList) {
    let mut kept: usize = 0;
    for index in 0..work.len() {
        let Some(&region) = work.get(index) else {
            break;
        };
        match kept.checked_sub(1).and_then(|last| work.get_mut(last)) {
            Some(last) if last.end == region.start && last.kind == region.kind => {
                last.end = region.end;
            }
            _ => {
                if let Some(slot) = work.get_mut(kept) {
                    *slot = region;
                }
                kept += 1;
            }
        }
    }
    work.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::test_memory::QEMU_E820;
    use proptest::prelude::*;

    fn region(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    use RegionKind::*;

    #[test]
    fn the_qemu_map_comes_out_page_aligned_and_sorted() {
        let mut shuffled = QEMU_E820;
        shuffled.reverse();
        let map = MemoryMap::from_e820(shuffled).unwrap();
        assert_eq!(
            map.regions(),
            &[
                region(0, 0x9f000, Usable),
                region(0x9fc00, 0xa0000, Reserved),
                region(0xf0000, 0x10_0000, Reserved),
                region(0x10_0000, 0x1ffe_0000, Usable),
                region(0x1ffe_0000, 0x2000_0000, Reserved),
                region(0xfffc_0000, 0x1_0000_0000, Reserved),
            ]
        );
        assert_eq!(map.usable_bytes(), 0x9f000 + 0x1ffe_0000 - 0x10_0000);
        assert_eq!(map.highest_usable_end(), 0x1ffe_0000);
        assert_eq!(map.kind_at(0x9fc00), Some(Reserved));
        assert_eq!(map.kind_at(0xa0000), None);
        assert_eq!(map.usable().count(), 2);
    }

    #[test]
    fn reserved_wins_over_usable_wherever_they_overlap() {
        let map = MemoryMap::from_e820([
            (0x10_0000, 0x100_0000, 1),
            (0x20_0000, 0x1000, 2),
            (0x80_0800, 0x100, 4),
        ])
        .unwrap();
        assert_eq!(
            map.regions(),
            &[
                region(0x10_0000, 0x20_0000, Usable),
                region(0x20_0000, 0x20_1000, Reserved),
                region(0x20_1000, 0x80_0000, Usable),
                region(0x80_0800, 0x80_0900, AcpiNvs),
                region(0x80_1000, 0x110_0000, Usable),
            ]
        );
    }

    #[test]
    fn overlapping_non_usable_kinds_resolve_by_priority() {
        let map = MemoryMap::from_e820([(0, 0x3000, 3), (0x1000, 0x1000, 5), (0x2000, 0x2000, 7)])
            .unwrap();
        assert_eq!(
            map.regions(),
            &[
                region(0, 0x1000, AcpiReclaimable),
                region(0x1000, 0x2000, Defective),
                region(0x2000, 0x4000, Other(7)),
            ]
        );
    }

    #[test]
    fn touching_pieces_merge_before_being_aligned() {
        // Two halves of one page, and a run of 4 KiB entries.
        let mut entries = vec![(0x800, 0x800, 1), (0, 0x800, 1)];
        entries.extend((0..300).map(|i| (0x10_0000 + i * 0x1000, 0x1000, 1)));
        let map = MemoryMap::from_e820(entries).unwrap();
        assert_eq!(
            map.regions(),
            &[
                region(0, 0x1000, Usable),
                region(0x10_0000, 0x10_0000 + 300 * 0x1000, Usable)
            ]
        );
    }

    #[test]
    fn empty_sub_page_and_wrapping_entries_are_handled() {
        let map = MemoryMap::from_e820([
            (0x5000, 0, 2),
            (0x1001, 0xffe, 1),
            (u64::MAX - 0x1fff, 0x10000, 2),
            (u64::MAX - 0x10_0fff, 0x1000_0000, 1),
        ])
        .unwrap();
        assert_eq!(
            map.regions(),
            &[
                region(u64::MAX - 0x10_0fff, u64::MAX - 0x1fff, Usable),
                region(u64::MAX - 0x1fff, u64::MAX, Reserved),
            ]
        );
    }

    #[test]
    fn too_many_regions_are_refused_not_dropped() {
        let fits = (0..MAX_REGIONS as u64).map(|i| (i * 0x2000, 0x1000, 2));
        assert_eq!(
            MemoryMap::from_e820(fits).unwrap().regions().len(),
            MAX_REGIONS
        );
        let too_many = (0..=MAX_REGIONS as u64).map(|i| (i * 0x2000, 0x1000, 2));
        assert_eq!(
            MemoryMap::from_e820(too_many),
            Err(BootInfoError::TooManyRegions)
        );
        let far_too_many = (0..10_000u64).map(|i| (i * 0x2000, 0x1000, 2));
        assert_eq!(
            MemoryMap::from_e820(far_too_many),
            Err(BootInfoError::TooManyRegions)
        );
    }

    #[test]
    fn usable_ram_that_shrinks_to_nothing_does_not_count_against_the_limit() {
        // 200 sub-page usable slivers between reserved pages: only the reserved ones stay.
        let entries =
            (0..100u64).flat_map(|i| [(i * 0x2000, 0x1000, 2), (i * 0x2000 + 0x1000, 0x800, 1)]);
        let map = MemoryMap::from_e820(entries).unwrap();
        assert_eq!(map.regions().len(), 100);
        assert_eq!(map.usable_bytes(), 0);
        assert_eq!(map.highest_usable_end(), 0);
    }

    fn entry() -> impl Strategy<Value = (u64, u64, u32)> {
        prop_oneof![
            // Small addresses so that entries overlap often.
            (
                0u64..0x40_000,
                0u64..0x20_000,
                prop::sample::select(vec![1u32, 1, 1, 2, 3, 4, 5, 9])
            ),
            // Anything at all, including wrapping ones.
            (any::<u64>(), any::<u64>(), any::<u32>()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn normalisation_keeps_its_promises(entries in proptest::collection::vec(entry(), 0..40)) {
            let map = MemoryMap::from_e820(entries.iter().copied()).unwrap();
            let regions = map.regions();
            for r in regions {
                prop_assert!(r.start < r.end);
                if r.kind == Usable {
                    prop_assert!(r.start % 4096 == 0 && r.end % 4096 == 0, "{:?}", r);
                }
            }
            for pair in regions.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start, "unsorted or overlapping: {:?}", pair);
                prop_assert!(
                    pair[0].end < pair[1].start || pair[0].kind != pair[1].kind,
                    "unmerged: {:?}", pair
                );
            }
            let spans = |&(base, len, kind): &(u64, u64, u32)| (base, base.saturating_add(len), RegionKind::from_e820_type(kind));
            let input_usable: u128 = entries.iter().map(spans)
                .filter(|&(_, _, kind)| kind == Usable)
                .map(|(start, end, _)| u128::from(end - start))
                .sum();
            prop_assert!(u128::from(map.usable_bytes()) <= input_usable);
            for usable in map.usable() {
                for (start, end, kind) in entries.iter().map(spans) {
                    prop_assert!(
                        kind == Usable || end <= usable.start || usable.end <= start,
                        "usable {:?} overlaps a {:?} entry [{:#x}, {:#x})", usable, kind, start, end
                    );
                }
            }
            // At every boundary of the input, the winning kind is the one of highest
            // priority among the entries covering it.
            for probe in entries.iter().map(spans).flat_map(|(s, e, _)| [s, e.saturating_sub(1)]) {
                let winner = entries.iter().map(spans)
                    .filter(|&(s, e, _)| s <= probe && probe < e)
                    .map(|(_, _, kind)| kind)
                    .max_by_key(|kind| kind.priority());
                match (winner, map.kind_at(probe)) {
                    (Some(Usable), got) => prop_assert!(got == Some(Usable) || got.is_none()),
                    (winner, got) => prop_assert_eq!(got, winner, "at {:#x}", probe),
                }
            }
        }

        #[test]
        fn normalisation_is_idempotent_and_order_blind(
            mut entries in proptest::collection::vec(entry(), 0..40),
        ) {
            let map = MemoryMap::from_e820(entries.iter().copied()).unwrap();
            let again = MemoryMap::from_e820(
                map.regions().iter().map(|r| (r.start, r.size(), r.kind.e820_type())),
            ).unwrap();
            prop_assert_eq!(&again, &map);
            entries.reverse();
            prop_assert_eq!(MemoryMap::from_e820(entries).unwrap(), map);
        }
    }
}
