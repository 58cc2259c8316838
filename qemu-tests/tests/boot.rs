//! The kernel boots to `kernel ready` every way Esker supports: QEMU's PVH entry, GRUB
//! (Multiboot2) from a BIOS-booted ISO and, when OVMF and GRUB's UEFI files are
//! installed, the same ISO under UEFI.

use esker_kernel_core::contract;
use esker_logdecode::qemu::{GRUB_EFI_DIR, QemuConfig, find_uefi_firmware};
use esker_qemu_tests::{Failure, ISO_TIMEOUT, Machine, PVH_TIMEOUT, image_dir};

#[test]
fn pvh_boot_reaches_ready_and_reports_the_machine() -> Result<(), Failure> {
    let image = image_dir()?;
    let mut machine = Machine::pvh(&image, None)?;
    machine.expect("boot: PVH", PVH_TIMEOUT)?;
    machine.expect_all(
        &[
            "acpi: 2 CPUs enabled (2 listed), 1 IOAPICs",
            "svm: supported",
            "nested paging: supported",
            "timer: LAPIC timer ticking",
            contract::READY,
        ],
        PVH_TIMEOUT,
    )?;
    Ok(())
}

#[test]
fn iso_boot_reaches_ready_through_multiboot2() -> Result<(), Failure> {
    let image = image_dir()?;
    let mut machine = Machine::boot(&QemuConfig::iso(&image), &image)?;
    machine.expect("boot: Multiboot2", ISO_TIMEOUT)?;
    machine.expect(contract::READY, ISO_TIMEOUT)?;
    Ok(())
}

#[test]
fn uefi_iso_boot_reaches_ready_through_multiboot2() -> Result<(), Failure> {
    let image = image_dir()?;
    let Some(firmware) = find_uefi_firmware() else {
        println!("no OVMF firmware installed (package ovmf): UEFI boot not tested");
        return Ok(());
    };
    if !std::path::Path::new(GRUB_EFI_DIR).is_dir() {
        println!("no {GRUB_EFI_DIR} (package grub-efi-amd64-bin): UEFI boot not tested");
        return Ok(());
    }
    let mut machine = Machine::boot(&QemuConfig::uefi_iso(&image, &firmware), &image)?;
    machine.expect("boot: Multiboot2", ISO_TIMEOUT)?;
    machine.expect(contract::READY, ISO_TIMEOUT)?;
    Ok(())
}

/// Every CPU QEMU gives comes up and is scheduled on, from one to four; the system's
/// servers (which talk over IPC, now across CPUs) still all answer.
#[test]
fn every_cpu_comes_up_and_the_servers_answer_across_them() -> Result<(), Failure> {
    let image = image_dir()?;
    for cpus in [1u32, 4] {
        let mut machine = Machine::pvh_smp(&image, cpus)?;
        let mut lines: Vec<String> = (1..cpus)
            .map(|cpu| format!("smp: cpu {cpu} (APIC id {cpu}) online"))
            .collect();
        lines.push(format!("smp: {cpus} CPUs online"));
        lines.push(format!("sched: scheduling on {cpus} CPUs"));
        lines.push(contract::READY.to_string());
        let wanted: Vec<&str> = lines.iter().map(String::as_str).collect();
        machine.expect_all(&wanted, PVH_TIMEOUT)?;
        machine.expect_all(
            &[
                "hostd: vmkauthd answered status",
                "hostd: storage answered status",
                "hostd: vswitch answered status",
                "hostd: vmx answered status",
            ],
            PVH_TIMEOUT,
        )?;
    }
    Ok(())
}
