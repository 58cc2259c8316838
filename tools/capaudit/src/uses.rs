//! What a world's program says it uses: the `.esker_uses` section of its ELF.
//!
//! The section is a sequence of NUL-terminated UTF-8 records, one per use site (the
//! runtime emits them with a macro, so one capability may appear several times and the
//! records are merged):
//!
//! ```text
//! <cap name> <right>[+<right>...][ <op>,<op>,...]
//! ```
//!
//! e.g. `log log`, `call:auth call status,verify_ticket`, `serve:auth receive`,
//! `device:ata0:ioports:0 device`. Empty records (padding between object files) are
//! skipped. Rights use the names of `esker_abi::Rights::NAMES`.

use std::collections::{BTreeMap, BTreeSet};

use esker_abi::Rights;
use object::{Object, ObjectSection};

/// Name of the ELF section holding the records.
pub const USES_SECTION: &str = ".esker_uses";

/// What a program uses of one capability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Use {
    /// Rights it exercises.
    pub rights: Rights,
    /// Channel operations it invokes (for `call:` capabilities).
    pub operations: BTreeSet<String>,
}

/// Everything a program declares, by capability name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uses {
    /// Capability name -> use.
    pub caps: BTreeMap<String, Use>,
}

impl Uses {
    /// Merges one record (`call:auth call status,verify_ticket`).
    pub fn declare(&mut self, record: &str) -> Result<(), String> {
        let mut parts = record.split(' ');
        let (Some(cap), Some(rights)) = (parts.next().filter(|c| !c.is_empty()), parts.next())
        else {
            return Err(format!(
                "\"{record}\" is not \"<cap name> <rights>[ <operations>]\""
            ));
        };
        let operations = parts.next().filter(|ops| !ops.is_empty());
        if parts.next().is_some() {
            return Err(format!("\"{record}\" has more than three fields"));
        }
        let mut parsed = Rights::NONE;
        for name in rights.split('+') {
            let right = Rights::from_name(name)
                .ok_or_else(|| format!("\"{record}\": unknown right \"{name}\""))?;
            parsed = parsed | right;
        }
        let entry = self.caps.entry(cap.to_owned()).or_default();
        entry.rights = entry.rights | parsed;
        for op in operations.into_iter().flat_map(|ops| ops.split(',')) {
            if op.is_empty() {
                return Err(format!("\"{record}\": empty operation name"));
            }
            entry.operations.insert(op.to_owned());
        }
        Ok(())
    }

    /// Builds from records (for tests and for declarations not read from an ELF).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut uses = Self::default();
        for record in records {
            uses.declare(record)?;
        }
        Ok(uses)
    }

    /// Parses the bytes of a `.esker_uses` section.
    pub fn parse(section: &[u8]) -> Result<Self, String> {
        let mut uses = Self::default();
        if section.is_empty() {
            return Ok(uses);
        }
        let body = section
            .strip_suffix(&[0])
            .ok_or("the last record is not NUL-terminated")?;
        for (index, bytes) in body.split(|b| *b == 0).enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let record = std::str::from_utf8(bytes)
                .map_err(|_| format!("record {} is not UTF-8", index + 1))?;
            uses.declare(record)
                .map_err(|e| format!("record {}: {e}", index + 1))?;
        }
        Ok(uses)
    }

    /// Reads the `.esker_uses` section of an ELF.
    pub fn from_elf(elf: &[u8]) -> Result<Self, String> {
        let file = object::File::parse(elf).map_err(|e| format!("not a readable ELF ({e})"))?;
        let section = file
            .section_by_name(USES_SECTION)
            .ok_or_else(|| format!("it has no {USES_SECTION} section"))?;
        let data = section
            .data()
            .map_err(|e| format!("its {USES_SECTION} section cannot be read ({e})"))?;
        Self::parse(data).map_err(|e| format!("its {USES_SECTION} section is malformed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merge_per_capability() {
        let uses = Uses::parse(b"log log\0call:auth call status\0\0call:auth call verify_ticket\0")
            .expect("parses");
        let auth = &uses.caps["call:auth"];
        assert_eq!(auth.rights, Rights::CALL);
        assert_eq!(
            auth.operations
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["status", "verify_ticket"]
        );
        assert_eq!(uses.caps["log"].rights, Rights::LOG);
    }

    #[test]
    fn malformed_records_are_named() {
        assert_eq!(
            Uses::parse(b"log log"),
            Err("the last record is not NUL-terminated".to_owned())
        );
        assert_eq!(
            Uses::parse(b"log log\0memory:x read+fly\0"),
            Err("record 2: \"memory:x read+fly\": unknown right \"fly\"".to_owned())
        );
        assert_eq!(
            Uses::parse(b"log\0"),
            Err("record 1: \"log\" is not \"<cap name> <rights>[ <operations>]\"".to_owned())
        );
        assert_eq!(
            Uses::parse(b"\xff\0"),
            Err("record 1 is not UTF-8".to_owned())
        );
        assert_eq!(
            Uses::parse(b"call:a call x,\0"),
            Err("record 1: \"call:a call x,\": empty operation name".to_owned())
        );
    }
}
