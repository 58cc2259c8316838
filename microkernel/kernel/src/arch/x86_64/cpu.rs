//! What this CPU can do (CPUID), and the few instructions every other module needs:
//! interrupt flag, MSRs, time-stamp counter, halting.
//!
//! Detection only reads; turning features on is done by the modules that own them
//! (paging enables SMEP/SMAP, the VM layer will enable EFER.SVME).

use core::arch::x86_64::{__cpuid_count, CpuidResult};

use esker_kernel_core::sched::topology::{self, SmtShift};

use x86_64::registers::model_specific::Msr;

/// `VM_CR`: bit 4 (SVMDIS) means firmware has disabled SVM.
const MSR_VM_CR: u32 = 0xc001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    __cpuid_count(leaf, subleaf)
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (reading a missing MSR raises #GP).
pub unsafe fn read_msr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists; reading it has no side effects on
    // memory.
    unsafe { Msr::new(msr).read() }
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must not break an invariant the kernel relies on
/// (paging, segmentation, the interrupt controller's configuration).
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { Msr::new(msr).write(value) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; CR4.TSD is never set, so it cannot fault.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether maskable interrupts are enabled (RFLAGS.IF).
pub fn interrupts_enabled() -> bool {
    x86_64::instructions::interrupts::are_enabled()
}

/// Masks interrupts on this CPU.
pub fn disable_interrupts() {
    x86_64::instructions::interrupts::disable();
}

/// Unmasks interrupts on this CPU.
pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// Waits for the next interrupt (interrupts must be enabled to wake up).
pub fn halt() {
    x86_64::instructions::hlt();
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        disable_interrupts();
        halt();
    }
}

/// AMD-V (SVM) capabilities, from CPUID 0x8000_000A and VM_CR.
#[derive(Clone, Copy, Debug)]
pub struct SvmInfo {
    /// SVM revision number.
    pub revision: u32,
    /// Number of address-space identifiers.
    pub asids: u32,
    /// Nested paging (NPT).
    pub nested_paging: bool,
    /// The CPU saves the next RIP on exits (else the monitor decodes instructions).
    pub next_rip_save: bool,
    /// Decode assists.
    pub decode_assists: bool,
    /// TLB flush by ASID.
    pub flush_by_asid: bool,
    /// VMCB clean bits.
    pub vmcb_clean: bool,
    /// Firmware has locked SVM off (VM_CR.SVMDIS).
    pub disabled_by_firmware: bool,
}

/// What the boot CPU supports, read once at start-up.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// "AuthenticAMD", "GenuineIntel", …
    pub vendor: [u8; 12],
    /// The processor brand string, NUL-padded.
    pub brand: [u8; 48],
    /// Execute-disable (NX) page bit.
    pub nx: bool,
    /// 1 GiB pages.
    pub huge_pages_1g: bool,
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention.
    pub smap: bool,
    /// Global pages.
    pub global_pages: bool,
    /// x2APIC mode.
    pub x2apic: bool,
    /// Running under a hypervisor (CPUID.1:ECX[31]).
    pub hypervisor: bool,
    /// The TSC runs at a constant rate (CPUID.8000_0007:EDX[8]).
    pub invariant_tsc: bool,
    /// Intel VMX.
    pub vmx: bool,
    /// AMD SVM, if present.
    pub svm: Option<SvmInfo>,
}

impl Features {
    /// Reads the boot CPU's features.
    pub fn detect() -> Self {
        let leaf0 = cpuid(0, 0);
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
        vendor[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
        let leaf1 = cpuid(1, 0);
        let leaf7 = if leaf0.eax >= 7 {
            cpuid(7, 0)
        } else {
            cpuid_zero()
        };
        let max_ext = cpuid(0x8000_0000, 0).eax;
        let ext = |leaf| {
            if max_ext >= leaf {
                cpuid(leaf, 0)
            } else {
                cpuid_zero()
            }
        };
        let ext1 = ext(0x8000_0001);
        let mut brand = [0u8; 48];
        if max_ext >= 0x8000_0004 {
            for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
                let r = cpuid(leaf, 0);
                for (j, reg) in [r.eax, r.ebx, r.ecx, r.edx].into_iter().enumerate() {
                    let at = i * 16 + j * 4;
                    brand[at..at + 4].copy_from_slice(&reg.to_le_bytes());
                }
            }
        }
        let svm = (ext1.ecx & (1 << 2) != 0).then(|| {
            let leaf = ext(0x8000_000a);
            // SAFETY: VM_CR exists on every CPU that reports SVM (AMD APM vol. 2, 15.30.1).
            let vm_cr = unsafe { read_msr(MSR_VM_CR) };
            SvmInfo {
                revision: leaf.eax & 0xff,
                asids: leaf.ebx,
                nested_paging: leaf.edx & (1 << 0) != 0,
                next_rip_save: leaf.edx & (1 << 3) != 0,
                vmcb_clean: leaf.edx & (1 << 5) != 0,
                flush_by_asid: leaf.edx & (1 << 6) != 0,
                decode_assists: leaf.edx & (1 << 7) != 0,
                disabled_by_firmware: vm_cr & VM_CR_SVMDIS != 0,
            }
        });
        Self {
            vendor,
            brand,
            nx: ext1.edx & (1 << 20) != 0,
            huge_pages_1g: ext1.edx & (1 << 26) != 0,
            smep: leaf7.ebx & (1 << 7) != 0,
            smap: leaf7.ebx & (1 << 20) != 0,
            global_pages: leaf1.edx & (1 << 13) != 0,
            x2apic: leaf1.ecx & (1 << 21) != 0,
            hypervisor: leaf1.ecx & (1 << 31) != 0,
            invariant_tsc: ext(0x8000_0007).edx & (1 << 8) != 0,
            vmx: leaf1.ecx & (1 << 5) != 0,
            svm,
        }
    }

    /// The vendor string.
    pub fn vendor_str(&self) -> &str {
        core::str::from_utf8(&self.vendor).unwrap_or("?")
    }

    /// The brand string without padding.
    pub fn brand_str(&self) -> &str {
        let end = self
            .brand
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.brand.len());
        core::str::from_utf8(&self.brand[..end])
            .map(str::trim)
            .unwrap_or("?")
    }
}

/// This CPU's SMT shift: how many low APIC-id bits select the thread within a core, from
/// CPUID leaf 0xB (subleaf 0, when it is the SMT level) or else AMD's leaf 0x8000_001E
/// (when TOPOEXT is set); without either, no SMT.
pub fn smt_shift() -> SmtShift {
    let leaf_0b = (cpuid(0, 0).eax >= 0xb).then(|| {
        let r = cpuid(0xb, 0);
        (r.eax, r.ecx)
    });
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let topoext = max_ext >= 0x8000_0001 && cpuid(0x8000_0001, 0).ecx & (1 << 22) != 0;
    let amd = (topoext && max_ext >= 0x8000_001e).then(|| cpuid(0x8000_001e, 0).ebx);
    topology::smt_shift(leaf_0b, amd)
}

fn cpuid_zero() -> CpuidResult {
    CpuidResult {
        eax: 0,
        ebx: 0,
        ecx: 0,
        edx: 0,
    }
}
