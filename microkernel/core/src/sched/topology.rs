//! Which logical CPUs share a core, from what the CPUs report: each CPU's APIC id and the
//! number of low APIC-id bits that select the thread within a core (the *SMT shift*,
//! from CPUID). Two CPUs are threads of one core when their APIC ids agree above those
//! bits.
//!
//! The scheduler knows one hyper-threaded layout, [`Topology::SmtPairs`]: logical CPUs
//! `2k` and `2k + 1` (in the kernel's numbering) are the two threads of core `k`, and
//! every core has exactly two. [`detect`] returns it only when the CPUs really are laid
//! out that way; any other layout is scheduled [`Topology::Flat`] (every CPU a core of its
//! own), and [`Detected`] says why, so the kernel can log it.

use core::fmt;

use super::Topology;

/// What CPUID says about the thread bits of the APIC id (see [`smt_shift`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmtShift {
    /// Low APIC-id bits that select the thread within a core (0: one thread per core).
    pub bits: u32,
    /// Where it came from.
    pub source: ShiftSource,
}

/// The CPUID leaf an [`SmtShift`] was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftSource {
    /// Leaf 0xB (extended topology), subleaf 0 at the SMT level: EAX\[4:0\].
    Leaf0B,
    /// AMD leaf 0x8000_001E (TOPOEXT): EBX\[15:8\] is threads per core − 1.
    AmdTopoext,
    /// Neither is there: no SMT is assumed.
    None,
}

impl ShiftSource {
    /// A short name for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leaf0B => "CPUID 0xB",
            Self::AmdTopoext => "CPUID 0x8000001E",
            Self::None => "no CPUID topology leaf",
        }
    }
}

/// The level type of leaf 0xB's SMT level (ECX\[15:8\]).
const LEVEL_TYPE_SMT: u32 = 1;

/// The SMT shift from the boot CPU's CPUID: `leaf_0b` is `(EAX, ECX)` of leaf 0xB subleaf
/// 0 when the maximum basic leaf is at least 0xB, `amd_topoext_ebx` is EBX of leaf
/// 0x8000_001E when TOPOEXT (CPUID 0x8000_0001 ECX\[22\]) is set. Leaf 0xB counts when its
/// subleaf 0 is the SMT level; otherwise the AMD leaf; otherwise there is no SMT.
pub fn smt_shift(leaf_0b: Option<(u32, u32)>, amd_topoext_ebx: Option<u32>) -> SmtShift {
    if let Some((eax, ecx)) = leaf_0b
        && (ecx >> 8) & 0xff == LEVEL_TYPE_SMT
    {
        return SmtShift {
            bits: eax & 0x1f,
            source: ShiftSource::Leaf0B,
        };
    }
    if let Some(ebx) = amd_topoext_ebx {
        let threads = ((ebx >> 8) & 0xff) + 1;
        return SmtShift {
            // Bits needed to number `threads` threads: ceil(log2(threads)).
            bits: u32::BITS - (threads - 1).leading_zeros(),
            source: ShiftSource::AmdTopoext,
        };
    }
    SmtShift {
        bits: 0,
        source: ShiftSource::None,
    }
}

/// How the CPUs share cores, as far as the scheduler is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Every core has one thread.
    NoSmt,
    /// Every core has two threads, numbered `2k` and `2k + 1`: [`Topology::SmtPairs`].
    Pairs,
    /// Every core has two threads, but not numbered `2k` and `2k + 1`.
    SiblingsApart,
    /// Some core has more than two threads.
    MoreThanTwo,
    /// Some cores have two threads and others one (a sibling is offline or left out).
    Uneven,
}

/// What [`detect`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    /// What the scheduler is to use.
    pub topology: Topology,
    /// How the CPUs share cores.
    pub layout: Layout,
    /// Logical CPUs.
    pub cpus: usize,
    /// Distinct cores among them.
    pub cores: usize,
    /// The most threads one core has.
    pub max_threads: usize,
}

impl Detected {
    /// Why SMT siblings that exist are not scheduled as pairs (`None` if there are none,
    /// or if they are).
    pub fn reason(&self) -> Option<&'static str> {
        match self.layout {
            Layout::NoSmt | Layout::Pairs => None,
            Layout::SiblingsApart => {
                Some("sibling threads are not numbered 2k and 2k+1; scheduled as flat")
            }
            Layout::MoreThanTwo => {
                Some("more than two threads per core are not modelled; scheduled as flat")
            }
            Layout::Uneven => {
                Some("some cores have one thread online and others two; scheduled as flat")
            }
        }
    }
}

/// The log line's text: `2 cores x 2 threads (SMT pairs)`, `4 cores, no SMT`, or the
/// CPUs, cores and the [reason](Detected::reason) siblings are scheduled flat.
impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layout {
            Layout::NoSmt => write!(f, "{} cores, no SMT", self.cores),
            Layout::Pairs => write!(f, "{} cores x 2 threads (SMT pairs)", self.cores),
            _ => write!(
                f,
                "{} CPUs on {} cores, up to {} threads per core: {}",
                self.cpus,
                self.cores,
                self.max_threads,
                self.reason().unwrap_or("")
            ),
        }
    }
}

/// Decides the topology of the CPUs whose APIC ids `apic_ids` lists in the kernel's order
/// (entry `i` is logical CPU `i`), with `smt_shift` low APIC-id bits selecting the thread
/// within a core (see [`smt_shift`]). [`Topology::SmtPairs`] only when CPUs `2k` and
/// `2k + 1` share a core and every core has exactly two threads; otherwise
/// [`Topology::Flat`]. Quadratic in the CPUs (the kernel has a few dozen at most); never
/// allocates.
pub fn detect(apic_ids: &[u32], smt_shift: u32) -> Detected {
    let core = |id: u32| id.checked_shr(smt_shift).unwrap_or(0);
    let threads_of = |i: usize| {
        apic_ids
            .iter()
            .filter(|&&id| core(id) == core(apic_ids[i]))
            .count()
    };
    let mut cores = 0;
    let mut min_threads = usize::MAX;
    let mut max_threads = 0;
    for (i, &id) in apic_ids.iter().enumerate() {
        let threads = threads_of(i);
        min_threads = min_threads.min(threads);
        max_threads = max_threads.max(threads);
        // Count each core once, at its first CPU.
        if !apic_ids[..i].iter().any(|&other| core(other) == core(id)) {
            cores += 1;
        }
    }
    let adjacent = apic_ids
        .chunks(2)
        .all(|pair| matches!(pair, [a, b] if core(*a) == core(*b)));
    let layout = if max_threads <= 1 {
        Layout::NoSmt
    } else if max_threads > 2 {
        Layout::MoreThanTwo
    } else if min_threads < 2 {
        Layout::Uneven
    } else if adjacent {
        Layout::Pairs
    } else {
        Layout::SiblingsApart
    };
    Detected {
        topology: if layout == Layout::Pairs {
            Topology::SmtPairs
        } else {
            Topology::Flat
        },
        layout,
        cpus: apic_ids.len(),
        cores,
        max_threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn one_thread_per_core_is_flat() {
        let found = detect(&[0, 1, 2, 3], 0);
        assert_eq!(found.topology, Topology::Flat);
        assert_eq!(found.layout, Layout::NoSmt);
        assert_eq!((found.cpus, found.cores, found.max_threads), (4, 4, 1));
        assert_eq!(found.reason(), None);
        assert_eq!(format!("{found}"), "4 cores, no SMT");
    }

    #[test]
    fn a_shift_with_sparse_ids_is_still_no_smt() {
        // One thread per core, but the ids leave room for two (a CPU with SMT off).
        let found = detect(&[0, 2, 4, 6], 1);
        assert_eq!(found.topology, Topology::Flat);
        assert_eq!(found.layout, Layout::NoSmt);
        assert_eq!(found.cores, 4);
    }

    #[test]
    fn two_threads_per_core_numbered_in_pairs_are_smt_pairs() {
        let found = detect(&[0, 1, 2, 3], 1);
        assert_eq!(found.topology, Topology::SmtPairs);
        assert_eq!(found.layout, Layout::Pairs);
        assert_eq!((found.cpus, found.cores, found.max_threads), (4, 2, 2));
        assert_eq!(found.reason(), None);
        assert_eq!(format!("{found}"), "2 cores x 2 threads (SMT pairs)");
        // Pairs in any order, and cores whose ids are not consecutive.
        let found = detect(&[1, 0, 8, 9, 5, 4], 1);
        assert_eq!(found.topology, Topology::SmtPairs);
        assert_eq!(found.cores, 3);
    }

    #[test]
    fn siblings_not_adjacent_in_kernel_order_are_flat() {
        // The MADT lists first threads first: CPUs 0 and 2 share core 0.
        let found = detect(&[0, 2, 1, 3], 1);
        assert_eq!(found.topology, Topology::Flat);
        assert_eq!(found.layout, Layout::SiblingsApart);
        assert_eq!((found.cores, found.max_threads), (2, 2));
        assert!(found.reason().is_some_and(|r| r.contains("2k and 2k+1")));
        assert_eq!(
            format!("{found}"),
            "4 CPUs on 2 cores, up to 2 threads per core: sibling threads are not numbered \
             2k and 2k+1; scheduled as flat"
        );
    }

    #[test]
    fn four_threads_per_core_are_flat() {
        let found = detect(&[0, 1, 2, 3, 4, 5, 6, 7], 2);
        assert_eq!(found.topology, Topology::Flat);
        assert_eq!(found.layout, Layout::MoreThanTwo);
        assert_eq!((found.cores, found.max_threads), (2, 4));
        // Even though CPUs 2k and 2k+1 do share a core.
        assert!(found.reason().is_some());
    }

    #[test]
    fn an_odd_count_leaves_a_core_with_one_thread_so_flat() {
        let found = detect(&[0, 1, 2], 1);
        assert_eq!(found.topology, Topology::Flat);
        assert_eq!(found.layout, Layout::Uneven);
        assert_eq!((found.cpus, found.cores, found.max_threads), (3, 2, 2));
        // Even count, but one core's sibling is missing and another core is alone.
        let found = detect(&[0, 1, 2, 4], 1);
        assert_eq!(found.layout, Layout::Uneven);
        assert_eq!(found.topology, Topology::Flat);
    }

    #[test]
    fn shift_zero_never_pairs() {
        // Even ids that would pair up under a shift of 1.
        let found = detect(&[0, 1, 2, 3], 0);
        assert_eq!(found.topology, Topology::Flat);
        assert_eq!(found.layout, Layout::NoSmt);
    }

    #[test]
    fn degenerate_inputs() {
        let found = detect(&[], 1);
        assert_eq!(
            (found.topology, found.layout, found.cores),
            (Topology::Flat, Layout::NoSmt, 0)
        );
        let found = detect(&[7], 1);
        assert_eq!(
            (found.topology, found.layout, found.cores),
            (Topology::Flat, Layout::NoSmt, 1)
        );
        // A shift past the id's width puts every CPU on one core.
        let found = detect(&[0, 1], 40);
        assert_eq!((found.topology, found.cores), (Topology::SmtPairs, 1));
    }

    #[test]
    fn shift_from_leaf_0b_at_the_smt_level() {
        // QEMU with threads=2: EAX = 1, ECX = level type 1 (SMT) << 8 | subleaf 0.
        assert_eq!(
            smt_shift(Some((1, 0x100)), None),
            SmtShift {
                bits: 1,
                source: ShiftSource::Leaf0B
            }
        );
        // Only EAX[4:0] counts.
        assert_eq!(smt_shift(Some((0xffff_ffe2, 0x100)), None).bits, 2);
        // One thread per core: shift 0, still from leaf 0xB (and preferred to the AMD leaf).
        assert_eq!(
            smt_shift(Some((0, 0x100)), Some(0x100)),
            SmtShift {
                bits: 0,
                source: ShiftSource::Leaf0B
            }
        );
    }

    #[test]
    fn leaf_0b_not_at_the_smt_level_falls_back() {
        // Subleaf 0 invalid (level type 0): the AMD leaf, 2 threads per core.
        assert_eq!(
            smt_shift(Some((1, 0)), Some(0x0000_0100)),
            SmtShift {
                bits: 1,
                source: ShiftSource::AmdTopoext
            }
        );
        // Level type 2 (core) at subleaf 0 is not the SMT level.
        assert_eq!(
            smt_shift(Some((4, 0x200)), None),
            SmtShift {
                bits: 0,
                source: ShiftSource::None
            }
        );
    }

    #[test]
    fn shift_from_the_amd_leaf() {
        let bits = |threads_minus_one: u32| smt_shift(None, Some(threads_minus_one << 8)).bits;
        assert_eq!(bits(0), 0);
        assert_eq!(bits(1), 1);
        assert_eq!(bits(2), 2);
        assert_eq!(bits(3), 2);
        assert_eq!(bits(4), 3);
        // Other EBX bits (the core id in [7:0]) do not count.
        assert_eq!(smt_shift(None, Some(0x0000_01ff)).bits, 1);
        assert_eq!(smt_shift(None, None).source, ShiftSource::None);
    }
}
