//! The shipped `system.toml` and `audit.toml` pass every rule; the expected-capability list
//! the QEMU test compares against is exactly as documented.

mod common;

use capaudit::{audit, audit_with_uses, expected_capabilities};
use common::{SHIPPED_USES, manifest_from, printed, rules, shipped, uses};

fn shipped_text() -> String {
    std::fs::read_to_string(shipped("system.toml")).expect("system.toml at the repository root")
}

#[test]
fn shipped_files_pass_every_rule() {
    let m = manifest_from(&shipped_text());
    let r = rules(&shipped("audit.toml"), &m);
    assert!(!r.only_callers.is_empty(), "audit.toml has rules");
    let report = audit_with_uses(&m, &r, Some(&uses(SHIPPED_USES)));
    assert_eq!(printed(&report), Vec::<String>::new());
    assert!(report.is_clean());
}

#[test]
fn a_second_holder_of_ata0_is_caught_and_named() {
    let text = shipped_text().replace(
        "holders = [\"storage\"]",
        "holders = [\"storage\", \"hostd\"]",
    );
    let m = manifest_from(&text);
    let report = audit(&m, &rules(&shipped("audit.toml"), &m), None);
    assert_eq!(
        printed(&report),
        [
            "exclusive-device: device \"ata0\" is held by 2 worlds (storage, hostd); a device must be held by exactly one \
          world"
        ]
    );
}

#[test]
fn granting_vmx_issue_ticket_breaks_only_callers() {
    let text = shipped_text().replace(
        "\"verify_ticket\"], vmx = [\"status\"]",
        "\"verify_ticket\"], vmx = [\"status\", \"issue_ticket\"]",
    );
    let m = manifest_from(&text);
    let report = audit(&m, &rules(&shipped("audit.toml"), &m), None);
    assert_eq!(
        printed(&report),
        [
            "only-callers: world \"vmx\" holds call:auth, which allows operation issue_ticket; only hostd may (rule at \
          audit.toml:16)"
        ]
    );
}

#[test]
fn expected_capabilities_of_the_shipped_manifest() {
    let m = manifest_from(&shipped_text());
    let expected = [
        "world=vmkauthd slot=0 kind=log object=vmkauthd rights=log badge=0x0",
        "world=vmkauthd slot=1 kind=endpoint object=auth rights=receive badge=0x0",
        "world=storage slot=0 kind=log object=storage rights=log badge=0x0",
        "world=storage slot=1 kind=endpoint object=storage rights=receive badge=0x0",
        "world=storage slot=2 kind=ioports object=ata0 rights=device badge=0x0",
        "world=storage slot=3 kind=ioports object=ata0 rights=device badge=0x0",
        "world=storage slot=4 kind=interrupt object=ata0 rights=device badge=0x0",
        "world=storage slot=5 kind=notification object=irq:ata0 rights=wait badge=0x0",
        "world=vswitch slot=0 kind=log object=vswitch rights=log badge=0x0",
        "world=vswitch slot=1 kind=endpoint object=vswitch rights=receive badge=0x0",
        "world=vswitch slot=2 kind=memory object=ring-vm1-vswitch rights=read+write+map badge=0x0",
        "world=vswitch slot=3 kind=notification object=ring-vm1 rights=wait badge=0x0",
        "world=hostd slot=0 kind=log object=hostd rights=log badge=0x0",
        "world=hostd slot=1 kind=endpoint object=hostd rights=receive badge=0x0",
        "world=hostd slot=2 kind=endpoint object=auth rights=call badge=0x300000007",
        "world=hostd slot=3 kind=endpoint object=storage rights=call badge=0x300000001",
        "world=hostd slot=4 kind=endpoint object=vswitch rights=call badge=0x300000001",
        "world=hostd slot=5 kind=endpoint object=vmx rights=call badge=0x300000001",
        "world=vmx slot=0 kind=log object=vmx rights=log badge=0x0",
        "world=vmx slot=1 kind=endpoint object=vmx rights=receive badge=0x0",
        "world=vmx slot=2 kind=endpoint object=auth rights=call badge=0x400000001",
        "world=vmx slot=3 kind=endpoint object=storage rights=call badge=0x400000001",
        "world=vmx slot=4 kind=endpoint object=vswitch rights=call badge=0x400000001",
        "world=vmx slot=5 kind=memory object=ring-vm1-vswitch rights=read+write+map badge=0x0",
        "world=vmx slot=6 kind=notification object=ring-vm1 rights=signal badge=0x0",
    ];
    assert_eq!(expected_capabilities(&m), expected);
}

#[test]
fn graph_text_and_dot_show_capabilities_and_badges() {
    let m = manifest_from(&shipped_text());
    let report = audit(&m, &rules(&shipped("audit.toml"), &m), None);
    let text = report.graph_text();
    assert!(
        text.starts_with(
            "capability graph of system.toml: 5 worlds, 16 objects, 25 capabilities\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("world vmx (index 4, binary vmx, guest-facing, vm vm1)\n"),
        "{text}"
    );
    assert!(
        text.contains("  2     call:auth                endpoint auth            call            0x400000001 (client vmx: status)\n"),
        "{text}"
    );
    let dot = report.graph_dot();
    assert!(dot.starts_with("digraph capabilities {\n"), "{dot}");
    assert!(
        dot.contains("  w4 -> o5 [label=\"2 call:auth\\ncall\\nstatus\"];\n"),
        "{dot}"
    );
    assert!(
        dot.contains("  o15 -> o14 [style=dashed, label=\"signals\"];\n"),
        "{dot}"
    );
    assert!(dot.ends_with("}\n"));
}

#[test]
fn graph_is_written_as_dot() {
    let m = manifest_from(&shipped_text());
    let report = audit(&m, &rules(&shipped("audit.toml"), &m), None);
    let dir = std::env::temp_dir().join(format!("capaudit-test-{}", std::process::id()));
    let files = report.write_graph(&dir).expect("writes");
    let dot = std::fs::read_to_string(dir.join("capabilities.dot")).expect("dot file");
    assert_eq!(dot, report.graph_dot());
    assert!(files.contains(&dir.join("capabilities.dot")));
    let _ = std::fs::remove_dir_all(&dir);
}
