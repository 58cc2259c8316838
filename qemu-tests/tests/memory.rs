//! The kernel reports the usable memory the machine really has: QEMU's `-m` minus at most
//! 2 MiB (legacy holes and firmware reservations).

use esker_logdecode::qemu::QemuConfig;
use esker_qemu_tests::{Failure, Machine, PVH_TIMEOUT, image_dir, number_after};

/// Boots with `-m megabytes` and checks the `memory: <N> KiB usable` line.
fn memory_report_matches(megabytes: u32) -> Result<(), Failure> {
    let image = image_dir()?;
    let mut config = QemuConfig::pvh(&image, None);
    config.memory_mib = megabytes;
    let mut machine = Machine::boot(&config, &image)?;
    let line = machine.expect_match("a `memory: <N> KiB usable` line", PVH_TIMEOUT, |event| {
        event.text.contains("memory: ") && event.text.contains(" KiB usable")
    })?;
    let Some(kib) = number_after(&line.text, "memory: ") else {
        return Err(machine.fail(format!("no number in {:?}", line.text)));
    };
    let most = u64::from(megabytes) * 1024;
    let least = most - 2048;
    if !(least..=most).contains(&kib) {
        return Err(machine.fail(format!(
            "with -m {megabytes} the kernel reports {kib} KiB usable, expected \
             {least}..={most} KiB"
        )));
    }
    Ok(())
}

#[test]
fn memory_report_matches_200_mib() -> Result<(), Failure> {
    memory_report_matches(200)
}

#[test]
fn memory_report_matches_512_mib() -> Result<(), Failure> {
    memory_report_matches(512)
}
