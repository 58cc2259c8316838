//! Powering a VM on and running it: the hardware side of the monitor (mappings, the
//! `vcpu_run` loop of each vCPU, the console on the log). The decisions are
//! `esker_vmx::monitor`'s.
//!
//! The monitor world has one thread per vCPU (the kernel starts them all at the entry).
//! Thread 0 reads the package, maps and loads the guest and runs vCPU 0; the others wait
//! for that, then each waits for its vCPU's start-up IPI and runs it. The device model is
//! shared behind one lock; a thread that makes an interrupt pending for another vCPU
//! (an IPI, a device interrupt for vCPU 0) kicks that vCPU's thread (`vcpu_kick`) after
//! letting go of the lock. Any vCPU's power-off ends the world, and so every thread.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use esker_kernel_core::virt::vcpu::{ExitMessage, ExitReply};
use esker_rt::abi::{Rights, layout};
use esker_rt::sys::{self, VcpuReturn};
use esker_rt::{CapSlot, Declared, uses};
use esker_vmx::config::{self, VmConfig};
use esker_vmx::monitor::{Monitor, PowerOff, Step};
use esker_vmx::package::{self, Package};

extern crate alloc;

const VM: Declared = uses!("vm", "map+read");
const RAM: Declared = uses!("memory:guest-ram", "read+write+execute+map");
/// One per vCPU (the configuration allows up to 16).
const VCPUS: [Declared; 16] = [
    uses!("vcpu:0", "read+write"),
    uses!("vcpu:1", "read+write"),
    uses!("vcpu:2", "read+write"),
    uses!("vcpu:3", "read+write"),
    uses!("vcpu:4", "read+write"),
    uses!("vcpu:5", "read+write"),
    uses!("vcpu:6", "read+write"),
    uses!("vcpu:7", "read+write"),
    uses!("vcpu:8", "read+write"),
    uses!("vcpu:9", "read+write"),
    uses!("vcpu:10", "read+write"),
    uses!("vcpu:11", "read+write"),
    uses!("vcpu:12", "read+write"),
    uses!("vcpu:13", "read+write"),
    uses!("vcpu:14", "read+write"),
    uses!("vcpu:15", "read+write"),
];
const PACKAGE: Declared = uses!("memory:vm-package", "read+map");
const LOG: Declared = uses!("log", "log");
const CONSOLE: Declared = uses!("console", "read");

/// Where the package is mapped in this world.
const PACKAGE_AT: u64 = layout::MAP_BASE;
/// Where guest RAM is mapped in this world (guest-physical 0).
const RAM_AT: u64 = layout::MAP_BASE + (1 << 36);
/// How often the monitor looks for console input (ns).
const CONSOLE_POLL_NS: u64 = 20_000_000;
/// How long the console must be quiet before a partial line is sent (ns).
const CONSOLE_QUIET_NS: u64 = 20_000_000;
/// Longest the monitor lets a guest run without checking its devices (ns).
const MAX_SLICE_NS: u64 = 50_000_000;

/// Text on the log, tagged with this world's name.
fn say(text: &str) {
    esker_rt::logger::write_text(&alloc::format!("{text}\n"));
}

/// What the vCPU threads of the running VM share.
struct Running {
    name: String,
    /// The Vcpu capabilities, by vCPU index.
    vcpus: Vec<CapSlot>,
    clock: esker_rt::time::Monotonic,
    /// The host console's capability, if this VM has it (read by vCPU 0's thread).
    console_input: Option<CapSlot>,
    shared: spin::Mutex<Shared>,
}

/// The device model and guest memory, one thread at a time.
struct Shared {
    monitor: Monitor<[u8]>,
    memory: &'static mut [u8],
    console: Console,
}

impl Running {
    fn now(&self) -> u64 {
        self.clock.now_micros() * 1000
    }

    /// Takes the lock; a thread that finds it held for long yields its CPU (the holder
    /// may be a sibling waiting for that CPU).
    fn lock(&self) -> spin::MutexGuard<'_, Shared> {
        let mut spins = 0u32;
        loop {
            if let Some(guard) = self.shared.try_lock() {
                return guard;
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                let _ = sys::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
    }

    /// The power-off when the kernel refuses a `vcpu_run`.
    fn refused(&self, error: esker_rt::Error) -> PowerOff {
        PowerOff::Fatal(alloc::format!(
            "vm {}: vcpu_run refused: {}",
            self.name,
            error.describe()
        ))
    }

    /// Makes the `vcpu_run` of each vCPU in `mask` return, so its thread looks.
    fn kick(&self, mask: u64) {
        for (index, slot) in self.vcpus.iter().enumerate() {
            if mask & (1 << index) != 0 {
                let _ = sys::vcpu_kick(*slot);
            }
        }
    }
}

static RUNNING: spin::Once<Running> = spin::Once::new();
/// Thread 0 could not power the VM on: the other threads stop waiting.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Powers the VM on and runs it until it powers off; then the world exits.
pub fn power_on(rt: &esker_rt::Runtime) -> ! {
    let thread = esker_rt::thread::index();
    if thread != 0 {
        // Wait for thread 0 to set the VM up, then run this vCPU from its start-up IPI.
        let vm = loop {
            if let Some(vm) = RUNNING.get() {
                break vm;
            }
            if FAILED.load(Ordering::Acquire) {
                sys::exit(2);
            }
            let _ = sys::yield_now();
        };
        if thread >= vm.vcpus.len() {
            // The manifest gives a monitor one thread per vCPU; anything else is a bug.
            power_off(
                vm,
                0,
                PowerOff::Fatal(alloc::format!(
                    "monitor thread {thread} has no vCPU ({} configured)",
                    vm.vcpus.len()
                )),
            );
        }
        let off = run_vcpu(vm, thread, None);
        power_off(vm, thread, off)
    }
    match boot(rt) {
        Ok((vm, start)) => {
            let off = run_vcpu(vm, 0, Some(start));
            power_off(vm, 0, off)
        }
        Err(why) => {
            FAILED.store(true, Ordering::Release);
            say(&alloc::format!("vmx: {why}; VM not powered on"));
            sys::exit(2)
        }
    }
}

/// Reads the package, maps and loads the guest; returns the running VM and vCPU 0's
/// first reply.
fn boot(rt: &esker_rt::Runtime) -> Result<(&'static Running, ExitReply), String> {
    let slots = (
        rt.slot(&VM),
        rt.slot(&RAM),
        rt.slot(&PACKAGE),
        rt.slot(&LOG),
    );
    let (Ok(vm), Ok(ram), Ok(package_slot), Ok(log)) = slots else {
        return Err("the manifest did not give this monitor its VM's capabilities".into());
    };
    let package_size = sys::memory_map(package_slot, PACKAGE_AT, Rights::READ)
        .map_err(|e| alloc::format!("cannot map the VM package: {}", e.describe()))?;
    // SAFETY: the kernel just mapped `package_size` bytes readable at PACKAGE_AT; the
    // mapping stays for the life of the world and nothing writes it.
    let package_bytes: &'static [u8] =
        unsafe { core::slice::from_raw_parts(PACKAGE_AT as *const u8, package_size as usize) };
    let package = Package::parse(package_bytes).map_err(|e| alloc::format!("{e}"))?;
    let config_text = package
        .file(package::CONFIG)
        .map_err(|e| alloc::format!("{e}"))?;
    let config_text = core::str::from_utf8(config_text)
        .map_err(|_| String::from("the VM configuration file is not UTF-8"))?;
    let config: VmConfig =
        config::parse(config_text).map_err(|e| alloc::format!("VM configuration: {e}"))?;
    let name = config.name.clone();
    let vcpus: Vec<CapSlot> = VCPUS
        .iter()
        .take(config.vcpus as usize)
        .map_while(|declared| rt.slot(declared).ok())
        .collect();
    if vcpus.len() != config.vcpus as usize {
        return Err(alloc::format!(
            "vm {name}: the configuration asks for {} vCPUs but the manifest gave this monitor {}",
            config.vcpus,
            vcpus.len()
        ));
    }
    let kernel = package
        .file(&config.kernel)
        .map_err(|e| alloc::format!("vm {name}: {e}"))?;
    let initrd = match &config.initrd {
        Some(path) => Some(
            package
                .file(path)
                .map_err(|e| alloc::format!("vm {name}: {e}"))?,
        ),
        None => None,
    };
    let ram_size = sys::memory_map(ram, RAM_AT, Rights::READ | Rights::WRITE)
        .map_err(|e| alloc::format!("vm {name}: cannot map guest RAM: {}", e.describe()))?;
    let wanted = u64::from(config.memory_mb) << 20;
    if ram_size != wanted {
        return Err(alloc::format!(
            "vm {name}: the configuration asks for {} MiB but the VM has {} MiB of RAM",
            config.memory_mb,
            ram_size >> 20
        ));
    }
    sys::vm_map(vm, ram, 0, Rights::READ | Rights::WRITE | Rights::EXECUTE).map_err(|e| {
        alloc::format!(
            "vm {name}: cannot map guest RAM into the VM: {}",
            e.describe()
        )
    })?;
    // SAFETY: the kernel just mapped `ram_size` bytes read-write at RAM_AT for this
    // world; the guest shares the memory (it is its RAM). The threads of this world
    // reach it only through the one `Shared` that holds this reference, under its lock,
    // to load the guest and to read the instruction (and the page tables to it) of the
    // vCPU whose exit is handled. The guest's other vCPUs keep running and may write this
    // memory meanwhile, as a device's DMA would: the monitor acts on what it read, and a
    // guest that changes its own code under an exit only confuses itself.
    let memory: &'static mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(RAM_AT as *mut u8, ram_size as usize) };
    let tsc_khz = sys::tsc_khz().map_err(|e| alloc::format!("no clock: {}", e.describe()))?;
    // The guest reads the host's TSC: a Linux guest is told its rate.
    let cmdline = match esker_vmx::loader::detect(kernel) {
        Ok(esker_vmx::loader::ImageKind::LinuxBzImage) => {
            esker_vmx::loader::linux::command_line_with_tsc(&config.cmdline, tsc_khz)
        }
        _ => config.cmdline.clone(),
    };
    let loaded = esker_vmx::loader::load(memory, kernel, initrd, &cmdline)
        .map_err(|e| alloc::format!("vm {name}: cannot load {}: {e}", config.kernel))?;
    if vcpus.len() > 1 {
        // The processors as the guest's CPUID describes them.
        let [signature, _, _, features] = esker_vmx::monitor::cpuid_policy(host_cpuid, 1, 0);
        esker_vmx::loader::mptable::write(
            memory,
            esker_vmx::loader::mptable::ADDRESS,
            vcpus.len() as u8,
            signature,
            features,
        )
        .map_err(|e| alloc::format!("vm {name}: cannot write the MP table: {e}"))?;
        // Kernels without MP-table support find their CPUs in the MADT.
        esker_vmx::loader::acpi::write(memory, esker_vmx::loader::acpi::ADDRESS, vcpus.len() as u8)
            .map_err(|e| alloc::format!("vm {name}: cannot write the ACPI tables: {e}"))?;
    }
    say(&alloc::format!(
        "vmx: vm {name} powered on: {} MiB, {} vCPU{}; {}",
        config.memory_mb,
        config.vcpus,
        if config.vcpus == 1 { "" } else { "s" },
        loaded.summary
    ));
    let clock = esker_rt::time::Monotonic::with_tsc_khz(tsc_khz);
    let mut monitor: Monitor<[u8]> =
        Monitor::with_vcpus(&name, ram_size, 1_700_000_000, host_cpuid, vcpus.len());
    // The monitor's clock counts from TSC 0 (esker_rt::time), as the guest's TSC does.
    monitor.set_tsc_khz(tsc_khz);
    // The host console, if this VM has it: typed bytes go to the guest's UART.
    let console_input = rt
        .directory()
        .any(|(_, name)| name == "console")
        .then(|| rt.slot(&CONSOLE).ok())
        .flatten();
    let running = RUNNING.call_once(|| Running {
        name,
        vcpus,
        clock,
        console_input,
        shared: spin::Mutex::new(Shared {
            monitor,
            memory,
            console: Console::new(log),
        }),
    });
    let start = ExitReply {
        registers: Some(loaded.registers),
        gprs: None,
        advance_rip: 0,
        inject: None,
        interrupt_window: false,
    };
    Ok((running, start))
}

/// Runs vCPU `index` until the VM powers off: from `start` (vCPU 0), or from the
/// start-up IPI its local APIC receives.
fn run_vcpu(vm: &Running, index: usize, start: Option<ExitReply>) -> PowerOff {
    let vcpu = vm.vcpus[index];
    let mut reply = match start {
        Some(reply) => reply,
        // Waiting for INIT and start-up IPIs.
        None => match park(vm, index, None) {
            Ok(reply) => reply,
            Err(off) => return off,
        },
    };
    let mut halted = false;
    let mut wake_at: Option<u64> = None;
    // The clock at the last exit: close enough to compute the next timeout from (the
    // monitor's own work in between is short), and one clock read per exit is cheaper.
    let mut t = vm.now();
    let mut console_polled = 0;
    loop {
        let reply_len = match encode_reply(&reply) {
            Ok(length) => length,
            Err(why) => return PowerOff::Fatal(why),
        };
        let timeout = wake_at.map_or(MAX_SLICE_NS, |at| {
            at.saturating_sub(t).clamp(1, MAX_SLICE_NS)
        });
        let result = match sys::vcpu_run(vcpu, reply_len, halted, timeout) {
            Ok(result) => result,
            Err(e) => return vm.refused(e),
        };
        t = vm.now();
        // The exit message is read before anything else uses the IPC buffer.
        let message = match result {
            VcpuReturn::Exit(length) => match decode_exit(length) {
                Ok(message) => Some(message),
                Err(why) => return PowerOff::Fatal(why),
            },
            VcpuReturn::Timeout => None,
        };
        let mut typed = [0u8; 256];
        let mut typed_count = 0;
        if index == 0
            && let Some(slot) = vm.console_input
            && t.saturating_sub(console_polled) >= CONSOLE_POLL_NS
        {
            // What was typed at the host console, looked at every 20 ms of exits or
            // timeouts (a guest that exits often, or polls its UART, still gets it
            // promptly).
            console_polled = t;
            typed_count = sys::console_read(slot, &mut typed).unwrap_or(0);
        }
        let mut guard = vm.lock();
        let shared = &mut *guard;
        // Set when this vCPU must stop until something wakes it (with the last reply).
        let mut parking: Option<Option<ExitReply>> = None;
        match message {
            None => {
                reply = shared.monitor.wake_vcpu(index, t, halted);
                halted = false;
            }
            Some(message) => match shared
                .monitor
                .handle_vcpu(index, shared.memory, &message, t)
            {
                Step::Resume(next) => {
                    reply = next;
                    halted = false;
                }
                Step::Halt {
                    reply: next,
                    wake_ns,
                } => {
                    reply = next;
                    halted = true;
                    wake_at = wake_ns;
                }
                Step::Park(next) => {
                    parking = Some(Some(next));
                    halted = false;
                }
                Step::PowerOff(off) => return off,
            },
        }
        if shared.monitor.take_init(index) {
            // A sibling sent this vCPU INIT (Linux taking a CPU back online): it stops
            // until its start-up IPI.
            parking = Some(None);
        }
        if typed_count > 0 {
            shared.monitor.console_input(&typed[..typed_count]);
        }
        if !halted {
            wake_at = shared.monitor.next_event_for(index, t);
        }
        // A partial line (a prompt) goes out once the console has been quiet for a while
        // (another vCPU may be in the middle of writing it).
        let flush = if shared.monitor.vcpus() == 1 {
            halted
        } else {
            shared.monitor.console_quiet_ns(t) >= CONSOLE_QUIET_NS
        };
        let lines = shared.monitor.console_lines(flush);
        shared.console.lines(lines);
        let kicks = shared.monitor.take_kicks();
        drop(guard);
        vm.kick(kicks);
        if let Some(last) = parking {
            reply = match park(vm, index, last) {
                Ok(reply) => reply,
                Err(off) => return off,
            };
            t = vm.now();
        }
    }
}

/// Sleeps while vCPU `index` cannot run (not started, after INIT, or halted with
/// interrupts off), after handing the kernel `reply` (the HLT skipped); returns the reply
/// that wakes it (`Monitor::unpark`). A sibling that sends it an NMI, INIT or start-up IPI
/// kicks it; it also looks every `MAX_SLICE_NS`.
fn park(vm: &Running, index: usize, reply: Option<ExitReply>) -> Result<ExitReply, PowerOff> {
    let vcpu = vm.vcpus[index];
    let mut reply_len = match &reply {
        Some(reply) => encode_reply(reply).map_err(PowerOff::Fatal)?,
        None => 0,
    };
    loop {
        if let Err(e) = sys::vcpu_run(vcpu, reply_len, true, MAX_SLICE_NS) {
            return Err(vm.refused(e));
        }
        reply_len = 0;
        if let Some(reply) = vm.lock().monitor.unpark(index) {
            return Ok(reply);
        }
    }
}

/// Reports the power-off and ends the world (every vCPU thread with it).
fn power_off(vm: &Running, index: usize, off: PowerOff) -> ! {
    let mut guard = vm.lock();
    let shared = &mut *guard;
    let lines = shared.monitor.console_lines(true);
    shared.console.lines(lines);
    shared.console.flush_all(vm.vcpus[index]);
    let mut counts = String::new();
    for (reason, count) in shared.monitor.exits.seen() {
        counts.push_str(&alloc::format!(" {reason}={count}"));
    }
    say(&alloc::format!(
        "vmx: vm {} powered off: {off}; {} exits:{counts}",
        vm.name,
        shared.monitor.exits.total()
    ));
    let code = match off {
        PowerOff::DebugExit(code) => u64::from(code),
        PowerOff::Reset => 0,
        _ => 1,
    };
    sys::exit(code)
}

/// Writes the reply into the IPC buffer; returns its length.
fn encode_reply(reply: &ExitReply) -> Result<usize, String> {
    esker_rt::ipc::with_data(|data| postcard::to_slice(reply, &mut data[..]).map(|used| used.len()))
        .map_err(|_| String::from("cannot encode the exit reply"))
}

/// Reads the exit message the kernel left in the IPC buffer.
fn decode_exit(length: usize) -> Result<ExitMessage, String> {
    esker_rt::ipc::with_data(|data| {
        data.get(..length)
            .and_then(|bytes| postcard::from_bytes(bytes).ok())
    })
    .ok_or_else(|| String::from("the kernel's exit message does not decode"))
}

/// The host's CPUID (the monitor filters it).
fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The guest's console on the host log (the monitor's world is named after the VM, so
/// the lines appear under the VM's name), held back (not lost) while the world is over its
/// log budget.
struct Console {
    log: esker_rt::CapSlot,
    pending: alloc::collections::VecDeque<String>,
    dropped: u64,
}

impl Console {
    const MAX_PENDING: usize = 2048;

    fn new(log: esker_rt::CapSlot) -> Self {
        Self {
            log,
            pending: alloc::collections::VecDeque::new(),
            dropped: 0,
        }
    }

    fn lines(&mut self, lines: Vec<String>) {
        for line in lines {
            if self.pending.len() >= Self::MAX_PENDING {
                self.pending.pop_front();
                self.dropped += 1;
            }
            self.pending.push_back(alloc::format!("{line}\n"));
        }
        self.flush();
    }

    /// Sends what the log budget allows now.
    fn flush(&mut self) {
        while let Some(line) = self.pending.front() {
            match sys::log_text(self.log, line) {
                Err(esker_rt::Error::WouldBlock) => return,
                _ => {
                    self.pending.pop_front();
                }
            }
        }
    }

    /// Sends everything, waiting for the budget to refill (at power-off).
    fn flush_all(&mut self, vcpu: esker_rt::CapSlot) {
        for _ in 0..100 {
            self.flush();
            if self.pending.is_empty() {
                break;
            }
            // Sleep 100 ms (the vCPU, halted, is only a timer here) for the budget.
            let _ = sys::vcpu_run(vcpu, 0, true, 100_000_000);
        }
        if self.dropped > 0 {
            say(&alloc::format!(
                "vmx: {} console lines dropped",
                self.dropped
            ));
        }
    }
}
