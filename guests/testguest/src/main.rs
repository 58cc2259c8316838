//! Esker's test guest: a Multiboot v1 kernel that checks what the virtual machine
//! monitor emulates and prints one `testguest: ` line per step on COM1.
//!
//! The command line picks what runs (see `guests/README.md`): by default the `cpuid`,
//! `ports`, `mmio`, `memory` and `timer` checks, then `testguest: all checks passed` and
//! exit code 0 through the debug-exit port 0xf4; or `isolation=<n>`, `triple-fault`,
//! `garbage`, `spin`, `cpuid-bench`, or `spin=<ms>` (with `cpus=<n>`: a lock measurement
//! on several vCPUs). Every failure prints `testguest: FAILED <what>: <detail>` and exits
//! with its own code ([`esker_testguest::exit`], [`esker_testguest::Check::exit_code`]).
//!
//! Built for `x86_64-unknown-none` only (`cargo build -p esker-testguest --target
//! x86_64-unknown-none --release`, or `cargo xtask` through `guest::build_testguest`). On
//! the host this crate compiles to a stub so that `cargo test --workspace` and clippy run.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[macro_use]
mod serial;
#[cfg(target_os = "none")]
mod actions;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod checks;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod interrupts;
#[cfg(target_os = "none")]
mod phys;
#[cfg(target_os = "none")]
mod smp;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "testguest runs inside a virtual machine only: build it with \
         `cargo build -p esker-testguest --target x86_64-unknown-none --release`."
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
use esker_testguest::{Action, MULTIBOOT_LOADER_MAGIC, exit, parse_cmdline};

/// Called by the boot stub in 64-bit mode with what the loader left in `%eax`/`%ebx`.
#[cfg(target_os = "none")]
extern "C" fn guest_main(magic: u32, info_addr: u32) -> ! {
    serial::init();
    let image = boot::image_range();
    say!("booted, image at [{:#x}, {:#x})", image.0, image.1);
    interrupts::install();
    if magic != MULTIBOOT_LOADER_MAGIC {
        fail!(
            "boot",
            exit::BOOT,
            "entered with {magic:#x} in eax, expected the Multiboot v1 magic {MULTIBOOT_LOADER_MAGIC:#x}"
        );
    }
    let boot = phys::Boot::read(info_addr, image);
    say!(
        "Multiboot information at {info_addr:#x}, flags {:#x}",
        boot.info.flags
    );
    if let Some((lower, upper)) = boot.info.memory_kib {
        say!("memory: {lower} KiB low, {upper} KiB above 1 MiB");
    }
    for region in boot.regions() {
        say!(
            "memory map: [{:#011x}, {:#011x}) type {}",
            region.base,
            region.end(),
            region.kind
        );
    }
    let cmdline = boot.cmdline();
    say!("command line: \"{cmdline}\"");
    let plan = match parse_cmdline(cmdline) {
        Ok(plan) => plan,
        Err(err) => fail!("cmdline", exit::BOOT, "{err}"),
    };
    let mut ran = false;
    for check in plan.checks() {
        checks::run(check, &boot, image);
        ran = true;
    }
    if ran {
        say!("all checks passed");
    }
    match plan.action {
        None => {
            serial::set_stage("exit");
            cpu::exit(exit::PASS)
        }
        Some(Action::Isolation(n)) => actions::isolation(n, &boot, image),
        Some(Action::TripleFault) => actions::triple_fault(),
        Some(Action::Garbage) => actions::garbage(),
        Some(Action::Spin) => actions::spin(),
        Some(Action::CpuidBench) => actions::cpuid_bench(),
        Some(Action::LockSpin(spin)) => smp::lock_spin(spin, &boot, image),
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => fail!(
            "panic",
            exit::PANIC,
            "{} at {}:{}",
            info.message(),
            at.file(),
            at.line()
        ),
        None => fail!("panic", exit::PANIC, "{}", info.message()),
    }
}
