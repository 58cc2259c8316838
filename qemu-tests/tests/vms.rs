//! Virtual machines on the booted kernel: the Rust test guest (`guests/testguest`) run by a
//! `vmx` monitor world under AMD SVM with nested paging (QEMU's TCG emulates both).
//! Scenarios are in `qemu-tests/vms/<scenario>/` (see its README); `cargo xtask test`
//! builds their images.

use std::time::Duration;

use esker_qemu_tests::{Failure, Machine, test_image_dir};
use esker_testguest::SpinSummary;

/// A guest under nested TCG is slow; the busy scenario also runs six VMs.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// The lines of one VM's world (its monitor and its console).
fn lines_of<'a>(machine: &'a Machine, vm: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    machine
        .history()
        .iter()
        .filter(move |e| e.source == vm)
        .map(|e| e.text.as_str())
}

#[test]
fn the_test_guest_passes_every_check() -> Result<(), Failure> {
    let image = test_image_dir("vm-guest")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect("vmx: vm testguest powered on: 32 MiB", GUEST_TIMEOUT)?;
    for check in [
        "testguest: cpuid: ok",
        "testguest: ports: ok",
        "testguest: mmio: ok",
        "testguest: memory: ok",
        "testguest: timer: ok",
        "testguest: all checks passed",
    ] {
        machine.expect(check, GUEST_TIMEOUT)?;
    }
    let off = machine.expect("vmx: vm testguest powered off", GUEST_TIMEOUT)?;
    if !off
        .text
        .contains("the guest exited with code 0 (port 0xf4)")
    {
        return Err(machine.fail(format!("unexpected power-off: {:?}", off.text)));
    }
    // The console lines come from the VM's own world, tagged with its name.
    if !lines_of(&machine, "testguest").any(|l| l.starts_with("testguest: all checks passed")) {
        return Err(machine.fail("the guest's console is not tagged with the VM's name"));
    }
    // Every exit kind the guest used was counted.
    for reason in ["cpuid=", "io=", "mmio=", "hlt="] {
        if !off.text.contains(reason) {
            return Err(machine.fail(format!("no {reason} count in {:?}", off.text)));
        }
    }
    Ok(())
}

#[test]
fn two_vms_run_at_once_and_cannot_see_each_others_memory() -> Result<(), Failure> {
    let image = test_image_dir("vm-pair")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect_all(
        &[
            "testguest: isolation 1: ready",
            "testguest: isolation 2: ready",
            "testguest: isolation 1: wrote",
            "testguest: isolation 2: wrote",
            "vmx: vm iso-a powered off: the guest exited with code 0",
            "vmx: vm iso-b powered off: the guest exited with code 0",
        ],
        GUEST_TIMEOUT,
    )?;
    // Each guest waits after writing its markers before it scans: both must have written
    // ("ready") before either finished scanning, or the scan proved nothing.
    let position = |needle: &str| {
        machine
            .history()
            .iter()
            .position(|e| e.text.contains(needle))
            .unwrap_or(usize::MAX)
    };
    let last_ready = position("isolation 1: ready").max(position("isolation 2: ready"));
    let first_scan = position("isolation 1: wrote").min(position("isolation 2: wrote"));
    if last_ready > first_scan {
        return Err(
            machine.fail("one guest finished scanning before the other had written its markers")
        );
    }
    for (vm, marker) in [("iso-a", 1), ("iso-b", 2)] {
        let report = lines_of(&machine, vm)
            .find(|l| l.starts_with(&format!("testguest: isolation {marker}: wrote")))
            .map(str::to_owned)
            .ok_or_else(|| machine.fail(format!("no isolation report from {vm}")))?;
        if !report.ends_with("foreign markers found: 0") {
            return Err(machine.fail(format!("{vm} saw the other VM's memory: {report:?}")));
        }
        let pages = esker_qemu_tests::number_after(&report, "wrote ").unwrap_or(0);
        // 24 MiB of RAM, minus the image and low memory: thousands of pages.
        if pages < 4000 {
            return Err(machine.fail(format!("{vm} marked only {pages} pages: {report:?}")));
        }
    }
    Ok(())
}

#[test]
fn broken_guests_are_powered_off_and_the_others_run_on() -> Result<(), Failure> {
    let image = test_image_dir("vm-bad")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect_all(
        &[
            // A kernel image cut short.
            "vmx: vm truncated: cannot load truncated.elf:",
            // More memory than the host has: the VM is not created, the rest is.
            "world huge: not created",
            // A CPU reservation no CPU can guarantee: refused, with the shortfall named.
            "world greedy: not created: not admitted: reservation of 900000 MHz",
            // A triple fault and garbage instructions stop their VM only.
            "vmx: vm triple powered off: the guest triple-faulted (shutdown)",
            "vmx: vm garbage powered off: the guest triple-faulted (shutdown)",
            // A guest spinning forever does not keep the others from the CPU.
            "testguest: spin: looping forever",
            "testguest: all checks passed",
            "vmx: vm survivor powered off: the guest exited with code 0",
        ],
        GUEST_TIMEOUT,
    )?;
    let not_created = machine
        .history()
        .iter()
        .find(|e| e.text.contains("object huge-ram: not created"))
        .map(|e| e.text.clone())
        .ok_or_else(|| machine.fail("no report that the huge VM's memory was not created"))?;
    if !not_created.contains("needs 3000 MiB of contiguous physical memory") {
        return Err(machine.fail(format!("unclear message: {not_created:?}")));
    }
    Ok(())
}

/// Debian's kernel under TCG inside TCG: allow for a slow, shared machine.
const LINUX_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn debians_linux_boots_to_user_space_and_runs_commands() -> Result<(), Failure> {
    let image = test_image_dir("vm-linux")?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect(
        "vmx: vm linux powered on: 256 MiB, 1 vCPU; Linux ",
        GUEST_TIMEOUT,
    )?;
    machine.expect("Linux version 6.", LINUX_TIMEOUT)?;
    machine.expect("Run /init as init process", LINUX_TIMEOUT)?;
    machine.expect("esker-guest: userspace up", LINUX_TIMEOUT)?;
    // Commands the guest's /init runs, with their output: uname, /proc/cpuinfo, meminfo.
    let kernel = machine.expect("esker-guest: kernel ", LINUX_TIMEOUT)?;
    if !kernel.text.contains("-cloud-amd64") {
        return Err(machine.fail(format!("unexpected uname -r: {:?}", kernel.text)));
    }
    machine.expect("esker-guest: cpus 1", LINUX_TIMEOUT)?;
    let memory = machine.expect("esker-guest: memory MemTotal:", LINUX_TIMEOUT)?;
    let kib: u64 = memory
        .text
        .split_once("MemTotal:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // 256 MiB of RAM, less what the kernel keeps for itself.
    if !(150_000..=262_144).contains(&kib) {
        return Err(machine.fail(format!("the guest sees {kib} KiB: {:?}", memory.text)));
    }
    // Typed at the host console, the line reaches the guest's shell (the host's COM1 →
    // kernel → the VM's monitor → the guest's 16550), and the answer comes back. The
    // expected text is not in what is typed, so the shell's echo cannot match it.
    machine.type_text("echo typed-$((6*7))-back\n")?;
    machine.expect("typed-42-back", LINUX_TIMEOUT)?;
    Ok(())
}

// Under host load this hung once: a vCPU thread asked for a timeout of "now" while its
// guest had an interrupt waiting and interrupts off, so the guest never ran again (see
// `the_next_event_is_never_now_while_an_interrupt_waits_for_the_guest` in the monitor).
#[test]
fn debians_linux_boots_on_two_vcpus_and_sees_both() -> Result<(), Failure> {
    let image = test_image_dir("vm-linux-smp")?;
    // Two host CPUs, so the two vCPU threads can run at once.
    let mut machine = Machine::pvh_smp(&image, 2)?;
    machine.expect(
        "vmx: vm linuxsmp powered on: 256 MiB, 2 vCPUs; Linux ",
        GUEST_TIMEOUT,
    )?;
    // The MADT lists both; the second starts through INIT and start-up IPIs (real mode,
    // then long mode) and answers the boot CPU's IPIs.
    // Told its TSC rate on the command line (tsc_early_khz, added by the monitor), Linux
    // keeps time with the TSC instead of marking it unstable.
    machine.expect_all(
        &[
            "smpboot: Allowing 2 CPUs",
            "tsc: Detected",
            "smpboot: Total of 2 processors activated",
            "clocksource: Switched to clocksource tsc-early",
        ],
        LINUX_TIMEOUT,
    )?;
    machine.expect("esker-guest: userspace up", LINUX_TIMEOUT)?;
    machine.expect("esker-guest: cpus 2", LINUX_TIMEOUT)?;
    // CPU 1 taken offline halts with interrupts off (its vCPU parks; the VM runs on) and
    // comes back through INIT and start-up IPIs.
    machine.expect("smpboot: CPU 1 is now offline", LINUX_TIMEOUT)?;
    machine.expect("esker-guest: offline, online cpus 0", LINUX_TIMEOUT)?;
    machine.expect("esker-guest: online again, online cpus 0-1", LINUX_TIMEOUT)?;
    machine.expect("esker-guest: powering off", LINUX_TIMEOUT)?;
    machine.expect("vmx: vm linuxsmp powered off", LINUX_TIMEOUT)?;
    Ok(())
}

/// What the test guest's `spin` run reports (its summary line), VM `vm` booted from
/// image `scenario` on one host CPU under icount (guest time follows instructions: the
/// figures do not depend on host load).
fn lock_spin(scenario: &str, vm: &str) -> Result<SpinSummary, Failure> {
    let image = test_image_dir(scenario)?;
    let mut machine = Machine::pvh_icount(&image)?;
    machine.expect(
        &format!("vmx: vm {vm} powered on: 32 MiB, 2 vCPUs"),
        GUEST_TIMEOUT,
    )?;
    machine.expect("testguest: spin: 2 cpus up", GUEST_TIMEOUT)?;
    let summary = machine.expect_match("the spin summary", GUEST_TIMEOUT, |event| {
        event.source == vm && SpinSummary::parse(&event.text).is_some()
    })?;
    machine.expect("testguest: spin: passed", GUEST_TIMEOUT)?;
    SpinSummary::parse(&summary.text)
        .ok_or_else(|| machine.fail(format!("cannot read {:?}", summary.text)))
}

// Relaxed co-scheduling: a vCPU spinning on a lock its descheduled sibling holds is
// co-stopped once it is 3 ms (COSTOP_SKEW_NS) of run time ahead, so it never burns a
// whole 10 ms slice; without co-scheduling (the control, `cpu.coschedule = "off"`) it
// does. Two vCPUs on one host CPU take turns on one lock, held 50 µs at a time.
#[test]
fn a_vcpu_spinning_on_a_descheduled_siblings_lock_is_co_stopped() -> Result<(), Failure> {
    let relaxed = lock_spin("vm-cospin", "cospin")?;
    let off = lock_spin("vm-cospin-off", "cospin-off")?;
    let figures = format!("co-scheduled: {relaxed}; independent: {off}");
    println!("{figures}");
    // Within twice the skew bound (a member may start up to the bound behind).
    assert!(relaxed.longest_us <= 6_000, "{figures}");
    // The control shows the problem: most of a slice burned at once.
    assert!(off.longest_us >= 7_000, "{figures}");
    // (On one host CPU the share of time spun is about the same either way — a sibling
    // that is not running cannot release the lock — only no single spin lasts a slice.)
    Ok(())
}
