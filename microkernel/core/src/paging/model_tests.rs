//! Property tests: random map and unmap sequences against a model of the tree, and
//! `map_range` against the rule it promises.

use super::emulate::*;
use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

/// A model of the tree: leaves and tables keyed by (level, virtual-address prefix).
#[derive(Default)]
struct Model {
    leaves: HashMap<(u8, u64), (u64, Access)>,
    tables: HashSet<(u8, u64)>,
}

fn shift(level: u8) -> u32 {
    12 + 9 * u32::from(level - 1)
}

fn key(level: u8, virt: u64) -> (u8, u64) {
    (level, (virt & ((1 << 48) - 1)) >> shift(level))
}

impl Model {
    fn map<F: EntryFormat>(
        &mut self,
        virt: u64,
        phys: u64,
        size: PageSize,
        access: Access,
    ) -> Result<(), MapError> {
        if F::REFUSES_WRITE_AND_EXECUTE && access.write && access.execute {
            return Err(MapError::WriteAndExecute { virt });
        }
        let leaf_level = size.level();
        for level in (leaf_level + 1..=4).rev() {
            if self.leaves.contains_key(&key(level, virt)) {
                return Err(MapError::HugePageInTheWay { virt });
            }
        }
        if self.leaves.contains_key(&key(leaf_level, virt)) {
            return Err(MapError::AlreadyMapped { virt });
        }
        if self.tables.contains(&key(leaf_level, virt)) {
            return Err(MapError::TableInTheWay { virt });
        }
        for level in leaf_level + 1..=4 {
            self.tables.insert(key(level, virt));
        }
        self.leaves.insert(key(leaf_level, virt), (phys, access));
        Ok(())
    }

    fn find(&self, virt: u64) -> Option<(u8, u64, Access)> {
        (1..=3).find_map(|level| {
            self.leaves
                .get(&key(level, virt))
                .map(|&(phys, access)| (level, phys, access))
        })
    }

    fn translate(&self, virt: u64, forced_user: bool) -> Option<Translation> {
        let (level, phys, access) = self.find(virt)?;
        let size = size_at(level);
        Some(Translation {
            phys: p(phys + (virt & (size.bytes() - 1))),
            size,
            access: Access {
                user: access.user || forced_user,
                ..access
            },
        })
    }

    fn unmap(&mut self, virt: u64) -> Result<(PhysAddr, PageSize), UnmapError> {
        let (level, phys, _) = self.find(virt).ok_or(UnmapError::NotMapped { virt })?;
        let size = size_at(level);
        if !virt.is_multiple_of(size.bytes()) {
            return Err(UnmapError::NotPageStart { virt, size });
        }
        self.leaves.remove(&key(level, virt));
        Ok((p(phys), size))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        virt: u64,
        phys: u64,
        size: PageSize,
        access: Access,
    },
    Unmap {
        virt: u64,
    },
}

/// A virtual address on a small grid, so that mappings collide often.
fn grid_virt() -> impl Strategy<Value = u64> {
    (
        prop::sample::select(vec![0u64, 1, 256, 511]),
        0u64..3,
        0u64..3,
        0u64..3,
    )
        .prop_map(|(p4, p3, p2, p1)| {
            VirtAddr::new_truncate((p4 << 39) | (p3 << 30) | (p2 << 21) | (p1 << 12)).as_u64()
        })
}

fn any_access() -> impl Strategy<Value = Access> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(write, execute, user, global, uncached)| Access {
            write,
            execute,
            user,
            global,
            cache: if uncached {
                CachePolicy::Uncached
            } else {
                CachePolicy::WriteBack
            },
        })
}

fn any_size() -> impl Strategy<Value = PageSize> {
    prop::sample::select(vec![PageSize::Size4K, PageSize::Size2M, PageSize::Size1G])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (grid_virt(), 0u64..(1 << 52), any_size(), any_access()).prop_map(|(virt, phys, size, access)| {
            let mask = !(size.bytes() - 1);
            Op::Map { virt: virt & mask, phys: phys & mask, size, access }
        }),
        1 => (grid_virt(), prop::sample::select(vec![0u64, 0x1000, 0x20_0000]))
            .prop_map(|(virt, offset)| Op::Unmap { virt: virt + offset }),
    ]
}

fn check_against_model<F: EntryFormat>(ops: &[Op], forced_user: bool) -> Result<(), TestCaseError> {
    let (mut mem, mut frames, mut table) = setup::<F>();
    let mut model = Model::default();
    for op in ops {
        match *op {
            Op::Map {
                virt,
                phys,
                size,
                access,
            } => {
                let got = table.map(&mut mem, &mut frames, v(virt), p(phys), size, access);
                prop_assert_eq!(got, model.map::<F>(virt, phys, size, access), "{:?}", op);
            }
            Op::Unmap { virt } => {
                prop_assert_eq!(
                    table.unmap(&mut mem, v(virt)),
                    model.unmap(virt),
                    "{:?}",
                    op
                );
            }
        }
        for p4 in [0u64, 1, 256, 511] {
            for p3 in 0..3 {
                for p2 in 0..3 {
                    for p1 in 0..3 {
                        let raw = (p4 << 39) | (p3 << 30) | (p2 << 21) | (p1 << 12) | 0x7f8;
                        let virt = VirtAddr::new_truncate(raw);
                        prop_assert_eq!(
                            table.translate(&mem, virt),
                            model.translate(virt.as_u64(), forced_user),
                            "at {:#x}",
                            virt.as_u64()
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn x86_tables_match_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        check_against_model::<X86>(&ops, false)?;
    }

    #[test]
    fn nested_tables_match_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        check_against_model::<Npt>(&ops, true)?;
    }

    #[test]
    fn map_range_covers_the_range_with_the_largest_fitting_pages(
        virt_page in 0u64..(1 << 24),
        phys_page in 0u64..(1 << 24),
        pages in 1u64..3000,
        huge_bias in 0u64..3,
        largest in any_size(),
    ) {
        // Bias the starts towards 2 MiB alignment so that huge pages get used.
        let align = [1u64, 512, 512 * 512][huge_bias as usize];
        let virt = (virt_page / align * align) << 12;
        let phys = (phys_page / align * align) << 12;
        let len = pages << 12;
        let (mut mem, mut frames, mut table) = setup::<X86>();
        let stats = table
            .map_range(&mut mem, &mut frames, v(virt), p(phys), len, Access::KERNEL_RODATA, largest)
            .unwrap();
        prop_assert_eq!(stats.pages_4k + (stats.pages_2m << 9) + (stats.pages_1g << 18), pages);
        // Walk the range page by page: each is mapped, at the right place, by the largest
        // size that fits there.
        let mut at = 0;
        while at < len {
            let got = table.translate(&mem, v(virt + at)).unwrap();
            prop_assert_eq!(got.phys, p(phys + at));
            let fitting = PageSize::DESCENDING
                .into_iter()
                .find(|s| {
                    s.bytes() <= largest.bytes()
                        && (virt + at).is_multiple_of(s.bytes())
                        && (phys + at).is_multiple_of(s.bytes())
                        && len - at >= s.bytes()
                })
                .unwrap();
            prop_assert_eq!(got.size, fitting, "at offset {:#x}", at);
            at += got.size.bytes();
        }
        prop_assert_eq!(table.translate(&mem, v(virt + len)), None);
    }
}
