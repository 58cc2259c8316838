//! Capability-use declarations.
//!
//! A world states, in its own code, every capability it uses, with the rights and channel
//! operations it exercises:
//!
//! ```ignore
//! const AUTH: Declared = esker_rt::uses!("call:auth", "call", "status,verify_ticket");
//! const LOG: Declared = esker_rt::uses!("log", "log");
//! ```
//!
//! Each `uses!` places one NUL-terminated record `"<cap> <right>[+<right>...][ <op>,...]"`
//! in the ELF section `.esker_uses`; the capability audit reads that section from every
//! world's ELF and proves that no world holds a right (or a badge operation) it never
//! declared. The macro checks the record at compile time (known right names, well-formed
//! operation names, operations that exist when the channel is named after a protocol),
//! and its [`Declared`] handle is the only way to look a capability up by name
//! ([`crate::Runtime::slot`]).

use esker_abi::Rights;

/// The ELF section holding the records.
pub const SECTION: &str = ".esker_uses";

/// A declared capability: the handle [`uses!`](crate::uses) returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declared {
    name: &'static str,
    record: &'static [u8],
}

impl Declared {
    /// Made only by `uses!`, which also emits the record (`record` points at it, so the
    /// record is linked into every program that uses the handle).
    #[doc(hidden)]
    pub const fn __from_uses_macro(name: &'static str, record: &'static [u8]) -> Self {
        Self { name, record }
    }

    /// The capability's name in the start info.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The record as placed in `.esker_uses`, without its NUL.
    pub fn record(&self) -> &'static str {
        let bytes = match self.record.split_last() {
            Some((0, rest)) => rest,
            _ => self.record,
        };
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

/// Declares that this world uses capability `$cap` with `$rights` (`right+right`) and,
/// optionally, the channel operations `$ops` (`op,op`). Returns a [`Declared`] handle.
///
/// Usable in `const` and `static` initialisers and in function bodies.
#[macro_export]
macro_rules! uses {
    ($cap:literal, $rights:literal) => {
        $crate::uses!(@record $cap, $rights, "", concat!($cap, " ", $rights, "\0"))
    };
    ($cap:literal, $rights:literal, $ops:literal) => {
        $crate::uses!(@record $cap, $rights, $ops, concat!($cap, " ", $rights, " ", $ops, "\0"))
    };
    (@record $cap:literal, $rights:literal, $ops:literal, $record:expr) => {{
        const _: () = $crate::uses::check($cap, $rights, $ops);
        const RECORD: &str = $record;
        #[used]
        #[cfg_attr(target_os = "none", unsafe(link_section = ".esker_uses"))]
        static USES_RECORD: [u8; RECORD.len()] = $crate::uses::to_array(RECORD);
        $crate::uses::Declared::__from_uses_macro($cap, &USES_RECORD)
    }};
}

/// Copies a string into an array of its length (for the record static).
#[doc(hidden)]
pub const fn to_array<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    assert!(bytes.len() == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Compile-time checks of a declaration (a failed check is a compile error).
#[doc(hidden)]
pub const fn check(cap: &str, rights: &str, ops: &str) {
    assert!(
        valid_cap_name(cap.as_bytes()),
        "uses!: capability name must be 1..=255 bytes without spaces or NUL"
    );
    assert!(
        valid_rights(rights.as_bytes()),
        "uses!: rights must be known right names joined by '+'"
    );
    assert!(
        valid_ops(ops.as_bytes()),
        "uses!: operations must be names of [a-z0-9_] joined by ','"
    );
    assert!(
        ops_exist(cap.as_bytes(), ops.as_bytes()),
        "uses!: an operation is not in the channel's protocol"
    );
}

const fn valid_cap_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if name[i] <= b' ' || name[i] >= 0x7f {
            return false;
        }
        i += 1;
    }
    true
}

/// `bytes[start..end]`, in a const fn.
const fn sub(bytes: &[u8], start: usize, end: usize) -> &[u8] {
    let (_, tail) = bytes.split_at(start);
    let (middle, _) = tail.split_at(end - start);
    middle
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn is_right(name: &[u8]) -> bool {
    let mut i = 0;
    while i < Rights::NAMES.len() {
        if eq(Rights::NAMES[i].0.as_bytes(), name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn valid_rights(rights: &[u8]) -> bool {
    if rights.is_empty() {
        return false;
    }
    let mut start = 0;
    let mut i = 0;
    while i <= rights.len() {
        if i == rights.len() || rights[i] == b'+' {
            if !is_right(sub(rights, start, i)) {
                return false;
            }
            start = i + 1;
        }
        i += 1;
    }
    true
}

const fn valid_ops(ops: &[u8]) -> bool {
    if ops.is_empty() {
        return true;
    }
    let mut len = 0;
    let mut i = 0;
    while i <= ops.len() {
        if i == ops.len() || ops[i] == b',' {
            if len == 0 {
                return false;
            }
            len = 0;
        } else if ops[i].is_ascii_lowercase() || ops[i].is_ascii_digit() || ops[i] == b'_' {
            len += 1;
        } else {
            return false;
        }
        i += 1;
    }
    true
}

/// The channel part of `call:<channel>` / `serve:<channel>`, if `cap` has that form.
const fn channel_of(cap: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    while i < cap.len() {
        if cap[i] == b':' {
            let kind = sub(cap, 0, i);
            if eq(kind, b"call") || eq(kind, b"serve") {
                return Some(sub(cap, i + 1, cap.len()));
            }
            return None;
        }
        i += 1;
    }
    None
}

/// If the channel is named after a protocol, every operation must be one of its own.
const fn ops_exist(cap: &[u8], ops: &[u8]) -> bool {
    let Some(channel) = channel_of(cap) else {
        return true;
    };
    let protocols = esker_protocols::PROTOCOLS;
    let mut p = 0;
    let operations = loop {
        if p == protocols.len() {
            // A channel with another name: its protocol is in the manifest; the audit checks.
            return true;
        }
        if eq(protocols[p].0.as_bytes(), channel) {
            break protocols[p].1;
        }
        p += 1;
    };
    let mut start = 0;
    let mut i = 0;
    while i <= ops.len() {
        if ops.is_empty() {
            return true;
        }
        if i == ops.len() || ops[i] == b',' {
            let op = sub(ops, start, i);
            let mut found = false;
            let mut k = 0;
            while k < operations.len() {
                if eq(operations[k].as_bytes(), op) {
                    found = true;
                }
                k += 1;
            }
            if !found {
                return false;
            }
            start = i + 1;
        }
        i += 1;
    }
    true
}

/// One record of `.esker_uses`, parsed (for tools and the runtime's start-up check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UseRecord<'a> {
    /// The capability name.
    pub cap: &'a str,
    /// Its rights.
    pub rights: Rights,
    /// The operations, comma-separated (may be empty).
    pub operations: &'a str,
}

impl<'a> UseRecord<'a> {
    /// Parses one record (without its NUL); `None` if it is malformed.
    pub fn parse(record: &'a str) -> Option<Self> {
        let mut fields = record.split(' ');
        let cap = fields.next().filter(|c| valid_cap_name(c.as_bytes()))?;
        let rights_text = fields.next()?;
        let operations = fields.next().unwrap_or("");
        if fields.next().is_some()
            || !valid_rights(rights_text.as_bytes())
            || !valid_ops(operations.as_bytes())
        {
            return None;
        }
        let rights = rights_text
            .split('+')
            .filter_map(Rights::from_name)
            .fold(Rights::NONE, Rights::union);
        Some(Self {
            cap,
            rights,
            operations,
        })
    }

    /// The operations, one by one.
    pub fn operations(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.operations.split(',').filter(|op| !op.is_empty())
    }
}

/// The records of a `.esker_uses` section's bytes (malformed or non-UTF-8 ones are
/// skipped; the audit reports them).
pub fn records(section: &[u8]) -> impl Iterator<Item = UseRecord<'_>> {
    section
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|r| core::str::from_utf8(r).ok())
        .filter_map(UseRecord::parse)
}

/// This program's own `.esker_uses` section (between linker-script symbols).
#[cfg(target_os = "none")]
pub fn own_section() -> &'static [u8] {
    unsafe extern "C" {
        static __esker_uses_start: u8;
        static __esker_uses_end: u8;
    }
    let start = &raw const __esker_uses_start;
    let end = &raw const __esker_uses_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: the world linker script defines both symbols around the `.esker_uses`
    // output section, which is loaded read-only and never written; `len` is its size.
    unsafe { core::slice::from_raw_parts(start, len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const AUTH: Declared = crate::uses!("call:auth", "call", "status,verify_ticket");

    #[test]
    fn macro_builds_the_record_and_the_handle() {
        assert_eq!(AUTH.name(), "call:auth");
        assert_eq!(AUTH.record(), "call:auth call status,verify_ticket");
        let log = crate::uses!("log", "log");
        assert_eq!(log.record(), "log log");
        let device = crate::uses!("device:com1:ioports", "device");
        assert_eq!(device.record(), "device:com1:ioports device");
        let serve = crate::uses!("serve:vmx-web1", "receive+grant", "status,anything");
        assert_eq!(
            serve.record(),
            "serve:vmx-web1 receive+grant status,anything"
        );
    }

    #[test]
    fn records_parse_and_reject_malformed_ones() {
        let section =
            b"log log\0call:auth call status,verify_ticket\0bad\0x fly\0y read extra words\0\0";
        let parsed: Vec<UseRecord<'_>> = records(section).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0],
            UseRecord {
                cap: "log",
                rights: Rights::LOG,
                operations: ""
            }
        );
        assert_eq!(parsed[1].rights, Rights::CALL);
        assert_eq!(
            parsed[1].operations().collect::<Vec<_>>(),
            ["status", "verify_ticket"]
        );
        assert_eq!(
            UseRecord::parse("m read+write+map").map(|r| r.rights),
            Some(Rights::READ | Rights::WRITE | Rights::MAP)
        );
        assert_eq!(UseRecord::parse("m read+"), None);
        assert_eq!(UseRecord::parse("m read ,x"), None);
    }

    #[test]
    fn compile_time_checks_know_rights_and_protocol_operations() {
        assert!(valid_rights(b"call+grant"));
        assert!(!valid_rights(b"call+"));
        assert!(!valid_rights(b"fly"));
        assert!(!valid_rights(b""));
        assert!(valid_ops(b"") && valid_ops(b"status,issue_ticket"));
        assert!(!valid_ops(b"status,") && !valid_ops(b"Status") && !valid_ops(b",a"));
        assert!(ops_exist(
            b"call:auth",
            b"status,issue_ticket,verify_ticket"
        ));
        assert!(!ops_exist(b"call:auth", b"status,fly"));
        assert!(!ops_exist(b"serve:storage", b"issue_ticket"));
        assert!(
            ops_exist(b"call:vmx-web1", b"whatever"),
            "unknown channels are left to the audit"
        );
        assert!(ops_exist(b"memory:ring", b"whatever"));
        assert!(valid_cap_name(b"call:auth") && !valid_cap_name(b"a b") && !valid_cap_name(b""));
    }
}
