//! The test guest's logic that is not hardware: what its command line asks for, how the
//! Multiboot v1 boot information is laid out, which pages are free to scribble on, the
//! isolation marker, the memory pattern, the lock-spin measurement (`spin=<ms>`) and
//! its arithmetic, and the exit codes. The bare-metal program (`src/main.rs`) does the
//! port I/O and memory accesses; everything here is tested on the host.
#![cfg_attr(not(test), no_std)]

use core::sync::atomic::{AtomicBool, Ordering};

/// Exit codes written to the debug-exit port 0xf4. Every failure has its own.
pub mod exit {
    /// Everything asked for passed (also: an isolation run found no foreign marker).
    pub const PASS: u32 = 0;
    /// Not entered by a Multiboot v1 loader, or unusable boot information or command line.
    pub const BOOT: u32 = 1;
    /// The CPU cannot run 64-bit code (written by the 32-bit stub).
    pub const NO_LONG_MODE: u32 = 2;
    /// An exception or an unexpected interrupt arrived.
    pub const EXCEPTION: u32 = 3;
    /// An isolation run found markers written by another guest.
    pub const FOREIGN_MARKERS: u32 = 5;
    /// An isolation run found fewer of its own markers than it wrote.
    pub const MARKERS_LOST: u32 = 6;
    /// The guest panicked.
    pub const PANIC: u32 = 7;
    /// `triple-fault` or `garbage` came back instead of shutting the CPU down.
    pub const NO_SHUTDOWN: u32 = 8;
    /// `spin=<ms>`: an application processor did not come online within 2 s of its
    /// start-up IPIs (or the trampoline page is not free RAM).
    pub const CPU_NOT_STARTED: u32 = 15;
    /// `spin=<ms>`: an application processor did not report its figures within 2 s of
    /// the end of the measurement.
    pub const CPU_NOT_DONE: u32 = 16;
    /// `spin=<ms>`: the TSC could not be calibrated against PIT channel 2.
    pub const NO_TSC_RATE: u32 = 17;
}

/// One check of the default run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Hypervisor bit and the Esker vendor signature in CPUID.
    Cpuid,
    /// UART scratch register and the CMOS clock.
    Ports,
    /// The PCI host bridge through ECAM and through ports 0xcf8/0xcfc.
    Mmio,
    /// Pattern write and read-back of every free page.
    Memory,
    /// PIC + PIT: 20 timer interrupts with `sti; hlt`.
    Timer,
}

impl Check {
    /// Every check, in run order.
    pub const ALL: [Check; 5] = [
        Check::Cpuid,
        Check::Ports,
        Check::Mmio,
        Check::Memory,
        Check::Timer,
    ];

    /// The command-line word, also used in output.
    pub const fn name(self) -> &'static str {
        match self {
            Check::Cpuid => "cpuid",
            Check::Ports => "ports",
            Check::Mmio => "mmio",
            Check::Memory => "memory",
            Check::Timer => "timer",
        }
    }

    /// The exit code when this check fails.
    pub const fn exit_code(self) -> u32 {
        match self {
            Check::Cpuid => 10,
            Check::Ports => 11,
            Check::Mmio => 12,
            Check::Memory => 13,
            Check::Timer => 14,
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// What the guest does after its checks (instead of reporting success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Mark every free page with a marker carrying this number, then look for others'.
    Isolation(u32),
    /// `int3` with an empty IDT: the CPU shuts down.
    TripleFault,
    /// Execute a page of 0xff bytes with an empty IDT: the CPU shuts down.
    Garbage,
    /// Print a line and loop forever.
    Spin,
    /// Time CPUID exits (guest -> kernel -> monitor -> guest) with RDTSC, print the
    /// median and minimum, exit 0.
    CpuidBench,
    /// `spin=<ms>` (with `cpus=<n>`): start the other CPUs and measure how long each
    /// spins on one lock they all take turns holding.
    LockSpin(LockSpin),
}

/// Most CPUs `cpus=<n>` accepts (the BSP and up to 15 application processors; Esker's
/// VMs have at most 16 vCPUs).
pub const MAX_CPUS: u32 = 16;
/// CPUs a `spin=<ms>` run uses without `cpus=<n>`.
pub const DEFAULT_SPIN_CPUS: u32 = 2;
/// Longest `spin=<ms>` accepted (10 minutes).
pub const MAX_SPIN_MS: u32 = 600_000;
/// Microseconds a CPU holds the lock each time it takes it.
pub const LOCK_HOLD_US: u64 = 50;
/// Microseconds a CPU works outside the lock after each release.
pub const LOCK_WORK_US: u64 = 50;
/// A jump of the TSC longer than this between two readings in the `spin` run is time the
/// vCPU was descheduled (its spinning loop reads the TSC every few nanoseconds).
pub const AWAY_GAP_US: u64 = 20;

/// A lock-spin run: `ms` milliseconds on `cpus` CPUs (BSP included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSpin {
    /// Milliseconds of TSC time every CPU contends for (1..=[`MAX_SPIN_MS`]).
    pub ms: u32,
    /// CPUs taking part, the BSP included (1..=[`MAX_CPUS`]).
    pub cpus: u32,
}

/// What a command line asks for: some checks, then at most one action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    checks: u8,
    /// The action after the checks, if any.
    pub action: Option<Action>,
}

impl Plan {
    /// Whether `check` is to run.
    pub fn runs(&self, check: Check) -> bool {
        self.checks & check.bit() != 0
    }

    /// The checks to run, in order.
    pub fn checks(&self) -> impl Iterator<Item = Check> + '_ {
        Check::ALL.into_iter().filter(|check| self.runs(*check))
    }
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// Not a check or an action.
    UnknownWord(&'a str),
    /// `isolation=` without a decimal number.
    BadIsolation(&'a str),
    /// A second action (only one may run).
    SecondAction(&'a str),
    /// `spin=` without a number of milliseconds from 1 to [`MAX_SPIN_MS`].
    BadSpin(&'a str),
    /// `cpus=` without a number from 1 to [`MAX_CPUS`].
    BadCpus(&'a str),
    /// `cpus=<n>` a second time.
    SecondCpus(&'a str),
    /// `cpus=<n>` without `spin=<ms>` (nothing else uses more than one CPU).
    CpusWithoutSpin(&'a str),
}

impl core::fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CmdlineError::UnknownWord(word) => write!(
                f,
                "unknown word \"{word}\" (expected cpuid, ports, mmio, memory, timer, \
                 isolation=<n>, triple-fault, garbage, spin, cpuid-bench, spin=<ms> or cpus=<n>)"
            ),
            CmdlineError::BadIsolation(word) => {
                write!(f, "\"{word}\": isolation=<n> needs a decimal number")
            }
            CmdlineError::SecondAction(word) => {
                write!(f, "\"{word}\": only one action may be given")
            }
            CmdlineError::BadSpin(word) => write!(
                f,
                "\"{word}\": spin=<ms> needs a decimal number of milliseconds from 1 to {MAX_SPIN_MS}"
            ),
            CmdlineError::BadCpus(word) => write!(
                f,
                "\"{word}\": cpus=<n> needs a decimal number of CPUs from 1 to {MAX_CPUS}"
            ),
            CmdlineError::SecondCpus(word) => {
                write!(f, "\"{word}\": cpus=<n> may be given only once")
            }
            CmdlineError::CpusWithoutSpin(word) => {
                write!(f, "\"{word}\": cpus=<n> goes only with spin=<ms>")
            }
        }
    }
}

/// `text` as a plain decimal number (digits only: no sign, no spaces), if it fits.
fn decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses the Multiboot command line: space-separated check names and at most one action
/// (`isolation=<n>`, `triple-fault`, `garbage`, `spin`, `cpuid-bench`, `spin=<ms>`), and
/// `cpus=<n>` with `spin=<ms>`. Words containing `/` are the kernel's path, which loaders
/// such as QEMU and GRUB put first, and are ignored. No checks and no action means every
/// check.
pub fn parse_cmdline(line: &str) -> Result<Plan, CmdlineError<'_>> {
    let mut checks = 0;
    let mut action = None;
    let mut cpus: Option<(u32, &str)> = None;
    for word in line.split_ascii_whitespace() {
        if word.contains('/') {
            continue;
        }
        if let Some(check) = Check::ALL.into_iter().find(|c| c.name() == word) {
            checks |= check.bit();
            continue;
        }
        if let Some(number) = word.strip_prefix("cpus=") {
            let n = decimal(number)
                .filter(|n| (1..=MAX_CPUS).contains(n))
                .ok_or(CmdlineError::BadCpus(word))?;
            if cpus.replace((n, word)).is_some() {
                return Err(CmdlineError::SecondCpus(word));
            }
            continue;
        }
        let this = if let Some(number) = word.strip_prefix("spin=") {
            let ms = decimal(number)
                .filter(|ms| (1..=MAX_SPIN_MS).contains(ms))
                .ok_or(CmdlineError::BadSpin(word))?;
            Action::LockSpin(LockSpin {
                ms,
                cpus: DEFAULT_SPIN_CPUS,
            })
        } else if let Some(number) = word.strip_prefix("isolation=") {
            match number.parse() {
                Ok(n) if !number.starts_with('+') => Action::Isolation(n),
                _ => return Err(CmdlineError::BadIsolation(word)),
            }
        } else {
            match word {
                "triple-fault" => Action::TripleFault,
                "garbage" => Action::Garbage,
                "spin" => Action::Spin,
                "cpuid-bench" => Action::CpuidBench,
                _ => return Err(CmdlineError::UnknownWord(word)),
            }
        };
        if action.replace(this).is_some() {
            return Err(CmdlineError::SecondAction(word));
        }
    }
    if let Some((n, word)) = cpus {
        match &mut action {
            Some(Action::LockSpin(spin)) => spin.cpus = n,
            _ => return Err(CmdlineError::CpusWithoutSpin(word)),
        }
    }
    if checks == 0 && action.is_none() {
        checks = Check::ALL.iter().fold(0, |bits, check| bits | check.bit());
    }
    Ok(Plan { checks, action })
}

/// Multiboot v1: what the loader leaves in `%eax`.
pub const MULTIBOOT_LOADER_MAGIC: u32 = 0x2BAD_B002;
/// Bytes of the Multiboot information structure the guest reads (up to `mmap_addr`).
pub const INFO_LEN: usize = 52;
/// Information flag: `mem_lower`/`mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Information flag: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Information flag: `mmap_length`/`mmap_addr` are valid.
pub const INFO_MMAP: u32 = 1 << 6;
/// Memory-map type of usable RAM.
pub const MEMORY_AVAILABLE: u32 = 1;

/// The fields of the Multiboot information structure the guest uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The raw flags.
    pub flags: u32,
    /// KiB of memory below 1 MiB and above 1 MiB (flag bit 0).
    pub memory_kib: Option<(u32, u32)>,
    /// Physical address of the NUL-terminated command line (flag bit 2).
    pub cmdline: Option<u32>,
    /// Physical address and byte length of the memory map (flag bit 6).
    pub mmap: Option<(u32, u32)>,
}

fn le32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn le64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

/// Decodes the first [`INFO_LEN`] bytes of the Multiboot information structure.
pub fn parse_info(bytes: &[u8; INFO_LEN]) -> BootInfo {
    let flags = le32(bytes, 0);
    BootInfo {
        flags,
        memory_kib: (flags & INFO_MEMORY != 0).then(|| (le32(bytes, 4), le32(bytes, 8))),
        cmdline: (flags & INFO_CMDLINE != 0).then(|| le32(bytes, 16)),
        mmap: (flags & INFO_MMAP != 0).then(|| (le32(bytes, 48), le32(bytes, 44))),
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Region {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// Type (1 = available RAM).
    pub kind: u32,
}

impl Region {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// The entries of a Multiboot memory map (`size`, `base_addr`, `length`, `type`; each
/// `size` counts the bytes after the `size` field). A truncated last entry, or a `size`
/// too small to hold the fields, ends the iteration.
pub fn mmap_entries(bytes: &[u8]) -> impl Iterator<Item = Region> + '_ {
    let mut offset = 0usize;
    core::iter::from_fn(move || {
        let header = bytes.get(offset..offset + 4)?;
        let size = le32(header, 0) as usize;
        let entry = bytes.get(offset + 4..(offset + 4).checked_add(size)?)?;
        if size < 20 {
            return None;
        }
        offset += 4 + size;
        Some(Region {
            base: le64(entry, 0),
            len: le64(entry, 8),
            kind: le32(entry, 16),
        })
    })
}

/// Page size.
pub const PAGE: u64 = 4096;

const fn align_up(value: u64) -> u64 {
    value.saturating_add(PAGE - 1) & !(PAGE - 1)
}

const fn align_down(value: u64) -> u64 {
    value & !(PAGE - 1)
}

/// Calls `f(start, end)` for each page-aligned piece of the `usable` ranges that lies
/// below `limit`, above page 0 and outside every `reserved` range (half-open ranges;
/// pages only partly usable or partly reserved are left out).
pub fn for_each_free(
    usable: &[(u64, u64)],
    reserved: &[(u64, u64)],
    limit: u64,
    mut f: impl FnMut(u64, u64),
) {
    for &(start, end) in usable {
        let mut cursor = align_up(start).max(PAGE);
        let end = align_down(end.min(limit));
        while cursor < end {
            let next = reserved
                .iter()
                .filter(|&&(r_start, r_end)| r_start < end && r_end > cursor && r_start < r_end)
                .min_by_key(|&&(r_start, _)| r_start);
            match next {
                None => {
                    f(cursor, end);
                    break;
                }
                Some(&(r_start, r_end)) => {
                    let piece_end = align_down(r_start);
                    if piece_end > cursor {
                        f(cursor, piece_end);
                    }
                    cursor = cursor.max(align_up(r_end));
                }
            }
        }
    }
}

/// The value the memory check stores in the 8-byte word at `addr`: the address xor a
/// constant, so every page (and every word in it) holds a different pattern and a page
/// that aliases another reads back wrong.
pub const fn pattern(addr: u64) -> u64 {
    addr ^ 0xA5C3_96E1_0F5A_3CC3
}

/// Whether a CMOS seconds register value is valid: 0..=59 in binary mode (status B bit
/// 2 set), or two BCD digits 00..=59 otherwise.
pub const fn cmos_seconds_valid(raw: u8, binary: bool) -> bool {
    if binary {
        raw <= 59
    } else {
        raw & 0x0f <= 9 && raw >> 4 <= 5
    }
}

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// The TSC frequency in kHz implied by `cycles` elapsing over `ticks` PIT periods of
/// `count` input clocks each.
pub fn tsc_khz(cycles: u64, ticks: u64, count: u64) -> u64 {
    let pit_clocks = u128::from(ticks) * u128::from(count);
    if pit_clocks == 0 {
        return 0;
    }
    (u128::from(cycles) * u128::from(PIT_HZ) / (pit_clocks * 1000)) as u64
}

/// PIT input clocks in the one-shot (channel 2, mode 0) the TSC is calibrated over:
/// 59 659 clocks, 49.9999 ms.
pub const PIT_CALIBRATION_COUNT: u16 = 59_659;

/// TSC cycles in `us` microseconds at `khz` kHz (rounded down, saturating).
pub fn us_to_cycles(us: u64, khz: u64) -> u64 {
    u64::try_from(u128::from(us) * u128::from(khz) / 1000).unwrap_or(u64::MAX)
}

/// TSC cycles in `ms` milliseconds at `khz` kHz (saturating).
pub fn ms_to_cycles(ms: u64, khz: u64) -> u64 {
    ms.saturating_mul(khz)
}

/// Whole microseconds in `cycles` TSC cycles at `khz` kHz (rounded down; 0 for a rate of
/// 0).
pub fn cycles_to_us(cycles: u64, khz: u64) -> u64 {
    if khz == 0 {
        return 0;
    }
    (u128::from(cycles) * 1000 / u128::from(khz)) as u64
}

/// `part` in `scale`ths of `whole` (100: percent, 1000: per mille), rounded down; 0 for
/// a `whole` of 0.
pub fn fraction(part: u64, whole: u64, scale: u64) -> u64 {
    if whole == 0 {
        return 0;
    }
    (u128::from(part) * u128::from(scale) / u128::from(whole)) as u64
}

/// What one CPU saw in a lock-spin run (all times in TSC cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpinFigures {
    /// Times it took the lock.
    pub acquisitions: u64,
    /// Cycles it ran while waiting for the lock (from each first attempt to the
    /// acquisition, less time it was descheduled), summed.
    pub spin_cycles: u64,
    /// The longest stretch it spun at once, without being descheduled.
    pub longest_spin: u64,
    /// Cycles it ran from the common start to the end of its last round.
    pub run_cycles: u64,
}

impl SpinFigures {
    /// Counts one acquisition after `spin` cycles of spinning, `longest` of them at once.
    pub fn record(&mut self, spin: u64, longest: u64) {
        self.acquisitions += 1;
        self.spin_cycles = self.spin_cycles.saturating_add(spin);
        self.longest_spin = self.longest_spin.max(longest);
    }

    /// Percent of its run time spent spinning.
    pub fn percent_spun(&self) -> u64 {
        fraction(self.spin_cycles, self.run_cycles, 100)
    }

    /// Per mille of its run time spent spinning.
    pub fn permille_spun(&self) -> u64 {
        fraction(self.spin_cycles, self.run_cycles, 1000)
    }

    /// All CPUs together: acquisitions, spin and run cycles summed, the longest spin of
    /// any (so the summary's per mille is of the CPUs' time taken together).
    pub fn total(all: &[SpinFigures]) -> SpinFigures {
        all.iter()
            .fold(SpinFigures::default(), |sum, cpu| SpinFigures {
                acquisitions: sum.acquisitions + cpu.acquisitions,
                spin_cycles: sum.spin_cycles.saturating_add(cpu.spin_cycles),
                longest_spin: sum.longest_spin.max(cpu.longest_spin),
                run_cycles: sum.run_cycles.saturating_add(cpu.run_cycles),
            })
    }
}

/// The summary line of a `spin=<ms>` run (after `testguest: `), written by the guest and
/// read back by the QEMU test and the benchmark: `spin: <acquisitions> acquisitions in
/// <ms> ms, spun <per mille> per mille, longest spin <µs> us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinSummary {
    /// Lock acquisitions of all CPUs together.
    pub acquisitions: u64,
    /// The run's length (ms of TSC time).
    pub ms: u32,
    /// Time spun, per mille of the CPUs' running time together.
    pub spun_permille: u64,
    /// The longest stretch any CPU spun at once (µs).
    pub longest_us: u64,
}

impl SpinSummary {
    /// The summary of `total` (all CPUs, [`SpinFigures::total`]) for a run of `ms` ms
    /// with the TSC at `khz`.
    pub fn of(total: &SpinFigures, ms: u32, khz: u64) -> Self {
        Self {
            acquisitions: total.acquisitions,
            ms,
            spun_permille: total.permille_spun(),
            longest_us: cycles_to_us(total.longest_spin, khz),
        }
    }

    /// Reads a summary from a line that contains one (the guest's prefix, a log
    /// source before it); `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once("spin: ")?;
        let rest = rest.strip_suffix(" us")?;
        let (acquisitions, rest) = rest.split_once(" acquisitions in ")?;
        let (ms, rest) = rest.split_once(" ms, spun ")?;
        let (spun, longest) = rest.split_once(" per mille, longest spin ")?;
        Some(Self {
            acquisitions: acquisitions.parse().ok()?,
            ms: ms.parse().ok()?,
            spun_permille: spun.parse().ok()?,
            longest_us: longest.parse().ok()?,
        })
    }
}

impl core::fmt::Display for SpinSummary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "spin: {} acquisitions in {} ms, spun {} per mille, longest spin {} us",
            self.acquisitions, self.ms, self.spun_permille, self.longest_us
        )
    }
}

/// A CPU's clock readings, telling the time it ran from the time it did not: a jump of
/// more than `gap` cycles between two readings (the CPU was descheduled: a vCPU whose
/// host CPU ran something else) is time away.
struct RunClock<F> {
    now: F,
    gap: u64,
    /// The last reading (`None` before the first).
    last: Option<u64>,
    away: u64,
}

impl<F: FnMut() -> u64> RunClock<F> {
    const fn new(now: F, gap: u64) -> Self {
        Self {
            now,
            gap,
            last: None,
            away: 0,
        }
    }

    /// The time now, and the last reading before it if the CPU was away in between.
    fn read(&mut self) -> (u64, Option<u64>) {
        let t = (self.now)();
        let before = self.last.replace(t);
        match before {
            Some(before) if t.wrapping_sub(before) > self.gap => {
                self.away = self.away.saturating_add(t.wrapping_sub(before));
                (t, Some(before))
            }
            _ => (t, None),
        }
    }
}

/// One CPU's part of a lock-spin run, on the clock `now` (the TSC in the guest): waits
/// until `start`, then until `now()` reaches `end` takes `lock` (test-and-set with a
/// `pause` between attempts), holds it for `hold` cycles, releases it and works `work`
/// cycles outside it. Every CPU calls this with the same `lock`, `start` and `end`.
///
/// A spin is the time the CPU ran while waiting for the lock: a jump of the clock of more
/// than `gap` cycles between two readings is time the CPU was descheduled, not spent
/// spinning, and it ends one stretch of spinning (`longest_spin` is the longest stretch
/// the CPU burned at once). `run_cycles` leaves such time out too.
pub fn contend(
    lock: &AtomicBool,
    now: impl FnMut() -> u64,
    start: u64,
    end: u64,
    hold: u64,
    work: u64,
    gap: u64,
) -> SpinFigures {
    let mut clock = RunClock::new(now, gap);
    let busy_until = |clock: &mut RunClock<_>, from: u64, cycles: u64| loop {
        let (t, _) = clock.read();
        if t.wrapping_sub(from) >= cycles {
            return t;
        }
    };
    let mut figures = SpinFigures::default();
    let (mut t, _) = clock.read();
    while t < start {
        core::hint::spin_loop();
        (t, _) = clock.read();
    }
    clock.away = 0;
    while t < end {
        // Stretches of spinning while running, between times away.
        let mut stretch = t;
        let mut burned = 0u64;
        let mut longest = 0u64;
        let end_stretch = |from: u64, to: u64, burned: &mut u64, longest: &mut u64| {
            let length = to.wrapping_sub(from);
            *burned = burned.saturating_add(length);
            *longest = (*longest).max(length);
        };
        let acquired = loop {
            let taken = !lock.swap(true, Ordering::Acquire);
            let (now, away_since) = clock.read();
            if let Some(before) = away_since {
                end_stretch(stretch, before, &mut burned, &mut longest);
                stretch = now;
            }
            if taken {
                break now;
            }
            core::hint::spin_loop();
        };
        end_stretch(stretch, acquired, &mut burned, &mut longest);
        figures.record(burned, longest);
        let held = busy_until(&mut clock, acquired, hold);
        lock.store(false, Ordering::Release);
        busy_until(&mut clock, held, work);
        (t, _) = clock.read();
    }
    figures.run_cycles = t.wrapping_sub(start).saturating_sub(clock.away);
    figures
}

/// Whether `[start, end)` is wholly free RAM: within one piece [`for_each_free`] gives
/// for `usable`, `reserved` and `limit`.
pub fn range_is_free(
    usable: &[(u64, u64)],
    reserved: &[(u64, u64)],
    limit: u64,
    start: u64,
    end: u64,
) -> bool {
    let mut free = false;
    for_each_free(usable, reserved, limit, |piece_start, piece_end| {
        free |= piece_start <= start && end <= piece_end;
    });
    free
}

/// Bytes of an isolation marker.
pub const MARKER_LEN: usize = 64;

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D4_9BB1_33EB_B111);
    z ^ (z >> 31)
}

/// The first 8 bytes of every isolation marker, computed at run time (the seed goes
/// through `black_box`) so that the marker's bytes never appear in the guest's image and
/// a scan cannot find a copy of its own code or data.
pub fn marker_head() -> u64 {
    mix(core::hint::black_box(0x4573_6b65_7249_736f))
}

/// The 64-byte marker of guest `n`: the head, `n`, then six words derived from both.
pub fn marker(n: u64) -> [u8; MARKER_LEN] {
    marker_with_head(marker_head(), n)
}

fn marker_with_head(head: u64, n: u64) -> [u8; MARKER_LEN] {
    let mut words = [0u64; MARKER_LEN / 8];
    words[0] = head;
    words[1] = n;
    for (i, word) in words.iter_mut().enumerate().skip(2) {
        *word = mix(head ^ n.rotate_left(i as u32 * 8) ^ i as u64);
    }
    let mut bytes = [0u8; MARKER_LEN];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

/// If `bytes` is a whole marker (made with `head`, see [`marker_head`]), the guest
/// number it carries.
pub fn marker_owner(head: u64, bytes: &[u8; MARKER_LEN]) -> Option<u64> {
    if le64(bytes, 0) != head {
        return None;
    }
    let n = le64(bytes, 8);
    (marker_with_head(head, n) == *bytes).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(plan: &Plan) -> Vec<&'static str> {
        plan.checks().map(Check::name).collect()
    }

    #[test]
    fn empty_command_line_runs_every_check_and_no_action() {
        for line in [
            "",
            "   ",
            "/boot/testguest",
            "target/x86_64-unknown-none/release/testguest",
        ] {
            let plan = parse_cmdline(line).unwrap();
            assert_eq!(checks(&plan), ["cpuid", "ports", "mmio", "memory", "timer"]);
            assert_eq!(plan.action, None);
        }
    }

    #[test]
    fn words_select_checks_in_run_order_and_one_action() {
        let plan = parse_cmdline("/k timer  cpuid").unwrap();
        assert_eq!(checks(&plan), ["cpuid", "timer"]);
        assert_eq!(plan.action, None);

        let plan = parse_cmdline("isolation=3").unwrap();
        assert!(checks(&plan).is_empty());
        assert_eq!(plan.action, Some(Action::Isolation(3)));

        let plan = parse_cmdline("memory spin").unwrap();
        assert_eq!(checks(&plan), ["memory"]);
        assert_eq!(plan.action, Some(Action::Spin));

        assert_eq!(
            parse_cmdline("triple-fault").unwrap().action,
            Some(Action::TripleFault)
        );
        assert_eq!(
            parse_cmdline("garbage").unwrap().action,
            Some(Action::Garbage)
        );
    }

    #[test]
    fn bad_command_lines_are_refused_with_the_word() {
        assert_eq!(
            parse_cmdline("cpuid bogus"),
            Err(CmdlineError::UnknownWord("bogus"))
        );
        assert_eq!(
            parse_cmdline("isolation=x"),
            Err(CmdlineError::BadIsolation("isolation=x"))
        );
        assert_eq!(
            parse_cmdline("isolation="),
            Err(CmdlineError::BadIsolation("isolation="))
        );
        assert_eq!(
            parse_cmdline("isolation=+1"),
            Err(CmdlineError::BadIsolation("isolation=+1"))
        );
        assert_eq!(
            parse_cmdline("spin garbage"),
            Err(CmdlineError::SecondAction("garbage"))
        );
        let message = CmdlineError::UnknownWord("x").to_string();
        assert!(message.contains("\"x\"") && message.contains("isolation=<n>"));
    }

    #[test]
    fn exit_codes_are_distinct_and_nonzero_for_failures() {
        let mut codes: Vec<u32> = Check::ALL.iter().map(|c| c.exit_code()).collect();
        codes.extend([
            exit::BOOT,
            exit::NO_LONG_MODE,
            exit::EXCEPTION,
            exit::FOREIGN_MARKERS,
            exit::MARKERS_LOST,
            exit::PANIC,
            exit::NO_SHUTDOWN,
            exit::CPU_NOT_STARTED,
            exit::CPU_NOT_DONE,
            exit::NO_TSC_RATE,
        ]);
        assert!(codes.iter().all(|&c| c != exit::PASS));
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
    }

    #[test]
    fn spin_takes_milliseconds_and_cpus_defaults_to_two() {
        let plan = parse_cmdline("/boot/testguest spin=1500").unwrap();
        assert!(checks(&plan).is_empty());
        assert_eq!(
            plan.action,
            Some(Action::LockSpin(LockSpin { ms: 1500, cpus: 2 }))
        );
        // cpus=<n> before or after spin=, with checks, and at both ends of its range.
        let plan = parse_cmdline("cpus=4 timer spin=1").unwrap();
        assert_eq!(checks(&plan), ["timer"]);
        assert_eq!(
            plan.action,
            Some(Action::LockSpin(LockSpin { ms: 1, cpus: 4 }))
        );
        assert_eq!(
            parse_cmdline("spin=600000 cpus=16").unwrap().action,
            Some(Action::LockSpin(LockSpin {
                ms: 600_000,
                cpus: 16
            }))
        );
        assert_eq!(
            parse_cmdline("spin=07 cpus=1").unwrap().action,
            Some(Action::LockSpin(LockSpin { ms: 7, cpus: 1 }))
        );
        // Plain `spin` is still the endless loop.
        assert_eq!(parse_cmdline("spin").unwrap().action, Some(Action::Spin));
    }

    #[test]
    fn bad_spin_and_cpus_words_are_refused() {
        for word in [
            "spin=0",
            "spin=abc",
            "spin=",
            "spin=+5",
            "spin=-5",
            "spin=1.5",
            "spin=600001",
            "spin=99999999999",
        ] {
            assert_eq!(parse_cmdline(word), Err(CmdlineError::BadSpin(word)));
        }
        for word in [
            "cpus=0",
            "cpus=17",
            "cpus=",
            "cpus=two",
            "cpus=+2",
            "cpus=4294967296",
        ] {
            let line = format!("spin=10 {word}");
            assert_eq!(parse_cmdline(&line), Err(CmdlineError::BadCpus(word)));
        }
        assert_eq!(
            parse_cmdline("spin=10 cpus=2 cpus=3"),
            Err(CmdlineError::SecondCpus("cpus=3"))
        );
        assert_eq!(
            parse_cmdline("cpus=2"),
            Err(CmdlineError::CpusWithoutSpin("cpus=2"))
        );
        assert_eq!(
            parse_cmdline("cpus=2 spin"),
            Err(CmdlineError::CpusWithoutSpin("cpus=2"))
        );
        assert_eq!(
            parse_cmdline("spin=10 spin=20"),
            Err(CmdlineError::SecondAction("spin=20"))
        );
        assert_eq!(
            parse_cmdline("isolation=1 spin=20"),
            Err(CmdlineError::SecondAction("spin=20"))
        );
        assert_eq!(
            CmdlineError::BadSpin("spin=0").to_string(),
            "\"spin=0\": spin=<ms> needs a decimal number of milliseconds from 1 to 600000"
        );
        assert_eq!(
            CmdlineError::BadCpus("cpus=17").to_string(),
            "\"cpus=17\": cpus=<n> needs a decimal number of CPUs from 1 to 16"
        );
        assert!(
            CmdlineError::CpusWithoutSpin("cpus=2")
                .to_string()
                .contains("only with spin=<ms>")
        );
        assert!(
            CmdlineError::UnknownWord("x")
                .to_string()
                .contains("spin=<ms>")
        );
    }

    #[test]
    fn cycles_convert_at_the_calibrated_rate() {
        // 2.5 GHz: 2 500 000 kHz.
        let khz = 2_500_000;
        assert_eq!(us_to_cycles(LOCK_HOLD_US, khz), 125_000);
        assert_eq!(us_to_cycles(1, 1_999), 1); // 1.999 cycles, rounded down
        assert_eq!(us_to_cycles(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(ms_to_cycles(1500, khz), 3_750_000_000);
        assert_eq!(ms_to_cycles(u64::MAX, 2), u64::MAX);
        assert_eq!(cycles_to_us(125_000, khz), 50);
        assert_eq!(cycles_to_us(124_999, khz), 49);
        assert_eq!(cycles_to_us(3_750_000_000, khz), 1_500_000);
        // No overflow for large counts: 2^64 - 1 cycles at 1 MHz.
        assert_eq!(cycles_to_us(u64::MAX, 1000), u64::MAX);
        assert_eq!(cycles_to_us(5, 0), 0);
        // A 50 ms PIT one-shot that took 125 000 000 cycles: 2.5 GHz.
        assert_eq!(
            tsc_khz(125_000_000, 1, u64::from(PIT_CALIBRATION_COUNT)),
            2_500_004
        );
    }

    #[test]
    fn fractions_round_down_and_survive_zero() {
        assert_eq!(fraction(1, 3, 100), 33);
        assert_eq!(fraction(2, 3, 100), 66);
        assert_eq!(fraction(2, 3, 1000), 666);
        assert_eq!(fraction(3, 3, 1000), 1000);
        assert_eq!(fraction(7, 0, 100), 0);
        assert_eq!(fraction(u64::MAX, u64::MAX, 1000), 1000);
    }

    #[test]
    fn spin_figures_record_and_total() {
        let mut a = SpinFigures::default();
        a.record(100, 100);
        a.record(300, 200);
        a.record(0, 0);
        a.run_cycles = 2000;
        assert_eq!(
            a,
            SpinFigures {
                acquisitions: 3,
                spin_cycles: 400,
                longest_spin: 200,
                run_cycles: 2000
            }
        );
        assert_eq!(a.percent_spun(), 20);
        assert_eq!(a.permille_spun(), 200);
        let b = SpinFigures {
            acquisitions: 5,
            spin_cycles: 1100,
            longest_spin: 700,
            run_cycles: 3000,
        };
        assert_eq!(b.percent_spun(), 36); // 36.67, rounded down
        let total = SpinFigures::total(&[a, b]);
        assert_eq!(
            total,
            SpinFigures {
                acquisitions: 8,
                spin_cycles: 1500,
                longest_spin: 700,
                run_cycles: 5000
            }
        );
        // The summary's per mille is of all CPUs' time: 1500 / 5000, not a mean of ratios.
        assert_eq!(total.permille_spun(), 300);
        assert_eq!(SpinFigures::total(&[]), SpinFigures::default());
    }

    #[test]
    fn contend_counts_rounds_on_a_stepping_clock() {
        // Every reading of the clock advances it by one cycle. A round: the first attempt
        // (t), the acquisition (t + 1: a spin of 1), `hold` readings, `work` readings, so
        // the next attempt is at t + hold + work + 2 = t + 200.
        let lock = AtomicBool::new(false);
        let mut clock = 0u64;
        let figures = contend(
            &lock,
            || {
                let t = clock;
                clock += 1;
                t
            },
            0,
            1000,
            99,
            99,
            u64::MAX,
        );
        assert_eq!(
            figures,
            SpinFigures {
                acquisitions: 5,
                spin_cycles: 5,
                longest_spin: 1,
                run_cycles: 1000
            }
        );
        assert!(!lock.load(Ordering::Relaxed), "released at the end");
        // Nothing before `start`; the run is counted from `start`.
        let mut clock = 0u64;
        let figures = contend(
            &lock,
            || {
                clock += 1;
                clock
            },
            500,
            700,
            49,
            49,
            u64::MAX,
        );
        assert_eq!(figures.acquisitions, 2);
        assert_eq!(figures.run_cycles, 200);
    }

    #[test]
    fn the_spin_summary_reads_back_what_it_writes() {
        let summary = SpinSummary {
            acquisitions: 9296,
            ms: 1500,
            spun_permille: 390,
            longest_us: 4124,
        };
        let line = format!("testguest: {summary}");
        assert_eq!(
            line,
            "testguest: spin: 9296 acquisitions in 1500 ms, spun 390 per mille, longest spin \
             4124 us"
        );
        assert_eq!(SpinSummary::parse(&line), Some(summary));
        for other in [
            "testguest: spin: 2 cpus up",
            "testguest: spin cpu 0: 5 acquisitions, spun 26% of its time, longest spin 3 us",
            "testguest: spin: x acquisitions in 1500 ms, spun 390 per mille, longest spin 4 us",
        ] {
            assert_eq!(SpinSummary::parse(other), None, "{other}");
        }
    }

    #[test]
    fn time_away_is_not_spinning() {
        // The lock is held; the clock steps one cycle per reading, but jumps 1000 cycles
        // (the CPU was descheduled) at the 10th reading, and the holder lets go at the
        // 20th. Spun: the stretches before and after the jump, not the jump.
        let lock = AtomicBool::new(true);
        let mut reads = 0u64;
        let mut clock = 0u64;
        let figures = contend(
            &lock,
            || {
                reads += 1;
                clock += if reads == 10 { 1000 } else { 1 };
                if reads == 20 {
                    lock.store(false, Ordering::Release);
                }
                clock
            },
            0,
            2,
            0,
            0,
            100,
        );
        assert_eq!(figures.acquisitions, 1, "{figures:?}");
        // From the first reading (1) to the last before the jump (9), then from the jump
        // (1009) to the acquisition at the 21st reading (1020).
        assert_eq!(figures.spin_cycles, 8 + 11, "{figures:?}");
        assert_eq!(figures.longest_spin, 11, "{figures:?}");
        assert!(
            figures.run_cycles < 100,
            "time away is left out: {figures:?}"
        );
        // Without a gap the whole wait is a spin.
        let lock = AtomicBool::new(true);
        let (mut reads, mut clock) = (0u64, 0u64);
        let figures = contend(
            &lock,
            || {
                reads += 1;
                clock += if reads == 10 { 1000 } else { 1 };
                if reads == 20 {
                    lock.store(false, Ordering::Release);
                }
                clock
            },
            0,
            2,
            0,
            0,
            u64::MAX,
        );
        assert_eq!(figures.longest_spin, 1019, "{figures:?}");
    }

    /// Nanoseconds since `base`: the host's stand-in for the TSC.
    fn nanos(base: std::time::Instant) -> u64 {
        base.elapsed().as_nanos() as u64
    }

    #[test]
    fn contend_times_a_spin_on_a_held_lock() {
        use std::sync::atomic::AtomicBool as Flag;
        let base = std::time::Instant::now();
        let lock = AtomicBool::new(true);
        let attempting = Flag::new(false);
        let figures = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let start = nanos(base);
                let clock = || {
                    attempting.store(true, Ordering::Release);
                    nanos(base)
                };
                contend(
                    &lock,
                    clock,
                    start,
                    start + 50_000_000,
                    1000,
                    1000,
                    u64::MAX,
                )
            });
            // Released 20 ms after the waiter first read the clock, just before its first
            // attempt: that wait is its first (and longest) spin.
            while !attempting.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            lock.store(false, Ordering::Release);
            waiter.join().unwrap()
        });
        assert!(figures.acquisitions >= 1, "{figures:?}");
        assert!(figures.longest_spin >= 20_000_000, "{figures:?}");
        assert!(figures.spin_cycles >= figures.longest_spin, "{figures:?}");
        assert!(figures.run_cycles >= 50_000_000, "{figures:?}");
        assert!(figures.spin_cycles < figures.run_cycles, "{figures:?}");
        assert!(!lock.load(Ordering::Relaxed));
    }

    #[test]
    fn contending_threads_hold_the_lock_one_at_a_time() {
        // Four threads for 20 ms, each holding 100 us and working 2 us between holds.
        // Holds never overlap, so all of them together fit in the longest run; without
        // the lock each thread would hold for nearly all of its run (however the host
        // shares its CPUs out: a thread preempted while holding still holds), four times
        // the run between them.
        const HOLD: u64 = 100_000;
        const WORK: u64 = 2_000;
        let base = std::time::Instant::now();
        let lock = AtomicBool::new(false);
        let start = nanos(base) + 2_000_000;
        let end = start + 20_000_000;
        let all: Vec<SpinFigures> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| contend(&lock, || nanos(base), start, end, HOLD, WORK, u64::MAX))
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let total = SpinFigures::total(&all);
        let longest_run = all.iter().map(|f| f.run_cycles).max().unwrap();
        assert!(total.acquisitions >= 1, "{all:?}");
        assert!(total.acquisitions * HOLD <= longest_run, "{all:?}");
        for figures in &all {
            assert!(figures.run_cycles >= end - start, "{figures:?}");
            assert!(figures.spin_cycles <= figures.run_cycles, "{figures:?}");
            assert!(figures.longest_spin <= figures.spin_cycles, "{figures:?}");
        }
        assert!(!lock.load(Ordering::Relaxed));
    }

    #[test]
    fn trampoline_page_must_be_free_ram() {
        let usable = [(0, 0x9fc00), (0x10_0000, 0x800_0000)];
        let image = (0x10_0000, 0x14_0000);
        assert!(range_is_free(&usable, &[image], 1 << 32, 0x8000, 0x9000));
        // Page 0, the image, the hole below 1 MiB and a range spanning two pieces are not.
        assert!(!range_is_free(&usable, &[image], 1 << 32, 0, 0x1000));
        assert!(!range_is_free(
            &usable,
            &[image],
            1 << 32,
            0x10_0000,
            0x10_1000
        ));
        assert!(!range_is_free(&usable, &[image], 1 << 32, 0x9f000, 0xa0000));
        assert!(!range_is_free(
            &usable,
            &[(0x8800, 0x8900)],
            1 << 32,
            0x8000,
            0x9000
        ));
        assert!(!range_is_free(&[], &[], 1 << 32, 0x8000, 0x9000));
    }

    fn info_bytes(flags: u32) -> [u8; INFO_LEN] {
        let mut bytes = [0u8; INFO_LEN];
        let mut put = |offset: usize, value: u32| {
            bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes())
        };
        put(0, flags);
        put(4, 639);
        put(8, 130_048);
        put(16, 0x9000);
        put(44, 48);
        put(48, 0x9100);
        bytes
    }

    #[test]
    fn info_fields_are_read_only_when_flagged() {
        let all = parse_info(&info_bytes(INFO_MEMORY | INFO_CMDLINE | INFO_MMAP));
        assert_eq!(all.memory_kib, Some((639, 130_048)));
        assert_eq!(all.cmdline, Some(0x9000));
        assert_eq!(all.mmap, Some((0x9100, 48)));
        let none = parse_info(&info_bytes(0));
        assert_eq!(
            (none.memory_kib, none.cmdline, none.mmap),
            (None, None, None)
        );
    }

    fn mmap_entry(size: u32, base: u64, len: u64, kind: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend(size.to_le_bytes());
        bytes.extend(base.to_le_bytes());
        bytes.extend(len.to_le_bytes());
        bytes.extend(kind.to_le_bytes());
        bytes.resize(4 + size as usize, 0xee);
        bytes
    }

    #[test]
    fn mmap_entries_follow_each_size_and_stop_at_truncation() {
        let mut map = mmap_entry(20, 0, 0x9fc00, 1);
        map.extend(mmap_entry(24, 0x10_0000, 0x7ee_0000, 1)); // larger entry: skipped past
        map.extend(mmap_entry(20, 0xfffc_0000, 0x4_0000, 2));
        map.extend(&mmap_entry(20, 0x1_0000_0000, 0x1000, 1)[..10]); // truncated
        let entries: Vec<Region> = mmap_entries(&map).collect();
        assert_eq!(
            entries,
            [
                Region {
                    base: 0,
                    len: 0x9fc00,
                    kind: 1
                },
                Region {
                    base: 0x10_0000,
                    len: 0x7ee_0000,
                    kind: 1
                },
                Region {
                    base: 0xfffc_0000,
                    len: 0x4_0000,
                    kind: 2
                },
            ]
        );
        assert_eq!(entries[1].end(), 0x7fe_0000);
        // A size too small for the fields ends the map instead of looping or misreading.
        assert_eq!(mmap_entries(&mmap_entry(4, 0, 0, 0)).count(), 0);
    }

    fn free(usable: &[(u64, u64)], reserved: &[(u64, u64)], limit: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for_each_free(usable, reserved, limit, |s, e| out.push((s, e)));
        out
    }

    #[test]
    fn free_ranges_skip_page_zero_partial_pages_reserved_ranges_and_the_limit() {
        let image = (0x10_0000, 0x12_3456);
        assert_eq!(
            free(&[(0, 0x9fc00), (0x10_0000, 0x800_0000)], &[image], u64::MAX),
            [(0x1000, 0x9f000), (0x12_4000, 0x800_0000)]
        );
        // A reserved range in the middle splits a region; two out of order still work.
        assert_eq!(
            free(
                &[(0x1000, 0x20_0000)],
                &[(0x18_0000, 0x18_1000), (0x10_0800, 0x10_2000)],
                u64::MAX
            ),
            [
                (0x1000, 0x10_0000),
                (0x10_2000, 0x18_0000),
                (0x18_1000, 0x20_0000)
            ]
        );
        // Clipped at the limit; nothing left of a region wholly reserved or above it.
        assert_eq!(
            free(&[(0x1000, 0x2_0000_0000)], &[], 0x1_0000_0000),
            [(0x1000, 0x1_0000_0000)]
        );
        assert!(
            free(
                &[(0x10_0000, 0x11_0000)],
                &[(0x0f_0000, 0x12_0000)],
                u64::MAX
            )
            .is_empty()
        );
        assert!(free(&[(0x2_0000_0000, 0x3_0000_0000)], &[], 0x1_0000_0000).is_empty());
    }

    #[test]
    fn pattern_differs_per_word_and_page() {
        assert_ne!(pattern(0x1000), pattern(0x2000));
        assert_ne!(pattern(0x1000), pattern(0x1008));
        assert_ne!(pattern(0x1000), 0x1000);
    }

    #[test]
    fn cmos_seconds_validity_follows_the_mode() {
        assert!(cmos_seconds_valid(0x59, false));
        assert!(!cmos_seconds_valid(0x5a, false));
        assert!(!cmos_seconds_valid(0x60, false));
        assert!(cmos_seconds_valid(59, true));
        assert!(!cmos_seconds_valid(60, true));
    }

    #[test]
    fn tsc_khz_from_pit_ticks() {
        // 20 ticks of count 1193 at 1.193182 MHz is 19.9969 ms: 39 993 900.4 cycles at 2 GHz.
        assert_eq!(tsc_khz(39_993_901, 20, 1193), 2_000_000);
        assert_eq!(tsc_khz(123, 0, 1193), 0);
    }

    #[test]
    fn markers_carry_their_number_and_nothing_else_matches() {
        let head = marker_head();
        let one = marker(1);
        let two = marker(2);
        assert_ne!(one, two);
        assert_eq!(marker_owner(head, &one), Some(1));
        assert_eq!(marker_owner(head, &two), Some(2));
        assert_eq!(
            marker_owner(head, &marker(u64::from(u32::MAX))),
            Some(u64::from(u32::MAX))
        );
        for i in 0..MARKER_LEN {
            let mut damaged = one;
            damaged[i] ^= 0x40;
            assert_eq!(marker_owner(head, &damaged), None, "byte {i} damaged");
        }
        assert_eq!(marker_owner(head, &[0; MARKER_LEN]), None);
        // Only the first word is shared between guests: a scan compares it first.
        assert_eq!(one[..8], two[..8]);
        assert!((2..8).all(|w| one[w * 8..w * 8 + 8] != two[w * 8..w * 8 + 8]));
    }
}
