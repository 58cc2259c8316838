//! The self-test kernel's deliberate faults are caught and reported, and it powers off
//! with the right exit code: W^X and NX are really in force, #UD and #PF are reported
//! with their details.

use esker_kernel_core::contract::{self, exit_code, qemu_exit_status, selftest};
use esker_logdecode::LogEvent;
use esker_logdecode::elf::alloc_sections;
use esker_qemu_tests::{
    EXIT_TIMEOUT, Failure, Machine, PVH_TIMEOUT, hex_field, selftest_cmdline, selftest_image_dir,
};

/// Page-fault error code bits.
const PF_PRESENT: u64 = 1 << 0;
const PF_WRITE: u64 = 1 << 1;
const PF_INSTRUCTION_FETCH: u64 = 1 << 4;

/// Boots the self-test kernel with `esker.selftest=<name>`.
fn boot_selftest(name: &str) -> Result<Machine, Failure> {
    Machine::pvh(&selftest_image_dir()?, Some(selftest_cmdline(name)))
}

/// Waits for the exception report naming `exception` (e.g. `#PF (vector 14)`).
fn expect_exception(machine: &mut Machine, exception: &str) -> Result<LogEvent, Failure> {
    machine.expect_match(
        &format!("an `EXCEPTION {exception}` report"),
        PVH_TIMEOUT,
        |event| event.text.contains("EXCEPTION") && event.text.contains(exception),
    )
}

/// QEMU must exit with the status of `exit_code::EXCEPTION`.
fn expect_exception_exit(machine: &mut Machine) -> Result<(), Failure> {
    let status = machine.wait_exit(EXIT_TIMEOUT)?;
    let expected = qemu_exit_status(exit_code::EXCEPTION);
    if status != expected {
        return Err(machine.fail(format!(
            "QEMU exit status {status}, expected {expected} (exit_code::EXCEPTION)"
        )));
    }
    Ok(())
}

/// Field `key` of the report, or a failure naming the line.
fn field(machine: &Machine, report: &LogEvent, key: &str) -> Result<u64, Failure> {
    hex_field(&report.text, key)
        .ok_or_else(|| machine.fail(format!("no `{key} 0x...` in {:?}", report.text)))
}

#[test]
fn invalid_opcode_is_reported_as_ud() -> Result<(), Failure> {
    let mut machine = boot_selftest(selftest::INVALID_OPCODE)?;
    expect_exception(&mut machine, "#UD (vector 6)")?;
    expect_exception_exit(&mut machine)
}

#[test]
fn unmapped_read_is_a_page_fault_at_the_address() -> Result<(), Failure> {
    let mut machine = boot_selftest(selftest::UNMAPPED_READ)?;
    let report = expect_exception(&mut machine, "#PF (vector 14)")?;
    let cr2 = format!("cr2 {:#x}", contract::SELFTEST_UNMAPPED_ADDRESS);
    if !report.text.contains(&cr2) {
        return Err(machine.fail(format!("the report lacks `{cr2}`: {:?}", report.text)));
    }
    expect_exception_exit(&mut machine)
}

#[test]
fn writing_kernel_text_faults() -> Result<(), Failure> {
    let image = selftest_image_dir()?;
    let mut machine = boot_selftest(selftest::WRITE_TEXT)?;
    let report = expect_exception(&mut machine, "#PF (vector 14)")?;
    let code = field(&machine, &report, "error code")?;
    if code & (PF_PRESENT | PF_WRITE) != PF_PRESENT | PF_WRITE {
        return Err(machine.fail(format!(
            "error code {code:#x} lacks present+write ({:#x})",
            PF_PRESENT | PF_WRITE
        )));
    }
    let cr2 = field(&machine, &report, "cr2")?;
    let sections = alloc_sections(&image.join(esker_logdecode::KERNEL_ELF))
        .map_err(|err| machine.fail(err.to_string()))?;
    if !sections.iter().any(|s| s.executable && s.contains(cr2)) {
        return Err(machine.fail(format!(
            "cr2 {cr2:#x} is not inside the kernel's text sections {:?}",
            sections
                .iter()
                .filter(|s| s.executable)
                .map(|s| (&s.name, s.address, s.size))
                .collect::<Vec<_>>()
        )));
    }
    expect_exception_exit(&mut machine)
}

#[test]
fn executing_kernel_data_faults() -> Result<(), Failure> {
    let mut machine = boot_selftest(selftest::EXECUTE_DATA)?;
    let report = expect_exception(&mut machine, "#PF (vector 14)")?;
    let code = field(&machine, &report, "error code")?;
    let wanted = PF_PRESENT | PF_INSTRUCTION_FETCH;
    if code & wanted != wanted {
        return Err(machine.fail(format!(
            "error code {code:#x} lacks present+instruction-fetch ({wanted:#x})"
        )));
    }
    // An instruction-fetch fault happens at the target itself.
    let (rip, cr2) = (
        field(&machine, &report, "rip")?,
        field(&machine, &report, "cr2")?,
    );
    if rip != cr2 {
        return Err(machine.fail(format!("fetch fault with rip {rip:#x} != cr2 {cr2:#x}")));
    }
    expect_exception_exit(&mut machine)
}

#[test]
fn power_off_exits_with_success_after_ready() -> Result<(), Failure> {
    let mut machine = boot_selftest(selftest::POWER_OFF)?;
    machine.expect(contract::READY, PVH_TIMEOUT)?;
    let status = machine.wait_exit(EXIT_TIMEOUT)?;
    let expected = qemu_exit_status(exit_code::SUCCESS);
    if status != expected {
        return Err(machine.fail(format!(
            "QEMU exit status {status}, expected {expected} (exit_code::SUCCESS)"
        )));
    }
    Ok(())
}
