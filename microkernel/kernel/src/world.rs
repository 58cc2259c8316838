//! Worlds on the machine: the system (every kernel object) behind one lock, the bundle
//! linked into the image, and the entry points the trap and syscall stubs call.
//!
//! The kernel is not preemptible: handlers run with interrupts off, take the lock (one for
//! all CPUs; the system keeps each CPU's dispatch state and is pointed at the caller's),
//! let the system decide, interrupt the CPUs the decision kicked, then load whatever
//! address space it chose and return the register area to resume. A world's registers
//! are saved and restored in place, in its area inside the system (see
//! `arch::x86_64::syscall`): the CPU writes them only while it runs that world in user
//! mode, and no CPU's kernel code touches the area of a world running elsewhere (the
//! scheduler runs an entity on one CPU at a time). Guests run with the lock released.

use core::sync::atomic::{AtomicBool, Ordering};

use esker_kernel_core::manifest::{BundleError, BundleView};
use esker_kernel_core::sched::{Topology, topology};
use esker_kernel_core::system::{Next, Registers, System, VmExitAction};
use spin::{Mutex, MutexGuard};

use crate::arch::x86_64::{MAX_CPUS, cpu, lapic, pic, serial, smp, svm, syscall};
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
    let cpus = system.set_cpu_count(smp::online());
    defmt::info!("sched: scheduling on {=usize} CPUs", cpus);
    platform::set_topology(detect_topology(cpus));
    let result = system.instantiate(&mut KernelPlatform::new(), &bundle, |what, name, error| {
        defmt::error!(
            "{=str} {=str}: not created: {}",
            what,
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
    if system.has_console() {
        serial::enable_receive_interrupt();
        pic::set_enabled(serial::IRQ, true);
        defmt::info!("console: input typed on COM1 goes to the console's holder");
    }
    defmt::info!(
        "worlds: {=usize} created, {=usize} capabilities installed, {=u64} frames free",
        system.live_worlds(),
        count,
        crate::memory::free_frames()
    );
    system.live_worlds()
}

/// How the first `cpus` CPUs share cores, from their APIC ids and the boot CPU's CPUID;
/// logs what it found.
fn detect_topology(cpus: usize) -> Topology {
    let shift = cpu::smt_shift();
    let ids: heapless::Vec<u32, MAX_CPUS> =
        (0..cpus).map_while(smp::apic_id).take(MAX_CPUS).collect();
    if ids.len() != cpus {
        defmt::warn!(
            "sched: topology: the APIC ids of CPUs {=usize} and up are unknown; scheduled as flat",
            ids.len()
        );
        return Topology::Flat;
    }
    let detected = topology::detect(&ids, shift.bits);
    if detected.reason().is_some() {
        // Sibling threads the scheduler cannot pair: it still runs, unaware of them.
        defmt::warn!(
            "sched: topology: {}; APIC ids {=[?]}, SMT shift {=u32} from {=str}",
            defmt::Display2Format(&detected),
            &ids[..],
            shift.bits,
            shift.source.as_str()
        );
    } else {
        defmt::info!(
            "sched: topology: {}; APIC ids {=[?]}, SMT shift {=u32} from {=str}",
            defmt::Display2Format(&detected),
            &ids[..],
            shift.bits,
            shift.source.as_str()
        );
    }
    detected.topology
}

/// Takes the system lock on this CPU and points the system at this CPU's dispatch
/// state. While it waits, the CPU does any TLB flush it is asked for: the holder may be
/// waiting for exactly that (`smp::shootdown`). (Once it has the lock no request is
/// outstanding: a requester holds the lock until every target has flushed.)
fn lock_system() -> MutexGuard<'static, System> {
    // With interrupts on, an interrupt taken while this CPU holds the lock would deadlock.
    debug_assert!(!cpu::interrupts_enabled(), "lock_system with interrupts on");
    loop {
        if let Some(mut system) = SYSTEM.try_lock() {
            system.select_cpu(syscall::this_cpu());
            return system;
        }
        smp::service_flush();
        core::hint::spin_loop();
    }
}

/// Starts scheduling on the boot CPU; never returns.
pub fn start() -> ! {
    // The boot path ran with interrupts on (the timer proof); from here the kernel runs
    // with them off. A tick taken while this CPU holds the lock below would spin on it
    // for ever (the timer's handler takes it too) — the rare hang right after `kernel
    // ready` that scheduling tests saw.
    cpu::disable_interrupts();
    let frame = {
        let mut system = lock_system();
        smp::join_scheduling();
        let next = system.start(&KernelPlatform::new());
        SCHEDULING.store(true, Ordering::Release);
        resume(system, next)
    };
    syscall::enter(frame)
}

/// Where an application processor goes once it is set up: it waits until the boot CPU
/// has created the worlds and started scheduling, then schedules too.
pub fn run_application_processor() -> ! {
    while !SCHEDULING.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    let cpu = syscall::this_cpu();
    let frame = {
        let mut system = lock_system();
        if cpu >= system.cpu_count() {
            drop(system);
            syscall::enter(syscall::idle_frame());
        }
        smp::join_scheduling();
        let next = system.start(&KernelPlatform::new());
        resume(system, next)
    };
    syscall::enter(frame)
}

/// Prepares to resume what the system chose and returns the frame to resume: for a world,
/// its address space is loaded and its register area becomes the save area of the next
/// entry from user mode; otherwise the idle context. A world running a vCPU enters its
/// guest here, with the lock released, and the exit is handled under the lock again.
/// CPUs the decision kicked are interrupted.
fn resume(mut system: MutexGuard<'static, System>, next: Next) -> *const Registers {
    let mut next = next;
    loop {
        let kicks = system.take_kicks();
        if kicks != 0 {
            smp::kick(kicks);
        }
        let (Next::World { deadline_ns, .. } | Next::Idle { deadline_ns }) = next;
        if let Some(nanos) = deadline_ns {
            lapic::arm_oneshot(nanos);
        }
        let mut platform = KernelPlatform::new();
        let Next::World { world, root, .. } = next else {
            // Idle on the kernel's own table: the last world's may be freed while we halt.
            platform::load_root(crate::memory::kernel_root());
            if system.has_zombies() {
                system.reap(&mut platform);
            }
            return syscall::idle_frame();
        };
        platform::load_root(root);
        if system.has_zombies() {
            // A stopped world's address space waited for this CPU to leave it.
            system.reap(&mut platform);
        }
        if let Some(fs_base) = system.world(world).map(|w| w.fs_base) {
            platform::load_fs_base(fs_base);
        }
        if let Some(guest) = system.guest_entry(&mut platform, world) {
            // The world runs its vCPU: enter the guest without the lock (other CPUs go
            // on), and handle the exit with it. A shootdown while the guest runs makes it
            // exit; this CPU flushes while it waits for the lock.
            smp::note_guest(true);
            drop(system);
            svm::run(guest.vmcb, guest.state);
            system = lock_system();
            smp::note_guest(false);
            match system.on_vmexit(&mut platform, world) {
                // A host interrupt made the guest exit and is still pending: the idle
                // context takes it at once, and the scheduler resumes the guest after.
                VmExitAction::HostInterrupt => return syscall::idle_frame(),
                VmExitAction::Resume => {
                    next = Next::World {
                        world,
                        root,
                        deadline_ns: None,
                    };
                    continue;
                }
            }
        }
        return match system.registers_mut(world) {
            Some(registers) => {
                let area: *const Registers = registers;
                syscall::set_save_area(area);
                area
            }
            None => syscall::idle_frame(),
        };
    }
}

/// A system call from the running world, whose registers the syscall stub saved in its
/// area (`_frame`); returns the frame to resume.
pub extern "C" fn on_syscall(_frame: *mut Registers) -> *const Registers {
    let mut system = lock_system();
    let next = system.on_syscall(&mut KernelPlatform::new());
    resume(system, next)
}

/// The timer fired, or another CPU asked this one to re-decide (in a world, or in the
/// idle loop whose frame is `frame`).
pub fn on_timer(frame: &mut Registers) -> *const Registers {
    if !SCHEDULING.load(Ordering::Acquire) {
        return frame;
    }
    let mut system = lock_system();
    let next = system.on_timer(&KernelPlatform::new());
    resume(system, next)
}

/// A device interrupt line fired.
pub fn on_irq(line: u8, frame: &mut Registers) -> *const Registers {
    if !SCHEDULING.load(Ordering::Acquire) {
        return frame;
    }
    let mut system = lock_system();
    if line == serial::IRQ {
        // Console input: the kernel owns COM1; what was typed goes to the console's holder.
        let mut bytes = [0u8; 64];
        let mut count = 0;
        while count < bytes.len()
            && let Some(byte) = serial::read_byte()
        {
            bytes[count] = byte;
            count += 1;
        }
        let next = system.on_console_input(&KernelPlatform::new(), &bytes[..count]);
        return resume(system, next);
    }
    let next = system.on_irq(&mut KernelPlatform::new(), line);
    resume(system, next)
}

/// The running world raised an exception (its registers are in its area, `_frame`).
pub fn on_user_exception(
    _frame: &mut Registers,
    fault_address: u64,
    describe: &str,
) -> *const Registers {
    let mut system = lock_system();
    let next = system.on_user_exception(&mut KernelPlatform::new(), fault_address, describe);
    resume(system, next)
}
