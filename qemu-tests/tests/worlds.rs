//! User worlds on the booted kernel: the shipped servers start and answer, the kernel
//! installs exactly the capabilities the audit derives from the manifest, and hostile,
//! faulting and revoking worlds cannot hurt the kernel or each other.

use std::time::Duration;

use esker_logdecode::Level;
use esker_qemu_tests::{
    Failure, Machine, PVH_TIMEOUT, image_dir, number_after, system_manifest, test_image_dir,
};

/// The five servers of system.toml.
const SERVERS: [&str; 5] = ["vmkauthd", "storage", "vswitch", "hostd", "vmx"];
/// Time for the hostile world's thousands of calls under TCG.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn the_five_servers_start_and_answer_status_over_ipc() -> Result<(), Failure> {
    let image = image_dir()?;
    let mut machine = Machine::pvh(&image, None)?;
    // Order between worlds depends on scheduling: wait for all lines in any order.
    let started: Vec<String> = SERVERS.iter().map(|s| format!("{s}: started")).collect();
    let mut needles: Vec<&str> = started.iter().map(String::as_str).collect();
    needles.extend([
        "hostd: vmkauthd answered status: vmkauthd ready",
        "hostd: storage answered status: storage ready",
        "hostd: vswitch answered status: vswitch ready",
        "hostd: vmx answered status: vmx ready",
        "hostd: vmkauthd issued ticket",
    ]);
    machine.expect_all(&needles, PVH_TIMEOUT)?;
    // Every answer came from the world that owns the channel, tagged with its name.
    for server in ["vmkauthd", "storage", "vswitch", "vmx"] {
        let line = format!("{server}: started");
        if !machine
            .history()
            .iter()
            .any(|e| e.source == server && e.text.contains(&line))
        {
            return Err(machine.fail(format!("no line from source `{server}` saying {line:?}")));
        }
    }
    Ok(())
}

#[test]
fn the_kernel_installs_exactly_the_capabilities_the_audit_derives() -> Result<(), Failure> {
    let manifest = esker_manifest::load(&system_manifest()).map_err(|diagnostics| {
        Failure::setup(format!("system.toml does not load: {diagnostics:?}"))
    })?;
    let mut expected = capaudit::expected_capabilities(&manifest);
    expected.sort();
    let image = image_dir()?;
    let mut machine = Machine::pvh(&image, None)?;
    let summary = machine.expect("worlds: ", PVH_TIMEOUT)?;
    let mut installed: Vec<String> = machine
        .history()
        .iter()
        .filter(|e| e.source == "kernel")
        .filter_map(|e| e.text.strip_prefix("installed: ").map(str::to_owned))
        .collect();
    installed.sort();
    let missing: Vec<&String> = expected.iter().filter(|l| !installed.contains(l)).collect();
    let extra: Vec<&String> = installed.iter().filter(|l| !expected.contains(l)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(machine.fail(format!(
            "the kernel's capabilities differ from the audit's:\n  audited but not installed: {missing:#?}\n  \
             installed but not audited: {extra:#?}"
        )));
    }
    if number_after(&summary.text, "created, ") != Some(expected.len() as u64) {
        return Err(machine.fail(format!("summary line disagrees: {:?}", summary.text)));
    }
    Ok(())
}

#[test]
fn a_hostile_world_gets_only_errors_and_the_servers_still_answer() -> Result<(), Failure> {
    let image = test_image_dir("adversaries")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect("hostile: started", PVH_TIMEOUT)?;
    let summary = machine.expect_match("the hostile world's summary", HOSTILE_TIMEOUT, |e| {
        e.source == "hostile" && e.text.contains(" calls, ")
    })?;
    let calls = summary
        .text
        .strip_prefix("hostile: ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    match calls {
        Some(calls) if calls >= 1000 => {}
        _ => {
            return Err(machine.fail(format!(
                "expected thousands of calls, got {:?}",
                summary.text
            )));
        }
    }
    // Afterwards it asks every server for its status through the capabilities it holds.
    machine.expect_all(
        &[
            "hostile: call:auth answered status",
            "hostile: call:storage answered status",
            "hostile: call:vswitch answered status",
            "hostile: call:vmx answered status",
            "hostile: done",
        ],
        HOSTILE_TIMEOUT,
    )?;
    machine.expect("world hostile exited with code 0", PVH_TIMEOUT)?;
    let broken: Vec<_> = machine
        .history()
        .iter()
        .filter(|e| {
            e.text.contains("EXCEPTION") || (e.source == "hostile" && e.level == Some(Level::Error))
        })
        .collect();
    if !broken.is_empty() {
        return Err(machine.fail(format!(
            "the kernel misbehaved under hostile calls: {broken:#?}"
        )));
    }
    Ok(())
}

#[test]
fn a_faulting_world_is_stopped_and_the_others_keep_running() -> Result<(), Failure> {
    let image = test_image_dir("adversaries")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect_all(
        &[
            "faulter: about to fault",
            "world faulter stopped: #PF",
            "revoker: done",
            "hostile: done",
        ],
        HOSTILE_TIMEOUT,
    )?;
    let history = machine.history();
    let Some(at) = history
        .iter()
        .position(|e| e.text.contains("world faulter stopped: #PF"))
    else {
        return Err(machine.fail("the fault report vanished from the history"));
    };
    let report = history[at].text.clone();
    for needle in ["vector 14", "address 0x1000", "rip 0x"] {
        if !report.contains(needle) {
            return Err(machine.fail(format!("fault report lacks {needle:?}: {report:?}")));
        }
    }
    // Other worlds ran after the fault (the kernel stayed up and kept scheduling them).
    if !history[at + 1..]
        .iter()
        .any(|e| !matches!(e.source.as_str(), "kernel" | "faulter"))
    {
        return Err(machine.fail("no other world logged anything after the fault"));
    }
    if history
        .iter()
        .any(|e| e.source == "faulter" && e.text.contains("still running"))
    {
        return Err(machine.fail("the faulting world was resumed after its fault"));
    }
    Ok(())
}

#[test]
fn a_revoked_capability_stops_working_at_once_and_no_capability_means_no_call()
-> Result<(), Failure> {
    let image = test_image_dir("adversaries")?;
    let mut machine = Machine::pvh(&image, None)?;
    for step in [
        "revoker: original answered status: vmkauthd",
        "revoker: derived copy in slot",
        "revoker: after revoke the copy's slot is empty",
        "revoker: revoked copy refused",
        "revoker: original still works after revoking its copies",
        "revoker: call without a capability refused",
        "revoker: done",
    ] {
        machine.expect(step, PVH_TIMEOUT)?;
    }
    let errors: Vec<_> = machine
        .history()
        .iter()
        .filter(|e| e.source == "revoker" && e.level == Some(Level::Error))
        .collect();
    if !errors.is_empty() {
        return Err(machine.fail(format!("the revoker reported errors: {errors:#?}")));
    }
    Ok(())
}

#[test]
fn a_device_interrupt_reaches_its_holder_as_a_notification() -> Result<(), Failure> {
    let image = test_image_dir("interrupts")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect(
        "ticker: RTC periodic interrupt enabled on line 8",
        PVH_TIMEOUT,
    )?;
    for n in 1..=5 {
        machine.expect(
            &format!("ticker: interrupt {n} arrived as notification bits 0x1"),
            PVH_TIMEOUT,
        )?;
    }
    machine.expect(
        "ticker: 5 interrupts delivered as notifications",
        PVH_TIMEOUT,
    )?;
    machine.expect("world ticker exited with code 0", PVH_TIMEOUT)?;
    Ok(())
}
