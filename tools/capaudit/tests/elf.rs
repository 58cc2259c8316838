//! `least-privilege` read from real ELF files: the `.esker_uses` section, its absence, and
//! a malformed record.

mod common;

use std::collections::HashMap;

use capaudit::{USES_SECTION, Uses, audit, read_elf_dir};
use common::{SHIPPED_USES, manifest_from, no_rules, printed, shipped};
use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

/// An ELF object with the given sections.
fn elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    for (name, data) in sections {
        let id = obj.add_section(
            Vec::new(),
            name.as_bytes().to_vec(),
            SectionKind::ReadOnlyData,
        );
        obj.append_section_data(id, data, 1);
    }
    obj.write().expect("object writes an ELF")
}

/// The `.esker_uses` bytes for records.
fn section(records: &[&str]) -> Vec<u8> {
    records.iter().flat_map(|r| r.bytes().chain([0])).collect()
}

fn shipped_elfs() -> HashMap<String, Vec<u8>> {
    SHIPPED_USES
        .iter()
        .map(|(world, records)| {
            (
                (*world).to_owned(),
                elf(&[(USES_SECTION, &section(records))]),
            )
        })
        .collect()
}

fn shipped_manifest() -> esker_manifest::Manifest {
    manifest_from(&std::fs::read_to_string(shipped("system.toml")).expect("system.toml"))
}

#[test]
fn uses_are_read_from_the_elf_section() {
    let bytes = elf(&[
        (".text", b"\x90"),
        (USES_SECTION, b"log log\0call:auth call status\0\0"),
    ]);
    let uses = Uses::from_elf(&bytes).expect("readable");
    assert_eq!(
        uses,
        Uses::from_records(["log log", "call:auth call status"]).expect("records")
    );
}

#[test]
fn shipped_manifest_passes_with_exact_elfs() {
    let report = audit(&shipped_manifest(), &no_rules(), Some(&shipped_elfs()));
    assert_eq!(printed(&report), Vec::<String>::new());
}

#[test]
fn unreadable_declarations_are_violations() {
    let mut elfs = shipped_elfs();
    elfs.insert("hostd".to_owned(), elf(&[(".text", b"\x90")]));
    elfs.insert(
        "vmx".to_owned(),
        elf(&[(USES_SECTION, b"log log\0call:auth kall status\0")]),
    );
    elfs.insert("storage".to_owned(), b"not an elf".to_vec());
    elfs.remove("vswitch");
    let report = audit(&shipped_manifest(), &no_rules(), Some(&elfs));
    let printed = printed(&report);
    assert_eq!(printed.len(), 4, "{printed:#?}");
    assert!(printed[0].starts_with("least-privilege: world \"storage\": the ELF of binary \"storage\" cannot be checked: not a readable ELF ("), "{}", printed[0]);
    assert_eq!(
        printed[1..],
        [
            "least-privilege: world \"vswitch\": no ELF was given for binary \"vswitch\", so its use of capabilities \
             cannot be checked",
            "least-privilege: world \"hostd\": the ELF of binary \"hostd\" cannot be checked: it has no .esker_uses \
             section",
            "least-privilege: world \"vmx\": the ELF of binary \"vmx\" cannot be checked: its .esker_uses section is \
             malformed: record 2: \"call:auth kall status\": unknown right \"kall\"",
        ]
    );
}

#[test]
fn elfs_are_found_by_world_or_binary_name() {
    let m = shipped_manifest();
    let dir = std::env::temp_dir().join(format!("capaudit-elfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("vmx.elf"), b"a").expect("write");
    std::fs::write(dir.join("hostd"), b"b").expect("write");
    let elfs = read_elf_dir(&m, &dir).expect("reads");
    let _ = std::fs::remove_dir_all(&dir);
    let mut found: Vec<(&str, &[u8])> = elfs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    found.sort();
    assert_eq!(found, [("hostd", &b"b"[..]), ("vmx", &b"a"[..])]);
}
