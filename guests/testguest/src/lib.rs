//! The test guest's logic that is not hardware: what its command line asks for, how the
//! Multiboot v1 boot information is laid out, which pages are free to scribble on, the
//! isolation marker, the memory pattern and the exit codes. The bare-metal program
//! (`src/main.rs`) does the port I/O and memory accesses; everything here is tested on
//! the host.
#![cfg_attr(not(test), no_std)]

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
}

impl core::fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CmdlineError::UnknownWord(word) => write!(
                f,
                "unknown word \"{word}\" (expected cpuid, ports, mmio, memory, timer, \
                 isolation=<n>, triple-fault, garbage or spin)"
            ),
            CmdlineError::BadIsolation(word) => {
                write!(f, "\"{word}\": isolation=<n> needs a decimal number")
            }
            CmdlineError::SecondAction(word) => {
                write!(f, "\"{word}\": only one action may be given")
            }
        }
    }
}

/// Parses the Multiboot command line: space-separated check names and at most one action
/// (`isolation=<n>`, `triple-fault`, `garbage`, `spin`). Words containing `/` are the
/// kernel's path, which loaders such as QEMU and GRUB put first, and are ignored. No
/// checks and no action means every check.
pub fn parse_cmdline(line: &str) -> Result<Plan, CmdlineError<'_>> {
    let mut checks = 0;
    let mut action = None;
    for word in line.split_ascii_whitespace() {
        if word.contains('/') {
            continue;
        }
        if let Some(check) = Check::ALL.into_iter().find(|c| c.name() == word) {
            checks |= check.bit();
            continue;
        }
        let this = if let Some(number) = word.strip_prefix("isolation=") {
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
        ]);
        assert!(codes.iter().all(|&c| c != exit::PASS));
        let mut unique = codes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
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
