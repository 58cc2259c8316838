//! Host tests of the page-table builder against an emulated physical memory.

use super::emulate::*;
use super::*;

#[test]
fn a_new_table_is_empty_even_over_garbage() {
    let (mem, _, table) = setup::<X86>();
    assert_eq!(mem.frames[&table.root().number()], [0; 512]);
    assert_eq!(table.translate(&mem, v(0)), None);
    assert_eq!(table.translate(&mem, v(0xffff_ffff_8000_0000)), None);
}

#[test]
fn pages_of_every_size_translate_with_their_offset() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let cases = [
        (0xffff_8000_0000_1000, 0x5000, PageSize::Size4K),
        (0xffff_8000_0020_0000, 0x4000_0000, PageSize::Size2M),
        (0x0000_0040_0000_0000, 0xc0_0000_0000, PageSize::Size1G),
    ];
    for (virt, phys, size) in cases {
        table
            .map(
                &mut mem,
                &mut frames,
                v(virt),
                p(phys),
                size,
                Access::KERNEL_DATA,
            )
            .unwrap();
    }
    for (virt, phys, size) in cases {
        let offset = size.bytes() - 8;
        let got = table.translate(&mem, v(virt + offset)).unwrap();
        assert_eq!(got.phys, p(phys + offset));
        assert_eq!(got.size, size);
        assert_eq!(got.access, Access::KERNEL_DATA);
        assert_eq!(table.translate(&mem, v(virt + size.bytes())), None);
    }
}

#[test]
fn writable_and_executable_is_refused_without_touching_memory() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let before = mem.frames.len();
    let err = table
        .map(
            &mut mem,
            &mut frames,
            v(0x1000),
            p(0x1000),
            PageSize::Size4K,
            RWX,
        )
        .unwrap_err();
    assert_eq!(err, MapError::WriteAndExecute { virt: 0x1000 });
    assert_eq!(mem.frames.len(), before);
    let err = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0),
            p(0),
            0x4000,
            RWX,
            PageSize::Size1G,
        )
        .unwrap_err();
    assert_eq!(err, MapError::WriteAndExecute { virt: 0 });
}

#[test]
fn bad_addresses_are_refused_by_name() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let mut map = |virt, phys, size| {
        table.map(
            &mut mem,
            &mut frames,
            v(virt),
            p(phys),
            size,
            Access::KERNEL_DATA,
        )
    };
    let misaligned = |virt, phys, size| Err(MapError::Misaligned { virt, phys, size });
    assert_eq!(
        map(0x1001, 0x1000, PageSize::Size4K),
        misaligned(0x1001, 0x1000, PageSize::Size4K)
    );
    assert_eq!(
        map(0x20_0000, 0x1000, PageSize::Size2M),
        misaligned(0x20_0000, 0x1000, PageSize::Size2M)
    );
    assert_eq!(
        map(0x20_0000, 0x4000_0000, PageSize::Size1G),
        misaligned(0x20_0000, 0x4000_0000, PageSize::Size1G)
    );
    assert_eq!(
        map(0x0000_8000_0000_0000, 0, PageSize::Size4K),
        Err(MapError::NonCanonical {
            virt: 0x0000_8000_0000_0000
        })
    );
    assert_eq!(
        map(0x1000, 1 << 52, PageSize::Size4K),
        Err(MapError::PhysTooHigh { phys: 1 << 52 })
    );
}

#[test]
fn existing_mappings_are_never_replaced() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x4000_0000),
            p(0),
            PageSize::Size1G,
            data,
        )
        .unwrap();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x20_0000),
            p(0),
            PageSize::Size2M,
            data,
        )
        .unwrap();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x1000),
            p(0),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    let mut map = |virt, size| table.map(&mut mem, &mut frames, v(virt), p(0), size, data);
    assert_eq!(
        map(0x1000, PageSize::Size4K),
        Err(MapError::AlreadyMapped { virt: 0x1000 })
    );
    assert_eq!(
        map(0x20_0000, PageSize::Size2M),
        Err(MapError::AlreadyMapped { virt: 0x20_0000 })
    );
    assert_eq!(
        map(0x4000_0000, PageSize::Size1G),
        Err(MapError::AlreadyMapped { virt: 0x4000_0000 })
    );
    // Inside the 1 GiB page and the 2 MiB page.
    assert_eq!(
        map(0x4020_0000, PageSize::Size2M),
        Err(MapError::HugePageInTheWay { virt: 0x4020_0000 })
    );
    assert_eq!(
        map(0x7fff_f000, PageSize::Size4K),
        Err(MapError::HugePageInTheWay { virt: 0x7fff_f000 })
    );
    assert_eq!(
        map(0x20_1000, PageSize::Size4K),
        Err(MapError::HugePageInTheWay { virt: 0x20_1000 })
    );
    // A huge page over tables of smaller pages.
    assert_eq!(
        map(0, PageSize::Size2M),
        Err(MapError::TableInTheWay { virt: 0 })
    );
    assert_eq!(
        map(0, PageSize::Size1G),
        Err(MapError::TableInTheWay { virt: 0 })
    );
    // The originals are untouched.
    assert_eq!(
        table.translate(&mem, v(0x4000_0000)).unwrap().size,
        PageSize::Size1G
    );
    assert_eq!(
        table.translate(&mem, v(0x1000)).unwrap().size,
        PageSize::Size4K
    );
}

#[test]
fn map_range_uses_huge_pages_in_the_middle_and_small_ones_at_the_edges() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    let stats = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0x1f_f000),
            p(0x1f_f000),
            0x4020_1000 - 0x1f_f000,
            data,
            PageSize::Size1G,
        )
        .unwrap();
    assert_eq!(
        stats,
        MapStats {
            pages_4k: 2,
            pages_2m: 512,
            pages_1g: 0
        }
    );

    let (mut mem, mut frames, mut table) = setup::<X86>();
    let stats = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0x1f_f000),
            p(0x1f_f000),
            0x8020_1000 - 0x1f_f000,
            data,
            PageSize::Size1G,
        )
        .unwrap();
    assert_eq!(
        stats,
        MapStats {
            pages_4k: 2,
            pages_2m: 512,
            pages_1g: 1
        }
    );
    assert_eq!(
        table.translate(&mem, v(0x4000_1234)).unwrap().size,
        PageSize::Size1G
    );
    assert_eq!(
        table.translate(&mem, v(0x8020_0abc)).unwrap().phys,
        p(0x8020_0abc)
    );
    assert_eq!(table.translate(&mem, v(0x8020_1000)), None);
    assert_eq!(table.translate(&mem, v(0x1f_e000)), None);
}

#[test]
fn map_range_respects_the_largest_size_co_alignment_and_rounds_length_up() {
    let data = Access::KERNEL_DATA;
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let stats = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0),
            p(0),
            1 << 31,
            data,
            PageSize::Size2M,
        )
        .unwrap();
    assert_eq!(
        stats,
        MapStats {
            pages_4k: 0,
            pages_2m: 1024,
            pages_1g: 0
        }
    );
    // Virtual and physical aligned differently: only 4 KiB pages fit.
    let stats = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0x1_0000_0000),
            p(0x1000),
            0x40_0000,
            data,
            PageSize::Size1G,
        )
        .unwrap();
    assert_eq!(
        stats,
        MapStats {
            pages_4k: 1024,
            pages_2m: 0,
            pages_1g: 0
        }
    );
    let stats = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0x2_0000_0000),
            p(0),
            1,
            data,
            PageSize::Size1G,
        )
        .unwrap();
    assert_eq!(
        stats,
        MapStats {
            pages_4k: 1,
            pages_2m: 0,
            pages_1g: 0
        }
    );
    let stats = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0x3_0000_0000),
            p(0),
            0,
            data,
            PageSize::Size1G,
        )
        .unwrap();
    assert_eq!(stats, MapStats::default());
}

#[test]
fn map_range_refuses_ranges_that_wrap_or_cross_the_hole() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    let mut range = |virt: u64, phys: u64, len: u64| {
        table.map_range(
            &mut mem,
            &mut frames,
            v(virt),
            p(phys),
            len,
            data,
            PageSize::Size1G,
        )
    };
    assert_eq!(
        range(0xffff_ffff_ffff_f000, 0, 0x2000),
        Err(MapError::RangeWraps {
            virt: 0xffff_ffff_ffff_f000,
            phys: 0,
            len: 0x2000
        })
    );
    assert_eq!(
        range(0, 0xffff_ffff_ffff_f000, 0x2000),
        Err(MapError::RangeWraps {
            virt: 0,
            phys: 0xffff_ffff_ffff_f000,
            len: 0x2000
        })
    );
    assert_eq!(
        range(0x7fff_ffff_f000, 0, 0x2000),
        Err(MapError::NonCanonical {
            virt: 0x8000_0000_0000
        })
    );
    assert_eq!(
        range(0x7fff_ffff_f000, 0, 0xffff_0000_0000_2000),
        Err(MapError::NonCanonical {
            virt: 0x8000_0000_0000
        })
    );
    assert_eq!(
        range(0, 0, u64::MAX).unwrap_err(),
        MapError::RangeWraps {
            virt: 0,
            phys: 0,
            len: u64::MAX
        }
    );
}

#[test]
fn a_failed_map_range_leaves_nothing_of_itself_behind() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x60_3000),
            p(0x9000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    let err = table
        .map_range(
            &mut mem,
            &mut frames,
            v(0x1f_f000),
            p(0x1f_f000),
            0x40_8000,
            data,
            PageSize::Size2M,
        )
        .unwrap_err();
    assert_eq!(err, MapError::AlreadyMapped { virt: 0x60_3000 });
    for page in (0x1f_f000..0x60_3000).step_by(0x1000) {
        assert_eq!(
            table.translate(&mem, v(page)),
            None,
            "{page:#x} stayed mapped"
        );
    }
    assert_eq!(table.translate(&mem, v(0x60_3000)).unwrap().phys, p(0x9000));
}

#[test]
fn unmap_removes_exactly_the_page_asked_for() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x20_0000),
            p(0x4000_0000),
            PageSize::Size2M,
            data,
        )
        .unwrap();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x5000),
            p(0x7000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    assert_eq!(
        table.unmap(&mut mem, v(0x20_1000)),
        Err(UnmapError::NotPageStart {
            virt: 0x20_1000,
            size: PageSize::Size2M
        })
    );
    assert!(table.translate(&mem, v(0x20_1000)).is_some());
    assert_eq!(
        table.unmap(&mut mem, v(0x20_0000)),
        Ok((p(0x4000_0000), PageSize::Size2M))
    );
    assert_eq!(table.translate(&mem, v(0x20_0000)), None);
    assert_eq!(
        table.unmap(&mut mem, v(0x20_0000)),
        Err(UnmapError::NotMapped { virt: 0x20_0000 })
    );
    assert_eq!(
        table.unmap(&mut mem, v(0x5000)),
        Ok((p(0x7000), PageSize::Size4K))
    );
    assert_eq!(table.translate(&mem, v(0x5000)), None);
    assert_eq!(
        table.unmap(&mut mem, v(0x8000_0000_0000)),
        Err(UnmapError::NotMapped {
            virt: 0x8000_0000_0000
        })
    );
    // The emptied table is reused by the next mapping.
    let used = frames.next;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x6000),
            p(0x7000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    assert_eq!(frames.next, used);
}

#[test]
fn raw_entries_carry_the_right_bits() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let root = table.root();
    let text = v(0xffff_ffff_8000_0000);
    let mmio = v(0xffff_ffff_8020_0000);
    table
        .map(
            &mut mem,
            &mut frames,
            text,
            p(0x20_0000),
            PageSize::Size2M,
            Access::KERNEL_CODE,
        )
        .unwrap();
    table
        .map(
            &mut mem,
            &mut frames,
            mmio,
            p(0xfee0_0000),
            PageSize::Size4K,
            Access::KERNEL_MMIO,
        )
        .unwrap();

    let walk = walk_entries(&mem, root, text);
    assert_eq!(walk.len(), 3);
    for &table_entry in &walk[..2] {
        assert_eq!(
            table_entry & (X86::PRESENT | X86::WRITABLE),
            X86::PRESENT | X86::WRITABLE
        );
        assert_eq!(
            table_entry & (X86::NO_EXECUTE | X86::USER | X86::HUGE | X86::GLOBAL),
            0
        );
    }
    let leaf = walk[2];
    assert_eq!(leaf, 0x20_0000 | X86::PRESENT | X86::HUGE | X86::GLOBAL);

    let walk = walk_entries(&mem, root, mmio);
    assert_eq!(walk.len(), 4);
    assert_eq!(
        walk[3],
        0xfee0_0000
            | X86::PRESENT
            | X86::WRITABLE
            | X86::WRITE_THROUGH
            | X86::CACHE_DISABLE
            | X86::GLOBAL
            | X86::NO_EXECUTE
    );
}

#[test]
fn a_user_page_opens_every_level_above_it_and_only_those() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let root = table.root();
    let kernel_page = v(0x40_0000);
    let user_page = v(0x40_1000);
    table
        .map(
            &mut mem,
            &mut frames,
            kernel_page,
            p(0x1000),
            PageSize::Size4K,
            Access::KERNEL_DATA,
        )
        .unwrap();
    for entry in walk_entries(&mem, root, kernel_page) {
        assert_eq!(entry & X86::USER, 0);
    }
    table
        .map(
            &mut mem,
            &mut frames,
            user_page,
            p(0x2000),
            PageSize::Size4K,
            USER_DATA,
        )
        .unwrap();
    for entry in walk_entries(&mem, root, user_page) {
        assert_ne!(entry & X86::USER, 0);
    }
    assert!(table.translate(&mem, user_page).unwrap().access.user);
    assert!(!table.translate(&mem, kernel_page).unwrap().access.user);
    // An unrelated part of the tree stays closed to user mode.
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x8000_0000),
            p(0x1000),
            PageSize::Size4K,
            Access::KERNEL_DATA,
        )
        .unwrap();
    assert_eq!(walk_entries(&mem, root, v(0x8000_0000))[1] & X86::USER, 0);
}

#[test]
fn translate_reports_the_access_every_level_allows() {
    let (mut mem, mut frames, mut table) = setup::<X86>();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x1000),
            p(0x1000),
            PageSize::Size4K,
            USER_DATA,
        )
        .unwrap();
    let root = table.root();
    let top = mem.read_entry(root, 0);
    mem.write_entry(
        root,
        0,
        (top & !X86::WRITABLE & !X86::USER) | X86::NO_EXECUTE,
    );
    let got = table.translate(&mem, v(0x1000)).unwrap().access;
    assert!(!got.write && !got.user && !got.execute);
}

#[test]
fn the_pat_bit_of_a_foreign_huge_page_is_not_part_of_its_address() {
    // Tables built elsewhere (firmware, a boot loader) may set PAT, bit 12 of a huge
    // leaf, which lies inside the address field.
    let (mut mem, mut frames, mut table) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x20_0000),
            p(0x4000_0000),
            PageSize::Size2M,
            data,
        )
        .unwrap();
    let walk = walk_entries(&mem, table.root(), v(0x20_0000));
    let pd = PhysFrame::containing(p(walk[1] & X86::ADDRESS_MASK));
    mem.write_entry(pd, 1, walk[2] | 1 << 12);
    let got = table.translate(&mem, v(0x20_0123)).unwrap();
    assert_eq!(got.phys, p(0x4000_0123));
    assert_eq!(
        table.unmap(&mut mem, v(0x20_0000)),
        Ok((p(0x4000_0000), PageSize::Size2M))
    );
}

#[test]
fn nested_tables_carry_user_everywhere_and_allow_guest_ram_to_be_rwx() {
    let (mut mem, mut frames, mut table) = setup::<Npt>();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x1000),
            p(0x1000),
            PageSize::Size4K,
            RWX,
        )
        .unwrap();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x4000_0000),
            p(0x4000_0000),
            PageSize::Size1G,
            Access::KERNEL_DATA,
        )
        .unwrap();
    for virt in [v(0x1000), v(0x4000_0000)] {
        for entry in walk_entries(&mem, table.root(), virt) {
            assert_ne!(entry & X86::USER, 0, "entry {entry:#x} lacks User");
        }
        assert!(table.translate(&mem, virt).unwrap().access.user);
    }
    let got = table.translate(&mem, v(0x1000)).unwrap().access;
    assert!(got.write && got.execute);
}

#[test]
fn running_out_of_frames_keeps_earlier_mappings_and_can_be_retried() {
    let mut mem = EmulatedMemory::default();
    // Root plus one chain of three tables.
    let mut frames = CountingFrames::with_limit(4);
    let mut table = PageTable::<X86>::new(&mut mem, &mut frames).unwrap();
    let data = Access::KERNEL_DATA;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x1000),
            p(0xa000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x2000),
            p(0xb000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    // A different 2 MiB region needs a new level-1 table.
    assert_eq!(
        table.map(
            &mut mem,
            &mut frames,
            v(0x4000_0000),
            p(0xc000),
            PageSize::Size4K,
            data
        ),
        Err(MapError::OutOfFrames)
    );
    assert_eq!(table.translate(&mem, v(0x1000)).unwrap().phys, p(0xa000));
    assert_eq!(table.translate(&mem, v(0x2000)).unwrap().phys, p(0xb000));
    assert_eq!(table.translate(&mem, v(0x4000_0000)), None);
    frames.left = 2;
    table
        .map(
            &mut mem,
            &mut frames,
            v(0x4000_0000),
            p(0xc000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    assert_eq!(
        table.translate(&mem, v(0x4000_0000)).unwrap().phys,
        p(0xc000)
    );
    let mut empty = CountingFrames::with_limit(0);
    assert_eq!(
        PageTable::<X86>::new(&mut mem, &mut empty).unwrap_err(),
        MapError::OutOfFrames
    );
}

#[test]
fn address_spaces_share_the_kernel_half_but_not_the_user_half() {
    let (mut mem, mut frames, mut kernel) = setup::<X86>();
    let data = Access::KERNEL_DATA;
    kernel
        .map(
            &mut mem,
            &mut frames,
            v(0xffff_8000_0000_0000),
            p(0x1000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    kernel
        .map(
            &mut mem,
            &mut frames,
            v(0x1000),
            p(0x2000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    let mut user = PageTable::<X86>::new(&mut mem, &mut frames).unwrap();
    user.map(
        &mut mem,
        &mut frames,
        v(0x5000),
        p(0x3000),
        PageSize::Size4K,
        USER_DATA,
    )
    .unwrap();
    user.copy_upper_half_from(&mut mem, &kernel);
    assert_eq!(
        user.translate(&mem, v(0xffff_8000_0000_0000)).unwrap().phys,
        p(0x1000)
    );
    assert_eq!(user.translate(&mem, v(0x1000)), None);
    assert_eq!(user.translate(&mem, v(0x5000)).unwrap().phys, p(0x3000));
    // Later kernel mappings under an existing level-4 entry are seen by both.
    kernel
        .map(
            &mut mem,
            &mut frames,
            v(0xffff_8000_0000_2000),
            p(0x4000),
            PageSize::Size4K,
            data,
        )
        .unwrap();
    assert_eq!(
        user.translate(&mem, v(0xffff_8000_0000_2000)).unwrap().phys,
        p(0x4000)
    );
}

#[test]
fn errors_explain_themselves() {
    let misaligned = MapError::Misaligned {
        virt: 0x1000,
        phys: 0x3000,
        size: PageSize::Size2M,
    };
    assert_eq!(
        misaligned.to_string(),
        "cannot map 0x1000 -> 0x3000 as a 2 MiB page: not aligned to 2 MiB"
    );
    assert_eq!(
        MapError::WriteAndExecute { virt: 0x5000 }.to_string(),
        "refusing to map 0x5000 both writable and executable (W^X)"
    );
    assert_eq!(
        UnmapError::NotPageStart {
            virt: 0x20_1000,
            size: PageSize::Size2M
        }
        .to_string(),
        "0x201000 is inside a 2 MiB page, not at its start; nothing was unmapped"
    );
    assert_eq!(
        UnmapError::NotMapped { virt: 0x10 }.to_string(),
        "nothing is mapped at 0x10"
    );
}
