//! The monitor proper: what to do about each VM exit.
//!
//! [`Monitor::handle`] takes the kernel's [`ExitMessage`] and answers with a [`Step`]:
//! resume the guest with a reply, let it sleep until its next timer event (it executed
//! HLT), or power the VM off with the reason. Port I/O goes to the PC devices, MMIO is
//! decoded from the guest's own instruction bytes, CPUID and MSRs follow the policy
//! below, and pending device interrupts are injected when the guest can take them (or an
//! interrupt window is asked for). Plain logic over [`GuestMemory`], tested on the host.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use esker_kernel_core::virt::vcpu::{
    Event, Exit, ExitMessage, ExitReply, GuestRegisters, Instruction,
};

use crate::decode;
use crate::devices::lapic::{self, LocalApic};
use crate::devices::{IoEffect, PcDevices};
use crate::memory::GuestMemory;

/// Where the PCI ECAM window sits in guest-physical space.
pub const ECAM_BASE: u64 = 0xb000_0000;
/// The hypervisor signature in CPUID leaf 0x4000_0000 (EBX, ECX, EDX).
pub const SIGNATURE: &[u8; 12] = b"EskerEskerVM";

/// How the guest's CPUID is answered: the host's values (the caller executes CPUID)
/// then filtered by [`cpuid_policy`].
pub type HostCpuid = fn(leaf: u32, subleaf: u32) -> [u32; 4];

/// Why a VM was powered off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// The guest wrote `code` to the debug-exit port 0xf4.
    DebugExit(u32),
    /// The guest asked for a reset (port 0xcf9, 0x92, the keyboard controller); Esker
    /// powers it off instead (no reboot yet).
    Reset,
    /// A triple fault: the CPU shut the guest down.
    TripleFault {
        /// RIP at the shutdown.
        rip: u64,
    },
    /// HLT with interrupts disabled: nothing can wake the guest (Linux's halt).
    HaltedForever {
        /// RIP of the HLT.
        rip: u64,
    },
    /// The monitor cannot go on (an exit it cannot handle, a refused VMRUN …).
    Fatal(String),
}

impl core::fmt::Display for PowerOff {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::DebugExit(code) => write!(f, "the guest exited with code {code} (port 0xf4)"),
            Self::Reset => f.write_str("the guest asked for a reset"),
            Self::TripleFault { rip } => {
                write!(f, "the guest triple-faulted (shutdown) at rip {rip:#x}")
            }
            Self::HaltedForever { rip } => write!(
                f,
                "the guest halted with interrupts disabled at rip {rip:#x}"
            ),
            Self::Fatal(why) => f.write_str(why),
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run the guest again with this reply.
    Resume(ExitReply),
    /// Apply the reply and sleep until `wake_ns` (monitor clock), then call
    /// [`Monitor::wake`]: the guest waits for an interrupt.
    Halt {
        /// The reply (the HLT skipped).
        reply: ExitReply,
        /// When the next device event is due.
        wake_ns: Option<u64>,
    },
    /// Apply the reply and sleep until [`Monitor::unpark`] gives the next one: the vCPU
    /// halted with interrupts off (or received INIT) while a sibling runs on. Only an
    /// NMI, or INIT and a start-up IPI, wake it.
    Park(ExitReply),
    /// Power the VM off.
    PowerOff(PowerOff),
}

/// Why an exit was counted (the index into [`ExitCounts::REASONS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Cpuid,
    Exception,
    HostInterrupt,
    Hlt,
    Instruction,
    InterruptWindow,
    Io,
    Mmio,
    Msr,
    UndefinedOpcode,
}

/// Exits handled, by reason (for the log and the benchmark): one counter per reason in
/// [`ExitCounts::REASONS`] order (a fixed array: counting happens on every exit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts([u64; ExitCounts::REASONS.len()]);

impl ExitCounts {
    /// The reasons, in the order they are listed.
    pub const REASONS: [&'static str; 10] = [
        "cpuid",
        "exception",
        "host-interrupt",
        "hlt",
        "instruction",
        "interrupt-window",
        "io",
        "mmio",
        "msr",
        "undefined-opcode",
    ];

    fn count(&mut self, reason: Reason) {
        self.0[reason as usize] += 1;
    }

    /// Total exits.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason seen, in [`Self::REASONS`] order.
    pub fn seen(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::REASONS
            .iter()
            .zip(self.0)
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| (*reason, count))
    }
}

/// One VM's monitor state: the devices all its vCPUs share, one local APIC per vCPU.
/// Every method that concerns one vCPU takes its index (`vcpu`); the PC devices'
/// interrupts (the 8259 pair) go to vCPU 0, as through its LINT0 in virtual-wire mode.
pub struct Monitor<M: GuestMemory + ?Sized> {
    /// The VM's name.
    pub name: String,
    devices: PcDevices,
    apics: Vec<LocalApic>,
    /// vCPUs (bit per index) whose monitor thread must look at their interrupts now (an
    /// IPI or a device interrupt for a vCPU other than the one whose exit was handled).
    kicks: u64,
    /// vCPUs halted with interrupts off (one bit each).
    parked: u64,
    /// The guest's TSC rate (kHz). The monitor's clock counts from TSC 0, as the guest's
    /// TSC does (no offset), so the TSC-deadline timer converts with the rate alone.
    tsc_khz: u64,
    cpuid: HostCpuid,
    msrs: BTreeMap<u32, u64>,
    console: Vec<u8>,
    /// The guest wrote to a console port since the console was last read.
    console_written: bool,
    /// When the guest last wrote a console port (monitor clock, ns).
    console_written_at: u64,
    /// Exits by reason.
    pub exits: ExitCounts,
    /// MSR accesses refused with #GP.
    pub unknown_msrs: u64,
    _memory: core::marker::PhantomData<M>,
}

/// The vCPU the 8259 pair's interrupts reach (its LINT0, in virtual-wire mode).
const PIC_VCPU: usize = 0;

/// Whether `vcpu` receives the 8259 pair's interrupts (and the PC devices' timers).
const fn receives_pic(vcpu: usize) -> bool {
    vcpu == PIC_VCPU
}

/// The guest can take an external interrupt now.
fn can_take_interrupt(registers: &GuestRegisters, shadow: bool) -> bool {
    registers.rflags & (1 << 9) != 0 && !shadow
}

impl<M: GuestMemory + ?Sized> Monitor<M> {
    /// A monitor for VM `name` with `ram_bytes` of RAM; `unix_time_s` sets the RTC.
    pub fn new(name: &str, ram_bytes: u64, unix_time_s: u64, cpuid: HostCpuid) -> Self {
        Self::with_vcpus(name, ram_bytes, unix_time_s, cpuid, 1)
    }

    /// A monitor for a VM with `vcpus` vCPUs (1 and up; APIC ids are the indices).
    pub fn with_vcpus(
        name: &str,
        ram_bytes: u64,
        unix_time_s: u64,
        cpuid: HostCpuid,
        vcpus: usize,
    ) -> Self {
        Self {
            name: name.into(),
            devices: PcDevices::new(ram_bytes, unix_time_s, ECAM_BASE),
            apics: LocalApic::for_vm(vcpus.clamp(1, lapic::MAX_APICS)),
            kicks: 0,
            parked: 0,
            tsc_khz: 1_000_000,
            cpuid,
            msrs: BTreeMap::new(),
            console: Vec::new(),
            console_written: false,
            console_written_at: 0,
            exits: ExitCounts::default(),
            unknown_msrs: 0,
            _memory: core::marker::PhantomData,
        }
    }

    /// Tells the monitor the guest's TSC rate (for the TSC-deadline timer).
    pub fn set_tsc_khz(&mut self, tsc_khz: u64) {
        self.tsc_khz = tsc_khz.max(1);
    }

    /// The guest's vCPUs.
    pub fn vcpus(&self) -> usize {
        self.apics.len()
    }

    /// vCPUs whose threads must look at their interrupts now (cleared).
    pub fn take_kicks(&mut self) -> u64 {
        core::mem::take(&mut self.kicks)
    }

    /// The guest's TSC at monitor time `now_ns`.
    fn tsc_at(&self, now_ns: u64) -> u64 {
        (u128::from(now_ns) * u128::from(self.tsc_khz) / 1_000_000) as u64
    }

    /// Whether an interrupt waits for `vcpu` (its local APIC's, or for vCPU 0 the PIC's).
    /// Both are brought up to `now_ns` either way: an event that came due and was not
    /// collected would make [`Self::next_event_for`] answer "now" until it is.
    fn interrupt_pending(&mut self, vcpu: usize, now_ns: u64) -> bool {
        let apic = self
            .apics
            .get_mut(vcpu)
            .is_some_and(|apic| apic.pending_vector(now_ns).is_some());
        let pic = receives_pic(vcpu) && self.devices.pending_vector(now_ns).is_some();
        apic || pic
    }

    /// Takes the interrupt `vcpu` accepts next: its local APIC's first (their vectors
    /// are above the PIC's in Linux's layout), then for vCPU 0 the PIC's.
    fn acknowledge(&mut self, vcpu: usize, now_ns: u64) -> Option<u8> {
        if let Some(vector) = self
            .apics
            .get_mut(vcpu)
            .and_then(|apic| apic.acknowledge(now_ns))
        {
            return Some(vector);
        }
        if receives_pic(vcpu) {
            self.devices.acknowledge()
        } else {
            None
        }
    }

    /// Every vCPU, one bit each.
    fn all_vcpus(&self) -> u64 {
        u64::MAX >> (64 - self.apics.len())
    }

    /// vCPUs that cannot run until something wakes them: halted with interrupts off, or
    /// waiting for a start-up IPI (never started, or since INIT).
    fn stopped(&self) -> u64 {
        self.apics
            .iter()
            .enumerate()
            .filter(|(_, apic)| apic.is_waiting_for_sipi())
            .fold(self.parked, |mask, (index, _)| mask | 1 << index)
    }

    /// Whether `vcpu` received INIT since it last started: it stops (its thread parks)
    /// until a start-up IPI.
    pub fn take_init(&mut self, vcpu: usize) -> bool {
        self.apics.get_mut(vcpu).is_some_and(LocalApic::take_init)
    }

    /// The reply that wakes a parked or not yet started `vcpu`, if anything does: a
    /// start-up IPI (after INIT) starts it in real mode at the vector's page; an NMI is
    /// injected into a vCPU halted with interrupts off, which goes on after its HLT.
    pub fn unpark(&mut self, vcpu: usize) -> Option<ExitReply> {
        if let Some(reply) = self.take_startup(vcpu) {
            self.parked &= !(1 << vcpu);
            return Some(reply);
        }
        let apic = self.apics.get_mut(vcpu)?;
        if apic.is_waiting_for_sipi() || self.parked & (1 << vcpu) == 0 || !apic.take_nmi() {
            return None;
        }
        self.parked &= !(1 << vcpu);
        Some(ExitReply {
            registers: None,
            gprs: None,
            advance_rip: 0,
            inject: Some(Event::Nmi),
            interrupt_window: false,
        })
    }

    /// A start-up IPI reached `vcpu` (waiting since INIT): the registers it starts with.
    fn take_startup(&mut self, vcpu: usize) -> Option<ExitReply> {
        let apic = self.apics.get_mut(vcpu)?;
        let vector = apic.take_startup()?;
        // The INIT that came before this start-up is dealt with.
        let _ = apic.take_init();
        Some(ExitReply {
            registers: Some(GuestRegisters::real_mode_startup(vector)),
            gprs: None,
            advance_rip: 0,
            inject: None,
            interrupt_window: false,
        })
    }

    /// Bytes the guest sent to its UART (or port 0xe9) since the last call, as complete
    /// lines; with `flush`, a trailing partial line (a shell prompt) too.
    pub fn console_lines(&mut self, flush: bool) -> Vec<String> {
        if !self.console_written && (!flush || self.console.is_empty()) {
            return Vec::new();
        }
        self.console_written = false;
        self.console.extend(self.devices.uart_output());
        let mut lines = Vec::new();
        while let Some(end) = self.console.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.console.drain(..=end).collect();
            lines.push(printable(&line[..line.len() - 1]));
        }
        if (flush || self.console.len() >= 160) && !self.console.is_empty() {
            let line: Vec<u8> = core::mem::take(&mut self.console);
            lines.push(printable(&line));
        }
        lines
    }

    /// How long the guest's console has been quiet at `now_ns`: with several vCPUs one
    /// may halt while another is in the middle of a line, so a partial line (a prompt) is
    /// flushed only once the console has been quiet a while.
    pub fn console_quiet_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.console_written_at)
    }

    /// Bytes typed at the guest's console.
    pub fn console_input(&mut self, bytes: &[u8]) {
        self.devices.uart_input(bytes);
    }

    /// When the next device event is due (monitor clock, ns), for a timeout while the
    /// guest runs.
    pub fn next_event_ns(&mut self, now_ns: u64) -> Option<u64> {
        self.next_event_for(0, now_ns)
    }

    /// When the next event for `vcpu` is due: its local APIC's timer, and for vCPU 0 the
    /// PC devices'. Always after `now_ns` (or `None`): what is due by then is collected
    /// into the interrupt controllers first, where the reply's injection or interrupt
    /// window takes care of it. (A timeout of "now" while an interrupt waits for the guest
    /// to enable interrupts would never let the guest run: the kernel ends a run whose
    /// timeout passed before entering the guest.)
    pub fn next_event_for(&mut self, vcpu: usize, now_ns: u64) -> Option<u64> {
        let vcpu = vcpu.min(self.apics.len() - 1);
        let next = self.scheduled_event(vcpu, now_ns);
        if next.is_some_and(|at| at <= now_ns) {
            // Due, not yet collected (the exit's handling usually has): collect it.
            self.interrupt_pending(vcpu, now_ns);
            return self.scheduled_event(vcpu, now_ns);
        }
        next
    }

    /// The earliest of `vcpu`'s local APIC timer and (for vCPU 0) the PC devices' next
    /// events, as they stand ("now" for one that is due and not yet collected).
    fn scheduled_event(&self, vcpu: usize, now_ns: u64) -> Option<u64> {
        let apic = self
            .apics
            .get(vcpu)
            .and_then(|apic| apic.next_event_ns(now_ns));
        let devices = receives_pic(vcpu)
            .then(|| self.devices.next_event_ns(now_ns))
            .flatten();
        match (apic, devices) {
            (Some(a), Some(d)) => Some(a.min(d)),
            (a, d) => a.or(d),
        }
    }

    /// The reply after a `vcpu_run` timeout or a halt ended, when the guest's state is
    /// not known: ask to exit as soon as it can take an interrupt, if one is pending.
    pub fn wake(&mut self, now_ns: u64, halted: bool) -> ExitReply {
        self.wake_vcpu(0, now_ns, halted)
    }

    /// [`Self::wake`] for `vcpu`.
    pub fn wake_vcpu(&mut self, vcpu: usize, now_ns: u64, halted: bool) -> ExitReply {
        let pending = self.interrupt_pending(vcpu, now_ns);
        let mut reply = ExitReply {
            registers: None,
            gprs: None,
            advance_rip: 0,
            inject: None,
            interrupt_window: pending,
        };
        // An NMI (from a sibling's IPI) ends a halt at once.
        if halted && self.apics.get_mut(vcpu).is_some_and(LocalApic::take_nmi) {
            reply.inject = Some(Event::Nmi);
            return reply;
        }
        // After a HLT the guest had IF set and no shadow (the RIP advance ended it): the
        // interrupt can go in at once.
        if halted
            && pending
            && let Some(vector) = self.acknowledge(vcpu, now_ns)
        {
            reply.inject = Some(Event::ExternalInterrupt { vector });
            reply.interrupt_window = self.interrupt_pending(vcpu, now_ns);
        }
        reply
    }

    /// Handles one exit of vCPU 0.
    pub fn handle(&mut self, memory: &mut M, message: &ExitMessage, now_ns: u64) -> Step {
        self.handle_vcpu(0, memory, message, now_ns)
    }

    /// Handles one exit of `vcpu`.
    pub fn handle_vcpu(
        &mut self,
        vcpu: usize,
        memory: &mut M,
        message: &ExitMessage,
        now_ns: u64,
    ) -> Step {
        let vcpu = vcpu.min(self.apics.len() - 1);
        let mut registers = message.registers;
        let mut reply = ExitReply::resume(message);
        let mut changed = false;
        let length = |memory: &M| -> Result<u8, PowerOff> {
            match message.instruction_length {
                Some(length) => Ok(length),
                None => {
                    decode::exit_instruction_length(memory, &message.registers).map_err(|error| {
                        PowerOff::Fatal(format!(
                            "cannot decode the instruction at rip {:#x}: {error}",
                            message.registers.rip
                        ))
                    })
                }
            }
        };
        macro_rules! skip {
            () => {
                match length(memory) {
                    Ok(length) => reply.advance_rip = length,
                    Err(off) => return Step::PowerOff(off),
                }
            };
        }
        match message.exit {
            Exit::Io {
                port,
                size,
                write,
                value,
                string,
                ..
            } => {
                self.exits.count(Reason::Io);
                if string {
                    return Step::PowerOff(PowerOff::Fatal(format!(
                        "string port I/O (INS/OUTS) on port {port:#x} is not emulated"
                    )));
                }
                skip!();
                if write {
                    if matches!(port, 0x3f8..=0x3ff | 0xe9) {
                        self.console_written = true;
                        self.console_written_at = now_ns;
                    }
                    match self.devices.io_write(port, size, value, now_ns) {
                        IoEffect::None => {}
                        IoEffect::DebugExit(code) => {
                            return Step::PowerOff(PowerOff::DebugExit(code));
                        }
                        IoEffect::Reset => return Step::PowerOff(PowerOff::Reset),
                    }
                } else {
                    let value = self.devices.io_read(port, size, now_ns);
                    registers.complete_port_read(size, value);
                    changed = true;
                }
            }
            Exit::Cpuid { leaf, subleaf } => {
                self.exits.count(Reason::Cpuid);
                skip!();
                let [a, b, c, d] =
                    cpuid_for_vcpu(self.cpuid, leaf, subleaf, vcpu, self.apics.len());
                registers.gpr.rax = u64::from(a);
                registers.gpr.rbx = u64::from(b);
                registers.gpr.rcx = u64::from(c);
                registers.gpr.rdx = u64::from(d);
                changed = true;
            }
            Exit::Msr {
                write,
                index,
                value,
            } => {
                self.exits.count(Reason::Msr);
                match self.msr(vcpu, &mut registers, write, index, value, now_ns) {
                    Ok(()) => {
                        skip!();
                        changed = true;
                    }
                    Err(()) => {
                        self.unknown_msrs += 1;
                        reply.inject = Some(Event::Exception {
                            vector: 13,
                            error_code: Some(0),
                        });
                    }
                }
            }
            Exit::NestedPageFault {
                gpa, misconfigured, ..
            } => {
                self.exits.count(Reason::Mmio);
                if misconfigured || gpa < memory.size() {
                    return Step::PowerOff(PowerOff::Fatal(format!(
                        "nested page fault on guest RAM at {gpa:#x} (the VM's memory is not mapped as it should be)"
                    )));
                }
                let apic_offset = gpa
                    .checked_sub(lapic::BASE)
                    .filter(|offset| *offset < lapic::SIZE);
                match decode::decode_mmio(memory, &message.registers, gpa) {
                    Ok((access, length)) => {
                        reply.advance_rip = length;
                        match access {
                            decode::MmioAccess::Write { size, value } => match apic_offset {
                                Some(offset) => self.apic_write(vcpu, offset, size, value, now_ns),
                                None => {
                                    let _ = self.devices.mmio_write(gpa, size, value);
                                }
                            },
                            decode::MmioAccess::Read { size, .. } => {
                                let value = match apic_offset {
                                    Some(offset) => {
                                        self.apics[vcpu].mmio_read(offset, size, now_ns)
                                    }
                                    None => self.devices.mmio_read(gpa, size),
                                }
                                // Nothing there reads as all ones (`complete_read` keeps `size` bytes).
                                .unwrap_or(u64::MAX);
                                decode::complete_read(&mut registers, access, value);
                                changed = true;
                            }
                        }
                    }
                    Err(error) => {
                        return Step::PowerOff(PowerOff::Fatal(format!(
                            "MMIO access at {gpa:#x} from rip {:#x}: {error}",
                            message.registers.rip
                        )));
                    }
                }
            }
            Exit::Hlt => {
                self.exits.count(Reason::Hlt);
                skip!();
                if !can_take_interrupt(&registers, false) {
                    // `cli; hlt`: only an NMI or INIT ends it. The VM is over once no
                    // vCPU can run again (Linux parks its other CPUs so before it halts).
                    self.parked |= 1 << vcpu;
                    if self.stopped() == self.all_vcpus() {
                        return Step::PowerOff(PowerOff::HaltedForever {
                            rip: message.registers.rip,
                        });
                    }
                    return Step::Park(reply);
                }
                if !self.interrupt_pending(vcpu, now_ns)
                    && reply.inject.is_none()
                    && !self.apics[vcpu].is_nmi_pending()
                {
                    return Step::Halt {
                        reply,
                        wake_ns: self.next_event_for(vcpu, now_ns),
                    };
                }
            }
            Exit::Shutdown => {
                return Step::PowerOff(PowerOff::TripleFault {
                    rip: message.registers.rip,
                });
            }
            Exit::Exception {
                vector, error_code, ..
            } => {
                self.exits.count(Reason::Exception);
                if vector == 18 {
                    return Step::PowerOff(PowerOff::Fatal("machine check in the guest".into()));
                }
                reply.inject = Some(Event::Exception { vector, error_code });
            }
            Exit::InterruptWindow => self.exits.count(Reason::InterruptWindow),
            Exit::Interrupt | Exit::Nmi => self.exits.count(Reason::HostInterrupt),
            Exit::Vmcall
            | Exit::Xsetbv { .. }
            | Exit::Instruction(
                Instruction::Virtualization
                | Instruction::Monitor
                | Instruction::Mwait
                | Instruction::Rdpru
                | Instruction::Rsm,
            ) => {
                self.exits.count(Reason::UndefinedOpcode);
                reply.inject = Some(Event::Exception {
                    vector: 6,
                    error_code: None,
                });
            }
            Exit::Instruction(_) => {
                self.exits.count(Reason::Instruction);
                skip!();
            }
            Exit::Invalid { reason } => {
                return Step::PowerOff(PowerOff::Fatal(format!(
                    "VMRUN refused the vCPU state (exit code {reason:#x})"
                )));
            }
            Exit::Other {
                code, info1, info2, ..
            } => {
                return Step::PowerOff(PowerOff::Fatal(format!(
                    "unexpected VM exit {code:#x} (info {info1:#x}, {info2:#x})"
                )));
            }
        }
        if changed {
            // Most exits change only general registers: send just those (cheaper, and the
            // kernel need not re-check VMRUN's rules).
            if registers.efer == message.registers.efer {
                reply.gprs = Some(registers.gpr);
            } else {
                reply.registers = Some(registers);
            }
        }
        self.interrupts(vcpu, &mut reply, &registers, message, now_ns);
        // A device interrupt another vCPU's access raised is the PIC's receiver's to take.
        if !receives_pic(vcpu) && self.devices.pending_vector(now_ns).is_some() {
            self.kicks |= 1 << PIC_VCPU;
        }
        Step::Resume(reply)
    }

    /// A write to `vcpu`'s local APIC page; an interrupt command (IPI) is delivered at
    /// once to the APICs it names, and their threads are kicked.
    fn apic_write(&mut self, vcpu: usize, offset: u64, size: u8, value: u64, now_ns: u64) {
        if let Some(ipi) = self.apics[vcpu].mmio_write(offset, size, value, now_ns) {
            let targets = lapic::route(&mut self.apics, vcpu, &ipi, now_ns);
            self.kicks |= targets & !(1 << vcpu);
        }
    }

    /// Injects a pending device interrupt if the guest can take it after this reply, or
    /// asks for an interrupt window.
    fn interrupts(
        &mut self,
        vcpu: usize,
        reply: &mut ExitReply,
        registers: &GuestRegisters,
        message: &ExitMessage,
        now_ns: u64,
    ) {
        if reply.inject.is_none() && self.apics[vcpu].take_nmi() {
            reply.inject = Some(Event::Nmi);
            return;
        }
        if !self.interrupt_pending(vcpu, now_ns) {
            return;
        }
        // Advancing RIP ends an interrupt shadow.
        let shadow = message.interrupt_shadow && reply.advance_rip == 0;
        if reply.inject.is_none() && can_take_interrupt(registers, shadow) {
            if let Some(vector) = self.acknowledge(vcpu, now_ns) {
                reply.inject = Some(Event::ExternalInterrupt { vector });
            }
            // Another one still waiting (the PIC's behind the local APIC's): the guest
            // exits as soon as it can take it, after the one injected now.
            reply.interrupt_window = self.interrupt_pending(vcpu, now_ns);
        } else {
            reply.interrupt_window = true;
        }
    }

    /// RDMSR/WRMSR. `Err` for an MSR the guest may not touch (#GP).
    fn msr(
        &mut self,
        vcpu: usize,
        registers: &mut GuestRegisters,
        write: bool,
        index: u32,
        value: u64,
        now_ns: u64,
    ) -> Result<(), ()> {
        const EFER: u32 = 0xc000_0080;
        const EFER_WRITABLE: u64 = 1 | (1 << 8) | (1 << 11) | (1 << 14) | (1 << 15);
        let read_value = match index {
            EFER => {
                if write {
                    if value & !(EFER_WRITABLE | (1 << 10)) != 0 {
                        return Err(());
                    }
                    registers.efer = (value & EFER_WRITABLE) | (registers.efer & (1 << 10));
                }
                registers.efer
            }
            // TSC as an MSR: Linux reads it through RDTSC (not intercepted); writes are
            // ignored and reads give 0.
            0x10 => 0,
            // The local APIC's base and enable (it stays at lapic::BASE, in xAPIC mode).
            lapic::IA32_APIC_BASE => {
                if write {
                    self.apics[vcpu].write_base_msr(value).map_err(|_| ())?;
                }
                self.apics[vcpu].read_base_msr()
            }
            // The TSC-deadline timer.
            lapic::IA32_TSC_DEADLINE => {
                if write {
                    let now_tsc = self.tsc_at(now_ns);
                    let khz = self.tsc_khz;
                    self.apics[vcpu].write_tsc_deadline(value, now_tsc, now_ns, khz);
                }
                self.apics[vcpu].read_tsc_deadline()
            }
            // MTRR capabilities: none; MTRR default type and ranges are remembered.
            0xfe => 0,
            0x2ff | 0x200..=0x20f | 0x250 | 0x258 | 0x259 | 0x268..=0x26f | 0x277 => {
                if write {
                    self.msrs.insert(index, value);
                }
                self.msrs.get(&index).copied().unwrap_or(if index == 0x277 {
                    0x0007_0406_0007_0406
                } else {
                    0
                })
            }
            // MISC_ENABLE: fast strings.
            0x1a0 => 1,
            // Speculation control, machine-check globals, AMD configuration registers the
            // guest may read and write harmlessly (writes ignored).
            0x48 | 0x49 | 0x10a | 0x179 | 0x17a | 0x8b | 0xc001_0015 | 0xc001_1029
            | 0xc001_0010 | 0xc001_1020 | 0xc001_1021 | 0xc001_1022 | 0xc001_0058 | 0xc001_0114
            | 0xc001_0055 | 0xc001_0140 | 0xc001_0141 => 0,
            _ => return Err(()),
        };
        if !write {
            registers.gpr.rax = read_value & 0xffff_ffff;
            registers.gpr.rdx = read_value >> 32;
        }
        Ok(())
    }
}

/// The guest's CPUID as vCPU `vcpu` of `vcpus` sees it: [`cpuid_policy`] with its APIC id
/// in leaf 1 and the VM's core count in leaf 0x8000_0008.
pub fn cpuid_for_vcpu(
    host: HostCpuid,
    leaf: u32,
    subleaf: u32,
    vcpu: usize,
    vcpus: usize,
) -> [u32; 4] {
    let [a, b, c, d] = cpuid_policy(host, leaf, subleaf);
    match leaf {
        1 => [a, b & 0x00ff_ffff | ((vcpu as u32 & 0xff) << 24), c, d],
        // Cores per package − 1, APIC-id size from it (AMD's leaf; one package of vCPUs).
        0x8000_0008 => [a, b, (vcpus.clamp(1, 256) as u32 - 1) & 0xff, d],
        _ => [a, b, c, d],
    }
}

/// The guest's CPUID: the host's values with what Esker does not virtualise hidden —
/// no x2APIC, MONITOR, XSAVE/AVX (the monitor switches only FXSAVE state), PCID, VMX or
/// SVM, one logical CPU per core — an xAPIC local APIC with the TSC-deadline timer (both
/// emulated), the hypervisor bit set and [`SIGNATURE`] at leaf 0x4000_0000.
pub fn cpuid_policy(host: HostCpuid, leaf: u32, subleaf: u32) -> [u32; 4] {
    let clear = |value: u32, bits: &[u32]| bits.iter().fold(value, |v, bit| v & !(1 << bit));
    match leaf {
        0x4000_0000 => {
            let word = |i: usize| {
                u32::from_le_bytes([
                    SIGNATURE[i],
                    SIGNATURE[i + 1],
                    SIGNATURE[i + 2],
                    SIGNATURE[i + 3],
                ])
            };
            [0x4000_0001, word(0), word(4), word(8)]
        }
        0x4000_0001..=0x4000_ffff => [0; 4],
        1 => {
            let [a, b, c, d] = host(1, 0);
            let b = b & 0x0000_ffff | (1 << 16); // APIC id 0, one logical CPU
            let c = clear(c, &[3, 5, 17, 21, 26, 27, 28]) | (1 << 31) | (1 << 24);
            let d = clear(d, &[22, 28]) | (1 << 9);
            [a, b, c, d]
        }
        5 | 6 | 0xa | 0xd => [0; 4],
        7 if subleaf == 0 => {
            let [a, b, c, d] = host(7, 0);
            [a, b, clear(c, &[5, 16]), d]
        }
        0xb | 0x1f => [0; 4],
        0x8000_0001 => {
            let [a, b, c, d] = host(leaf, subleaf);
            [a, b, clear(c, &[2, 1]), d]
        }
        0x8000_000a => [0; 4],
        _ => host(leaf, subleaf),
    }
}

/// A console line as text: control characters other than tab dropped, invalid UTF-8
/// replaced.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use esker_kernel_core::virt::vcpu::GuestRegisters;

    fn host_cpuid(leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            // Everything set, so the policy's clearing shows.
            1 => [0x000f_0f10, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff],
            _ => [0x11, 0x22, 0x33, 0x44],
        }
    }

    fn exit(exit: Exit, registers: GuestRegisters, length: Option<u8>) -> ExitMessage {
        ExitMessage {
            exit,
            registers,
            instruction_length: length,
            pending_event: None,
            interrupt_shadow: false,
        }
    }

    /// 32-bit flat guest at 0x1000 with `bytes` there, 1 MiB of RAM.
    fn guest(bytes: &[u8]) -> (Monitor<[u8]>, alloc::vec::Vec<u8>, GuestRegisters) {
        let mut ram = vec![0u8; 1 << 20];
        ram[0x1000..0x1000 + bytes.len()].copy_from_slice(bytes);
        let mut registers = GuestRegisters::protected_mode_flat(0x1000);
        registers.rflags |= 1 << 9;
        (Monitor::new("t", 1 << 20, 0, host_cpuid), ram, registers)
    }

    fn resume(step: Step) -> ExitReply {
        match step {
            Step::Resume(reply) => reply,
            other => panic!("expected a resume, got {other:?}"),
        }
    }

    #[test]
    fn cpuid_answers_with_the_policy_and_sends_only_general_registers() {
        let (mut monitor, mut ram, mut registers) = guest(&[0x0f, 0xa2]);
        registers.gpr.rax = 0x4000_0000;
        let message = exit(
            Exit::Cpuid {
                leaf: 0x4000_0000,
                subleaf: 0,
            },
            registers,
            None,
        );
        let reply = resume(monitor.handle(&mut ram[..], &message, 0));
        assert_eq!(reply.advance_rip, 2, "decoded from the guest's bytes");
        assert!(reply.registers.is_none());
        let gprs = reply.gprs.expect("general registers");
        let text: alloc::vec::Vec<u8> = [gprs.rbx, gprs.rcx, gprs.rdx]
            .iter()
            .flat_map(|r| (*r as u32).to_le_bytes())
            .collect();
        assert_eq!(&text, SIGNATURE);
        // Leaf 1: hypervisor bit on, XSAVE and x2APIC off, an xAPIC with the
        // TSC-deadline timer, one logical CPU; each vCPU its own APIC id.
        let [_, b, c, d] = cpuid_policy(host_cpuid, 1, 0);
        assert_ne!(c & (1 << 31), 0);
        assert_eq!(c & (1 << 26), 0);
        assert_eq!(c & (1 << 21), 0);
        assert_ne!(c & (1 << 24), 0);
        assert_ne!(d & (1 << 9), 0);
        assert_eq!(b >> 16 & 0xff, 1);
        assert_eq!(cpuid_for_vcpu(host_cpuid, 1, 0, 3, 4)[1] >> 24, 3);
        assert_eq!(
            cpuid_for_vcpu(host_cpuid, 0x8000_0008, 0, 0, 4)[2] & 0xff,
            3
        );
        assert_eq!(cpuid_policy(host_cpuid, 0x8000_000a, 0), [0; 4]);
        assert_eq!(
            monitor.exits.seen().collect::<alloc::vec::Vec<_>>(),
            [("cpuid", 1)]
        );
    }

    #[test]
    fn msrs_follow_the_policy() {
        let (mut monitor, mut ram, mut registers) = guest(&[0x0f, 0x30]);
        // Writing EFER changes a non-general register: the whole state goes back.
        registers.gpr.rcx = 0xc000_0080;
        let write = exit(
            Exit::Msr {
                write: true,
                index: 0xc000_0080,
                value: 1 << 11,
            },
            registers,
            None,
        );
        let reply = resume(monitor.handle(&mut ram[..], &write, 0));
        assert_eq!(reply.registers.map(|r| r.efer), Some(1 << 11));
        assert_eq!(reply.advance_rip, 2);
        // An MSR nobody knows gets #GP(0) and no RIP advance.
        let unknown = exit(
            Exit::Msr {
                write: false,
                index: 0x1234,
                value: 0,
            },
            registers,
            None,
        );
        let reply = resume(monitor.handle(&mut ram[..], &unknown, 0));
        assert_eq!(
            reply.inject,
            Some(Event::Exception {
                vector: 13,
                error_code: Some(0)
            })
        );
        assert_eq!(reply.advance_rip, 0);
        assert_eq!(monitor.unknown_msrs, 1);
    }

    #[test]
    fn the_debug_port_a_triple_fault_and_a_dead_halt_power_the_vm_off() {
        let (mut monitor, mut ram, registers) = guest(&[0xf4]);
        let out = Exit::Io {
            port: 0xf4,
            size: 1,
            write: true,
            value: 7,
            string: false,
            rep: false,
        };
        assert_eq!(
            monitor.handle(&mut ram[..], &exit(out, registers, Some(2)), 0),
            Step::PowerOff(PowerOff::DebugExit(7))
        );
        assert_eq!(
            monitor.handle(&mut ram[..], &exit(Exit::Shutdown, registers, None), 0),
            Step::PowerOff(PowerOff::TripleFault { rip: 0x1000 })
        );
        let mut cli = registers;
        cli.rflags &= !(1 << 9);
        assert_eq!(
            monitor.handle(&mut ram[..], &exit(Exit::Hlt, cli, None), 0),
            Step::PowerOff(PowerOff::HaltedForever { rip: 0x1000 })
        );
        // HLT with interrupts on and nothing pending: sleep.
        assert!(matches!(
            monitor.handle(&mut ram[..], &exit(Exit::Hlt, registers, None), 0),
            Step::Halt { reply, .. } if reply.advance_rip == 1
        ));
    }

    #[test]
    fn uart_output_becomes_console_lines_and_input_reaches_the_guest() {
        let (mut monitor, mut ram, registers) = guest(&[0xee]);
        for byte in b"hi\nthere" {
            let out = Exit::Io {
                port: 0x3f8,
                size: 1,
                write: true,
                value: u32::from(*byte),
                string: false,
                rep: false,
            };
            let _ = monitor.handle(&mut ram[..], &exit(out, registers, Some(1)), 0);
        }
        assert_eq!(monitor.console_lines(false), ["hi"]);
        assert_eq!(monitor.console_lines(true), ["there"]);
        monitor.console_input(b"x");
        let read = Exit::Io {
            port: 0x3f8,
            size: 1,
            write: false,
            value: 0,
            string: false,
            rep: false,
        };
        let reply = resume(monitor.handle(&mut ram[..], &exit(read, registers, Some(1)), 0));
        assert_eq!(reply.gprs.map(|g| g.rax & 0xff), Some(u64::from(b'x')));
    }

    /// Linux's PIC set-up with IRQ 0 unmasked, and channel 0 ticking every 1 ms.
    fn tick_every_millisecond(monitor: &mut Monitor<[u8]>) {
        use crate::devices::tests::{init_pic_like_linux, unmask};
        init_pic_like_linux(&mut monitor.devices);
        unmask(&mut monitor.devices, 0, 0);
        for (port, value) in [(0x43, 0x34), (0x40, 0xa9), (0x40, 0x04)] {
            monitor.devices.io_write(port, 1, value, 0);
        }
    }

    // Under host load a vCPU thread found its local APIC's interrupt waiting (the guest
    // had interrupts off) and the PIT's tick due but not collected: it asked the kernel
    // for a timeout of "now", which ends the run before the guest is entered, again and
    // again — the guest never ran to enable interrupts.
    #[test]
    fn the_next_event_is_never_now_while_an_interrupt_waits_for_the_guest() {
        const MS: u64 = 1_000_000;
        let (mut monitor, mut ram, mut registers) = guest(&[0x90]);
        tick_every_millisecond(&mut monitor);
        monitor.apics[0].mmio_write(0xf0, 4, u64::from(lapic::SVR_ENABLE | 0xff), 0);
        assert!(monitor.apics[0].deliver(0x40));
        registers.rflags &= !(1 << 9);
        let now = 5 * MS + 1;
        // The run timed out: the interrupt waits for a window, the tick is collected.
        let reply = monitor.wake_vcpu(0, now, false);
        assert!(reply.interrupt_window && reply.inject.is_none());
        let next = monitor.next_event_for(0, now).expect("the PIT ticks on");
        assert!(next > now, "next event {next} is not after now {now}");
        // The same after an exit handled at that time.
        let (mut monitor, _, _) = guest(&[0x90]);
        tick_every_millisecond(&mut monitor);
        monitor.apics[0].mmio_write(0xf0, 4, u64::from(lapic::SVR_ENABLE | 0xff), 0);
        assert!(monitor.apics[0].deliver(0x40));
        let out = Exit::Io {
            port: 0x80,
            size: 1,
            write: true,
            value: 0,
            string: false,
            rep: false,
        };
        let reply = resume(monitor.handle(&mut ram[..], &exit(out, registers, Some(2)), now));
        assert!(reply.interrupt_window);
        assert!(
            monitor
                .next_event_for(0, now)
                .is_some_and(|next| next > now)
        );
        // With interrupts on, the local APIC's vector goes in and the PIC's tick behind
        // it asks for a window of its own.
        registers.rflags |= 1 << 9;
        let reply = resume(monitor.handle(&mut ram[..], &exit(out, registers, Some(2)), now));
        assert_eq!(
            reply.inject,
            Some(Event::ExternalInterrupt { vector: 0x40 })
        );
        assert!(reply.interrupt_window, "the timer tick waits behind it");
    }

    /// [`guest`] with two vCPUs.
    fn smp_guest(bytes: &[u8]) -> (Monitor<[u8]>, alloc::vec::Vec<u8>, GuestRegisters) {
        let (_, ram, registers) = guest(bytes);
        (
            Monitor::with_vcpus("t", 1 << 20, 0, host_cpuid, 2),
            ram,
            registers,
        )
    }

    /// vCPU 0 writes `low` to its ICR for APIC id `to`.
    fn ipi(monitor: &mut Monitor<[u8]>, to: u8, low: u32) {
        monitor.apic_write(0, 0x310, 4, u64::from(to) << 24, 0);
        monitor.apic_write(0, 0x300, 4, u64::from(low), 0);
    }

    /// INIT, then a start-up IPI with vector 8: vCPU 1 starts in real mode at 0x8000.
    fn start_vcpu1(monitor: &mut Monitor<[u8]>) {
        ipi(monitor, 1, 0x4500);
        assert_eq!(monitor.unpark(1), None, "INIT alone starts nothing");
        ipi(monitor, 1, 0x4608);
        let start = monitor.unpark(1).expect("the start-up IPI starts it");
        assert_eq!(start.registers.map(|r| r.cs.base), Some(0x8000));
        assert!(
            !monitor.take_init(1),
            "the INIT before the start-up is dealt with"
        );
    }

    #[test]
    fn cli_hlt_parks_one_vcpu_and_ends_the_vm_only_when_none_can_run() {
        let (mut monitor, mut ram, mut registers) = smp_guest(&[0xf4]);
        registers.rflags &= !(1 << 9);
        let hlt = exit(Exit::Hlt, registers, None);
        // vCPU 1 never started: vCPU 0's `cli; hlt` is the end.
        assert_eq!(
            monitor.handle_vcpu(0, &mut ram[..], &hlt, 0),
            Step::PowerOff(PowerOff::HaltedForever { rip: 0x1000 })
        );
        let (mut monitor, mut ram, _) = smp_guest(&[0xf4]);
        start_vcpu1(&mut monitor);
        // vCPU 1 parks (Linux's stop_this_cpu, or a CPU taken offline)...
        match monitor.handle_vcpu(1, &mut ram[..], &hlt, 0) {
            Step::Park(reply) => assert_eq!(reply.advance_rip, 1, "past the HLT"),
            other => panic!("vCPU 1 should park, got {other:?}"),
        }
        assert_eq!(monitor.unpark(1), None, "nothing wakes it yet");
        // ... an NMI IPI wakes it (delivery mode NMI) ...
        ipi(&mut monitor, 1, 0x4400);
        assert_eq!(monitor.take_kicks(), 1 << 1, "its thread is kicked");
        let woken = monitor.unpark(1).expect("the NMI wakes it");
        assert_eq!(woken.inject, Some(Event::Nmi));
        // ... it parks again, and the VM ends when vCPU 0 halts with interrupts off too.
        assert!(matches!(
            monitor.handle_vcpu(1, &mut ram[..], &hlt, 0),
            Step::Park(_)
        ));
        assert_eq!(
            monitor.handle_vcpu(0, &mut ram[..], &hlt, 0),
            Step::PowerOff(PowerOff::HaltedForever { rip: 0x1000 })
        );
    }

    #[test]
    fn init_stops_a_running_vcpu_until_its_start_up_ipi() {
        let (mut monitor, _, _) = smp_guest(&[0x90]);
        start_vcpu1(&mut monitor);
        assert!(!monitor.take_init(1));
        ipi(&mut monitor, 1, 0x4500);
        assert!(monitor.take_init(1), "its thread learns of the INIT");
        assert_eq!(monitor.unpark(1), None);
        ipi(&mut monitor, 1, 0x4610);
        let start = monitor.unpark(1).expect("started again");
        assert_eq!(start.registers.map(|r| r.cs.base), Some(0x10000));
    }

    #[test]
    fn an_nmi_ends_a_halt_with_interrupts_on() {
        let (mut monitor, mut ram, registers) = smp_guest(&[0xf4]);
        start_vcpu1(&mut monitor);
        let hlt = exit(Exit::Hlt, registers, None);
        assert!(matches!(
            monitor.handle_vcpu(1, &mut ram[..], &hlt, 0),
            Step::Halt { .. }
        ));
        ipi(&mut monitor, 1, 0x4400);
        assert_eq!(monitor.wake_vcpu(1, 0, true).inject, Some(Event::Nmi));
        // Pending already at the HLT: no sleep, the NMI goes in with the reply.
        ipi(&mut monitor, 1, 0x4400);
        let reply = resume(monitor.handle_vcpu(1, &mut ram[..], &hlt, 0));
        assert_eq!(reply.inject, Some(Event::Nmi));
    }
}
