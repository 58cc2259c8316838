//! Worlds on the machine: the system (every kernel object) behind one lock, the bundle
//! linked into the image, and the entry points the trap and syscall stubs call.
//!
//! The kernel is not preemptible: handlers run with interrupts off, take the lock, let the
//! system decide, then load whatever address space and frame it chose.

use core::sync::atomic::{AtomicBool, Ordering};

use esker_kernel_core::manifest::{BundleError, BundleView};
use esker_kernel_core::system::{Next, Registers, System};
use spin::Mutex;
use x86_64::registers::control::Cr3;

use crate::arch::x86_64::syscall;
use crate::platform::{self, KernelPlatform};

/// The bundle (`cargo xtask image` packs the manifest and every world's program into it).
static BUNDLE_BYTES: &[u8] = include_bytes!(env!("ESKER_BUNDLE_FILE"));

static SYSTEM: Mutex<System> = Mutex::new(System::new());
static SCHEDULING: AtomicBool = AtomicBool::new(false);

/// Creates what the manifest lists and reports every capability installed. Returns the
/// number of worlds created.
pub fn boot() -> usize {
    let bundle = match BundleView::parse(BUNDLE_BYTES) {
        Ok(bundle) => bundle,
        Err(BundleError::Empty) => {
            defmt::warn!("worlds: this image carries no bundle; running without worlds");
            return 0;
        }
        Err(error) => {
            defmt::error!(
                "worlds: the image's bundle is unusable: {}",
                defmt::Display2Format(&error)
            );
            return 0;
        }
    };
    let mut system = SYSTEM.lock();
    let result = system.instantiate(&mut KernelPlatform::new(), &bundle, |name, error| {
        defmt::error!(
            "world {=str}: not created: {}",
            name,
            defmt::Display2Format(error)
        );
    });
    if let Err(error) = result {
        defmt::error!(
            "worlds: creating the manifest's objects failed: {}",
            defmt::Display2Format(&error)
        );
    }
    let mut count = 0usize;
    system.for_each_capability(|line| {
        defmt::info!("installed: {}", defmt::Display2Format(&line));
        count += 1;
    });
    defmt::info!(
        "worlds: {=usize} created, {=usize} capabilities installed, {=u64} frames free",
        system.live_worlds(),
        count,
        crate::memory::free_frames()
    );
    system.live_worlds()
}

/// Starts scheduling; never returns.
pub fn start() -> ! {
    let mut frame = Registers::default();
    let next = SYSTEM.lock().start(&mut frame);
    SCHEDULING.store(true, Ordering::Release);
    apply(next, &mut frame);
    syscall::enter(&frame)
}

/// Loads the address space the system chose, or turns the frame into the idle context.
fn apply(next: Next, frame: &mut Registers) {
    match next {
        Next::World { root, .. } => {
            if Cr3::read_raw().0.start_address().as_u64() != root.start().as_u64() {
                platform::switch_to(root);
            }
        }
        Next::Idle => *frame = syscall::idle_frame(),
    }
}

/// A system call from the running world (called by the syscall stub).
pub extern "C" fn on_syscall(frame: &mut Registers) {
    let next = SYSTEM.lock().on_syscall(&mut KernelPlatform::new(), frame);
    apply(next, frame);
}

/// The timer fired (in a world or in the idle loop).
pub fn on_timer(frame: &mut Registers) {
    if !SCHEDULING.load(Ordering::Acquire) {
        return;
    }
    let next = SYSTEM.lock().on_timer(frame);
    apply(next, frame);
}

/// A device interrupt line fired.
pub fn on_irq(line: u8, frame: &mut Registers) {
    if !SCHEDULING.load(Ordering::Acquire) {
        return;
    }
    let next = SYSTEM
        .lock()
        .on_irq(&mut KernelPlatform::new(), line, frame);
    apply(next, frame);
}

/// A world raised an exception.
pub fn on_user_exception(frame: &mut Registers, fault_address: u64, describe: &str) {
    let next =
        SYSTEM
            .lock()
            .on_user_exception(&mut KernelPlatform::new(), frame, fault_address, describe);
    apply(next, frame);
}
