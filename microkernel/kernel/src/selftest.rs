//! Self-tests of test builds: `esker.selftest=<name>` on the kernel command line makes a
//! test build (cargo feature `selftest`) do something that must fail in a specific way —
//! an exception whose report the boot tests check, which also proves that W^X and NX are
//! really in force. Production builds ignore the switch with a warning.

use esker_kernel_core::boot::cmdline;
use esker_kernel_core::contract::SELFTEST_KEY;

/// Runs the self-test the command line asks for, if any (after `kernel ready`).
pub fn run(command_line: &str) {
    let Some(name) = cmdline::value(command_line, SELFTEST_KEY) else {
        return;
    };
    #[cfg(not(feature = "selftest"))]
    defmt::warn!(
        "selftest: `{=str}={=str}` ignored: this is not a test build",
        SELFTEST_KEY,
        name
    );
    #[cfg(feature = "selftest")]
    enabled::run(name);
}

#[cfg(feature = "selftest")]
mod enabled {
    use esker_kernel_core::contract::{SELFTEST_UNMAPPED_ADDRESS, exit_code, selftest};

    use crate::arch::x86_64::power;

    /// A `ret` instruction in writable (hence non-executable) data.
    static mut RET_IN_DATA: [u8; 16] = [0xc3; 16];

    pub(super) fn run(name: &str) {
        defmt::info!("selftest: {=str}", name);
        match name {
            selftest::INVALID_OPCODE => {
                // SAFETY: deliberately raises #UD; the exception handler reports it and
                // powers off, so execution never continues past this point.
                unsafe { core::arch::asm!("ud2") };
            }
            selftest::UNMAPPED_READ => {
                let pointer = SELFTEST_UNMAPPED_ADDRESS as *const u64;
                // SAFETY: deliberately reads an address the kernel never maps, to raise
                // #PF; the handler reports it and powers off.
                let value = unsafe { pointer.read_volatile() };
                defmt::error!("selftest: read {=u64:#x} from an unmapped address", value);
            }
            selftest::WRITE_TEXT => {
                let target = run as *const () as *mut u8;
                // SAFETY: deliberately writes into kernel code, which W^X maps read-only;
                // the write raises #PF and never lands.
                unsafe { target.write_volatile(0xcc) };
                defmt::error!("selftest: wrote into kernel code: W^X is not in force");
            }
            selftest::EXECUTE_DATA => {
                let target = &raw const RET_IN_DATA as *const ();
                // SAFETY: deliberately calls into writable data, which NX maps
                // non-executable; the fetch raises #PF. Were NX off, the bytes are a
                // plain `ret`, which returns harmlessly.
                let function =
                    unsafe { core::mem::transmute::<*const (), extern "C" fn()>(target) };
                function();
                defmt::error!("selftest: executed writable data: NX is not in force");
            }
            selftest::POWER_OFF => {
                defmt::info!("selftest: powering off");
                power::power_off(exit_code::SUCCESS);
            }
            unknown => defmt::error!(
                "selftest: unknown self-test `{=str}`; known: {=[?]}",
                unknown,
                selftest::ALL
            ),
        }
        // A self-test that reaches here did not fail the way it must.
        power::power_off(exit_code::PANIC);
    }
}
