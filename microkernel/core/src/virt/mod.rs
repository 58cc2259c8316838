//! Hardware virtualisation encodings and the backend-neutral vCPU interface.
//!
//! This module owns the *data* of hardware virtualisation: the AMD SVM control block
//! ([`svm::Vmcb`]) with its intercept vectors, exit codes, permission bitmaps and the VMRUN
//! consistency rules; the Intel VMX field encodings, exit reasons and EPT entry format
//! ([`vmx`]); and the interface the kernel puts both behind ([`vcpu`]): a VM exit described
//! as a serialisable message ([`vcpu::Exit`], [`vcpu::ExitMessage`]) for the per-VM `vmx`
//! world, and the reply that resumes the guest ([`vcpu::ExitReply`]).
//!
//! It never executes a virtualisation instruction, never touches a VMCB or VMCS in
//! hardware-owned memory and never decides policy (which exits a monitor wants, which MSRs
//! a guest may touch): the kernel's hardware layer does VMRUN/VMREAD/VMWRITE and hands
//! these functions plain references, the monitor decides policy. Everything here is
//! pure, allocation-free and host-tested; nothing panics on a value a guest or the
//! hardware can produce.
//!
//! Layouts follow AMD's *AMD64 Architecture Programmer's Manual* vol. 2 (chapter 15 and
//! appendices B and C) and Intel's *SDM* vol. 3C (chapters 25–29 and appendices B and C);
//! every offset and bit position is pinned by a `const` assertion or a test.

pub mod svm;
pub mod vcpu;
pub mod vmx;
pub mod x86;
