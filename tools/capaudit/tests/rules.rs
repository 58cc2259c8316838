//! One small negative manifest per rule (`tests/fixtures/<rule>.toml`), each asserting the
//! exact violations.

mod common;

use capaudit::{Rule, Rules, audit, audit_with_uses};
use common::{fixture, manifest, no_rules, printed, rules, uses};

#[test]
fn only_callers() {
    let m = manifest("only_callers.toml");
    let report = audit(&m, &rules(&fixture("only_callers.audit.toml"), &m), None);
    assert_eq!(
        printed(&report),
        [
            "only-callers: world \"vmx\" holds call:auth, which allows operation issue_ticket; only hostd may (rule at \
          audit.toml:1)"
        ]
    );
    let v = &report.violations()[0];
    assert_eq!(
        (v.rule, v.world.as_deref(), v.capability.as_deref()),
        (Rule::OnlyCallers, Some("vmx"), Some("call:auth"))
    );
}

#[test]
fn exclusive_device_names_every_holder() {
    let report = audit(&manifest("exclusive_device.toml"), &no_rules(), None);
    assert_eq!(
        printed(&report),
        [
            "exclusive-device: device \"ata0\" is held by 3 worlds (storage, hostd, vswitch); a device must be held by \
             exactly one world",
            "exclusive-device: device \"ata1\" is held by no world; a device must be held by exactly one world",
        ]
    );
}

#[test]
fn one_server() {
    let report = audit(&manifest("one_server.toml"), &no_rules(), None);
    assert_eq!(
        printed(&report),
        [
            "one-server: channel \"auth\" is served by 2 worlds (vmkauthd, impostor); a channel must have exactly one \
          server"
        ]
    );
}

#[test]
fn vm_memory_isolation_direct_grant() {
    let report = audit(&manifest("vm_memory_isolation.toml"), &no_rules(), None);
    assert_eq!(
        printed(&report),
        [
            "vm-memory-isolation: guest-facing world \"vmx\" (vm \"vm1\") can reach memory \"disk-vm2\" owned by vm \
          \"vm2\"; path: hostd holds memory:disk-vm2 (read+write+grant+map) -> vmx (call on channel \"vmx\")"
        ]
    );
}

#[test]
fn vm_memory_isolation_follows_calls_and_replies() {
    let report = audit(
        &manifest("vm_memory_isolation_indirect.toml"),
        &no_rules(),
        None,
    );
    assert_eq!(
        printed(&report),
        [
            "vm-memory-isolation: guest-facing world \"vmx\" (vm \"vm1\") can reach memory \"disk-vm2\" owned by vm \
          \"vm2\"; path: hostd holds memory:disk-vm2 (read+grant) -> storage (call on channel \"storage\") -> vmx \
          (reply on channel \"storage\")"
        ]
    );
}

#[test]
fn least_privilege() {
    let m = manifest("least_privilege.toml");
    let declared = uses(&[
        ("vmkauthd", &["log log", "serve:auth receive"]),
        (
            "vmx",
            &[
                "log log",
                "call:auth call status,verify_ticket",
                "memory:ring read+write",
            ],
        ),
    ]);
    let report = audit_with_uses(&m, &no_rules(), Some(&declared));
    assert_eq!(
        printed(&report),
        [
            "least-privilege: world \"vmx\" holds call:auth with operation issue_ticket, which it never uses",
            "least-privilege: world \"vmx\" holds memory:ring with right map, which it never uses",
        ]
    );
}

#[test]
fn least_privilege_reports_unused_capabilities_and_ungranted_uses() {
    let m = manifest("least_privilege.toml");
    let declared = uses(&[
        ("vmkauthd", &["log log"]),
        (
            "vmx",
            &[
                "log log",
                "call:auth call+grant status,issue_ticket,verify_ticket,fly",
                "memory:ring read+write+map",
                "call:storage call status",
            ],
        ),
    ]);
    let report = audit_with_uses(&m, &no_rules(), Some(&declared));
    assert_eq!(
        printed(&report),
        [
            "least-privilege: world \"vmkauthd\" holds serve:auth, which it never uses",
            "granted-uses: world \"vmx\" uses call:auth with right grant, which the manifest does not grant",
            "granted-uses: world \"vmx\" uses call:auth with operation fly, which the manifest does not grant",
            "granted-uses: world \"vmx\" uses call:storage, which the manifest does not grant",
        ]
    );
}

#[test]
fn least_privilege_needs_every_world_declared() {
    let m = manifest("least_privilege.toml");
    let declared = uses(&[(
        "vmx",
        &[
            "log log",
            "call:auth call status,issue_ticket,verify_ticket",
            "memory:ring read+write+map",
        ],
    )]);
    let report = audit_with_uses(&m, &no_rules(), Some(&declared));
    assert_eq!(
        printed(&report),
        [
            "least-privilege: world \"vmkauthd\": no ELF was given for binary \"vmkauthd\", so its use of capabilities \
          cannot be checked"
        ]
    );
}

#[test]
fn rule_file_mistakes_are_reported_with_lines() {
    let m = manifest("only_callers.toml");
    let text = std::fs::read_to_string(fixture("bad_rules.audit.toml")).expect("fixture");
    let errors: Vec<String> = match Rules::parse(&text, "audit.toml", &m) {
        Ok(_) => panic!("bad rules accepted"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(
        errors,
        [
            "audit.toml:3: only_callers: channel \"auth\" (protocol \"auth\") has no operation \"issue_tickets\" (it \
             has: status, issue_ticket, verify_ticket)",
            "audit.toml:4: only_callers: world \"hostdd\" is not declared in system.toml",
            "audit.toml:7: only_callers: channel \"authz\" is not declared in system.toml",
            "audit.toml:11: unknown rule \"only_caller\" (known: only_callers)",
        ]
    );
}

#[test]
fn served_operations_must_exist_in_the_protocol() {
    let m = manifest("least_privilege.toml");
    let declared = uses(&[
        (
            "vmkauthd",
            &[
                "log log",
                "serve:auth receive status,issue_ticket,revoke_ticket",
            ],
        ),
        (
            "vmx",
            &[
                "log log",
                "call:auth call status,issue_ticket,verify_ticket",
                "memory:ring read+write+map",
            ],
        ),
    ]);
    let report = audit_with_uses(&m, &no_rules(), Some(&declared));
    assert_eq!(
        printed(&report),
        [
            "granted-uses: world \"vmkauthd\" serves operation revoke_ticket on serve:auth, which its protocol does not \
          have"
        ]
    );
}
