//! Host tests of VMs: guest memory in the nested page table (and out of it when the
//! capability goes), running a vCPU, exits delivered as messages, host interrupts kept in
//! the kernel, timeouts and halted sleeps, refused replies.

use super::*;
use crate::paging::Npt;
use crate::virt::svm::SvmExitCode;
use crate::virt::vcpu::{Exit, ExitMessage, ExitReply, GuestRegisters};

const MONITOR: WorldId = 0;
const OTHER: WorldId = 1;

/// Slots of the monitor's capabilities.
const VM: u64 = 1;
const RAM: u64 = 2;
const VCPU: u64 = 3;
const RAM_READ_ONLY: u64 = 4;

/// Worlds: 0 = monitor (vm, its RAM, the vCPU, a read-only copy of the RAM capability),
/// 1 = other (a vCPU capability on the same vCPU, nothing else).
fn boot_vm(platform: &mut FakePlatform) -> System {
    let elf: &'static [u8] = Box::leak(tiny_elf().into_boxed_slice());
    let mut objects = heapless::Vec::new();
    for o in [
        ObjectSpec::Log { world: "monitor" },
        ObjectSpec::Log { world: "other" },
        ObjectSpec::Vm { name: "vm1" },
        ObjectSpec::Memory {
            name: "vm1-ram",
            size_kib: 4096,
        },
        ObjectSpec::Vcpu {
            name: "vm1-vcpu0",
            vm: 2,
        },
    ] {
        objects.push(o).unwrap();
    }
    let caps = |list: &[(u32, &'static str, u16, Rights)]| {
        let mut v = heapless::Vec::new();
        for &(slot, name, object, rights) in list {
            v.push(CapSpec {
                slot,
                name,
                object,
                rights,
                badge: 0,
            })
            .unwrap();
        }
        v
    };
    let world = |name: &'static str, caps| WorldSpec {
        name,
        binary: "prog",
        memory_kib: 256,
        sched: SchedParams::default(),
        guest_facing: true,
        threads: 1,
        caps,
    };
    let mut worlds = heapless::Vec::new();
    let all_memory = Rights::READ | Rights::WRITE | Rights::EXECUTE | Rights::MAP;
    worlds
        .push(world(
            "monitor",
            caps(&[
                (0, "log", 0, Rights::LOG),
                (1, "vm", 2, Rights::MAP | Rights::READ),
                (2, "memory:guest-ram", 3, all_memory),
                (3, "vcpu:0", 4, Rights::READ | Rights::WRITE),
                (4, "memory:guest-ram-ro", 3, Rights::READ | Rights::MAP),
            ]),
        ))
        .unwrap();
    worlds
        .push(world(
            "other",
            caps(&[
                (0, "log", 1, Rights::LOG),
                (1, "vcpu:0", 4, Rights::READ | Rights::WRITE),
            ]),
        ))
        .unwrap();
    system_of(platform, elf, objects, worlds)
}

/// The VM object and its RAM's first frame.
fn vm_and_ram(system: &System) -> (PageTable<Npt>, u64) {
    let mut npt = None;
    let mut ram = None;
    for id in 0..MAX_OBJECTS as ObjectId {
        match system.object(id).map(|o| &o.object) {
            Some(Object::Vm(vm)) => npt = Some(PageTable::<Npt>::from_root(vm.npt.root())),
            Some(Object::Memory { base, .. }) => ram = Some(base.start().as_u64()),
            _ => {}
        }
    }
    (npt.unwrap(), ram.unwrap())
}

fn translate(system: &System, platform: &mut FakePlatform, gpa: u64) -> Option<(u64, bool)> {
    let (npt, _) = vm_and_ram(system);
    npt.translate(platform.memory(), VirtAddr::new(gpa))
        .map(|t| (t.phys.as_u64(), t.access.write))
}

fn rights(r: Rights) -> u64 {
    u64::from(r.bits())
}

#[test]
fn guest_memory_is_mapped_by_capability_and_refused_without_the_rights() {
    let mut platform = FakePlatform::new();
    let mut system = boot_vm(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, MONITOR);
    let (_, ram) = vm_and_ram(&system);
    // Read-only memory cannot be mapped writable; the VM capability is needed with MAP.
    for (args, refused) in [
        (
            [VM, RAM_READ_ONLY, 0, rights(Rights::WRITE), 0, 0],
            Error::InsufficientRights,
        ),
        ([RAM, RAM, 0, 0, 0, 0], Error::WrongObjectKind),
        ([VM, RAM, 0x1234, 0, 0, 0], Error::BadAddress),
        ([VM, RAM, 1 << 39, 0, 0, 0], Error::BadAddress),
    ] {
        syscall(&mut system, &mut platform, &mut frame, Syscall::VmMap, args);
        assert_eq!(result_of(&system, MONITOR), Err(refused), "vm_map{args:x?}");
    }
    assert_eq!(translate(&system, &mut platform, 0), None);

    let rwx = rights(Rights::WRITE | Rights::EXECUTE);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VmMap,
        [VM, RAM, 0, rwx, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR).map(|r| r[0]), Ok(4 << 20));
    assert_eq!(translate(&system, &mut platform, 0), Some((ram, true)));
    assert_eq!(
        translate(&system, &mut platform, (4 << 20) - 8),
        Some((ram + (4 << 20) - 8, true))
    );
    assert_eq!(translate(&system, &mut platform, 4 << 20), None);
    // The same guest-physical range twice is refused; elsewhere the read-only copy maps
    // read-only.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VmMap,
        [VM, RAM, 0x1000, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR), Err(Error::AlreadyMapped));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VmMap,
        [VM, RAM_READ_ONLY, 1 << 30, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR).map(|r| r[0]), Ok(4 << 20));
    assert_eq!(
        translate(&system, &mut platform, 1 << 30),
        Some((ram, false))
    );

    // Deleting the read-only capability takes its mapping out of the guest at once.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::CapDelete,
        [RAM_READ_ONLY, 0, 0, 0, 0, 0],
    );
    assert_eq!(translate(&system, &mut platform, 1 << 30), None);
    assert_eq!(translate(&system, &mut platform, 0), Some((ram, true)));
    // vm_unmap removes what lies inside the range.
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VmUnmap,
        [VM, 0, 4 << 20, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR).map(|r| r[0]), Ok(4 << 20));
    assert_eq!(translate(&system, &mut platform, 0), None);
}

/// The reply that starts a vCPU: its registers, nothing else.
fn first_reply(registers: GuestRegisters) -> ExitReply {
    ExitReply {
        registers: Some(registers),
        gprs: None,
        advance_rip: 0,
        inject: None,
        interrupt_window: false,
    }
}

/// Puts `reply` in the monitor's IPC buffer; returns its length.
fn put_reply(system: &System, platform: &mut FakePlatform, reply: &ExitReply) -> u64 {
    let mut bytes = [0u8; 1024];
    let used = postcard::to_slice(reply, &mut bytes).unwrap();
    let length = used.len();
    write_ipc(
        system,
        platform,
        MONITOR,
        IPC_DATA_OFFSET as u64,
        &bytes[..length],
    );
    length as u64
}

fn vcpu_frames(system: &System) -> (PhysFrame, PhysFrame) {
    for id in 0..MAX_OBJECTS as ObjectId {
        if let Some(Object::Vcpu(vcpu)) = system.object(id).map(|o| &o.object) {
            return (vcpu.vmcb, vcpu.state);
        }
    }
    panic!("no vcpu");
}

#[test]
fn a_vcpu_runs_as_its_monitor_and_exits_arrive_as_messages() {
    let mut platform = FakePlatform::new();
    let mut system = boot_vm(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, MONITOR);
    let mut start = GuestRegisters::protected_mode_flat(0x10_0000);
    start.gpr.rbx = 0x9000;
    let length = put_reply(&system, &mut platform, &first_reply(start));
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 0, 0, 0],
    );
    // The monitor keeps the CPU, now in guest mode, with the registers it gave.
    assert!(matches!(next, Next::World { world: MONITOR, .. }));
    let entry = system
        .guest_entry(&mut platform, MONITOR)
        .expect("in guest mode");
    let (vmcb, state) = vcpu_frames(&system);
    assert_eq!((entry.vmcb, entry.state), (vmcb, state));
    platform.with_vcpu(vmcb, state, |vmcb, gpr| {
        assert_eq!(vmcb.save.rip, 0x10_0000);
        assert_eq!(gpr.rbx, 0x9000);
        assert_ne!(vmcb.control.guest_asid, 0);
    });

    // A host interrupt stays in the kernel: the world is still in guest mode.
    platform.with_vcpu(vmcb, state, |vmcb, _| {
        vmcb.control.exit_code = SvmExitCode::Intr.to_raw();
    });
    assert_eq!(
        system.on_vmexit(&mut platform, MONITOR),
        VmExitAction::HostInterrupt
    );
    assert!(system.guest_entry(&mut platform, MONITOR).is_some());

    // CPUID goes to the monitor as a message in its IPC buffer.
    platform.with_vcpu(vmcb, state, |vmcb, _| {
        vmcb.control.exit_code = SvmExitCode::Cpuid.to_raw();
        vmcb.save.rax = 0x4000_0000;
    });
    assert_eq!(
        system.on_vmexit(&mut platform, MONITOR),
        VmExitAction::Resume
    );
    assert!(system.guest_entry(&mut platform, MONITOR).is_none());
    let [length, why, ..] = result_of(&system, MONITOR).unwrap();
    assert_eq!(why, esker_abi::VCPU_EXIT);
    let bytes = read_ipc(
        &system,
        &mut platform,
        MONITOR,
        IPC_DATA_OFFSET as u64,
        length as usize,
    );
    let message: ExitMessage = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(
        message.exit,
        Exit::Cpuid {
            leaf: 0x4000_0000,
            subleaf: 0
        }
    );
    assert_eq!(message.registers.rip, 0x10_0000);

    // Another world holding a capability to the same vCPU cannot run it.
    run_as(&mut system, &mut frame, OTHER);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [1, 0, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, OTHER), Err(Error::InsufficientRights));
}

#[test]
fn a_reply_the_hardware_would_refuse_is_refused_with_a_reason() {
    let mut platform = FakePlatform::new();
    let mut system = boot_vm(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, MONITOR);
    let reply = ExitReply {
        registers: Some(GuestRegisters::protected_mode_flat(0x10_0000)),
        gprs: None,
        advance_rip: 16,
        inject: None,
        interrupt_window: false,
    };
    let length = put_reply(&system, &mut platform, &reply);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR), Err(Error::InvalidArgument));
    assert!(system.guest_entry(&mut platform, MONITOR).is_none());
    assert!(
        platform
            .texts()
            .iter()
            .any(|t| t.contains("vcpu vm1-vcpu0: reply refused: cannot advance RIP by 16 bytes")),
        "{:?}",
        platform.texts()
    );
    // Garbage that does not decode is refused too.
    write_ipc(
        &system,
        &mut platform,
        MONITOR,
        IPC_DATA_OFFSET as u64,
        &[0xff; 8],
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, 8, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR), Err(Error::InvalidArgument));
}

#[test]
fn a_timeout_ends_a_run_and_a_halted_monitor_sleeps_until_it() {
    let mut platform = FakePlatform::new();
    let mut system = boot_vm(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, MONITOR);
    let length = put_reply(
        &system,
        &mut platform,
        &first_reply(GuestRegisters::protected_mode_flat(0x10_0000)),
    );
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 1_000_000, 0, 0],
    );
    // The timer is armed no later than the timeout.
    assert!(
        matches!(next, Next::World { deadline_ns: Some(ns), .. } if ns <= 1_000_000),
        "{next:?}"
    );
    platform.clock.set(999_999);
    assert!(system.guest_entry(&mut platform, MONITOR).is_some());
    platform.clock.set(1_000_000);
    assert!(system.guest_entry(&mut platform, MONITOR).is_none());
    assert_eq!(
        result_of(&system, MONITOR).map(|r| r[1]),
        Ok(esker_abi::VCPU_TIMEOUT)
    );

    // Halted: the monitor sleeps (another world runs or the CPU idles) until the timeout.
    let next = syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, 0, esker_abi::VCPU_HALTED, 500_000, 0, 0],
    );
    assert_eq!(
        system.world(MONITOR).unwrap().state,
        WorldState::Sleeping { until: 1_500_000 }
    );
    let deadline = match next {
        Next::World { deadline_ns, .. } | Next::Idle { deadline_ns } => deadline_ns,
    };
    assert!(deadline.is_some_and(|ns| ns <= 500_000), "{next:?}");
    platform.clock.set(1_400_000);
    system.on_timer(&platform);
    assert!(matches!(
        system.world(MONITOR).unwrap().state,
        WorldState::Sleeping { .. }
    ));
    platform.clock.set(1_500_000);
    system.on_timer(&platform);
    assert!(matches!(
        system.world(MONITOR).unwrap().state,
        WorldState::Ready | WorldState::Running
    ));
    assert_eq!(
        result_of(&system, MONITOR).map(|r| r[1]),
        Ok(esker_abi::VCPU_TIMEOUT)
    );
    // Halted without a timeout would sleep forever: refused.
    run_as(&mut system, &mut frame, MONITOR);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, 0, esker_abi::VCPU_HALTED, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR), Err(Error::InvalidArgument));
}

#[test]
fn without_svm_no_vm_is_created_and_its_monitor_is_not_either() {
    let mut platform = FakePlatform::new();
    platform.svm = false;
    let elf: &'static [u8] = Box::leak(tiny_elf().into_boxed_slice());
    let mut objects = heapless::Vec::new();
    objects.push(ObjectSpec::Log { world: "monitor" }).unwrap();
    objects.push(ObjectSpec::Vm { name: "vm1" }).unwrap();
    let mut caps = heapless::Vec::new();
    caps.push(CapSpec {
        slot: 0,
        name: "log",
        object: 0,
        rights: Rights::LOG,
        badge: 0,
    })
    .unwrap();
    caps.push(CapSpec {
        slot: 1,
        name: "vm",
        object: 1,
        rights: Rights::MAP,
        badge: 0,
    })
    .unwrap();
    let mut worlds = heapless::Vec::new();
    worlds
        .push(WorldSpec {
            name: "monitor",
            binary: "prog",
            memory_kib: 256,
            sched: SchedParams::default(),
            guest_facing: true,
            threads: 1,
            caps,
        })
        .unwrap();
    let mut binaries = heapless::Vec::new();
    binaries.push(Binary { name: "prog", elf }).unwrap();
    let bundle = Bundle {
        manifest: CompiledManifest { worlds, objects },
        binaries,
    };
    let mut bytes = vec![0u8; 1 << 16];
    let length = bundle.encode(&mut bytes).unwrap();
    let view = BundleView::parse(&bytes[..length]).unwrap();
    let mut system = System::new();
    let mut reports = StdVec::new();
    system
        .instantiate(&mut platform, &view, |what, name, e| {
            reports.push(std::format!("{what} {name}: {e}"))
        })
        .unwrap();
    assert_eq!(
        reports,
        [
            "object vm1: this CPU cannot run virtual machines (AMD SVM with nested paging is needed)",
            "world monitor: an object it needs was not created (see the line above)"
        ]
    );
    assert_eq!(system.live_worlds(), 0);
}

#[test]
fn an_event_being_redelivered_survives_the_reply_to_a_timeout() {
    let mut platform = FakePlatform::new();
    let mut system = boot_vm(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, MONITOR);
    let mut start = GuestRegisters::protected_mode_flat(0x10_0000);
    start.rflags |= 1 << 9;
    let length = put_reply(&system, &mut platform, &first_reply(start));
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 1_000, 0, 0],
    );
    // A host interrupt stops the guest while it takes injected vector 0x30: the kernel
    // re-delivers it on the next entry.
    let (vmcb, state) = vcpu_frames(&system);
    platform.with_vcpu(vmcb, state, |vmcb, _| {
        vmcb.control.exit_code = SvmExitCode::Intr.to_raw();
        vmcb.control.exit_int_info = (1 << 31) | 0x30;
    });
    assert_eq!(
        system.on_vmexit(&mut platform, MONITOR),
        VmExitAction::HostInterrupt
    );
    let redelivery = platform.with_vcpu(vmcb, state, |vmcb, _| vmcb.control.event_injection);
    assert_eq!(redelivery & 0xff, 0x30);
    assert_ne!(redelivery & (1 << 31), 0);
    // The monitor's timeout passes; it answers without knowing the guest's state (asks
    // for an interrupt window). The event being re-delivered is kept.
    platform.clock.set(1_000);
    assert!(system.guest_entry(&mut platform, MONITOR).is_none());
    let window = ExitReply {
        registers: None,
        gprs: None,
        advance_rip: 0,
        inject: None,
        interrupt_window: true,
    };
    let length = put_reply(&system, &mut platform, &window);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 0, 0, 0],
    );
    assert_eq!(
        platform.with_vcpu(vmcb, state, |vmcb, _| vmcb.control.event_injection),
        redelivery
    );
    // A second event on top of it is refused rather than one of them lost.
    platform.with_vcpu(vmcb, state, |vmcb, _| {
        vmcb.control.exit_code = SvmExitCode::Intr.to_raw();
    });
    assert_eq!(
        system.on_vmexit(&mut platform, MONITOR),
        VmExitAction::HostInterrupt
    );
    platform.clock.set(2_000);
    let inject = ExitReply {
        registers: None,
        gprs: None,
        advance_rip: 0,
        inject: Some(crate::virt::vcpu::Event::ExternalInterrupt { vector: 0x31 }),
        interrupt_window: false,
    };
    // Leave guest mode through the (zero) timeout check: the world is back in user mode.
    if let Some(world) = system.world_mut(MONITOR) {
        world.guest = None;
    }
    let length = put_reply(&system, &mut platform, &inject);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 0, 0, 0],
    );
    assert_eq!(result_of(&system, MONITOR), Err(Error::InvalidArgument));
    assert!(
        platform
            .texts()
            .iter()
            .any(|t| t.contains("injects an event while the guest is still being given another"))
    );
}

#[test]
fn a_passed_guest_timeout_ends_the_run_once_and_a_revoke_flushes_a_preempted_guest() {
    let mut platform = FakePlatform::new();
    let mut system = boot_vm(&mut platform);
    let mut frame = Registers::default();
    run_as(&mut system, &mut frame, MONITOR);
    let rwx = rights(Rights::WRITE | Rights::EXECUTE);
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VmMap,
        [VM, RAM, 0, rwx, 0, 0],
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VmMap,
        [VM, RAM_READ_ONLY, 1 << 30, 0, 0, 0],
    );
    let length = put_reply(
        &system,
        &mut platform,
        &first_reply(GuestRegisters::protected_mode_flat(0x10_0000)),
    );
    syscall(
        &mut system,
        &mut platform,
        &mut frame,
        Syscall::VcpuRun,
        [VCPU, length, 0, 1_000, 0, 0],
    );
    let (vmcb, state) = vcpu_frames(&system);
    // The guest ran once: the first-run flush is done.
    assert!(system.guest_entry(&mut platform, MONITOR).is_some());
    platform.with_vcpu(vmcb, state, |vmcb, _| {
        vmcb.control.exit_code = SvmExitCode::Intr.to_raw();
        vmcb.control.exit_int_info = 0;
    });
    assert_eq!(
        system.on_vmexit(&mut platform, MONITOR),
        VmExitAction::HostInterrupt
    );
    let tlb = |platform: &mut FakePlatform| {
        platform.with_vcpu(vmcb, state, |vmcb, _| vmcb.control.tlb_control)
    };
    assert_eq!(
        tlb(&mut platform),
        crate::virt::svm::TlbControl::DoNothing as u8
    );
    // While the guest is preempted, another path removes guest memory (the read-only
    // copy's capability goes): its next entry flushes the guest TLB.
    system
        .caps
        .delete(MONITOR, RAM_READ_ONLY as esker_abi::CapSlot)
        .unwrap();
    system.unmap_stale_vm_memory(&mut platform);
    assert!(system.guest_entry(&mut platform, MONITOR).is_some());
    assert_eq!(
        tlb(&mut platform),
        crate::virt::svm::TlbControl::FlushAll as u8
    );

    // The timeout passes while the guest is preempted: the timer's dispatch ends the run
    // (result TIMEOUT) and does not keep arming the timer for the passed time.
    platform.clock.set(5_000);
    let next = system.on_timer(&platform);
    assert!(system.world(MONITOR).unwrap().guest.is_none());
    assert_eq!(
        result_of(&system, MONITOR).map(|r| r[1]),
        Ok(esker_abi::VCPU_TIMEOUT)
    );
    let deadline = match next {
        Next::World { deadline_ns, .. } | Next::Idle { deadline_ns } => deadline_ns,
    };
    assert_ne!(deadline, Some(0), "{next:?}");
    let again = system.on_timer(&platform);
    let deadline = match again {
        Next::World { deadline_ns, .. } | Next::Idle { deadline_ns } => deadline_ns,
    };
    assert_ne!(deadline, Some(0), "{again:?}");
}
