//! Test helpers: a synthetic defmt ELF (the symbols and `.defmt` section a real defmt
//! binary has, written with `object`) and the wire form of packets and defmt frames.

#![allow(dead_code)]

use std::path::Path;

use esker_kernel_core::logframe::{Kind, PacketBuilder, SourceId};
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

/// The timestamp format the kernel uses.
pub const TIMESTAMP: &str = "{=u64:us}";

/// An ELF whose defmt table has `entries` (tag such as `defmt_info`, format string) at
/// indices 1, 2, ... and, if given, a timestamp format.
pub fn defmt_elf(timestamp: Option<&str>, entries: &[(&str, &str)]) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let defmt = obj.add_section(Vec::new(), b".defmt".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(defmt, &vec![0u8; entries.len() + 2], 1);
    let mut add = |name: String, value: u64, section: SymbolSection| {
        obj.add_symbol(Symbol {
            name: name.into_bytes(),
            value,
            size: 1,
            kind: SymbolKind::Data,
            scope: SymbolScope::Dynamic,
            weak: false,
            section,
            flags: SymbolFlags::None,
        });
    };
    add("_defmt_version_ = 4".into(), 0, SymbolSection::Absolute);
    add("_defmt_encoding_ = raw".into(), 0, SymbolSection::Absolute);
    let json = |tag: &str, data: &str, n: usize| {
        format!(
            r#"{{"package":"fake","tag":"{tag}","data":{},"disambiguator":"{n}","crate_name":"fake"}}"#,
            serde_quote(data)
        )
    };
    for (i, (tag, format)) in entries.iter().enumerate() {
        add(
            json(tag, format, i + 1),
            i as u64 + 1,
            SymbolSection::Section(defmt),
        );
    }
    if let Some(format) = timestamp {
        let index = entries.len() as u64 + 1;
        add(
            json("defmt_timestamp", format, 0),
            index,
            SymbolSection::Section(defmt),
        );
    }
    obj.write().expect("writing the synthetic ELF")
}

/// A JSON string literal (the formats used in tests need no escapes beyond quotes).
fn serde_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `elf` to `dir/name`, creating directories.
pub fn write(dir: &Path, name: &str, elf: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, elf).unwrap();
}

/// One packet as it appears on the wire, delimiter included.
pub fn packet(kind: Kind, source: SourceId, payload: &[u8]) -> Vec<u8> {
    let mut builder = PacketBuilder::new();
    builder.start(kind, source);
    builder.push(payload);
    let mut out = Vec::new();
    builder.finish(|b| out.push(b));
    out
}

/// A raw-encoded defmt frame: index, then the timestamp (if any), then the arguments.
pub fn frame(index: u16, timestamp_us: Option<u64>, args: &[u8]) -> Vec<u8> {
    let mut out = index.to_le_bytes().to_vec();
    if let Some(ts) = timestamp_us {
        out.extend(ts.to_le_bytes());
    }
    out.extend(args);
    out
}
