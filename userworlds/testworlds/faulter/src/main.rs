//! The faulter world's wiring: log, fault, and (if the kernel ever resumed it) say so.
#![cfg_attr(target_os = "none", no_std, no_main)]

esker_rt::entry!(world_main, heap = 4096);

#[cfg(target_os = "none")]
fn world_main(_rt: esker_rt::Runtime) -> ! {
    use esker_faulter::{FAULT_ADDRESS, FAULT_VALUE};

    defmt::info!("faulter: about to fault");
    // SAFETY: the store goes to an address no world has mapped (see FAULT_ADDRESS); it
    // touches no memory Rust knows about and raises #PF, which stops this world. The asm
    // block uses no stack.
    unsafe {
        core::arch::asm!(
            "mov qword ptr [{address}], {value}",
            address = in(reg) FAULT_ADDRESS,
            value = in(reg) FAULT_VALUE,
            options(nostack),
        );
    }
    defmt::error!(
        "faulter: still running after writing to {=u64:#x}",
        FAULT_ADDRESS
    );
    esker_rt::sys::exit(1)
}
