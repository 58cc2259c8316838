//! The hostile test world's plan: which system calls to make, with which arguments, and how
//! to count what comes back.
//!
//! The world makes two passes. The *sweep* calls every system-call number (all valid ones
//! but `exit`, and a few invalid ones) on every capability slot `0..=300` with arguments
//! that are all wrong in some way (kernel addresses, non-canonical addresses, huge
//! lengths). The *random* pass draws numbers and arguments from a deterministic PRNG,
//! mixing plausible values with hostile ones. The kernel must answer every call with a
//! success or an error code; a crash, a hang or an unknown code is a kernel bug.
//!
//! A few calls would only hurt the test itself, never the kernel, so the plan avoids them:
//! `exit`; deleting, revoking or unmapping the capabilities the world was started with
//! (it needs them to report); blocking receives on capabilities it holds (they could wait
//! forever); and logging real memory through its own `log` capability (garbage on the
//! console). Everything here is plain logic, tested on the host.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

use esker_rt::abi::{CAP_SLOTS, Error, Syscall, layout};

/// Highest capability slot the sweep tries (beyond the table's 256).
pub const MAX_SLOT: u32 = 300;
/// Calls in the random pass.
pub const RANDOM_CALLS: u32 = 5000;
/// Invalid system-call numbers the sweep tries.
pub const INVALID_NUMBERS: [u64; 7] = {
    // The first three numbers past the last system call, then far-away ones.
    let first = Syscall::ALL.len() as u64;
    [first, first + 1, first + 2, 64, 255, 1 << 32, u64::MAX]
};
/// Most capabilities of the start info the plan protects.
pub const MAX_HELD: usize = 32;

/// Addresses that are never mapped in a world: kernel half, non-canonical, the low pages.
pub const KERNEL_ADDRESSES: [u64; 4] = [
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0xffff_ff00_0000_0000,
    u64::MAX - 7,
];
/// Non-canonical addresses (bits 48..63 not copies of bit 47).
pub const NON_CANONICAL: [u64; 3] = [
    0x0000_8000_0000_0000,
    0x1234_5678_9abc_def0,
    0xfff0_0000_0000_0000,
];
/// Lengths no kernel buffer accepts.
pub const HUGE_LENGTHS: [u64; 4] = [u64::MAX, 1 << 63, (1 << 63) | 0xffff_ffff, 1 << 40];

/// A deterministic PRNG (SplitMix64): same seed, same calls.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed that differs per world name (FNV-1a), so two hostile worlds differ.
    pub fn seed_for(world_name: &str) -> u64 {
        world_name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (> 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// One element of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One system call to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// `rax`.
    pub number: u64,
    /// `rdi, rsi, rdx, r10, r8, r9`.
    pub args: [u64; 6],
}

impl Call {
    /// The slot argument of a call that names a capability, in the register the ABI uses.
    fn slot_arg(&self) -> Option<u64> {
        match Syscall::from_number(self.number)? {
            Syscall::Log => Some(self.args[2]),
            Syscall::Reply | Syscall::Yield | Syscall::Exit | Syscall::KernelInfo => None,
            _ => Some(self.args[0]),
        }
    }
}

/// What the world holds, so the plan can stay clear of hurting itself.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    held: heapless::Vec<u32, MAX_HELD>,
    log_slot: Option<u32>,
}

impl Plan {
    /// A plan for a world holding `held` (from its start info) with `log_slot` its `log`.
    pub fn new(held: impl IntoIterator<Item = u32>, log_slot: Option<u32>) -> Self {
        let mut plan = Self {
            held: heapless::Vec::new(),
            log_slot,
        };
        for slot in held {
            let _ = plan.held.push(slot);
        }
        plan
    }

    /// Whether a slot argument names (in its low 32 bits) a capability the world holds.
    pub fn is_held(&self, slot: u64) -> bool {
        self.held.contains(&(slot as u32))
    }

    /// Whether the world may make `call` without hurting itself (see the crate docs).
    pub fn allows(&self, call: &Call) -> bool {
        let Some(syscall) = Syscall::from_number(call.number) else {
            return true;
        };
        let on_held = call.slot_arg().is_some_and(|slot| self.is_held(slot));
        match syscall {
            Syscall::Exit => false,
            Syscall::CapDelete | Syscall::CapRevoke | Syscall::MemoryUnmap => !on_held,
            Syscall::Recv | Syscall::ReplyRecv | Syscall::Wait => !on_held,
            Syscall::Log => {
                self.log_slot.is_none_or(|log| call.args[2] as u32 != log)
                    || never_readable(call.args[0], call.args[1])
            }
            _ => true,
        }
    }
}

/// Whether `len` bytes at `ptr` surely include memory no world has mapped: the range
/// starts below the program, outside user space, or wraps.
pub fn never_readable(ptr: u64, len: u64) -> bool {
    let len = len & !esker_rt::sys::LOG_TEXT;
    len != 0
        && (!(layout::PROGRAM_BASE..layout::USER_END).contains(&ptr)
            || ptr
                .checked_add(len)
                .is_none_or(|end| end > layout::USER_END))
}

/// The sweep: every number on every slot `0..=MAX_SLOT`, with arguments that are all wrong.
pub fn sweep() -> impl Iterator<Item = Call> {
    let numbers = Syscall::ALL
        .iter()
        .map(|s| *s as u64)
        .filter(|n| *n != Syscall::Exit as u64)
        .chain(INVALID_NUMBERS);
    numbers.flat_map(|number| {
        (0..=u64::from(MAX_SLOT)).map(move |slot| Call {
            number,
            // For `log` the first two are pointer and length: a tiny address and a kernel
            // address as length; for everything else, slot and hostile values.
            args: [
                slot,
                KERNEL_ADDRESSES[0],
                slot,
                NON_CANONICAL[0],
                HUGE_LENGTHS[0],
                0,
            ],
        })
    })
}

/// One argument: plausible or hostile.
pub fn random_arg(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0 => 0,
        1 => rng.below(16),
        2 | 3 => rng.below(u64::from(MAX_SLOT) + 1),
        4 => rng.pick(&KERNEL_ADDRESSES) - rng.below(0x1000),
        5 => rng.pick(&NON_CANONICAL),
        6 => rng.pick(&HUGE_LENGTHS),
        7 => {
            rng.pick(&[
                layout::PROGRAM_BASE,
                layout::IPC_BUFFER,
                layout::STACK_TOP - 8,
                layout::MAP_BASE,
            ]) + rng.below(0x2000)
        }
        _ => rng.next_u64(),
    }
}

/// A random call the plan allows.
pub fn random_call(rng: &mut Rng, plan: &Plan) -> Call {
    loop {
        let number = if rng.below(10) == 0 {
            rng.pick(&INVALID_NUMBERS) ^ rng.below(4)
        } else {
            rng.below(Syscall::ALL.len() as u64)
        };
        let mut args = [0u64; 6];
        for arg in &mut args {
            *arg = random_arg(rng);
        }
        // The slot argument is a real slot most of the time.
        if rng.below(4) != 0 {
            let slot_register = if number == Syscall::Log as u64 { 2 } else { 0 };
            args[slot_register] = rng.below(u64::from(MAX_SLOT) + 1);
        }
        let call = Call { number, args };
        if plan.allows(&call) {
            return call;
        }
    }
}

/// Results by code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned 0.
    pub successes: u64,
    /// Calls that returned each error code (index = code; 0 unused).
    pub by_error: [u64; Error::ALL.len() + 1],
    /// Calls that returned a code the ABI does not define (a kernel bug).
    pub unknown: u64,
    /// Invalid numbers not refused with `InvalidSyscall` (a kernel bug).
    pub invalid_not_refused: u64,
}

impl Tally {
    /// Counts the `rax` of `call`.
    pub fn record(&mut self, call: &Call, rax: u64) {
        self.calls += 1;
        match rax {
            0 => self.successes += 1,
            code if code <= Error::ALL.len() as u64 => self.by_error[code as usize] += 1,
            _ => self.unknown += 1,
        }
        if Syscall::from_number(call.number).is_none() && rax != Error::InvalidSyscall as u64 {
            self.invalid_not_refused += 1;
        }
    }

    /// Calls that returned an error (known or not).
    pub fn errors(&self) -> u64 {
        self.by_error.iter().sum::<u64>() + self.unknown
    }

    /// `(error, count)` for every error seen.
    pub fn errors_seen(&self) -> impl Iterator<Item = (Error, u64)> + '_ {
        Error::ALL
            .iter()
            .map(|e| (*e, self.by_error[*e as usize]))
            .filter(|(_, n)| *n > 0)
    }

    /// Whether the kernel behaved: every answer a known code, invalid numbers refused.
    pub fn kernel_behaved(&self) -> bool {
        self.unknown == 0 && self.invalid_not_refused == 0
    }
}

const _: () = assert!(
    MAX_SLOT as usize > CAP_SLOTS,
    "the sweep goes past the end of the table"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_ne, proptest};

    fn plan() -> Plan {
        Plan::new([0, 3, 4], Some(0))
    }

    #[test]
    fn the_sweep_covers_every_number_and_slot_but_exit() {
        let calls: std::vec::Vec<Call> = sweep().collect();
        assert_eq!(
            calls.len(),
            (Syscall::ALL.len() - 1 + INVALID_NUMBERS.len()) * (MAX_SLOT as usize + 1)
        );
        for syscall in Syscall::ALL {
            let count = calls.iter().filter(|c| c.number == syscall as u64).count();
            assert_eq!(
                count,
                if syscall == Syscall::Exit { 0 } else { 301 },
                "{syscall:?}"
            );
        }
        assert!(calls.iter().any(|c| c.args[0] == 300));
    }

    #[test]
    fn the_plan_protects_held_capabilities_only() {
        let plan = plan();
        let call = |number: Syscall, args: [u64; 6]| Call {
            number: number as u64,
            args,
        };
        assert!(!plan.allows(&call(Syscall::Exit, [0; 6])));
        assert!(!plan.allows(&call(Syscall::CapDelete, [3, 0, 0, 0, 0, 0])));
        assert!(
            !plan.allows(&call(Syscall::CapRevoke, [(1 << 32) | 4, 0, 0, 0, 0, 0])),
            "low 32 bits count"
        );
        assert!(plan.allows(&call(Syscall::CapDelete, [5, 0, 0, 0, 0, 0])));
        assert!(!plan.allows(&call(Syscall::Recv, [4, 0, 0, 0, 0, 0])));
        assert!(
            plan.allows(&call(Syscall::Call, [4, 0, 0, 0, 0, 0])),
            "calls on held endpoints are part of the test"
        );
        assert!(plan.allows(&call(Syscall::Wait, [7, 0, 0, 0, 0, 0])));
        // Logging through the real log capability only from unreadable memory.
        assert!(!plan.allows(&call(Syscall::Log, [layout::PROGRAM_BASE, 16, 0, 0, 0, 0])));
        assert!(plan.allows(&call(Syscall::Log, [KERNEL_ADDRESSES[1], 16, 0, 0, 0, 0])));
        assert!(plan.allows(&call(
            Syscall::Log,
            [layout::PROGRAM_BASE, u64::MAX, 0, 0, 0, 0]
        )));
        assert!(
            plan.allows(&call(Syscall::Log, [layout::PROGRAM_BASE, 16, 9, 0, 0, 0])),
            "other slots"
        );
        assert!(plan.allows(&Call {
            number: 999,
            args: [0; 6]
        }));
    }

    #[test]
    fn every_sweep_call_is_allowed_for_a_world_holding_nothing() {
        let plan = Plan::new([], None);
        assert!(sweep().all(|call| plan.allows(&call)));
    }

    #[test]
    fn the_rng_is_deterministic_and_the_random_pass_is_varied() {
        let plan = plan();
        let mut a = Rng::new(Rng::seed_for("hostile"));
        let mut b = Rng::new(Rng::seed_for("hostile"));
        let calls: std::vec::Vec<Call> = (0..RANDOM_CALLS)
            .map(|_| random_call(&mut a, &plan))
            .collect();
        assert!(calls.iter().all(|c| *c == random_call(&mut b, &plan)));
        assert_ne!(Rng::seed_for("hostile"), Rng::seed_for("hostile2"));
        let has = |f: &dyn Fn(&Call) -> bool| calls.iter().any(f);
        for syscall in Syscall::ALL.iter().filter(|s| **s != Syscall::Exit) {
            assert!(has(&|c| c.number == *syscall as u64), "{syscall:?}");
        }
        assert!(has(&|c| Syscall::from_number(c.number).is_none()));
        assert!(has(&|c| c.args.iter().any(|a| KERNEL_ADDRESSES
            .iter()
            .any(|k| a.abs_diff(*k) < 0x1000))));
        assert!(has(&|c| c.args.iter().any(|a| NON_CANONICAL.contains(a))));
        assert!(has(&|c| c.args.iter().any(|a| HUGE_LENGTHS.contains(a))));
        assert!(has(&|c| c.args[0] == u64::from(MAX_SLOT)));
        assert!(calls.iter().all(|c| plan.allows(c)));
    }

    #[test]
    fn the_tally_counts_by_code() {
        let mut tally = Tally::default();
        let valid = Call {
            number: Syscall::Yield as u64,
            args: [0; 6],
        };
        let invalid = Call {
            number: 77,
            args: [0; 6],
        };
        tally.record(&valid, 0);
        tally.record(&valid, Error::InvalidCapability as u64);
        tally.record(&invalid, Error::InvalidSyscall as u64);
        assert!(tally.kernel_behaved());
        tally.record(&invalid, 0);
        tally.record(&valid, 99);
        assert_eq!(
            (tally.calls, tally.successes, tally.errors(), tally.unknown),
            (5, 2, 3, 1)
        );
        assert_eq!(tally.invalid_not_refused, 1);
        assert!(!tally.kernel_behaved());
        let seen: std::vec::Vec<_> = tally.errors_seen().collect();
        assert_eq!(
            seen,
            [(Error::InvalidSyscall, 1), (Error::InvalidCapability, 1)]
        );
    }

    proptest! {
        #[test]
        fn random_calls_never_hurt_the_world(seed in any::<u64>(), held in proptest::collection::vec(0u32..300, 0..8)) {
            let log = held.first().copied();
            let plan = Plan::new(held, log);
            let mut rng = Rng::new(seed);
            for _ in 0..200 {
                let call = random_call(&mut rng, &plan);
                prop_assert!(plan.allows(&call));
                prop_assert_ne!(call.number, Syscall::Exit as u64);
            }
        }
    }
}
