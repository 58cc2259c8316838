//! The Virtual Machine Control Block: one 4 KiB page, a control area (offsets 0x000–0x3ff)
//! and the guest state-save area (0x400–0xfff).
//!
//! Layout from the AMD APM vol. 2, appendix B, tables B-1 (control area) and B-2 (state
//! save area, offsets relative to 0x400), cross-checked against Linux's
//! `arch/x86/include/asm/svm.h` and QEMU's `target/i386/svm.h`. Every field's offset is
//! pinned by a `const` assertion at the bottom of this file. Reserved bytes are private and
//! stay zero: the only ways to build a [`Vmcb`] are [`Vmcb::ZERO`] and [`Vmcb::reset`].

use super::controls::{Intercept, TlbControl, interrupt_state, nested_control, vintr};
use crate::virt::x86::Segment;

/// A VMCB. The CPU reads and writes it through its physical address (VMRUN's RAX).
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct Vmcb {
    /// Offsets 0x000–0x3ff: what to intercept, how to run, why the guest exited.
    pub control: ControlArea,
    /// Offsets 0x400–0xfff: guest registers the CPU loads on VMRUN and saves on #VMEXIT.
    pub save: StateSaveArea,
}

/// The VMCB control area (APM vol. 2, table B-1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ControlArea {
    /// 0x000: bits 0–15 intercept reads of CR0–CR15, bits 16–31 writes.
    pub intercept_cr: u32,
    /// 0x004: bits 0–15 intercept reads of DR0–DR15, bits 16–31 writes.
    pub intercept_dr: u32,
    /// 0x008: bit n intercepts exception vector n.
    pub intercept_exceptions: u32,
    /// 0x00c: miscellaneous intercepts, vector 3 (see [`Intercept`]).
    pub intercept_misc3: u32,
    /// 0x010: miscellaneous intercepts, vector 4 (see [`Intercept`]); bits 16–31 trap
    /// CR0–CR15 writes after they complete.
    pub intercept_misc4: u32,
    /// 0x014: miscellaneous intercepts, vector 5 (see [`Intercept`]).
    pub intercept_misc5: u32,
    reserved_018: [u8; 0x24],
    /// 0x03c: PAUSE filter threshold.
    pub pause_filter_threshold: u16,
    /// 0x03e: PAUSE filter count.
    pub pause_filter_count: u16,
    /// 0x040: physical base of the I/O permission map (bits 11:0 ignored).
    pub iopm_base_pa: u64,
    /// 0x048: physical base of the MSR permission map (bits 11:0 ignored).
    pub msrpm_base_pa: u64,
    /// 0x050: added to the TSC the guest reads.
    pub tsc_offset: u64,
    /// 0x058: guest ASID (0 is the host's and makes VMRUN fail).
    pub guest_asid: u32,
    /// 0x05c: TLB control ([`TlbControl`]).
    pub tlb_control: u8,
    reserved_05d: [u8; 3],
    /// 0x060: virtual interrupt control: V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR,
    /// V_INTR_MASKING, V_INTR_VECTOR … (bits in [`vintr`]).
    pub vintr: u64,
    /// 0x068: bit 0 interrupt shadow, bit 1 guest interrupt mask ([`interrupt_state`]).
    pub interrupt_state: u64,
    /// 0x070: EXITCODE ([`super::SvmExitCode`]).
    pub exit_code: u64,
    /// 0x078: EXITINFO1.
    pub exit_info1: u64,
    /// 0x080: EXITINFO2.
    pub exit_info2: u64,
    /// 0x088: EXITINTINFO, the event being delivered when the exit happened
    /// ([`super::EventInjection`] format).
    pub exit_int_info: u64,
    /// 0x090: bit 0 NP_ENABLE and the SEV enables ([`nested_control`]).
    pub nested_control: u64,
    /// 0x098: AVIC APIC_BAR.
    pub avic_apic_bar: u64,
    /// 0x0a0: guest-physical address of the GHCB (SEV-ES).
    pub ghcb_gpa: u64,
    /// 0x0a8: EVENTINJ, an event to deliver on the next VMRUN
    /// ([`super::EventInjection`]).
    pub event_injection: u64,
    /// 0x0b0: N_CR3, the nested page table root.
    pub nested_cr3: u64,
    /// 0x0b8: bit 0 LBR virtualisation, bit 1 virtual VMSAVE/VMLOAD
    /// ([`super::virtualization_extensions`]).
    pub virtualization_extensions: u64,
    /// 0x0c0: VMCB clean bits ([`super::clean`]); 0 means "reload everything".
    pub clean_bits: u32,
    reserved_0c4: u32,
    /// 0x0c8: nRIP, the guest RIP after the intercepted instruction (only with the
    /// nRIP-save feature; QEMU's TCG does not provide it).
    pub next_rip: u64,
    /// 0x0d0: number of guest instruction bytes fetched (decode assists).
    pub guest_instruction_length: u8,
    /// 0x0d1: the fetched guest instruction bytes (decode assists).
    pub guest_instruction_bytes: [u8; 15],
    /// 0x0e0: AVIC APIC backing page pointer.
    pub avic_backing_page: u64,
    reserved_0e8: u64,
    /// 0x0f0: AVIC logical table pointer.
    pub avic_logical_table: u64,
    /// 0x0f8: AVIC physical table pointer.
    pub avic_physical_table: u64,
    reserved_100: u64,
    /// 0x108: VMSA pointer (SEV-ES).
    pub vmsa_pa: u64,
    reserved_110: [u8; 0x2d0],
    /// 0x3e0: 32 bytes reserved for the host's software.
    pub software_reserved: [u8; 32],
}

/// The VMCB state-save area (APM vol. 2, table B-2; offsets relative to VMCB + 0x400).
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct StateSaveArea {
    /// 0x000.
    pub es: Segment,
    /// 0x010.
    pub cs: Segment,
    /// 0x020.
    pub ss: Segment,
    /// 0x030.
    pub ds: Segment,
    /// 0x040 (VMLOAD/VMSAVE).
    pub fs: Segment,
    /// 0x050 (VMLOAD/VMSAVE).
    pub gs: Segment,
    /// 0x060: only the limit (low 16 bits) and base are used.
    pub gdtr: Segment,
    /// 0x070 (VMLOAD/VMSAVE).
    pub ldtr: Segment,
    /// 0x080: only the limit (low 16 bits) and base are used.
    pub idtr: Segment,
    /// 0x090 (VMLOAD/VMSAVE).
    pub tr: Segment,
    reserved_0a0: [u8; 0x2a],
    /// 0x0ca: VMPL (SEV-SNP).
    pub vmpl: u8,
    /// 0x0cb: current privilege level.
    pub cpl: u8,
    reserved_0cc: u32,
    /// 0x0d0: EFER (SVME must be set).
    pub efer: u64,
    reserved_0d8: [u8; 0x70],
    /// 0x148.
    pub cr4: u64,
    /// 0x150.
    pub cr3: u64,
    /// 0x158.
    pub cr0: u64,
    /// 0x160.
    pub dr7: u64,
    /// 0x168.
    pub dr6: u64,
    /// 0x170.
    pub rflags: u64,
    /// 0x178.
    pub rip: u64,
    reserved_180: [u8; 0x58],
    /// 0x1d8.
    pub rsp: u64,
    /// 0x1e0: supervisor CET control.
    pub s_cet: u64,
    /// 0x1e8: shadow stack pointer.
    pub ssp: u64,
    /// 0x1f0: interrupt shadow-stack table address.
    pub isst_addr: u64,
    /// 0x1f8.
    pub rax: u64,
    /// 0x200 (VMLOAD/VMSAVE).
    pub star: u64,
    /// 0x208 (VMLOAD/VMSAVE).
    pub lstar: u64,
    /// 0x210 (VMLOAD/VMSAVE).
    pub cstar: u64,
    /// 0x218 (VMLOAD/VMSAVE).
    pub sfmask: u64,
    /// 0x220 (VMLOAD/VMSAVE).
    pub kernel_gs_base: u64,
    /// 0x228 (VMLOAD/VMSAVE).
    pub sysenter_cs: u64,
    /// 0x230 (VMLOAD/VMSAVE).
    pub sysenter_esp: u64,
    /// 0x238 (VMLOAD/VMSAVE).
    pub sysenter_eip: u64,
    /// 0x240.
    pub cr2: u64,
    reserved_248: [u8; 0x20],
    /// 0x268: the guest PAT, used by nested paging.
    pub g_pat: u64,
    /// 0x270: DebugCtl (with LBR virtualisation).
    pub dbgctl: u64,
    /// 0x278: last branch from (with LBR virtualisation).
    pub br_from: u64,
    /// 0x280: last branch to.
    pub br_to: u64,
    /// 0x288: last exception from.
    pub last_excp_from: u64,
    /// 0x290: last exception to.
    pub last_excp_to: u64,
    reserved_298: [u8; 0x48],
    /// 0x2e0: the guest's SPEC_CTRL.
    pub spec_ctrl: u64,
    reserved_2e8: [u8; 0x918],
}

impl ControlArea {
    /// A control area of zeros.
    pub const ZERO: Self = Self {
        intercept_cr: 0,
        intercept_dr: 0,
        intercept_exceptions: 0,
        intercept_misc3: 0,
        intercept_misc4: 0,
        intercept_misc5: 0,
        reserved_018: [0; 0x24],
        pause_filter_threshold: 0,
        pause_filter_count: 0,
        iopm_base_pa: 0,
        msrpm_base_pa: 0,
        tsc_offset: 0,
        guest_asid: 0,
        tlb_control: 0,
        reserved_05d: [0; 3],
        vintr: 0,
        interrupt_state: 0,
        exit_code: 0,
        exit_info1: 0,
        exit_info2: 0,
        exit_int_info: 0,
        nested_control: 0,
        avic_apic_bar: 0,
        ghcb_gpa: 0,
        event_injection: 0,
        nested_cr3: 0,
        virtualization_extensions: 0,
        clean_bits: 0,
        reserved_0c4: 0,
        next_rip: 0,
        guest_instruction_length: 0,
        guest_instruction_bytes: [0; 15],
        avic_backing_page: 0,
        reserved_0e8: 0,
        avic_logical_table: 0,
        avic_physical_table: 0,
        reserved_100: 0,
        vmsa_pa: 0,
        reserved_110: [0; 0x2d0],
        software_reserved: [0; 32],
    };

    fn misc_word_mut(&mut self, word: usize) -> &mut u32 {
        match word {
            3 => &mut self.intercept_misc3,
            4 => &mut self.intercept_misc4,
            _ => &mut self.intercept_misc5,
        }
    }

    const fn misc_word(&self, word: usize) -> u32 {
        match word {
            3 => self.intercept_misc3,
            4 => self.intercept_misc4,
            _ => self.intercept_misc5,
        }
    }

    /// Turns `intercept` on or off.
    pub fn set_intercept(&mut self, intercept: Intercept, on: bool) {
        let mask = 1u32 << intercept.bit();
        let word = self.misc_word_mut(intercept.word());
        if on {
            *word |= mask;
        } else {
            *word &= !mask;
        }
    }

    /// Whether `intercept` is on.
    pub const fn intercepts(&self, intercept: Intercept) -> bool {
        self.misc_word(intercept.word()) & (1 << intercept.bit()) != 0
    }

    /// Turns the intercept of reads of `CRn` on or off.
    ///
    /// # Panics
    ///
    /// If `cr` is 16 or more: register numbers are chosen by code, not input.
    pub fn set_cr_read_intercept(&mut self, cr: u8, on: bool) {
        set_bit(&mut self.intercept_cr, cr_bit(cr), on);
    }

    /// Turns the intercept of writes of `CRn` on or off.
    ///
    /// # Panics
    ///
    /// If `cr` is 16 or more.
    pub fn set_cr_write_intercept(&mut self, cr: u8, on: bool) {
        set_bit(&mut self.intercept_cr, 16 + cr_bit(cr), on);
    }

    /// Turns the intercept of reads of `DRn` on or off.
    ///
    /// # Panics
    ///
    /// If `dr` is 16 or more.
    pub fn set_dr_read_intercept(&mut self, dr: u8, on: bool) {
        set_bit(&mut self.intercept_dr, cr_bit(dr), on);
    }

    /// Turns the intercept of writes of `DRn` on or off.
    ///
    /// # Panics
    ///
    /// If `dr` is 16 or more.
    pub fn set_dr_write_intercept(&mut self, dr: u8, on: bool) {
        set_bit(&mut self.intercept_dr, 16 + cr_bit(dr), on);
    }

    /// Turns the trap after a completed write of `CRn` (misc vector 4, bits 16–31) on or off.
    ///
    /// # Panics
    ///
    /// If `cr` is 16 or more.
    pub fn set_cr_write_trap(&mut self, cr: u8, on: bool) {
        set_bit(&mut self.intercept_misc4, 16 + cr_bit(cr), on);
    }

    /// Turns the intercept of exception `vector` on or off.
    ///
    /// # Panics
    ///
    /// If `vector` is 32 or more (only exceptions can be intercepted).
    pub fn set_exception_intercept(&mut self, vector: u8, on: bool) {
        assert!(vector < 32, "exception vectors are 0..32");
        set_bit(&mut self.intercept_exceptions, u32::from(vector), on);
    }

    /// Whether exception `vector` is intercepted (`false` for vectors 32 and up).
    pub const fn intercepts_exception(&self, vector: u8) -> bool {
        vector < 32 && self.intercept_exceptions & (1 << vector) != 0
    }

    /// The TLB control byte, `None` if it holds a reserved encoding.
    pub const fn tlb(&self) -> Option<TlbControl> {
        TlbControl::from_raw(self.tlb_control)
    }

    /// Whether nested paging is on.
    pub const fn nested_paging(&self) -> bool {
        self.nested_control & nested_control::NP_ENABLE != 0
    }

    /// The virtual TPR.
    pub const fn v_tpr(&self) -> u8 {
        (self.vintr & vintr::V_TPR_MASK) as u8
    }

    /// Sets the virtual TPR.
    pub fn set_v_tpr(&mut self, tpr: u8) {
        self.vintr = (self.vintr & !vintr::V_TPR_MASK) | u64::from(tpr);
    }

    /// Whether a virtual interrupt is pending (V_IRQ).
    pub const fn v_irq(&self) -> bool {
        self.vintr & vintr::V_IRQ != 0
    }

    /// Requests (or withdraws) a virtual interrupt of `vector` and `priority` (0–15),
    /// optionally ignoring the virtual TPR.
    pub fn set_virtual_interrupt(
        &mut self,
        pending: bool,
        vector: u8,
        priority: u8,
        ignore_tpr: bool,
    ) {
        let fields =
            vintr::V_IRQ | vintr::V_INTR_PRIO_MASK | vintr::V_IGN_TPR | vintr::V_INTR_VECTOR_MASK;
        let mut value = self.vintr & !fields;
        if pending {
            value |= vintr::V_IRQ;
        }
        if ignore_tpr {
            value |= vintr::V_IGN_TPR;
        }
        value |= (u64::from(priority) & 0xf) << vintr::V_INTR_PRIO_SHIFT;
        value |= u64::from(vector) << vintr::V_INTR_VECTOR_SHIFT;
        self.vintr = value;
    }

    /// The pending virtual interrupt's vector (V_INTR_VECTOR).
    pub const fn v_intr_vector(&self) -> u8 {
        ((self.vintr & vintr::V_INTR_VECTOR_MASK) >> vintr::V_INTR_VECTOR_SHIFT) as u8
    }

    /// Whether V_INTR_MASKING is on.
    pub const fn v_intr_masking(&self) -> bool {
        self.vintr & vintr::V_INTR_MASKING != 0
    }

    /// Turns V_INTR_MASKING on or off.
    pub fn set_v_intr_masking(&mut self, on: bool) {
        if on {
            self.vintr |= vintr::V_INTR_MASKING;
        } else {
            self.vintr &= !vintr::V_INTR_MASKING;
        }
    }

    /// Whether the guest is in an interrupt shadow.
    pub const fn interrupt_shadow(&self) -> bool {
        self.interrupt_state & interrupt_state::INTERRUPT_SHADOW != 0
    }
}

/// Bit `n` of a CR/DR read-or-write half word.
fn cr_bit(register: u8) -> u32 {
    assert!(
        register < 16,
        "control and debug registers are numbered 0..16"
    );
    u32::from(register)
}

fn set_bit(word: &mut u32, bit: u32, on: bool) {
    if on {
        *word |= 1 << bit;
    } else {
        *word &= !(1 << bit);
    }
}

impl StateSaveArea {
    /// A state-save area of zeros.
    pub const ZERO: Self = {
        const NULL: Segment = Segment {
            selector: 0,
            attributes: crate::virt::x86::SegmentAttributes(0),
            limit: 0,
            base: 0,
        };
        Self {
            es: NULL,
            cs: NULL,
            ss: NULL,
            ds: NULL,
            fs: NULL,
            gs: NULL,
            gdtr: NULL,
            ldtr: NULL,
            idtr: NULL,
            tr: NULL,
            reserved_0a0: [0; 0x2a],
            vmpl: 0,
            cpl: 0,
            reserved_0cc: 0,
            efer: 0,
            reserved_0d8: [0; 0x70],
            cr4: 0,
            cr3: 0,
            cr0: 0,
            dr7: 0,
            dr6: 0,
            rflags: 0,
            rip: 0,
            reserved_180: [0; 0x58],
            rsp: 0,
            s_cet: 0,
            ssp: 0,
            isst_addr: 0,
            rax: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            cr2: 0,
            reserved_248: [0; 0x20],
            g_pat: 0,
            dbgctl: 0,
            br_from: 0,
            br_to: 0,
            last_excp_from: 0,
            last_excp_to: 0,
            reserved_298: [0; 0x48],
            spec_ctrl: 0,
            reserved_2e8: [0; 0x918],
        }
    };
}

impl Vmcb {
    /// A VMCB of zeros.
    pub const ZERO: Self = Self {
        control: ControlArea::ZERO,
        save: StateSaveArea::ZERO,
    };

    /// Sets every byte, reserved ones included, back to zero.
    pub fn reset(&mut self) {
        *self = Self::ZERO;
    }
}

// The layout, field by field (APM vol. 2, tables B-1 and B-2).
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Vmcb>() == 4096);
    assert!(align_of::<Vmcb>() == 4096);
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(size_of::<StateSaveArea>() == 0xc00);
    assert!(size_of::<Segment>() == 16);
    assert!(offset_of!(Segment, selector) == 0);
    assert!(offset_of!(Segment, attributes) == 2);
    assert!(offset_of!(Segment, limit) == 4);
    assert!(offset_of!(Segment, base) == 8);
    assert!(offset_of!(Vmcb, control) == 0);
    assert!(offset_of!(Vmcb, save) == 0x400);

    assert!(offset_of!(ControlArea, intercept_cr) == 0x000);
    assert!(offset_of!(ControlArea, intercept_dr) == 0x004);
    assert!(offset_of!(ControlArea, intercept_exceptions) == 0x008);
    assert!(offset_of!(ControlArea, intercept_misc3) == 0x00c);
    assert!(offset_of!(ControlArea, intercept_misc4) == 0x010);
    assert!(offset_of!(ControlArea, intercept_misc5) == 0x014);
    assert!(offset_of!(ControlArea, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(ControlArea, pause_filter_count) == 0x03e);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x040);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x048);
    assert!(offset_of!(ControlArea, tsc_offset) == 0x050);
    assert!(offset_of!(ControlArea, guest_asid) == 0x058);
    assert!(offset_of!(ControlArea, tlb_control) == 0x05c);
    assert!(offset_of!(ControlArea, vintr) == 0x060);
    assert!(offset_of!(ControlArea, interrupt_state) == 0x068);
    assert!(offset_of!(ControlArea, exit_code) == 0x070);
    assert!(offset_of!(ControlArea, exit_info1) == 0x078);
    assert!(offset_of!(ControlArea, exit_info2) == 0x080);
    assert!(offset_of!(ControlArea, exit_int_info) == 0x088);
    assert!(offset_of!(ControlArea, nested_control) == 0x090);
    assert!(offset_of!(ControlArea, avic_apic_bar) == 0x098);
    assert!(offset_of!(ControlArea, ghcb_gpa) == 0x0a0);
    assert!(offset_of!(ControlArea, event_injection) == 0x0a8);
    assert!(offset_of!(ControlArea, nested_cr3) == 0x0b0);
    assert!(offset_of!(ControlArea, virtualization_extensions) == 0x0b8);
    assert!(offset_of!(ControlArea, clean_bits) == 0x0c0);
    assert!(offset_of!(ControlArea, next_rip) == 0x0c8);
    assert!(offset_of!(ControlArea, guest_instruction_length) == 0x0d0);
    assert!(offset_of!(ControlArea, guest_instruction_bytes) == 0x0d1);
    assert!(offset_of!(ControlArea, avic_backing_page) == 0x0e0);
    assert!(offset_of!(ControlArea, avic_logical_table) == 0x0f0);
    assert!(offset_of!(ControlArea, avic_physical_table) == 0x0f8);
    assert!(offset_of!(ControlArea, vmsa_pa) == 0x108);
    assert!(offset_of!(ControlArea, software_reserved) == 0x3e0);

    assert!(offset_of!(StateSaveArea, es) == 0x000);
    assert!(offset_of!(StateSaveArea, cs) == 0x010);
    assert!(offset_of!(StateSaveArea, ss) == 0x020);
    assert!(offset_of!(StateSaveArea, ds) == 0x030);
    assert!(offset_of!(StateSaveArea, fs) == 0x040);
    assert!(offset_of!(StateSaveArea, gs) == 0x050);
    assert!(offset_of!(StateSaveArea, gdtr) == 0x060);
    assert!(offset_of!(StateSaveArea, ldtr) == 0x070);
    assert!(offset_of!(StateSaveArea, idtr) == 0x080);
    assert!(offset_of!(StateSaveArea, tr) == 0x090);
    assert!(offset_of!(StateSaveArea, vmpl) == 0x0ca);
    assert!(offset_of!(StateSaveArea, cpl) == 0x0cb);
    assert!(offset_of!(StateSaveArea, efer) == 0x0d0);
    assert!(offset_of!(StateSaveArea, cr4) == 0x148);
    assert!(offset_of!(StateSaveArea, cr3) == 0x150);
    assert!(offset_of!(StateSaveArea, cr0) == 0x158);
    assert!(offset_of!(StateSaveArea, dr7) == 0x160);
    assert!(offset_of!(StateSaveArea, dr6) == 0x168);
    assert!(offset_of!(StateSaveArea, rflags) == 0x170);
    assert!(offset_of!(StateSaveArea, rip) == 0x178);
    assert!(offset_of!(StateSaveArea, rsp) == 0x1d8);
    assert!(offset_of!(StateSaveArea, s_cet) == 0x1e0);
    assert!(offset_of!(StateSaveArea, ssp) == 0x1e8);
    assert!(offset_of!(StateSaveArea, isst_addr) == 0x1f0);
    assert!(offset_of!(StateSaveArea, rax) == 0x1f8);
    assert!(offset_of!(StateSaveArea, star) == 0x200);
    assert!(offset_of!(StateSaveArea, lstar) == 0x208);
    assert!(offset_of!(StateSaveArea, cstar) == 0x210);
    assert!(offset_of!(StateSaveArea, sfmask) == 0x218);
    assert!(offset_of!(StateSaveArea, kernel_gs_base) == 0x220);
    assert!(offset_of!(StateSaveArea, sysenter_cs) == 0x228);
    assert!(offset_of!(StateSaveArea, sysenter_esp) == 0x230);
    assert!(offset_of!(StateSaveArea, sysenter_eip) == 0x238);
    assert!(offset_of!(StateSaveArea, cr2) == 0x240);
    assert!(offset_of!(StateSaveArea, g_pat) == 0x268);
    assert!(offset_of!(StateSaveArea, dbgctl) == 0x270);
    assert!(offset_of!(StateSaveArea, br_from) == 0x278);
    assert!(offset_of!(StateSaveArea, br_to) == 0x280);
    assert!(offset_of!(StateSaveArea, last_excp_from) == 0x288);
    assert!(offset_of!(StateSaveArea, last_excp_to) == 0x290);
    assert!(offset_of!(StateSaveArea, spec_ctrl) == 0x2e0);

    // The same positions seen from the start of the VMCB (table B-2 "offset 400h + x").
    assert!(offset_of!(Vmcb, save.efer) == 0x4d0);
    assert!(offset_of!(Vmcb, save.cr4) == 0x548);
    assert!(offset_of!(Vmcb, save.rip) == 0x578);
    assert!(offset_of!(Vmcb, save.rsp) == 0x5d8);
    assert!(offset_of!(Vmcb, save.rax) == 0x5f8);
    assert!(offset_of!(Vmcb, save.cr2) == 0x640);
    assert!(offset_of!(Vmcb, save.g_pat) == 0x668);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercepts_land_in_the_documented_word_and_bit() {
        // (intercept, word offset, bit) from APM table B-1.
        let cases = [
            (Intercept::Intr, 0x00c, 0),
            (Intercept::Vintr, 0x00c, 4),
            (Intercept::Cr0SelectiveWrite, 0x00c, 5),
            (Intercept::TrWrite, 0x00c, 13),
            (Intercept::Rdtsc, 0x00c, 14),
            (Intercept::Cpuid, 0x00c, 18),
            (Intercept::Hlt, 0x00c, 24),
            (Intercept::IoioProt, 0x00c, 27),
            (Intercept::MsrProt, 0x00c, 28),
            (Intercept::Shutdown, 0x00c, 31),
            (Intercept::Vmrun, 0x010, 0),
            (Intercept::Vmmcall, 0x010, 1),
            (Intercept::Rdtscp, 0x010, 7),
            (Intercept::Wbinvd, 0x010, 9),
            (Intercept::Xsetbv, 0x010, 13),
            (Intercept::EferWriteTrap, 0x010, 15),
            (Intercept::Invlpgb, 0x014, 0),
            (Intercept::Invpcid, 0x014, 2),
            (Intercept::IdleHlt, 0x014, 6),
        ];
        for (intercept, offset, bit) in cases {
            let mut control = ControlArea::ZERO;
            control.set_intercept(intercept, true);
            assert!(control.intercepts(intercept));
            let words = [
                control.intercept_misc3,
                control.intercept_misc4,
                control.intercept_misc5,
            ];
            let expected_word = (offset - 0x00c) / 4;
            for (index, word) in words.into_iter().enumerate() {
                let expected = if index == expected_word {
                    1u32 << bit
                } else {
                    0
                };
                assert_eq!(word, expected, "{intercept:?}");
            }
            control.set_intercept(intercept, false);
            assert!(!control.intercepts(intercept));
            assert_eq!(control, ControlArea::ZERO);
        }
    }

    #[test]
    fn cr_dr_and_exception_intercepts_use_their_halves() {
        let mut control = ControlArea::ZERO;
        control.set_cr_read_intercept(3, true);
        control.set_cr_write_intercept(8, true);
        assert_eq!(control.intercept_cr, (1 << 3) | (1 << (16 + 8)));
        control.set_dr_read_intercept(7, true);
        control.set_dr_write_intercept(0, true);
        assert_eq!(control.intercept_dr, (1 << 7) | (1 << 16));
        control.set_exception_intercept(14, true);
        control.set_exception_intercept(31, true);
        assert_eq!(control.intercept_exceptions, (1 << 14) | (1 << 31));
        assert!(control.intercepts_exception(14));
        assert!(!control.intercepts_exception(32));
        control.set_cr_write_trap(4, true);
        assert_eq!(control.intercept_misc4, 1 << 20);
    }

    #[test]
    fn virtual_interrupt_fields_pack_where_the_apm_says() {
        let mut control = ControlArea::ZERO;
        control.set_v_tpr(0x0f);
        control.set_v_intr_masking(true);
        control.set_virtual_interrupt(true, 0x30, 0xf, true);
        assert_eq!(
            control.vintr,
            0x0f | (1 << 8) | (0xf << 16) | (1 << 20) | (1 << 24) | (0x30 << 32)
        );
        assert!(control.v_irq());
        assert_eq!(control.v_intr_vector(), 0x30);
        assert_eq!(control.v_tpr(), 0x0f);
        control.set_virtual_interrupt(false, 0, 0, false);
        assert_eq!(control.vintr, 0x0f | (1 << 24));
    }

    #[test]
    fn reset_zeroes_everything() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.control.exit_code = 0x72;
        vmcb.save.rip = 0x1000;
        vmcb.control.software_reserved[31] = 1;
        vmcb.reset();
        assert_eq!(vmcb, Vmcb::ZERO);
    }
}
