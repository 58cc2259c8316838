//! A fresh VMCB for a guest: the controls every Esker guest runs with, plus one of the two
//! entry states the loaders need (32-bit flat protected mode for Multiboot v1, 64-bit
//! long mode for Linux). The result passes [`super::check_vmrun_consistency`].

use super::controls::{Intercept, TlbControl, nested_control};
use super::vmcb::{ControlArea, Vmcb};
use crate::virt::vcpu::{self, DescriptorTable, GeneralRegisters, GuestRegisters};
use crate::virt::x86::vector;

/// The per-guest values of the control area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlSetup {
    /// The guest's ASID (not 0).
    pub asid: u32,
    /// The nested page table root (guest-physical to host-physical).
    pub nested_cr3: u64,
    /// Physical address of the 12 KiB I/O permission map.
    pub iopm_base_pa: u64,
    /// Physical address of the 8 KiB MSR permission map.
    pub msrpm_base_pa: u64,
    /// Added to the TSC the guest reads.
    pub tsc_offset: u64,
}

/// The instructions and events every guest exits on:
///
/// - INTR, NMI, SMI, INIT: host events belong to the host (INTR is how the timer preempts
///   a guest);
/// - VMRUN (VMRUN refuses to run without it), VMMCALL (hypercalls), VMLOAD, VMSAVE, STGI,
///   CLGI, SKINIT, INVLPGA: no nested virtualisation, the monitor injects #UD;
/// - CPUID, MSR_PROT, IOIO_PROT: the monitor's CPUID, MSR and device policy (the
///   permission maps decide which MSRs and ports actually exit);
/// - HLT: an idle guest gives up its CPU;
/// - SHUTDOWN: a triple fault stops this guest instead of resetting the machine;
/// - INVD: a guest must not discard the host's dirty cache lines;
/// - WBINVD, MONITOR, MWAIT (both kinds), RDPRU: no long stalls of a host CPU, no host
///   performance counters;
/// - XSETBV: a guest must not enable state components the host does not switch.
pub const BASELINE_INTERCEPTS: [Intercept; 24] = [
    Intercept::Intr,
    Intercept::Nmi,
    Intercept::Smi,
    Intercept::Init,
    Intercept::Vmrun,
    Intercept::Vmmcall,
    Intercept::Vmload,
    Intercept::Vmsave,
    Intercept::Stgi,
    Intercept::Clgi,
    Intercept::Skinit,
    Intercept::Invlpga,
    Intercept::Cpuid,
    Intercept::MsrProt,
    Intercept::IoioProt,
    Intercept::Hlt,
    Intercept::Shutdown,
    Intercept::Invd,
    Intercept::Wbinvd,
    Intercept::Xsetbv,
    Intercept::Rdpru,
    Intercept::Monitor,
    Intercept::Mwait,
    Intercept::MwaitConditional,
];

/// Exceptions every guest exits on: #MC (the host handles machine checks), and #DB and
/// #AC, which a guest could otherwise make the CPU deliver in an endless microcode loop
/// that no host interrupt breaks (CVE-2015-8104, CVE-2015-5307). The monitor reflects
/// #DB and #AC back into the guest by injection.
pub const BASELINE_EXCEPTIONS: [u8; 3] = [vector::DB, vector::AC, vector::MC];

/// The power-on PAT (WB, WT, UC-, UC, repeated), the guest's initial G_PAT.
pub const POWER_ON_PAT: u64 = 0x0007_0406_0007_0406;
/// DR6 after reset.
pub const POWER_ON_DR6: u64 = 0xffff_0ff0;
/// DR7 after reset.
pub const POWER_ON_DR7: u64 = 0x400;

/// Sets the controls every Esker guest runs with: [`BASELINE_INTERCEPTS`],
/// [`BASELINE_EXCEPTIONS`], V_INTR_MASKING (so the guest's
/// IF masks only its virtual interrupts and the host can always preempt it), nested
/// paging on `setup.nested_cr3`, the ASID, the permission maps and the TSC offset.
///
/// TLB_CONTROL is set to flush everything, which a new ASID needs on its first run; the
/// kernel sets it back to [`TlbControl::DoNothing`] once the guest has run, and to a
/// flush again whenever it removes nested mappings.
pub fn set_baseline_controls(control: &mut ControlArea, setup: &ControlSetup) {
    for intercept in BASELINE_INTERCEPTS {
        control.set_intercept(intercept, true);
    }
    for vector in BASELINE_EXCEPTIONS {
        control.set_exception_intercept(vector, true);
    }
    control.set_v_intr_masking(true);
    control.nested_control |= nested_control::NP_ENABLE;
    control.nested_cr3 = setup.nested_cr3;
    control.guest_asid = setup.asid;
    control.iopm_base_pa = setup.iopm_base_pa;
    control.msrpm_base_pa = setup.msrpm_base_pa;
    control.tsc_offset = setup.tsc_offset;
    control.tlb_control = TlbControl::FlushAll as u8;
    control.clean_bits = 0;
}

/// Resets `vmcb`, sets the baseline controls and loads `state` (RAX and RSP into the
/// VMCB, the other general registers into `gpr`, the block the kernel's VMRUN stub
/// restores), with reset values for DR6, DR7 and G_PAT.
pub fn init(
    vmcb: &mut Vmcb,
    gpr: &mut GeneralRegisters,
    setup: &ControlSetup,
    state: &GuestRegisters,
) {
    vmcb.reset();
    set_baseline_controls(&mut vmcb.control, setup);
    vmcb.save.dr6 = POWER_ON_DR6;
    vmcb.save.dr7 = POWER_ON_DR7;
    vmcb.save.g_pat = POWER_ON_PAT;
    vcpu::svm::write_registers(vmcb, gpr, state);
}

/// A VMCB for a guest entering 32-bit flat protected mode at `entry`
/// ([`GuestRegisters::protected_mode_flat`]), every general register 0. Multiboot v1
/// kernels also need EAX and EBX: use [`init`] for that.
pub fn init_protected_mode_flat(vmcb: &mut Vmcb, setup: &ControlSetup, entry: u32) {
    let mut gpr = GeneralRegisters::default();
    init(
        vmcb,
        &mut gpr,
        setup,
        &GuestRegisters::protected_mode_flat(entry),
    );
}

/// A VMCB for a guest entering 64-bit long mode at `entry` with the page tables at `cr3`
/// and the GDT at `gdtr` ([`GuestRegisters::long_mode`]): CS.L, CR0.PE|PG, CR4.PAE,
/// EFER.LME|LMA|SVME. Linux also needs RSI: use [`init`] for that.
pub fn init_long_mode(
    vmcb: &mut Vmcb,
    setup: &ControlSetup,
    entry: u64,
    cr3: u64,
    gdtr: DescriptorTable,
) {
    let mut gpr = GeneralRegisters::default();
    init(
        vmcb,
        &mut gpr,
        setup,
        &GuestRegisters::long_mode(entry, cr3, gdtr),
    );
}
