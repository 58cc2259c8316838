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
