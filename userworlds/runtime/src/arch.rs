//! The few unprivileged x86-64 instructions worlds use directly: the time-stamp counter,
//! the hardware random-number generator, and stopping after an impossible return.

/// The time-stamp counter.
#[cfg(target_arch = "x86_64")]
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter into edx:eax; it has no memory effects and is
    // allowed in ring 3 (the kernel does not set CR4.TSD).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether the CPU has `rdrand` (CPUID.1:ECX bit 30).
#[cfg(target_arch = "x86_64")]
pub fn has_rdrand() -> bool {
    // `cpuid` is unprivileged and has no memory effects (the intrinsic is safe).
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ecx & (1 << 30) != 0
}

/// One 64-bit random number from `rdrand`, or `None` if the CPU has none or it failed
/// ten times in a row.
#[cfg(target_arch = "x86_64")]
pub fn rdrand64() -> Option<u64> {
    if !has_rdrand() {
        return None;
    }
    for _ in 0..10 {
        let mut value = 0u64;
        // SAFETY: `rdrand_step` needs the `rdrand` feature, which the CPU has (checked
        // above); it writes only `value`.
        if unsafe { rdrand_step(&mut value) } == 1 {
            return Some(value);
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "rdrand")]
fn rdrand_step(value: &mut u64) -> i32 {
    core::arch::x86_64::_rdrand64_step(value)
}

/// Stops the world with an invalid instruction (the kernel reports it and stops the
/// world). For paths that must never return, such as after `exit`.
pub fn halt_forever() -> ! {
    loop {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `ud2` raises #UD and touches nothing; the kernel stops the world.
        unsafe {
            core::arch::asm!("ud2", options(nomem, nostack));
        }
        #[cfg(not(target_arch = "x86_64"))]
        core::hint::spin_loop();
    }
}

/// Seeds for keys and PRNGs: 32 bytes from `rdrand` when the CPU has it, otherwise from
/// time-stamp-counter jitter (weak: say so in the log). Returns whether `rdrand` was used.
#[cfg(target_arch = "x86_64")]
pub fn entropy(out: &mut [u8; 32]) -> bool {
    let mut strong = true;
    for chunk in out.chunks_exact_mut(8) {
        let word = match rdrand64() {
            Some(word) => word,
            None => {
                strong = false;
                tsc_jitter_word()
            }
        };
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    strong
}

/// 64 bits from the low bits of many time-stamp-counter deltas.
#[cfg(target_arch = "x86_64")]
fn tsc_jitter_word() -> u64 {
    let mut word = 0u64;
    for _ in 0..64 {
        let start = rdtsc();
        // A little work whose duration varies with caches and interrupts.
        let mut spin = start;
        for _ in 0..(start & 0x3f) {
            spin = core::hint::black_box(spin.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15);
        }
        let delta = rdtsc().wrapping_sub(start) ^ spin;
        word = word.rotate_left(5) ^ delta;
    }
    word
}
