//! Powering a VM on and running it: the hardware side of the monitor (mappings, the
//! `vcpu_run` loop, the console on the log). The decisions are `esker_vmx::monitor`'s.

use alloc::string::String;
use alloc::vec::Vec;

use esker_kernel_core::virt::vcpu::{ExitMessage, ExitReply};
use esker_rt::abi::{Rights, layout};
use esker_rt::sys::{self, VcpuReturn};
use esker_rt::{Declared, uses};
use esker_vmx::config::{self, VmConfig};
use esker_vmx::monitor::{Monitor, PowerOff, Step};
use esker_vmx::package::{self, Package};

extern crate alloc;

const VM: Declared = uses!("vm", "map+read");
const RAM: Declared = uses!("memory:guest-ram", "read+write+execute+map");
const VCPU: Declared = uses!("vcpu:0", "read+write");
const PACKAGE: Declared = uses!("memory:vm-package", "read+map");
const LOG: Declared = uses!("log", "log");
const CONSOLE: Declared = uses!("console", "read");

/// Where the package is mapped in this world.
const PACKAGE_AT: u64 = layout::MAP_BASE;
/// Where guest RAM is mapped in this world (guest-physical 0).
const RAM_AT: u64 = layout::MAP_BASE + (1 << 36);
/// How often the monitor looks for console input (ns).
const CONSOLE_POLL_NS: u64 = 20_000_000;
/// Longest the monitor lets a guest run without checking its devices (ns).
const MAX_SLICE_NS: u64 = 50_000_000;

/// Text on the log, tagged with this world's name.
fn say(text: &str) {
    esker_rt::logger::write_text(&alloc::format!("{text}\n"));
}

/// Powers the VM on and runs it until it powers off; then the world exits.
pub fn power_on(rt: &esker_rt::Runtime) -> ! {
    let code = match boot(rt) {
        Ok(off) => match off {
            PowerOff::DebugExit(code) => u64::from(code),
            PowerOff::Reset => 0,
            _ => 1,
        },
        Err(why) => {
            say(&alloc::format!("vmx: {why}; VM not powered on"));
            2
        }
    };
    sys::exit(code)
}

fn boot(rt: &esker_rt::Runtime) -> Result<PowerOff, String> {
    let slots = (
        rt.slot(&VM),
        rt.slot(&RAM),
        rt.slot(&VCPU),
        rt.slot(&PACKAGE),
        rt.slot(&LOG),
    );
    let (Ok(vm), Ok(ram), Ok(vcpu), Ok(package_slot), Ok(log)) = slots else {
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
    if config.vcpus != 1 {
        return Err(alloc::format!(
            "vm {name}: {} vCPUs asked for; this monitor runs VMs with 1 vCPU (virtual SMP is not built yet)",
            config.vcpus
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
    // world alone; the guest shares the memory (it is its RAM) but this world never holds
    // a Rust reference across a `vcpu_run` that assumes the guest left it unchanged: the
    // monitor reads guest memory only between exits, while the guest is stopped.
    let memory: &'static mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(RAM_AT as *mut u8, ram_size as usize) };
    let loaded = esker_vmx::loader::load(memory, kernel, initrd, &config.cmdline)
        .map_err(|e| alloc::format!("vm {name}: cannot load {}: {e}", config.kernel))?;
    say(&alloc::format!(
        "vmx: vm {name} powered on: {} MiB, {} vCPU; {}",
        config.memory_mb,
        config.vcpus,
        loaded.summary
    ));
    let clock = esker_rt::time::Monotonic::from_kernel()
        .map_err(|e| alloc::format!("no clock: {}", e.describe()))?;
    let now = move || clock.now_micros() * 1000;
    let mut monitor: Monitor<[u8]> = Monitor::new(&name, ram_size, 1_700_000_000, host_cpuid);
    let mut console = Console::new(log);
    let mut reply = ExitReply {
        registers: Some(loaded.registers),
        gprs: None,
        advance_rip: 0,
        inject: None,
        interrupt_window: false,
    };
    // The host console, if this VM has it: typed bytes go to the guest's UART.
    let console_input = rt
        .directory()
        .any(|(_, name)| name == "console")
        .then(|| rt.slot(&CONSOLE).ok())
        .flatten();
    let mut halted = false;
    let mut wake_at: Option<u64> = None;
    // The clock at the last exit: close enough to compute the next timeout from (the
    // monitor's own work in between is short), and one clock read per exit is cheaper.
    let mut t = now();
    let mut console_polled = 0;
    let off = loop {
        let reply_len = encode_reply(&reply)?;
        let timeout = wake_at.map_or(MAX_SLICE_NS, |at| {
            at.saturating_sub(t).clamp(1, MAX_SLICE_NS)
        });
        let result = sys::vcpu_run(vcpu, reply_len, halted, timeout)
            .map_err(|e| alloc::format!("vm {name}: vcpu_run refused: {}", e.describe()))?;
        t = now();
        match result {
            VcpuReturn::Timeout => {
                reply = monitor.wake(t, halted);
                halted = false;
            }
            VcpuReturn::Exit(length) => {
                let message = decode_exit(length)?;
                match monitor.handle(memory, &message, t) {
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
                        console.lines(monitor.console_lines(true));
                        continue;
                    }
                    Step::PowerOff(off) => break off,
                }
            }
        }
        // What was typed at the host console, looked at every 20 ms of exits or timeouts
        // (a guest that exits often, or polls its UART, still gets it promptly). Only after
        // the exit message is read: `console_read` uses the same IPC buffer.
        if let Some(slot) = console_input
            && t.saturating_sub(console_polled) >= CONSOLE_POLL_NS
        {
            console_polled = t;
            let mut typed = [0u8; 256];
            if let Ok(count) = sys::console_read(slot, &mut typed)
                && count > 0
            {
                monitor.console_input(&typed[..count]);
            }
        }
        wake_at = monitor.next_event_ns(t);
        console.lines(monitor.console_lines(false));
    };
    console.lines(monitor.console_lines(true));
    console.flush_all(vcpu);
    let mut counts = String::new();
    for (reason, count) in monitor.exits.seen() {
        counts.push_str(&alloc::format!(" {reason}={count}"));
    }
    say(&alloc::format!(
        "vmx: vm {name} powered off: {off}; {} exits:{counts}",
        monitor.exits.total()
    ));
    Ok(off)
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
