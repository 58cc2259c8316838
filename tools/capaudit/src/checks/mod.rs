//! The rules the audit proves, and the violation type they report.
//!
//! Each rule is a function from the graph (and, where needed, the reach closure, the rule
//! file or the programs' declared uses) to violations; none of them prints or decides exit
//! codes. Violations come out in a fixed order: rule by rule, then by world or object
//! index, so reports and tests are stable.

mod isolation;
mod least_privilege;
mod structure;

use std::fmt;

pub(crate) use isolation::vm_memory_isolation;
pub(crate) use least_privilege::{UsesOf, least_privilege};
pub(crate) use structure::{exclusive_device, one_server, only_callers};

/// A rule of the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// `[[only_callers]]` in the rule file: only the listed worlds may invoke an operation.
    OnlyCallers,
    /// Every device is held by exactly one world.
    ExclusiveDevice,
    /// Every channel has exactly one server.
    OneServer,
    /// No guest-facing world can reach memory owned by another VM.
    VmMemoryIsolation,
    /// No world holds a capability, right or operation its program never uses.
    LeastPrivilege,
    /// Every capability, right or operation a program declares is granted to it.
    GrantedUses,
}

impl Rule {
    /// The rule's name as printed.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OnlyCallers => "only-callers",
            Self::ExclusiveDevice => "exclusive-device",
            Self::OneServer => "one-server",
            Self::VmMemoryIsolation => "vm-memory-isolation",
            Self::LeastPrivilege => "least-privilege",
            Self::GrantedUses => "granted-uses",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken rule; displays as `<rule>: <message>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The world concerned, if one is.
    pub world: Option<String>,
    /// The capability (or `device:<name>` / `channel:<name>` for object-wide rules).
    pub capability: Option<String>,
    /// What is wrong, naming world and capability.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(
        rule: Rule,
        world: Option<&str>,
        capability: Option<&str>,
        message: String,
    ) -> Self {
        Self {
            rule,
            world: world.map(str::to_owned),
            capability: capability.map(str::to_owned),
            message,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// `2 worlds (storage, hostd)` / `no world`.
pub(crate) fn count_worlds(names: &[String]) -> String {
    match names.len() {
        0 => "no world".to_owned(),
        1 => format!("1 world ({})", names[0]),
        n => format!("{n} worlds ({})", names.join(", ")),
    }
}
