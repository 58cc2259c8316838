//! Helpers shared by the audit's integration tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use capaudit::{AuditReport, Rules, Uses};
use esker_manifest::Manifest;

/// A file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A file at the repository root (the shipped `system.toml` and `audit.toml`).
pub fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses manifest text as `system.toml`, panicking with every diagnostic if it fails.
pub fn manifest_from(text: &str) -> Manifest {
    esker_manifest::parse(text, "system.toml").unwrap_or_else(|errors| {
        panic!(
            "manifest does not check:\n{}",
            errors.iter().map(|e| format!("{e}\n")).collect::<String>()
        )
    })
}

/// A fixture manifest.
pub fn manifest(name: &str) -> Manifest {
    manifest_from(&read(&fixture(name)))
}

/// A rule file (as `audit.toml`) checked against `manifest`.
pub fn rules(path: &Path, manifest: &Manifest) -> Rules {
    Rules::parse(&read(path), "audit.toml", manifest).unwrap_or_else(|errors| {
        panic!(
            "rules do not check:\n{}",
            errors.iter().map(|e| format!("{e}\n")).collect::<String>()
        )
    })
}

/// No rules.
pub fn no_rules() -> Rules {
    Rules {
        file: "audit.toml".to_owned(),
        only_callers: Vec::new(),
    }
}

/// Declared uses per world from `(world, records)`.
pub fn uses(declarations: &[(&str, &[&str])]) -> HashMap<String, Uses> {
    declarations
        .iter()
        .map(|(world, records)| {
            let uses = Uses::from_records(records.iter().copied())
                .unwrap_or_else(|e| panic!("{world}: {e}"));
            ((*world).to_owned(), uses)
        })
        .collect()
}

/// The violations of a report, as printed.
pub fn printed(report: &AuditReport) -> Vec<String> {
    report
        .violations()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// What the five shipped servers will declare in `.esker_uses`: exactly their grants.
pub const SHIPPED_USES: &[(&str, &[&str])] = &[
    (
        "vmkauthd",
        &[
            "log log",
            "serve:auth receive status,issue_ticket,verify_ticket",
        ],
    ),
    (
        "storage",
        &[
            "log log",
            "serve:storage receive status",
            "device:ata0:ioports:0 device",
            "device:ata0:ioports:1 device",
            "device:ata0:irq device",
            "irq:ata0 wait",
        ],
    ),
    (
        "vswitch",
        &[
            "log log",
            "serve:vswitch receive",
            "memory:ring-vm1-vswitch read+write+map",
            "wait:ring-vm1 wait",
        ],
    ),
    (
        "hostd",
        &[
            "log log",
            "serve:hostd receive status",
            "call:auth call status,issue_ticket,verify_ticket",
            "call:storage call status",
            "call:vswitch call status",
            "call:vmx call status",
        ],
    ),
    (
        "vmx",
        &[
            "log log",
            "serve:vmx receive status",
            "call:auth call status",
            "call:storage call status",
            "call:vswitch call status",
            "memory:ring-vm1-vswitch read+write+map",
            "signal:ring-vm1 signal",
        ],
    ),
];
