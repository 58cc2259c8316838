//! Section sizes as `cargo xtask bench` reports them.

use esker_logdecode::elf::{SizeSummary, alloc_sections_of};
use object::SectionKind;
use object::write::Object;

#[test]
fn sections_are_summed_by_kind() {
    let mut obj = Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    for (name, kind, size) in [
        (".text", SectionKind::Text, 100),
        (".rodata", SectionKind::ReadOnlyData, 30),
        (".data", SectionKind::Data, 8),
        (".bss", SectionKind::UninitializedData, 4096),
        (".comment", SectionKind::OtherString, 50),
    ] {
        let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), kind);
        if kind == SectionKind::UninitializedData {
            obj.append_section_bss(id, size, 8);
        } else {
            obj.append_section_data(id, &vec![1u8; size as usize], 1);
        }
    }
    let sections = alloc_sections_of(&obj.write().unwrap()).unwrap();
    let sum = SizeSummary::of(&sections);
    assert_eq!(
        sum,
        SizeSummary {
            text: 100,
            rodata: 30,
            data: 8 + 4096,
            bss: 4096
        }
    );
    let text = sections.iter().find(|s| s.name == ".text").unwrap();
    assert!(text.contains(text.address) && !text.contains(text.address + 100));
}

#[test]
fn a_non_elf_file_is_rejected() {
    let err = alloc_sections_of(b"not an elf").unwrap_err();
    assert!(err.contains("not an ELF"), "{err}");
}
